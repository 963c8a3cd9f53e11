#!/usr/bin/env bash
# A volume's whole life on this machine, with no RDS and no NVMe hardware:
# rds-sim plays the RDS (RouterOS REST over HTTPS with a self-signed
# certificate, pinned by fingerprint), fake-nvme plays the NVMe/TCP fabric
# over loop devices, and the real rds-csi serves the controller and the node
# on one socket. Every step goes through `rds-csi ctl`, the operator's CSI
# client, and says what it does.
#
#   scripts/demo.sh            (as root: loop devices, mkfs, mounts)
#
# Everything it starts (processes, mounts, loop devices, files) is cleaned
# up at the end, also when interrupted. The last line says whether it worked
# or which step failed.
set -euo pipefail
cd "$(dirname "$0")/.."

step_no=0
step_name="setup"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step() {
	step_no=$((step_no + 1))
	step_name="$*"
	say "step $step_no: $*"
}
note() { printf '   %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (sudo scripts/demo.sh): it attaches loop devices, runs mkfs and mounts" >&2
	exit 1
fi

say "preparing: packages, toolchain and build (the first build compiles gRPC core: ~15 minutes)"
scripts/setup.sh
# shellcheck source=scripts/env.sh
. scripts/env.sh
rds_cargo build --bins
BIN="$RDS_BIN_DIR"

work=$(mktemp -d /tmp/rds-csi-demo.XXXXXX)
sim_pid=""
driver_pid=""
pool_loop=""
finish() {
	status=$?
	trap - EXIT INT TERM
	[ -n "$driver_pid" ] && kill "$driver_pid" 2>/dev/null && wait "$driver_pid" 2>/dev/null || true
	# Unmount anything left under the work dir, deepest first.
	if [ -d "$work" ]; then
		awk -v w="$work" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done
		[ -x "$work/node/fabric/nvme" ] && "$work/node/fabric/nvme" disconnect-all >/dev/null 2>&1 || true
	fi
	[ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
	# The RDS's Btrfs pool: unmounted (lazily if the fabric's loop devices
	# still hold its files) and its loop device detached.
	if [ -n "$pool_loop" ]; then
		mountpoint -q "$work/pool" && { umount "$work/pool" 2>/dev/null || umount -l "$work/pool" 2>/dev/null || true; }
		losetup -d "$pool_loop" 2>/dev/null || true
	fi
	rm -rf "$work"
	if [ "$status" -eq 0 ]; then
		printf '\n\033[1mdemo: OK — the volume was created, attached, written, grown, detached, re-attached with its data, snapshotted and restored, and deleted\033[0m\n'
	else
		printf '\n\033[1mdemo: FAILED at step %s (%s)\033[0m; logs were in %s\n' "$step_no" "$step_name" "$work"
		[ -f "$work/driver.log" ] && tail -n 20 "$work/driver.log" >&2 || true
	fi
	exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

ctl() { "$BIN/rds-csi" ctl --endpoint "unix://$work/csi.sock" "$@"; }

step "start rds-sim, a RouterOS emulator with a 20 GiB Btrfs pool, over HTTPS"
mkdir -p "$work/secret" "$work/pool"
echo admin >"$work/secret/username"
head -c 18 /dev/urandom | base64 >"$work/secret/password"
# The pool is Btrfs (as on an RDS): rds-sim's data dir on a real Btrfs
# filesystem (a loop-mounted sparse file) makes each volume a real
# subvolume and each snapshot a real copy-on-write Btrfs snapshot.
rds="$work/pool/rds"
if command -v mkfs.btrfs >/dev/null && command -v btrfs >/dev/null; then
	truncate -s 4G "$work/btrfs.img"
	mkfs.btrfs -q -f "$work/btrfs.img"
	pool_loop=$(losetup --find --show "$work/btrfs.img")
	mount -t btrfs "$pool_loop" "$work/pool"
	note "pool: Btrfs on $pool_loop, mounted at $work/pool"
else
	note "no mkfs.btrfs/btrfs here (install btrfs-progs): the pool reports btrfs, but its snapshots are plain copies"
fi
mkdir -p "$rds"
"$BIN/rds-sim" --listen 127.0.0.1:0 --data-dir "$rds" --pool-size 20G --pool-fs btrfs \
	--username admin --password-file "$work/secret/password" --self-signed \
	>"$work/sim.out" 2>"$work/sim.log" &
sim_pid=$!
for _ in $(seq 100); do grep -q '^listening ' "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
url=$(awk '/^listening /{print $2}' "$work/sim.out")
fingerprint=$(awk '/^fingerprint /{print $2}' "$work/sim.out")
[ -n "$url" ] && [ -n "$fingerprint" ]
note "RDS at $url, certificate $fingerprint (the driver pins it)"

step "prepare the fake NVMe/TCP fabric (sysfs and /dev trees over loop devices)"
node="$work/node"
mkdir -p "$node"/{fabric,sys/module/nvme_tcp,sys/class/nvme,sys/class/nvme-subsystem,sys/class/block,dev,etc/nvme,state}
echo "nqn.2014-08.org.nvmexpress:uuid:demo-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$node/etc/nvme/hostnqn"
ln -s "$BIN/fake-nvme" "$node/fabric/nvme"
cat >"$node/fabric/fabric.json" <<JSON
{"sys_root": "$node/sys", "dev_root": "$node/dev", "exports": "$rds/exports.json",
 "state_dir": "$node/state", "multipath": true}
JSON
note "the node plugin runs $node/fabric/nvme as its nvme tool"

step "start rds-csi serving the controller and the node on one socket"
"$BIN/rds-csi" serve --controller --node --node-id demo-node \
	--endpoint "unix://$work/csi.sock" \
	--rds-address "$url" --rds-tls-fingerprint "$fingerprint" \
	--rds-username-file "$work/secret/username" --rds-password-file "$work/secret/password" \
	--nvme-address 127.0.0.1 \
	--nvme-bin "$node/fabric/nvme" --sys-root "$node/sys" --dev-root "$node/dev" --etc-root "$node/etc" \
	--kubelet-dir "$work/kubelet" \
	2>"$work/driver.log" &
driver_pid=$!
for _ in $(seq 200); do [ -S "$work/csi.sock" ] && break; sleep 0.05; done
[ -S "$work/csi.sock" ]
for _ in $(seq 100); do ctl --json probe 2>/dev/null | grep -q '"ready": true' && break; sleep 0.1; done
ctl info

step "create a 1 GiB xfs volume with the resilience parameters (reconnect forever)"
ctl --json create demo-data --size 1Gi --fs xfs \
	--param ctrlLossTmo=-1 --param reconnectDelay=5 --param keepAliveTmo=30 >"$work/volume.json"
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["volume_id"])' "$work/volume.json")
note "volume id $id; its volume context goes to the node:"
python3 -c 'import json,sys; [print("     %s=%s" % kv) for kv in sorted(json.load(open(sys.argv[1]))["volume_context"].items())]' "$work/volume.json"
note "on the RDS: a 1 GiB sparse file, exported over NVMe/TCP:"
ls -lsR "$rds/files/storage-pool/csi/" | sed 's/^/     /'

step "attach it to the node (ControllerPublishVolume records the node on the RDS disk)"
ctl publish "$id" --node demo-node

staging="$work/kubelet/plugins/staging/$id"
target="$work/kubelet/pods/demo-pod/volumes/data"
mkdir -p "$staging"
step "stage it: nvme connect, format (it is blank), mount at the staging path"
ctl stage "$id" --staging-path "$staging" --fs xfs --context-file "$work/volume.json"
note "nvme connect was called with:"
python3 -c 'import json,sys; print("     nvme connect " + " ".join(json.loads(open(sys.argv[1]).readlines()[-1])["args"]))' "$node/state/connects.jsonl"
note "(-l -1: the kernel reconnects forever, so an RDS reboot never turns the filesystem read-only)"

step "publish it into a pod's volume directory (a bind mount)"
ctl publish-node "$id" --staging-path "$staging" --target-path "$target" --context-file "$work/volume.json"

step "write a file and read it back"
echo "hello from rds-csi, $(date -u +%FT%TZ)" >"$target/hello.txt"
sync
note "wrote: $(cat "$target/hello.txt")"
written=$(cat "$target/hello.txt")

step "volume stats and health (what kubelet shows)"
ctl stats "$id" --path "$target"

step "grow it to 2 GiB while mounted (RDS file grows, namespace rescanned, xfs grown online)"
ctl expand "$id" --size 2Gi --node-path "$target" --staging-path "$staging"
df -h "$target" | sed 's/^/     /'

step "unpublish and unstage it (unmount, nvme disconnect, checked gone)"
ctl unpublish-node "$id" --target-path "$target"
ctl unstage "$id" --staging-path "$staging"
if "$node/fabric/nvme" list-subsys -o json | grep -q "$id"; then
	echo "   the subsystem is still connected" >&2
	exit 1
fi
note "no NVMe connection left"

step "stage and publish it again: the file is still there (no reformat)"
ctl stage "$id" --staging-path "$staging" --fs xfs --context-file "$work/volume.json"
ctl publish-node "$id" --staging-path "$staging" --target-path "$target" --context-file "$work/volume.json"
again=$(cat "$target/hello.txt")
note "read: $again"
[ "$again" = "$written" ]

step "snapshot it (a read-only Btrfs snapshot of the volume's subvolume on the RDS), then overwrite the file"
ctl --json snapshot create demo-snap --volume "$id" >"$work/snap.json"
snap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_id"])' "$work/snap.json")
ctl snapshot list --volume "$id"
if [ -n "$pool_loop" ]; then
	note "on the pool:"
	btrfs subvolume list "$work/pool" | sed 's/^/     /'
fi
echo "overwritten after the snapshot" >"$target/hello.txt"
sync
note "now: $(cat "$target/hello.txt")"

step "restore the snapshot into a new 3 GiB volume (the snapshot is 2 GiB) and stage it beside the source"
ctl --json create demo-restored --size 3Gi --fs xfs --from-snapshot "$snap" >"$work/restored.json"
rid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["volume_id"])' "$work/restored.json")
rstaging="$work/kubelet/plugins/staging/$rid"
mkdir -p "$rstaging"
ctl publish "$rid" --node demo-node
ctl stage "$rid" --staging-path "$rstaging" --fs xfs --context-file "$work/restored.json"
restored=$(cat "$rstaging/hello.txt")
note "restored volume $rid reads: $restored"
note "(same XFS UUID as its source, mounted beside it with nouuid; grown to its device at stage:)"
df -h "$rstaging" | sed 's/^/     /'
[ "$restored" = "$written" ]
ctl unstage "$rid" --staging-path "$rstaging"
ctl unpublish "$rid" --node demo-node
ctl delete "$rid"
ctl snapshot delete "$snap"

step "clean up: unpublish, unstage, detach from the node, delete"
ctl unpublish-node "$id" --target-path "$target"
ctl unstage "$id" --staging-path "$staging"
ctl unpublish "$id" --node demo-node
ctl delete "$id"

step "the RDS holds no disk and no file any more"
ctl list
left=$(find "$rds/files" -name '*.img' | wc -l)
note "backing files left on the RDS: $left"
[ "$left" -eq 0 ]
ctl list | grep -q '^0 volume(s)'
