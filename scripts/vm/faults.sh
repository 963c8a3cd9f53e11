#!/bin/sh
# shellcheck shell=dash
# Scenarios where things break: the RDS's export vanishes for a while
# (outage), for longer than ctrl_loss_tmo (give-up), the RDS restarts
# (rds-restart), connections the driver finds at start (orphans), the
# node plugin is killed during mkfs (mkfs-kill), connects that cannot work
# (connect-fail).

# vol NAME SIZE FS [params...]: creates, publishes to this node, stages and
# publishes into a pod directory. Sets id, nqn, ctx, staging, tgt.
vol() {
	n=$1
	size=$2
	fs=$3
	shift 3
	id=$(create "$n" "$size" --fs "$fs" "$@")
	[ -n "$id" ] || fail "no volume id for $n"
	ctx="$W/$n.json"
	nqn=$(json_get nqn "$ctx")
	ctl publish "$id" --node "$NODE" >/dev/null
	staging="$W/kubelet/staging/$id"
	tgt="$W/kubelet/pods/p1/$id"
	mkdir -p "$staging" "$W/kubelet/pods/p1"
	ctl stage "$id" --staging-path "$staging" --fs "$fs" --context-file "$ctx" >/dev/null
	ctl publish-node "$id" --staging-path "$staging" --target-path "$tgt" --context-file "$ctx" >/dev/null
}
vol_gone() {
	ctl unpublish-node "$id" --target-path "$tgt" >/dev/null
	ctl unstage "$id" --staging-path "$staging" >/dev/null
	ctl unpublish "$id" --node "$NODE" >/dev/null
	ctl delete "$id" >/dev/null
}

# A writer appending numbered lines to FILE every 0.2 s until $W/stop.
writer_start() {
	rm -f "$W/stop" "$W/writer.err" "$W/writer.last"
	(
		i=0
		while [ ! -f "$W/stop" ]; do
			i=$((i + 1))
			echo "line $i" >>"$1" || echo "write $i failed" >>"$W/writer.err"
			echo "$i" >"$W/writer.last"
			sleep 0.2
		done
	) &
	echo $! >"$W/writer.bgpid"
	wait_for 30 "the writer to start" sh -c "[ \$(cat $W/writer.last 2>/dev/null || echo 0) -ge 3 ]"
}
writer_count() { cat "$W/writer.last" 2>/dev/null || echo 0; }
writer_stop() {
	touch "$W/stop"
	pid=$(cat "$W/writer.bgpid")
	wait_for 30 "the writer to stop" sh -c "! kill -0 $pid"
	rm -f "$W/writer.bgpid"
	[ ! -f "$W/writer.err" ] || fail "the writer saw failures: $(head -n 3 "$W/writer.err")"
	n=$(writer_count)
	timeout 120 sync "$1" || fail "sync of $1 did not complete"
	awk -v n="$n" '$2 != NR { bad = 1 } END { exit (bad || NR != n) }' "$1" ||
		fail "the writer's $n lines are not all there in order ($(wc -l <"$1") lines)"
	say "the writer's $n lines are intact"
}
# wait_seconds_since T SECONDS: sleeps until SECONDS have passed since T (now_us).
wait_seconds_since() {
	while awk -v s="$(since "$1")" -v w="$2" 'BEGIN { exit !(s < w) }'; do sleep 1; done
}

scenario_outage() {
	sim_start
	driver_start
	vol outage 1Gi ext4 --param ctrlLossTmo=-1 --param reconnectDelay=2
	ctrl0=$(ctrl_of "$nqn")
	connects0=$(grep -c "connected $nqn" "$W/driver.log" || true)
	writer_start "$tgt/log"
	say "outage begins: the export is unlinked from its port for 30 s"
	t=$(now_us)
	outage true
	wait_for 60 "the controller to leave live" state_is_not "$nqn" live
	state=$(ctrl_state "$nqn")
	wait_for 60 "stats to say abnormal" stats_abnormal "$id" "$tgt"
	msg=$(json_get message "$W/stats.json")
	vmlog "  outage: controller $state after $(since "$t")s; stats: $msg"
	echo "$msg" | grep -q "connecting\|resetting\|$state" || fail "the message does not name the controller state: $msg"
	wait_seconds_since "$t" 30
	outage false
	say "outage ends after $(since "$t")s"
	wait_for 60 "the controller to be live again" state_is "$nqn" live
	vmlog "  outage: live again $(since "$t")s after it began"
	wait_for 30 "stats to say healthy" stats_healthy "$id" "$tgt"
	writer_stop "$tgt/log"
	mount_opts "$tgt" | grep -q '^rw' || fail "the mount is $(mount_opts "$tgt")"
	mount_opts "$staging" | grep -q '^rw' || fail "the staging mount is $(mount_opts "$staging")"
	! dmesg | grep -qi "remounting filesystem read-only\|ext4.*error" || fail "ext4 reported errors: $(dmesg | grep -i 'read-only\|ext4' | tail -n 3)"
	[ "$(ctrl_of "$nqn")" = "$ctrl0" ] || fail "the controller changed from $ctrl0 to $(ctrl_of "$nqn"): something reconnected anew"
	[ "$(grep -c "connected $nqn" "$W/driver.log" || true)" = "$connects0" ] || fail "the driver connected again"
	vol_gone
}

scenario_give_up() {
	sim_start
	driver_start
	vol giveup 1Gi ext4 --param ctrlLossTmo=5 --param reconnectDelay=1
	echo before >"$tgt/file"
	sync "$tgt/file"
	t=$(now_us)
	outage true
	say "outage begins; ctrl_loss_tmo is 5 s"
	wait_for 90 "the kernel to give the controller up" no_ctrl "$nqn"
	vmlog "  give-up: the kernel removed the controller $(since "$t")s into the outage"
	wait_for 60 "stats to say abnormal" stats_abnormal "$id" "$tgt"
	msg=$(json_get message "$W/stats.json")
	vmlog "  give-up: stats: $msg"
	# The message names the volume's NQN and says the kernel gave it up.
	case "$msg" in
	*"$nqn"*"gave the controller up"*) ;;
	*) fail "stats message does not say the kernel gave $nqn up: $msg" ;;
	esac
	ctl --timeout 120 unpublish-node "$id" --target-path "$tgt"
	ctl --timeout 120 unstage "$id" --staging-path "$staging"
	! mounted "$tgt" || fail "$tgt still mounted"
	! mounted "$staging" || fail "$staging still mounted"
	wait_for 30 "the subsystem to leave sysfs" not_connected "$nqn"
	outage false
	say "the RDS serves again; staging anew"
	ctl stage "$id" --staging-path "$staging" --fs ext4 --context-file "$ctx"
	ctl publish-node "$id" --staging-path "$staging" --target-path "$tgt" --context-file "$ctx"
	state_is "$nqn" live || fail "not live after the new stage"
	grep -q before "$tgt/file" || fail "the file written before the outage is gone"
	vol_gone
	target_lacks "$nqn" || fail "$nqn left in configfs"
}

scenario_rds_restart() {
	sim_start
	driver_start
	vol restart 1Gi ext4 --param ctrlLossTmo=-1 --param reconnectDelay=2
	writer_start "$tgt/log"
	say "rds-sim killed (SIGKILL); the reboot takes the kernel target's state with it"
	sim_kill KILL
	nvmet_wipe
	t=$(now_us)
	wait_for 60 "the controller to leave live" state_is_not "$nqn" live
	sim_start
	target_has "$nqn" || fail "the restarted rds-sim did not restore $nqn"
	wait_for 60 "the controller to be live again" state_is "$nqn" live
	vmlog "  rds-restart: live again $(since "$t")s after the RDS went down"
	n=$(writer_count)
	wait_for 30 "I/O to resume" sh -c "[ \$(cat $W/writer.last) -ge $((n + 5)) ]"
	timeout 60 sync "$tgt/log" || fail "sync did not complete after the restart"
	say "SIGKILL again, this time the kernel state survives: rds-sim adopts it"
	sim_kill KILL
	sim_start
	[ "$(ls "$NVMET/ports" | wc -l)" -eq 1 ] || fail "ports after adoption: $(ls "$NVMET/ports")"
	state_is "$nqn" live || fail "not live after adoption: $(ctrl_state "$nqn")"
	grep -q "adopted 1 subsystem" "$W/sim.log" || fail "rds-sim did not say it adopted its subsystem"
	writer_stop "$tgt/log"
	vol_gone
	target_lacks "$nqn" || fail "$nqn left in configfs"
}

scenario_orphans() {
	sim_start
	# About the node alone: volumes connected by hand without a publish.
	driver_start --export-always
	vol staged 1Gi ext4
	nqn_staged=$nqn
	hostnqn=$(cat /etc/nvme/hostnqn)
	create orphan 1Gi --fs ext4 >/dev/null
	nqn_orphan=$(json_get nqn "$W/orphan.json")
	create held 1Gi --fs ext4 >/dev/null
	nqn_held=$(json_get nqn "$W/held.json")
	say "by hand: a foreign subsystem on port 4421"
	foreign=nqn.2024-01.io.example:foreign
	truncate -s 64M /tmp/foreign.img
	mkdir "$NVMET/subsystems/$foreign" "$NVMET/subsystems/$foreign/namespaces/1"
	echo 1 >"$NVMET/subsystems/$foreign/attr_allow_any_host"
	echo /tmp/foreign.img >"$NVMET/subsystems/$foreign/namespaces/1/device_path"
	echo 1 >"$NVMET/subsystems/$foreign/namespaces/1/buffered_io"
	echo 1 >"$NVMET/subsystems/$foreign/namespaces/1/enable"
	mkdir "$NVMET/ports/99"
	echo tcp >"$NVMET/ports/99/addr_trtype"
	echo ipv4 >"$NVMET/ports/99/addr_adrfam"
	echo 127.0.0.1 >"$NVMET/ports/99/addr_traddr"
	echo 4421 >"$NVMET/ports/99/addr_trsvcid"
	ln -s "$NVMET/subsystems/$foreign" "$NVMET/ports/99/subsystems/$foreign"
	for n in "$nqn_orphan" "$nqn_held"; do
		nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$n" -q "$hostnqn"
	done
	nvme connect -t tcp -a 127.0.0.1 -s 4421 -n "$foreign" -q "$hostnqn"
	wait_for 30 "the held namespace" has_dev "$nqn_held"
	held_dev=$(dev_of "$nqn_held")
	(
		exec 3<"$held_dev"
		exec sleep 100000
	) &
	echo $! >"$W/holder.bgpid"
	say "the node plugin restarts"
	driver_kill TERM
	driver_start --export-always
	wait_for 30 "the orphan to be disconnected" not_connected "$nqn_orphan"
	state_is "$foreign" live || fail "the foreign subsystem was disconnected"
	state_is "$nqn_staged" live || fail "the staged volume was disconnected"
	mounted "$staging" || fail "the staged volume's mount is gone"
	orphan_log=$(grep -i "orphan" "$W/driver.log" | tail -n 3 | tr '\n' ' ')
	vmlog "  orphans: driver said: $orphan_log"
	# The subsystem of an open namespace outlives its controllers in sysfs:
	# kept means its controller is still there and live.
	state_is "$nqn_held" live || fail "the namespace held open by a process lost its controller ($(ctrl_state "$nqn_held"))"
	kill "$(cat "$W/holder.bgpid")"
	rm -f "$W/holder.bgpid"
	nvme disconnect -n "$foreign" >/dev/null
	nvme disconnect -n "$nqn_held" >/dev/null
	vol_gone
}

scenario_mkfs_kill() {
	sim_start
	driver_start
	id=$(create big 100Gi --fs ext4)
	ctx="$W/big.json"
	nqn=$(json_get nqn "$ctx")
	ctl publish "$id" --node "$NODE" >/dev/null
	staging="$W/kubelet/staging/$id"
	mkdir -p "$staging"
	ctl --timeout 300 stage "$id" --staging-path "$staging" --fs ext4 --context-file "$ctx" >"$W/stage1.out" 2>&1 &
	echo $! >"$W/stage1.bgpid"
	wait_for 120 "mkfs.ext4 to start" pidof mkfs.ext4
	mpid=$(pidof mkfs.ext4)
	say "mkfs.ext4 runs as $mpid: kill -9 of the node plugin"
	driver_kill KILL
	t=$(now_us)
	if ! (wait_for 30 "mkfs to die" sh -c "! kill -0 $mpid"); then
		kill -9 "$mpid" 2>/dev/null
		fail "mkfs.ext4 ($mpid) outlived the killed node plugin by 30 s"
	fi
	vmlog "  mkfs-kill: mkfs died $(since "$t")s after the plugin"
	lines=$(wc -l <"$W/driver.log")
	driver_start
	ctl --timeout 300 stage "$id" --staging-path "$staging" --fs ext4 --context-file "$ctx"
	formats=$(tail -n +"$((lines + 1))" "$W/driver.log" | grep -c "formatted " || true)
	[ "$formats" -eq 1 ] || fail "the restarted plugin formatted $formats times"
	mounted "$staging" || fail "not mounted"
	ctl unstage "$id" --staging-path "$staging"
	say "checking the filesystem"
	nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$nqn" -q "$(cat /etc/nvme/hostnqn)"
	wait_for 30 "the device" has_dev "$nqn"
	e2fsck -fn "$(dev_of "$nqn")" || fail "e2fsck found problems"
	nvme disconnect -n "$nqn"
	ctl unpublish "$id" --node "$NODE" >/dev/null
	ctl delete "$id" >/dev/null
}

scenario_connect_fail() {
	sim_start
	# About the node alone: "served" keeps port 4420 listening unpublished.
	driver_start --connect-attempts 3 --export-always
	# A served volume keeps the port listening.
	create served 1Gi --fs ext4 >/dev/null
	create gone 1Gi --fs ext4 >/dev/null
	id_gone=$(json_get volume_id "$W/gone.json")
	nqn_gone=$(json_get nqn "$W/gone.json")
	ctl delete "$id_gone" >/dev/null
	target_lacks "$nqn_gone" || fail "deleted, still exported"
	id_far=$(json_get volume_id "$W/served.json")
	nqn_far=$(json_get nqn "$W/served.json")
	sed 's/"nvmePort": *"4420"/"nvmePort": "4499"/' "$W/served.json" >"$W/far.json"
	grep -q '"nvmePort": "4499"' "$W/far.json" || fail "cannot point the context at port 4499"
	mkdir -p "$W/kubelet/st1" "$W/kubelet/st2"
	for case in refused not-exported; do
		if [ "$case" = refused ]; then
			cid=$id_far cctx=$W/far.json cnqn=$nqn_far want="connection refused" st=$W/kubelet/st1
		else
			cid=$id_gone cctx=$W/gone.json cnqn=$nqn_gone want="input/output error" st=$W/kubelet/st2
		fi
		t=$(now_us)
		if ctl --timeout 120 stage "$cid" --staging-path "$st" --fs ext4 --context-file "$cctx" >"$W/$case.out" 2>&1; then
			fail "$case: the stage succeeded"
		fi
		secs=$(since "$t")
		msg=$(tr '\n' ' ' <"$W/$case.out")
		vmlog "  connect-fail $case: ${secs}s: $msg"
		echo "$msg" | tr '[:upper:]' '[:lower:]' | grep -q "$want" || fail "$case: the error does not say \"$want\""
		echo "$msg" | grep -q "3 attempt" || fail "$case: not 3 attempts"
		# Backoff 1 s then 2 s (±10 %) between the three attempts.
		awk -v s="$secs" 'BEGIN { exit !(s >= 2.7) }' || fail "$case: 3 attempts in ${secs}s: no backoff"
		attempts=$(grep -c "connect $cnqn attempt" "$W/driver.log" || true)
		[ "$attempts" -ge 3 ] || fail "$case: the log shows $attempts attempts"
		not_connected "$cnqn" || fail "$case: $cnqn stayed connected"
		! mounted "$st" || fail "$case: mounted"
	done
	[ -z "$(ls /sys/class/nvme 2>/dev/null)" ] || fail "controllers left: $(ls /sys/class/nvme)"
}
