#!/bin/sh
# shellcheck shell=dash
# Scenarios: the guest works at all (boot), and a volume's whole life for
# ext4, xfs and raw block against the real kernel (lifecycle).

scenario_boot() {
	say "modules, configfs and tools"
	for m in nvmet nvmet_tcp nvme_tcp nvme_fabrics xfs; do
		grep -q "^$m " /proc/modules || fail "module $m is not loaded"
	done
	[ -d "$NVMET/subsystems" ] || fail "no $NVMET"
	nvme version
	rds-csi --version
	sim_start
	say "rds-sim serves $SIM_URL ($SIM_FP)"
	kill -USR1 "$(cat "$W/sim.pid")"
	wait_for 20 "rds-sim to take SIGUSR1" grep -q "outage begins" "$W/sim.log"
	kill -USR2 "$(cat "$W/sim.pid")"
	wait_for 20 "rds-sim to take SIGUSR2" grep -q "outage ends" "$W/sim.log"
}

# stage_args FS: the ctl flags that say what kind of volume it is.
kind_args() {
	case "$1" in
	block) echo "--block" ;;
	*) echo "--fs $1" ;;
	esac
}

lifecycle_one() {
	fs=$1
	k=$(kind_args "$fs")
	blk=""
	[ "$fs" != block ] || blk=--block
	# shellcheck disable=SC2086
	id=$(create "life-$fs" 1Gi $k --param ctrlLossTmo=-1 --param reconnectDelay=2)
	[ -n "$id" ] || fail "no volume id"
	ctx="$W/life-$fs.json"
	nqn=$(json_get nqn "$ctx")
	say "$fs: volume $id, $nqn"
	# Exported only while published: not on the network before the publish.
	target_lacks "$nqn" || fail "create exported $nqn before any publish"
	# shellcheck disable=SC2086
	ctl publish "$id" --node "$NODE" $blk
	target_has "$nqn" || fail "publish did not export $nqn through the kernel target"
	staging="$W/kubelet/staging/$id"
	tgt="$W/kubelet/pods/p1/$id"
	mkdir -p "$staging" "$W/kubelet/pods/p1"
	# shellcheck disable=SC2086
	ctl stage "$id" --staging-path "$staging" $k --context-file "$ctx"
	connected "$nqn" || fail "staged, but $nqn is not in sysfs"
	dev=$(dev_of "$nqn")
	say "$fs: staged on $dev ($(ctrl_of "$nqn"), $(ctrl_state "$nqn"))"
	grep -q '^off$' "/sys/class/nvme/$(ctrl_of "$nqn")/ctrl_loss_tmo" || fail "ctrl_loss_tmo is not off"
	grep -q '^2$' "/sys/class/nvme/$(ctrl_of "$nqn")/reconnect_delay" || fail "reconnect_delay is not 2"
	# shellcheck disable=SC2086
	ctl publish-node "$id" --staging-path "$staging" --target-path "$tgt" --context-file "$ctx" \
		$blk
	head -c 65536 /dev/urandom >"$W/pattern"
	if [ "$fs" = block ]; then
		dd if="$W/pattern" of="$tgt" bs=65536 count=1 conv=fsync 2>/dev/null
	else
		cp "$W/pattern" "$tgt/data"
		sync "$tgt/data"
		mounted "$tgt" || fail "$tgt is not mounted"
	fi
	stats_healthy "$id" "$tgt" || fail "stats not healthy: $(cat "$W/stats.json")"
	say "$fs: written; stats healthy"

	before=$(blockdev --getsize64 "$dev")
	# shellcheck disable=SC2086
	ctl expand "$id" --size 2Gi --node-path "$tgt" --staging-path "$staging" \
		$blk
	wait_for 30 "the device to show 2 GiB" sh -c "[ \$(blockdev --getsize64 $dev) -eq $((2 << 30)) ]"
	if [ "$fs" != block ]; then
		size_kb=$(df -k "$tgt" | awk 'NR == 2 { print $2 }')
		[ "$size_kb" -gt $((1536 * 1024)) ] || fail "the $fs filesystem did not grow ($size_kb KiB)"
	fi
	say "$fs: grown online from $before bytes to $(blockdev --getsize64 "$dev")"

	ctl unpublish-node "$id" --target-path "$tgt"
	ctl unstage "$id" --staging-path "$staging"
	not_connected "$nqn" || fail "unstaged, but $nqn is still in sysfs"
	! mounted "$staging" || fail "unstaged, but $staging is still mounted"

	formats=$(grep -c "formatted " "$W/driver.log" || true)
	# shellcheck disable=SC2086
	ctl stage "$id" --staging-path "$staging" $k --context-file "$ctx"
	# shellcheck disable=SC2086
	ctl publish-node "$id" --staging-path "$staging" --target-path "$tgt" --context-file "$ctx" \
		$blk
	if [ "$fs" = block ]; then
		dd if="$tgt" of="$W/readback" bs=65536 count=1 2>/dev/null
		cmp "$W/pattern" "$W/readback" || fail "block data differs after re-stage"
	else
		cmp "$W/pattern" "$tgt/data" || fail "file data differs after re-stage"
		[ "$(grep -c "formatted " "$W/driver.log" || true)" = "$formats" ] ||
			fail "the second stage formatted again"
	fi
	say "$fs: staged again, data intact"
	ctl unpublish-node "$id" --target-path "$tgt"
	ctl unstage "$id" --staging-path "$staging"
	not_connected "$nqn" || fail "$nqn still connected"
	ctl unpublish "$id" --node "$NODE"
	target_lacks "$nqn" || fail "unpublished from its last node, but $nqn is still exported"
	ctl delete "$id"
	target_lacks "$nqn" || fail "deleted, but $nqn is still in the target's configfs"
	say "$fs: deleted; the target is gone"
}

scenario_lifecycle() {
	sim_start
	driver_start
	for fs in ext4 xfs block; do
		t=$(now_us)
		lifecycle_one "$fs"
		vmlog "  lifecycle $fs: $(since "$t")s"
	done
	[ -z "$(ls "$NVMET/ports")" ] || fail "ports left in configfs: $(ls "$NVMET/ports")"
}
