#!/bin/sh
# shellcheck shell=dash
# The real-kernel lane's scenarios, run inside the guest by /init (see
# scripts/vm-test.sh). rds-sim plays the RDS over HTTPS (self-signed, pinned
# by the driver) and serves its exports through the kernel's NVMe/TCP target
# (--nvmet); the driver is driven only through its CSI socket with
# `rds-csi ctl`, and attaches with the real nvme-cli. Each scenario prints
# `VMTEST PASS|FAIL <name> <seconds>s`; figures are `VMTEST BENCH ...`;
# diagnostics are `VMLOG ...` lines.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
. /vm/lib.sh

only=$(cat /vm/scenarios 2>/dev/null || true)
# run NAME FUNCTION: one scenario in a subshell with `set -e`, its own work
# directory, rds-sim and driver; cleaned up whatever happened.
run() {
	name=$1
	fn=$2
	if [ -n "$only" ] && ! echo " $only " | grep -q " $name "; then
		return 0
	fi
	W=/tmp/s-$name
	rm -rf "$W"
	mkdir -p "$W"
	export W
	echo "VMLOG --- $name"
	t0=$(now_us)
	(
		set -e
		"$fn"
	) >"$W/out.log" 2>&1
	rc=$?
	secs=$(since "$t0")
	if [ "$rc" -eq 0 ]; then
		echo "VMTEST PASS $name ${secs}s"
	elif [ "$rc" -eq 3 ]; then
		# The scenario could not run here (it says why): never a pass.
		echo "VMTEST SKIPPED $name ${secs}s: $(grep '^SKIPPED: ' "$W/out.log" | tail -n 1)"
	else
		echo "VMTEST FAIL $name ${secs}s"
		tail -n 25 "$W/out.log" | sed 's/^/VMLOG   out| /'
		[ -f "$W/driver.log" ] && tail -n 30 "$W/driver.log" | sed 's/^/VMLOG   driver| /'
		[ -f "$W/sim.log" ] && tail -n 12 "$W/sim.log" | sed 's/^/VMLOG   rds-sim| /'
		[ -f "$W/peer.log" ] && tail -n 15 "$W/peer.log" | sed 's/^/VMLOG   peer| /'
		[ -f "$W/peer.used" ] && echo 'tail -n 20 "$W/driver.log"; dmesg | tail -n 12' |
			on_peer 2>/dev/null | tail -n 32 | sed 's/^/VMLOG   peer-node| /'
		dmesg | tail -n 15 | sed 's/^/VMLOG   kernel| /'
	fi
	cleanup_scenario
	# A two-node scenario's peer side, too (its node plugin, mounts,
	# controllers, writers).
	if [ -f "$W/peer.used" ]; then
		echo peer_cleanup | PEER_TIMEOUT=90 on_peer >/dev/null 2>&1 || echo "VMLOG   the peer did not clean up after $name"
	fi
}

. /vm/lifecycle.sh
. /vm/faults.sh
. /vm/bench.sh
. /vm/fencing.sh
. /vm/snapshot.sh
. /vm/twonode.sh

known="boot lifecycle outage give-up rds-restart orphans mkfs-kill connect-fail host-acl bench snapshot fence-lost-node fence-export rwx-block"
for name in $only; do
	echo " $known " | grep -q " $name " || echo "VMTEST FAIL $name 0s (no such scenario; known: $known)"
done

run boot scenario_boot
run lifecycle scenario_lifecycle
run outage scenario_outage
run give-up scenario_give_up
run rds-restart scenario_rds_restart
run orphans scenario_orphans
run mkfs-kill scenario_mkfs_kill
run connect-fail scenario_connect_fail
run host-acl scenario_host_acl
run bench scenario_bench
run snapshot scenario_snapshot
run fence-lost-node scenario_fence_lost_node
run fence-export scenario_fence_export
run rwx-block scenario_rwx_block
