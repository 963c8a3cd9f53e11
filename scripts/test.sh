#!/usr/bin/env bash
# Runs every test from a fresh machine: setup, the static build (checked),
# then the unit and integration tests, which start the real binaries
# (driver, rds-sim, the fake NVMe fabric) and use real loop devices, mkfs and
# mounts, so they run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/env.sh
. scripts/env.sh
if [ "$(id -u)" -ne 0 ]; then
	echo "test: the integration tests mount filesystems and attach loop devices: run as root" >&2
	exit 1
fi
scripts/build-static.sh
# The integration tests also start the stripped static binary from dist/.
export RDS_CSI_DIST_BIN="$RDS_ROOT/dist/rds-csi"
rds_cargo test "$@"
