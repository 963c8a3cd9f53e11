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
# Unit, binary and integration tests (the crate has no doc tests), then the
# real-kernel lane (a VM: scripts/vm-test.sh; RDS_SKIP_VM=1 leaves it out),
# then one line adding up every test binary's and VM scenario's result.
log=$(mktemp)
vmlog=$(mktemp)
trap 'rm -f "$log" "$vmlog"' EXIT
status=0
rds_cargo test --tests "$@" 2>&1 | tee "$log" || status=1
if [ "${RDS_SKIP_VM:-0}" != 1 ]; then
	scripts/vm-test.sh 2>&1 | tee "$vmlog" || status=1
fi
awk '/^test result:/ { passed += $4; failed += $6 }
	FILENAME == vm && /^[0-9]+ passed, [0-9]+ failed$/ { passed += $1; failed += $3 }
	END { printf "%d passed, %d failed\n", passed, failed }' vm="$vmlog" "$log" "$vmlog"
exit "$status"
