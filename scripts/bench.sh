#!/usr/bin/env bash
# The benchmark: builds the static binary (its size is a figure), then runs
# rds-bench, which starts the real driver, rds-sim and the fake NVMe fabric
# and prints a table of figures, each measured in this one run as a ratio
# against the same work done directly, with its target and whether it is met.
#
#   scripts/bench.sh [--json FILE] [--quick]
#
# Runs as root (loop devices, mkfs, mounts); takes about a minute after the
# build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: run as root: the node figures use loop devices, mkfs and mounts" >&2
	exit 1
fi
scripts/setup.sh >/dev/null
# shellcheck source=scripts/env.sh
. scripts/env.sh
scripts/build-static.sh
rds_cargo build --bins
exec "$RDS_BIN_DIR/rds-bench" --dist dist/rds-csi "$@"
