#!/bin/sh
# shellcheck shell=dash
# Scenario: snapshots, restore and clone on the real kernel (snapshot).
# rds-sim keeps its data on a Btrfs filesystem made inside the guest (a
# loop device over a sparse file in /tmp), so its subvolumes and snapshots
# are real Btrfs ones; the volumes are XFS, so the restored and the cloned
# volume (same filesystem UUID as their source) are staged beside the
# source (mounted with nouuid), and the restore at twice the size checks
# that stage grows the filesystem to the device.

# Exit status 3 tells run() the scenario could not run (said loudly).
snapshot_skip() {
	echo "SKIPPED: $*"
	exit 3
}

# step TEXT: into the scenario's log and onto the console (what was checked).
step() {
	say "$*"
	vmlog "  snapshot: $*"
}

# stage_vol NAME: ControllerPublish, stage (xfs) under $W/kubelet/staging/NAME.
stage_vol() {
	local id
	id=$(json_get volume_id "$W/$1.json")
	ctl publish "$id" --node "$NODE"
	mkdir -p "$W/kubelet/staging/$1"
	ctl stage "$id" --staging-path "$W/kubelet/staging/$1" --fs xfs --context-file "$W/$1.json"
	mounted "$W/kubelet/staging/$1" || fail "$1 is not mounted after stage"
}
unstage_vol() {
	local id
	id=$(json_get volume_id "$W/$1.json")
	ctl unstage "$id" --staging-path "$W/kubelet/staging/$1"
	ctl unpublish "$id" --node "$NODE"
	ctl delete "$id"
}

scenario_snapshot() {
	grep -qw btrfs /proc/filesystems ||
		snapshot_skip "the guest kernel has no btrfs (insmod failed or the module was not packed; see the insmod lines above)"
	if ! command -v mkfs.btrfs >/dev/null || ! command -v btrfs >/dev/null; then
		snapshot_skip "mkfs.btrfs or btrfs is not in the initramfs"
	fi
	img=/tmp/btrfs-pool.img
	rm -f "$img"
	dd if=/dev/zero of="$img" bs=1 count=0 seek=3G 2>/dev/null
	loopdev=$(losetup -f)
	losetup "$loopdev" "$img"
	echo "$loopdev" >"$W/loopdev"
	mkfs.btrfs -q -f "$loopdev"
	mkdir -p "$W/btrfs"
	mount -t btrfs "$loopdev" "$W/btrfs"
	step "rds-sim data on Btrfs ($loopdev at $W/btrfs)"
	SIM_DATA_DIR="$W/btrfs/rds" sim_start --pool-fs btrfs
	driver_start

	create src 1Gi --fs xfs >/dev/null
	src=$(json_get volume_id "$W/src.json")
	[ -n "$src" ] || fail "no volume id"
	stage_vol src
	head -c 65536 /dev/urandom >"$W/before"
	head -c 65536 /dev/urandom >"$W/after"
	cp "$W/before" "$W/kubelet/staging/src/data"
	sync
	ctl --json snapshot create snap1 --volume "$src" >"$W/snap.json"
	snap=$(json_get snapshot_id "$W/snap.json")
	[ -n "$snap" ] || fail "no snapshot id: $(cat "$W/snap.json")"
	btrfs subvolume list "$W/btrfs" | sed 's/^/   /'
	btrfs subvolume list -r "$W/btrfs" | grep -q . || fail "no read-only Btrfs snapshot on the pool"
	step "read-only Btrfs snapshot: $(btrfs subvolume list -r "$W/btrfs" | awk '{ print $NF }')"
	step "snapshot $snap of $src"
	cp "$W/after" "$W/kubelet/staging/src/data"
	sync

	# Restored at twice the size, staged beside its source (same UUID).
	create restored 2Gi --fs xfs --from-snapshot "$snap" >/dev/null
	stage_vol restored
	cmp "$W/before" "$W/kubelet/staging/restored/data" || fail "the restored volume lacks the snapshot's data"
	cmp "$W/after" "$W/kubelet/staging/src/data" || fail "the source lost its new data"
	size_kb=$(df -k "$W/kubelet/staging/restored" | awk 'NR == 2 { print $2 }')
	[ "$size_kb" -gt $((1536 * 1024)) ] || fail "the restored 2 GiB volume's filesystem was not grown at stage ($size_kb KiB)"
	step "restored: the snapshot's data, grown to $size_kb KiB, staged beside its source"

	# A clone of the live volume has its current data.
	create clone 1Gi --fs xfs --from-volume "$src" >/dev/null
	stage_vol clone
	cmp "$W/after" "$W/kubelet/staging/clone/data" || fail "the clone lacks the source's current data"
	echo changed >"$W/kubelet/staging/clone/data"
	sync
	cmp "$W/after" "$W/kubelet/staging/src/data" || fail "a write to the clone reached the source"
	step "clone: the source's current data, independent of it"

	unstage_vol clone
	unstage_vol restored
	unstage_vol src
	ctl snapshot delete "$snap"
	step "all three volumes and the snapshot deleted"
	! btrfs subvolume list "$W/btrfs" | grep -q csi/ || fail "subvolumes left: $(btrfs subvolume list "$W/btrfs")"
}
