# shellcheck shell=bash
# Sourced by the other scripts: chooses the one build configuration that both
# the tests and the shipped static binary use, so gRPC core's C++ (the bulk of
# a clean build) is compiled once per machine, not once per profile/target.
#
# Exports:
#   RDS_TARGET      the cargo target triple (musl when it can be had, else gnu)
#   RDS_BIN_DIR     where the built binaries land (target/<triple>/release)
#   RDS_STATIC_KIND "musl" or "glibc"
# and the compiler variables the chosen target needs, plus rds_cargo, which
# runs a cargo subcommand (build, test, clippy, ...) for that target.

RDS_ROOT=${RDS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
RDS_TOOLS=${RDS_TOOLS:-$RDS_ROOT/.tools}
# Resolve links: the compiler path below is part of gRPC core's build
# fingerprint, so worktrees sharing one tool folder must name it identically.
[ -d "$RDS_TOOLS" ] && RDS_TOOLS=$(cd "$RDS_TOOLS" && pwd -P)
export RDS_ROOT RDS_TOOLS

rds_musl_available() {
	[ -f "$RDS_TOOLS/venv/.installed-zig" ] || return 1
	[ -x "$RDS_TOOLS/venv/bin/cargo-zigbuild" ] || return 1
	"$RDS_TOOLS/venv/bin/python3" -m ziglang version >/dev/null 2>&1 || return 1
	rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl
}

if [ -z "${RDS_TARGET:-}" ]; then
	if [ "${RDS_FORCE_GLIBC:-0}" != 1 ] && rds_musl_available; then
		RDS_TARGET=x86_64-unknown-linux-musl
	else
		RDS_TARGET=x86_64-unknown-linux-gnu
	fi
fi
export RDS_TARGET

case "$RDS_TARGET" in
*-musl)
	RDS_STATIC_KIND=musl
	export PATH="$RDS_TOOLS/venv/bin:$RDS_TOOLS/bin:$PATH"
	# grpcio-sys hands CMake a C++ compiler of its own choosing (g++) unless
	# CXX says otherwise, and Debian has no musl C++ toolchain: zig's clang
	# with its bundled libc++ and musl is the one that links.
	export CXX="$RDS_TOOLS/bin/zigcxx-musl"
	export CXX_x86_64_unknown_linux_musl="$CXX"
	# gRPC 1.56 under clang >= 19 and musl >= 1.2.4 (see docs/build.md).
	export CFLAGS_x86_64_unknown_linux_musl="-D_LARGEFILE64_SOURCE"
	export CXXFLAGS_x86_64_unknown_linux_musl="-D_LARGEFILE64_SOURCE -Wno-missing-template-arg-list-after-template-kw"
	;;
*)
	RDS_STATIC_KIND=glibc
	# --target keeps proc-macros and build scripts dynamic while the
	# binaries (and test binaries) link glibc and libstdc++ statically.
	export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
	;;
esac
export RDS_STATIC_KIND
RDS_TARGET_DIR=${CARGO_TARGET_DIR:-$RDS_ROOT/target}
RDS_BIN_DIR="$RDS_TARGET_DIR/$RDS_TARGET/release"
export RDS_TARGET_DIR RDS_BIN_DIR

# rds_cargo SUBCOMMAND [ARGS...]: cargo for the chosen target and profile.
rds_cargo() {
	local sub=$1
	shift
	if [ "$RDS_STATIC_KIND" = musl ]; then
		# cargo-zigbuild names its build subcommand "zigbuild".
		[ "$sub" = build ] && sub=zigbuild
		cargo-zigbuild "$sub" --release --target "$RDS_TARGET" "$@"
	else
		cargo "$sub" --release --target "$RDS_TARGET" "$@"
	fi
}
