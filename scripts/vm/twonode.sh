#!/bin/sh
# shellcheck shell=dash
# The two-node scenarios: two NVMe hosts, each a guest of its own. The main
# guest (10.99.0.1) runs rds-sim with the kernel target, the controller and
# node `vm-node`; the peer guest (10.99.0.2, booted by vm-test.sh) runs only
# a node plugin, node `vm-peer`, driven through its agent (agent.sh): the
# main guest sends it scripts with `on_peer`. This file is sourced on both
# sides; the peer's scripts use its helpers too.
#
#   fence-lost-node  node A (the peer) staged and writing is force-unpublished
#                    and the volume published to node B (main), with host
#                    ACLs: A's controller is cut, its reconnects are
#                    refused, nothing it writes after the fence reaches the
#                    disk, B stages a consistent filesystem.
#   fence-export     the same without ACLs (export toggling alone): A is cut
#                    and nothing reaches the disk while the volume is
#                    unpublished; once it is exported again A reconnects,
#                    which is why fencing a node needs --nvme-host-acl.
#   rwx-block        one block volume published to both nodes (KubeVirt's
#                    ReadWriteMany): what one writes the other reads;
#                    unpublishing one cuts only that one off.

MAIN_IP=10.99.0.1
PEER_IP=10.99.0.2
PEER_NODE=vm-peer

# on_peer: runs stdin as a script on the peer, in its own work directory
# (/tmp/peer-<scenario>) with lib.sh and this file loaded and `set -e`, and
# NODE and NVME_ADDR set. Prints the script's output (also kept in
# $W/peer.log); the status is the script's. Bounded by PEER_TIMEOUT seconds.
on_peer() {
	local out rc
	out="$W/peer.$(now_us).out"
	{
		echo "export W=/tmp/peer-${W##*/}; mkdir -p \"\$W\"; . /vm/lib.sh; . /vm/twonode.sh"
		echo "NODE=$PEER_NODE; NVME_ADDR=$MAIN_IP; set -e"
		cat
		echo __END__
	} | timeout "${PEER_TIMEOUT:-180}" nc -w 10 "$PEER_IP" 7000 >"$out" 2>&1
	rc=$(sed -n 's/^AGENT-RC //p' "$out" | tail -n 1)
	sed '/^AGENT-RC /d' "$out" | tee -a "$W/peer.log"
	rm -f "$out"
	[ "$rc" = 0 ]
}
peer_alive() { echo true | PEER_TIMEOUT=20 on_peer; }

# peer_put FILE NAME: script text that recreates FILE as $W/NAME on the peer.
peer_put() {
	echo "cat >\"\$W/$2\" <<'__PEER_FILE__'"
	cat "$1"
	echo
	echo "__PEER_FILE__"
}

# On the peer: its node plugin alone (no controller, no RDS).
node_start() {
	mkdir -p "$W/kubelet"
	RDS_CSI_KUBELET_DIR="$W/kubelet" rds-csi serve --node --node-id "$NODE" \
		--endpoint "unix://$W/csi.sock" --log-level debug \
		</dev/null >>"$W/driver.log" 2>&1 &
	echo $! >"$W/driver.pid"
	wait_for 30 "the CSI socket" test -S "$W/csi.sock"
	wait_for 30 "the node plugin to answer" ctl probe
}

# Both guests up: rds-sim and the controller (with these flags) and node
# `vm-node` here, node `vm-peer` on the peer. SKIPPED without a network.
two_nodes_start() {
	# Only this scenario's kernel messages (refused connects are looked up there).
	dmesg -c >/dev/null
	T0=$(now_us)
	if ! ip link show eth0 >/dev/null 2>&1; then
		echo "SKIPPED: no network between two guests (no virtio-net in this kernel?)"
		exit 3
	fi
	touch "$W/peer.used"
	# A peer that never answered fails the later scenarios at once, not
	# after another long wait each.
	[ ! -f /tmp/peer-unreachable ] || fail "the peer guest did not answer in an earlier scenario"
	touch /tmp/peer-unreachable
	wait_for 300 "the peer guest's agent at $PEER_IP:7000" peer_alive
	rm -f /tmp/peer-unreachable
	NVME_ADDR=$MAIN_IP
	export NVME_ADDR
	sim_start
	driver_start "$@"
	echo node_start | on_peer
}

# On the peer after a scenario: a controller cut off by the fence never
# comes back, and with ctrlLossTmo=-1 its queued I/O (a mounted
# filesystem's journal, blocked writers) would keep a disconnect waiting
# for ever. So first let the kernel fail that I/O and give the controller
# up, then clean up as the main guest does.
peer_cleanup() {
	set +e
	for c in /sys/class/nvme/nvme[0-9]*; do
		[ -e "$c/ctrl_loss_tmo" ] || continue
		echo 0 >"$c/fast_io_fail_tmo" 2>/dev/null
		echo 1 >"$c/ctrl_loss_tmo" 2>/dev/null
	done
	cleanup_scenario
}

# phase TEXT: a step of a two-node scenario, in its log and (with the
# seconds since the scenario began) on the console: these run long.
phase() {
	say "$*"
	vmlog "  ${W##*/s-} +$(since "$T0")s: $*"
}

# The file behind a volume on the RDS: rds-sim's data directory holds it.
backing_of() {
	find "$W/rds" -type f -name "$1*" | grep -v '\.json$' | head -n 1
}

# has_text FILE TEXT: TEXT is somewhere in the (binary) FILE. Through
# strings: busybox grep reads a disk image with no newline as one line,
# which takes minutes under TCG.
has_text() { strings -n 8 "$1" | grep -q "$2"; }

# refused HOSTNQN: the target logged a refused connect from that host.
refused() { dmesg | grep "not allowed" | grep -q "$1"; }

# fence_lost_node ACL(true|false): the common part of the two fence scenarios.
fence_lost_node() {
	acl=$1
	# A volume of its own per scenario (ids come from names): the peer may
	# still hold a cut-off controller of the last one.
	name=fence-$acl
	id=$(create "$name" 1Gi --fs ext4 --param ctrlLossTmo=-1 --param reconnectDelay=1)
	[ -n "$id" ] || fail "no volume id"
	cp "$W/$name.json" "$W/fence.json"
	nqn=$(json_get nqn "$W/fence.json")
	ctl --json publish "$id" --node "$PEER_NODE" >"$W/pub-peer.json"
	peer_host=$(json_get hostNqn "$W/pub-peer.json")
	if $acl; then
		[ -n "$peer_host" ] || fail "no host NQN in the publish context: $(cat "$W/pub-peer.json")"
	fi
	phase "node A ($PEER_NODE, the peer guest) stages and writes"
	{
		peer_put "$W/fence.json" vol.json
		peer_put "$W/pub-peer.json" pub.json
		cat <<EOF
staging="\$W/kubelet/staging/$id"
mkdir -p "\$staging"
ctl stage $id --staging-path "\$staging" --fs ext4 --context-file "\$W/vol.json" --publish-context-file "\$W/pub.json"
echo "written before the fence" >"\$staging/before"
sync
# A writer that keeps going, each line synced, as a database would.
(i=0; while :; do echo "line \$i" >>"\$staging/log"; sync; i=\$((i + 1)); sleep 0.2; done) </dev/null >/dev/null 2>&1 &
echo \$! >"\$W/writer.bgpid"
wait_for 60 "the writer's first lines on the disk" sh -c "[ \\\$(wc -l <\$staging/log) -ge 3 ]"
echo "A: \$(ctrl_of $nqn) \$(ctrl_state $nqn), host \$(cat /sys/class/nvme/\$(ctrl_of $nqn)/hostnqn)"
EOF
	} | on_peer
	if $acl; then
		on_peer <<EOF
[ "\$(cat /sys/class/nvme/\$(ctrl_of $nqn)/hostnqn)" = "$peer_host" ] || fail "A did not connect as $peer_host"
EOF
	fi

	phase "force-unpublished from A (as after a non-graceful node shutdown; A never unstaged)"
	ctl unpublish "$id" --node "$PEER_NODE"
	target_lacks "$nqn" || fail "unpublished from its only node, $nqn is still exported"
	on_peer <<EOF
wait_for 30 "A's controller to lose the target" state_is_not $nqn live
echo "A: \$(ctrl_state $nqn) after the fence"
# Written after the fence: must never reach the disk.
(echo "FENCED-$id" >"\$W/kubelet/staging/$id/after"; sync) </dev/null >/dev/null 2>&1 &
echo \$! >"\$W/late.bgpid"
EOF
}

scenario_fence_lost_node() {
	two_nodes_start --nvme-host-acl
	fence_lost_node true
	phase "published to node B ($NODE): A is not in the allow list"
	ctl --json publish "$id" --node "$NODE" >"$W/pub-main.json"
	main_host=$(json_get hostNqn "$W/pub-main.json")
	sub="$NVMET/subsystems/$nqn"
	target_has "$nqn" || fail "published to B, $nqn is not exported"
	[ -L "$sub/allowed_hosts/$main_host" ] || fail "B's host $main_host is not allowed: $(ls "$sub/allowed_hosts")"
	[ ! -e "$sub/allowed_hosts/$peer_host" ] || fail "A's host $peer_host is still allowed"
	wait_for 60 "the target to refuse A's reconnect" refused "$peer_host"
	vmlog "  fence-lost-node: $(dmesg | grep "not allowed" | grep -c "$peer_host") refused reconnects from A so far"
	on_peer <<EOF
state_is_not $nqn live || fail "A reconnected: \$(ctrl_state $nqn)"
echo "A: \$(ctrl_state $nqn), still cut"
EOF

	phase "B stages: the filesystem is consistent and holds only what A wrote before the fence"
	staging="$W/kubelet/staging/$id"
	mkdir -p "$staging"
	ctl stage "$id" --staging-path "$staging" --fs ext4 --context-file "$W/fence.json" \
		--publish-context-file "$W/pub-main.json"
	[ "$(cat "$staging/before")" = "written before the fence" ] || fail "A's write before the fence is missing"
	lines=$(wc -l <"$staging/log")
	[ "$lines" -ge 3 ] || fail "A's log has $lines lines, expected its synced ones"
	[ ! -e "$staging/after" ] || fail "A's write after the fence reached the disk"
	echo "B reads $lines of A's log lines"
	echo "written by B" >"$staging/b"
	ctl unstage "$id" --staging-path "$staging"
	backing=$(backing_of "$id")
	[ -f "$backing" ] || fail "no backing file for $id under $W/rds"
	e2fsck -fn "$backing" >"$W/fsck.out" 2>&1 || fail "the filesystem is not consistent: $(tail -n 5 "$W/fsck.out")"
	# One pass over the image (1 GiB, sparse; a pass takes seconds under TCG).
	strings -n 8 "$backing" >"$W/image.txt"
	grep -q "written before the fence" "$W/image.txt" || fail "the image check is blind: it misses A's data"
	! grep -q "FENCED-$id" "$W/image.txt" || fail "A's write after the fence is in the backing file"
	on_peer <<EOF
state_is_not $nqn live || fail "A reconnected: \$(ctrl_state $nqn)"
EOF
	ctl unpublish "$id" --node "$NODE"
	target_lacks "$nqn" || fail "unpublished from B, still exported"
}

scenario_fence_export() {
	two_nodes_start
	fence_lost_node false
	phase "while the volume is unpublished, A stays cut and nothing reaches the disk"
	on_peer <<EOF
i=0
while [ \$i -lt 3 ]; do
	state_is_not $nqn live || fail "A reconnected to an unexported volume"
	sleep 1
	i=\$((i + 1))
done
EOF
	backing=$(backing_of "$id")
	! has_text "$backing" "FENCED-$id" || fail "A's write after the fence is in the backing file"
	phase "exported again (published to B): without host ACLs A reconnects"
	ctl --json publish "$id" --node "$NODE" >"$W/pub-main.json"
	on_peer <<EOF
wait_for 60 "A to reconnect" state_is $nqn live
echo "A: \$(ctrl_state $nqn): without --nvme-host-acl nothing keeps A out once the volume is exported"
EOF
	wait_for 60 "A's write held since the fence to land" has_text "$backing" "FENCED-$id"
	vmlog "  fence-export: A reconnected and its write held since the fence reached the disk"
	ctl unpublish "$id" --node "$NODE"
}

# rwx_script: the script that stages and publishes the shared block volume
# $id (from $W/vol.json and $W/pub.json) on whichever guest runs it; the
# block device is then $W/kubelet/pods/p1/<id> there.
rwx_script() {
	cat <<EOF
staging="\$W/kubelet/staging/$id"
tgt="\$W/kubelet/pods/p1/$id"
mkdir -p "\$staging" "\$W/kubelet/pods/p1"
ctl stage $id --staging-path "\$staging" --block --access rwx --context-file "\$W/vol.json" --publish-context-file "\$W/pub.json"
ctl publish-node $id --staging-path "\$staging" --target-path "\$tgt" --block --access rwx --context-file "\$W/vol.json"
[ -b "\$tgt" ] || fail "\$tgt is not a block device"
EOF
}

# block_write TGT OFFSET_KIB FILE / block_md5 TGT OFFSET_KIB: 64 KiB at an
# offset, past the page cache both ways (O_DIRECT), as a VM's disk does.
block_write() { dd if="$3" of="$1" bs=65536 count=1 seek="$(($2 / 64))" oflag=direct conv=notrunc,fsync 2>/dev/null; }
block_md5() { dd if="$1" bs=65536 count=1 skip="$(($2 / 64))" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }

scenario_rwx_block() {
	two_nodes_start --nvme-host-acl --allow-multi-node-block
	id=$(create rwx 256Mi --block --access rwx --param ctrlLossTmo=-1 --param reconnectDelay=1)
	[ -n "$id" ] || fail "no volume id"
	nqn=$(json_get nqn "$W/rwx.json")
	phase "published to both nodes, each with its own host NQN"
	ctl --json publish "$id" --node "$NODE" --block --access rwx >"$W/pub-main.json"
	ctl --json publish "$id" --node "$PEER_NODE" --block --access rwx >"$W/pub-peer.json"
	main_host=$(json_get hostNqn "$W/pub-main.json")
	peer_host=$(json_get hostNqn "$W/pub-peer.json")
	if [ -z "$main_host" ] || [ -z "$peer_host" ] || [ "$main_host" = "$peer_host" ]; then
		fail "host NQNs: main $main_host, peer $peer_host"
	fi
	sub="$NVMET/subsystems/$nqn"
	if [ ! -L "$sub/allowed_hosts/$main_host" ] || [ ! -L "$sub/allowed_hosts/$peer_host" ]; then
		fail "allowed_hosts is $(ls "$sub/allowed_hosts")"
	fi
	cp "$W/rwx.json" "$W/vol.json"
	cp "$W/pub-main.json" "$W/pub.json"
	rwx_script >"$W/attach.sh"
	# shellcheck disable=SC1091
	. "$W/attach.sh"
	tgt="$W/kubelet/pods/p1/$id"
	{
		peer_put "$W/rwx.json" vol.json
		peer_put "$W/pub-peer.json" pub.json
		rwx_script
		echo "[ \"\$(cat /sys/class/nvme/\$(ctrl_of $nqn)/hostnqn)\" = \"$peer_host\" ] || fail \"the peer connected as another host\""
	} | on_peer
	[ "$(cat "/sys/class/nvme/$(ctrl_of "$nqn")/hostnqn")" = "$main_host" ] || fail "main connected as another host"

	phase "what the peer writes, main reads; and back"
	sum=$(
		on_peer <<EOF | sed -n 's/^SUM //p'
head -c 65536 /dev/urandom >"\$W/pattern"
block_write "\$W/kubelet/pods/p1/$id" 0 "\$W/pattern"
echo "SUM \$(md5sum <"\$W/pattern" | cut -d' ' -f1)"
EOF
	)
	[ -n "$sum" ] || fail "the peer wrote nothing"
	[ "$(block_md5 "$tgt" 0)" = "$sum" ] || fail "main reads other bytes than the peer wrote"
	head -c 65536 /dev/urandom >"$W/pattern2"
	block_write "$tgt" 64 "$W/pattern2"
	sum2=$(md5sum <"$W/pattern2" | cut -d' ' -f1)
	got=$(
		on_peer <<EOF | sed -n 's/^SUM //p'
echo "SUM \$(block_md5 "\$W/kubelet/pods/p1/$id" 64)"
EOF
	)
	[ "$got" = "$sum2" ] || fail "the peer reads $got, main wrote $sum2"

	phase "the target keeps a connected host that leaves allowed_hosts (why unpublish cuts)"
	rm "$sub/allowed_hosts/$peer_host"
	got=$(
		on_peer <<EOF | sed -n 's/^SUM //p'
state_is $nqn live || fail "the peer lost its controller: \$(ctrl_state $nqn)"
echo "SUM \$(block_md5 "\$W/kubelet/pods/p1/$id" 0)"
EOF
	)
	[ "$got" = "$sum" ] || fail "off the allow list, the peer's read failed ($got): the target cut it by itself"
	ln -s "$NVMET/hosts/$peer_host" "$sub/allowed_hosts/$peer_host"

	phase "unpublished from the peer (it never detached): only the peer is cut off"
	ctl unpublish "$id" --node "$PEER_NODE"
	target_has "$nqn" || fail "unpublished from one of two nodes, no longer exported"
	[ ! -e "$sub/allowed_hosts/$peer_host" ] || fail "the peer's host is still allowed"
	wait_for 60 "the target to refuse the peer's reconnect" refused "$peer_host"
	wait_for 60 "main's controller to be live again" state_is "$nqn" live
	[ "$(block_md5 "$tgt" 0)" = "$sum" ] || fail "main lost the peer's bytes"
	head -c 65536 /dev/urandom >"$W/pattern3"
	block_write "$tgt" 128 "$W/pattern3"
	sum3=$(md5sum <"$W/pattern3" | cut -d' ' -f1)
	on_peer <<EOF
state_is_not $nqn live || fail "the peer is live again: \$(ctrl_state $nqn)"
# A read of main's new bytes: blocks (no usable path) or fails, never answers.
(block_md5 "\$W/kubelet/pods/p1/$id" 128 >"\$W/late.sum") </dev/null >/dev/null 2>&1 &
echo \$! >"\$W/late.bgpid"
sleep 3
if [ -s "\$W/late.sum" ] && [ "\$(cat "\$W/late.sum")" = "$sum3" ]; then
	fail "the peer read main's bytes after it was cut off"
fi
echo "peer: \$(ctrl_state $nqn), its read did not get through"
EOF
	[ "$(block_md5 "$tgt" 128)" = "$sum3" ] || fail "main cannot read back its own write"
	ctl unpublish-node "$id" --target-path "$tgt"
	ctl unstage "$id" --staging-path "$W/kubelet/staging/$id"
	ctl unpublish "$id" --node "$NODE"
	target_lacks "$nqn" || fail "unpublished from both nodes, still exported"
}
