#!/bin/sh
# shellcheck shell=dash
# The benchmark (TCG figures): stage and unstage through the driver against
# the same steps run directly in the same guest (nvme connect, wait for the
# device, mount; umount, nvme disconnect), and connect → device-usable.

BENCH_ROUNDS=${BENCH_ROUNDS:-10}

scenario_bench() {
	sim_start
	driver_start --log-level info
	id=$(create bench 1Gi --fs ext4 --param ctrlLossTmo=-1 --param reconnectDelay=2)
	ctx="$W/bench.json"
	nqn=$(json_get nqn "$ctx")
	ctl publish "$id" --node "$NODE" >/dev/null
	staging="$W/kubelet/staging/$id"
	mkdir -p "$staging" "$W/mnt"
	# The first stage formats; not counted.
	ctl stage "$id" --staging-path "$staging" --fs ext4 --context-file "$ctx" >/dev/null
	ctl unstage "$id" --staging-path "$staging" >/dev/null
	hostnqn=$(cat /etc/nvme/hostnqn)
	d_stage=0 d_unstage=0 r_stage=0 r_unstage=0 usable=0 probe=0 ctlcall=0
	i=0
	while [ "$i" -lt "$BENCH_ROUNDS" ]; do
		i=$((i + 1))
		t0=$(now_us)
		ctl stage "$id" --staging-path "$staging" --fs ext4 --context-file "$ctx" >/dev/null
		t1=$(now_us)
		ctl unstage "$id" --staging-path "$staging" >/dev/null
		t2=$(now_us)
		not_connected "$nqn" || fail "unstage left $nqn connected"
		d_stage=$((d_stage + t1 - t0))
		d_unstage=$((d_unstage + t2 - t1))

		t0=$(now_us)
		nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$nqn" -l -1 -c 2 -q "$hostnqn" >/dev/null
		tc=$(now_us)
		# Polled in this shell (no subprocess per look): the only subsystem
		# connected now is this one.
		dev=""
		while [ -z "$dev" ]; do
			for h in /sys/class/nvme-subsystem/nvme-subsys*/nvme*n1; do
				[ -e "$h" ] && [ -b "/dev/${h##*/}" ] && dev=/dev/${h##*/}
			done
		done
		dd if="$dev" of=/dev/null bs=4096 count=1 2>/dev/null
		tu=$(now_us)
		# Not part of the direct figure: the probe the driver makes before
		# it mounts (it never mounts or formats a device it cannot read),
		# and a bare `ctl probe` (process start + one gRPC call): where the
		# driver's extra time goes.
		blkid -p -o export "$dev" >/dev/null
		tb=$(now_us)
		ctl probe >/dev/null
		tp=$(now_us)
		probe=$((probe + tb - tu))
		ctlcall=$((ctlcall + tp - tb))
		t0=$((t0 + tp - tu))
		mount -t ext4 "$dev" "$W/mnt"
		t1=$(now_us)
		umount "$W/mnt"
		nvme disconnect -n "$nqn" >/dev/null
		while connected "$nqn"; do :; done
		t2=$(now_us)
		r_stage=$((r_stage + t1 - t0))
		r_unstage=$((r_unstage + t2 - t1))
		usable=$((usable + tu - tc))
	done
	n=$BENCH_ROUNDS
	line=$(awk -v n="$n" -v ds="$d_stage" -v du="$d_unstage" -v rs="$r_stage" -v ru="$r_unstage" -v us="$usable" \
		-v pb="$probe" -v cc="$ctlcall" 'BEGIN {
		printf "rounds=%d stage_driver_ms=%.0f stage_direct_ms=%.0f stage_ratio=%.2f unstage_driver_ms=%.0f unstage_direct_ms=%.0f unstage_ratio=%.2f connect_to_usable_ms=%.1f blkid_probe_ms=%.0f ctl_call_ms=%.0f",
			n, ds / n / 1000, rs / n / 1000, ds / rs, du / n / 1000, ru / n / 1000, du / ru, us / n / 1000, pb / n / 1000, cc / n / 1000 }')
	bench "$line"
	ctl unpublish "$id" --node "$NODE" >/dev/null
	ctl delete "$id" >/dev/null
}
