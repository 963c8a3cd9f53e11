#!/usr/bin/env bash
# Builds the shipped binaries: statically linked and stripped, musl when it
# can be had (zig as the C/C++ toolchain), static glibc otherwise. Copies them
# to dist/ and prints what was built and how big it is.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

rds_cargo build --bins
mkdir -p dist
for bin in rds-csi rds-sim; do
	cp "$RDS_BIN_DIR/$bin" "dist/$bin"
	strip "dist/$bin"
	info=$(file -b "dist/$bin")
	case "$info" in
	*"statically linked"* | *"static-pie linked"*) ;;
	*)
		echo "build-static: dist/$bin is not statically linked: $info" >&2
		exit 1
		;;
	esac
done
bytes=$(stat -c %s dist/rds-csi)
printf "build-static: dist/rds-csi: %s static, stripped, %d bytes (%s MiB)\n" \
	"$RDS_STATIC_KIND" "$bytes" "$(awk "BEGIN { printf \"%.2f\", $bytes / 1048576 }")"
