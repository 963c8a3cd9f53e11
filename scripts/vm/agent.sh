#!/bin/sh
# shellcheck shell=dash
# The peer guest's agent (see scripts/vm-test.sh): busybox nc runs it for
# each connection on port 7000, with the connection as stdin and stdout.
# It reads a shell script up to a line `__END__`, runs it, and answers with
# the script's output and a last line `AGENT-RC <exit status>`. Only the
# main guest can reach it: the two guests' network has nobody else.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
script=$(mktemp /tmp/agent.XXXXXX)
while IFS= read -r line; do
	[ "$line" = __END__ ] && break
	printf '%s\n' "$line" >>"$script"
done
sh "$script" 2>&1
echo "AGENT-RC $?"
rm -f "$script"
