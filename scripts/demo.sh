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
	rm -rf "$work"
	if [ "$status" -eq 0 ]; then
		printf '\n\033[1mdemo: OK — the volume was created, attached, written, grown, detached, re-attached with its data, and deleted\033[0m\n'
	else
		printf '\n\033[1mdemo: FAILED at step %s (%s)\033[0m; logs were in %s\n' "$step_no" "$step_name" "$work"
		[ -f "$work/driver.log" ] && tail -n 20 "$work/driver.log" >&2 || true
	fi
	exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

ctl() { "$BIN/rds-csi" ctl --endpoint "unix://$work/csi.sock" "$@"; }

step "start rds-sim, a RouterOS emulator with a 20 GiB pool, over HTTPS"
mkdir -p "$work/secret" "$work/rds"
echo admin >"$work/secret/username"
head -c 18 /dev/urandom | base64 >"$work/secret/password"
"$BIN/rds-sim" --listen 127.0.0.1:0 --data-dir "$work/rds" --pool-size 20G \
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
{"sys_root": "$node/sys", "dev_root": "$node/dev", "exports": "$work/rds/exports.json",
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
ls -ls "$work/rds/files/storage-pool/csi/" | sed 's/^/     /'

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

step "clean up: unpublish, unstage, detach from the node, delete"
ctl unpublish-node "$id" --target-path "$target"
ctl unstage "$id" --staging-path "$staging"
ctl unpublish "$id" --node demo-node
ctl delete "$id"

step "the RDS holds no disk and no file any more"
ctl list
left=$(find "$work/rds/files" -name '*.img' | wc -l)
note "backing files left on the RDS: $left"
[ "$left" -eq 0 ]
ctl list | grep -q '^0 volume(s)'
