#!/bin/sh
# shellcheck shell=dash
# Helpers of the real-kernel lane's guest scenarios: clocks, waiting for a
# condition with a deadline, starting rds-sim (--nvmet) and the driver,
# `ctl`, reading sysfs/configfs, and cleaning up after a scenario.

NVMET=/sys/kernel/config/nvmet
SIM_URL=https://127.0.0.1:8443
NODE=vm-node

# Microseconds since the epoch (busybox date has no %N; adjtimex has usec).
now_us() {
	adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%.0f\n", s * 1000000 + u }'
}
# Seconds (one decimal) since a now_us value.
since() {
	awk -v a="$1" -v b="$(now_us)" 'BEGIN { printf "%.1f\n", (b - a) / 1000000 }'
}
# Milliseconds (one decimal) between two now_us values.
ms_between() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f\n", (b - a) / 1000 }'
}

# To the host from inside a scenario (whose output goes to its log).
vmlog() { echo "VMLOG $*" >/dev/console; }
bench() { echo "VMTEST BENCH $*" >/dev/console; }

fail() {
	echo "FAILED: $*"
	exit 1
}
say() { echo "== $*"; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
	local limit what deadline
	limit=$1
	what=$2
	shift 2
	deadline=$(($(date +%s) + limit))
	while ! "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$deadline" ] || fail "waited ${limit}s for $what"
		sleep 0.1
	done
}

# --- rds-sim ----------------------------------------------------------------------
sim_start() {
	mkdir -p "$W/rds" "$W/secret"
	[ -f "$W/secret/password" ] || {
		echo admin >"$W/secret/username"
		head -c 12 /dev/urandom | base64 >"$W/secret/password"
	}
	# SIM_DATA_DIR: where rds-sim keeps its state (the snapshot scenario
	# puts it on Btrfs); extra arguments go to rds-sim.
	rds-sim --listen 127.0.0.1:8443 --data-dir "${SIM_DATA_DIR:-$W/rds}" --pool-size 200G \
		--username admin --password-file "$W/secret/password" --self-signed \
		--nvme-address "${NVME_ADDR:-127.0.0.1}" --nvmet "$@" >"$W/sim.out" 2>>"$W/sim.log" &
	echo $! >"$W/sim.pid"
	wait_for 30 "rds-sim to listen" grep -q '^listening ' "$W/sim.out"
	SIM_FP=$(awk '/^fingerprint /{print $2}' "$W/sim.out")
}
sim_kill() {
	local sig pid
	sig=${1:-TERM}
	[ -f "$W/sim.pid" ] || return 0
	pid=$(cat "$W/sim.pid")
	kill "-$sig" "$pid" 2>/dev/null || true
	wait_for 20 "rds-sim to stop" sh -c "! kill -0 $pid"
	rm -f "$W/sim.pid" "$W/sim.out"
}
# outage true|false: the RDS's exports vanish from their ports / come back
# (rds-sim --nvmet takes SIGUSR1/SIGUSR2 for that; busybox has no HTTP
# client rustls talks to).
links() { find "$NVMET"/ports/*/subsystems -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
no_links() { [ "$(links)" -eq 0 ]; }
some_links() { [ "$(links)" -gt 0 ]; }
outage() {
	if [ "$1" = true ]; then
		kill -USR1 "$(cat "$W/sim.pid")"
		wait_for 20 "the exports to be unlinked" no_links
	else
		kill -USR2 "$(cat "$W/sim.pid")"
		wait_for 20 "the exports to be linked again" some_links
	fi
}

# --- the driver ---------------------------------------------------------------------
driver_start() {
	mkdir -p "$W/kubelet"
	# Staging and target paths live under $W/kubelet (the node plugin only
	# works under its kubelet directory; the variable is ignored where serve
	# has no such flag).
	RDS_CSI_KUBELET_DIR="$W/kubelet" rds-csi serve --controller --node --node-id "$NODE" \
		--endpoint "unix://$W/csi.sock" \
		--rds-address "$SIM_URL" --rds-tls-fingerprint "$SIM_FP" \
		--rds-username-file "$W/secret/username" --rds-password-file "$W/secret/password" \
		--nvme-address "${NVME_ADDR:-127.0.0.1}" --log-level debug "$@" 2>>"$W/driver.log" &
	echo $! >"$W/driver.pid"
	wait_for 30 "the CSI socket" test -S "$W/csi.sock"
	wait_for 30 "the driver to be ready" sh -c "rds-csi ctl --endpoint unix://$W/csi.sock --json probe | grep -q '\"ready\": true'"
}
driver_kill() {
	local sig pid
	sig=${1:-TERM}
	[ -f "$W/driver.pid" ] || return 0
	pid=$(cat "$W/driver.pid")
	kill "-$sig" "$pid" 2>/dev/null || true
	wait_for 40 "the driver to stop" sh -c "! kill -0 $pid"
	rm -f "$W/driver.pid" "$W/csi.sock"
}
ctl() { rds-csi ctl --endpoint "unix://$W/csi.sock" "$@"; }

# json_get KEY FILE: the first string value of KEY in pretty-printed JSON.
json_get() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$2" | head -n 1; }

# create NAME SIZE [ctl create flags...]: prints the volume id; the JSON is
# kept in $W/NAME.json (its volume_context is what stage needs).
create() {
	local n size
	n=$1
	size=$2
	shift 2
	ctl --json create "$n" --size "$size" "$@" >"$W/$n.json"
	json_get volume_id "$W/$n.json"
}

# --- the kernel's view ------------------------------------------------------------------
# The sysfs directory of the subsystem with this NQN (empty when none).
subsys_of() {
	local d
	for d in /sys/class/nvme-subsystem/nvme-subsys*; do
		[ -f "$d/subsysnqn" ] || continue
		[ "$(cat "$d/subsysnqn")" = "$1" ] && { echo "$d"; return 0; }
	done
	return 0
}
connected() { [ -n "$(subsys_of "$1")" ]; }
not_connected() { [ -z "$(subsys_of "$1")" ]; }
# The controller (nvmeN) of an NQN and its state.
ctrl_of() {
	local d c
	d=$(subsys_of "$1")
	[ -n "$d" ] || return 0
	for c in "$d"/nvme[0-9]*; do
		case "${c##*/}" in *n[0-9]*) continue ;; esac
		[ -e "$c/state" ] && { echo "${c##*/}"; return 0; }
	done
	return 0
}
ctrl_state() {
	local c
	c=$(ctrl_of "$1")
	[ -n "$c" ] && cat "/sys/class/nvme/$c/state"
}
no_ctrl() { [ -z "$(ctrl_of "$1")" ]; }
has_dev() {
	local d
	d=$(dev_of "$1")
	[ -n "$d" ] && [ -b "$d" ]
}
state_is() { [ "$(ctrl_state "$1")" = "$2" ]; }
state_is_not() { [ "$(ctrl_state "$1")" != "$2" ]; }
# The usable block device of an NQN (the multipath head), e.g. /dev/nvme1n1.
dev_of() {
	local d n
	d=$(subsys_of "$1")
	[ -n "$d" ] || return 0
	for n in "$d"/nvme*n[0-9]*; do
		[ -e "$n" ] && { echo "/dev/${n##*/}"; return 0; }
	done
	return 0
}
target_has() { [ -d "$NVMET/subsystems/$1" ]; }
target_lacks() { [ ! -d "$NVMET/subsystems/$1" ]; }
mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
mount_opts() { awk -v m="$1" '$2 == m { print $4 }' /proc/mounts; }

# stats_json ID PATH: NodeGetVolumeStats as JSON into $W/stats.json.
stats_json() { ctl --json stats "$1" --path "$2" >"$W/stats.json"; }
stats_abnormal() { stats_json "$1" "$2" && grep -q '"abnormal": true' "$W/stats.json"; }
stats_healthy() { stats_json "$1" "$2" && grep -q '"abnormal": false' "$W/stats.json"; }

# --- after each scenario ------------------------------------------------------------------
# Stops what the scenario started and leaves the kernel clean for the next:
# mounts under the work dir, NVMe connections, the target's configfs tree.
cleanup_scenario() {
	[ -n "${W:-}" ] || return 0
	for f in "$W"/*.bgpid; do
		[ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
	done
	(driver_kill KILL) >/dev/null 2>&1
	awk -v w="$W" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	nvme disconnect-all >/dev/null 2>&1
	(sim_kill KILL) >/dev/null 2>&1
	nvmet_wipe
	# A loop device a scenario set up (the snapshot scenario's Btrfs).
	if [ -f "$W/loopdev" ]; then
		awk -v w="$W" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		done
		losetup -d "$(cat "$W/loopdev")" 2>/dev/null
	fi
	return 0
}
# Removes everything from the target's configfs tree (the guest has no other user).
nvmet_wipe() {
	for l in "$NVMET"/ports/*/subsystems/*; do [ -L "$l" ] && rm -f "$l"; done
	for s in "$NVMET"/subsystems/*; do
		[ -d "$s" ] || continue
		for ns in "$s"/namespaces/*; do
			[ -d "$ns" ] || continue
			echo 0 >"$ns/enable" 2>/dev/null
			rmdir "$ns"
		done
		rmdir "$s"
	done
	for p in "$NVMET"/ports/*; do [ -d "$p" ] && rmdir "$p"; done
	return 0
}
