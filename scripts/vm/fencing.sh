#!/bin/sh
# shellcheck shell=dash
# Fencing on the real kernel target: a volume is exported only while
# published, and with --nvme-host-acl rds-sim's kernel target admits only the
# host NQNs of the nodes it is published to (attr_allow_any_host=0 and
# allowed_hosts/), so another host's connect fails with the kernel's EIO.
# One guest is one host: the two-node scenarios (a cut-off node A and a new
# owner B; RWX block on two nodes) run on two guests, in twonode.sh.

# connect_as HOSTNQN HOSTID NQN: nvme connect with that host identity.
connect_as() {
	nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$3" -q "$1" -I "$2"
}

scenario_host_acl() {
	sim_start
	driver_start --nvme-host-acl
	id=$(create acl 1Gi --fs ext4)
	[ -n "$id" ] || fail "no volume id"
	nqn=$(json_get nqn "$W/acl.json")
	target_lacks "$nqn" || fail "created, but $nqn is exported before any publish"
	ctl --json publish "$id" --node "$NODE" >"$W/pub.json"
	host=$(json_get hostNqn "$W/pub.json")
	hid=$(json_get hostId "$W/pub.json")
	case "$host" in nqn.2014-08.org.nvmexpress:uuid:*) ;; *) fail "publish context has no host NQN: $(cat "$W/pub.json")" ;; esac
	target_has "$nqn" || fail "published, but $nqn is not exported"
	sub="$NVMET/subsystems/$nqn"
	[ "$(cat "$sub/attr_allow_any_host")" = 0 ] || fail "the subsystem allows any host"
	[ -L "$sub/allowed_hosts/$host" ] || fail "$host is not in allowed_hosts: $(ls "$sub/allowed_hosts")"
	say "a host that is not allowed is refused"
	other=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-5000-8000-000000000001
	if connect_as "$other" 00000000-0000-5000-8000-000000000001 "$nqn" >"$W/other.out" 2>&1; then
		fail "a host not allowed connected"
	fi
	tr '[:upper:]' '[:lower:]' <"$W/other.out" | grep -q "input/output error" || fail "not EIO: $(cat "$W/other.out")"
	dmesg | grep -q "is not allowed" || vmlog "  host-acl: the kernel did not log 'is not allowed'"
	not_connected "$nqn" || fail "$nqn connected for a host not allowed"
	say "the published node's identity gets in"
	connect_as "$host" "$hid" "$nqn" || fail "the allowed host was refused"
	wait_for 30 "$nqn to connect" connected "$nqn"
	nvme disconnect -n "$nqn" >/dev/null
	wait_for 30 "$nqn to disconnect" not_connected "$nqn"
	say "the node plugin stages with the identity its publish assigned"
	staging="$W/kubelet/staging/$id"
	mkdir -p "$staging"
	ctl stage "$id" --staging-path "$staging" --fs ext4 --context-file "$W/acl.json" \
		--publish-context-file "$W/pub.json"
	connected "$nqn" || fail "staged, but $nqn is not connected"
	got=$(cat "/sys/class/nvme/$(ctrl_of "$nqn")/hostnqn")
	[ "$got" = "$host" ] || fail "the node connected as $got, not $host"
	ctl unstage "$id" --staging-path "$staging"
	not_connected "$nqn" || fail "$nqn still connected after unstage"
	say "unpublished: off the network"
	ctl unpublish "$id" --node "$NODE"
	target_lacks "$nqn" || fail "unpublished, still exported"
	if connect_as "$host" "$hid" "$nqn" >"$W/after.out" 2>&1; then
		fail "connected after the unpublish"
	fi
	ctl delete "$id" >/dev/null
}
