#!/usr/bin/env bash
# The real-kernel lane: boots Debian's cloud kernel under QEMU (TCG) with an
# initramfs holding busybox, the kernel's NVMe/TCP host (nvme-tcp) and target
# (nvmet, nvmet-tcp) modules, the real nvme-cli and mkfs/resize tools, and
# this project's static binaries; inside, rds-sim plays the RDS and exports
# every disk through the kernel's own target (configfs), and the driver
# attaches them with the real nvme-cli. The guest runs the scenarios in
# scripts/vm/ and reports each one on the serial console; this script
# prints them and closes with one `N passed, M failed` line. The two-node
# scenarios get a second guest (the peer, a second NVMe host) on a private
# network with the first; see "the peer guest" below.
#
#   sudo scripts/vm-test.sh                  (after scripts/build-static.sh)
#   VM_SCENARIOS="lifecycle outage" sudo scripts/vm-test.sh    (a subset)
#
# Binaries: dist/rds-csi and dist/rds-sim, else $RDS_BIN_DIR (static).
# Downloads (Debian packages) and the unpacked kernel are cached under
# .tools/vm, so a warm run downloads nothing. When QEMU or the kernel cannot
# be had it says SKIPPED with the reason; under CI=true that is a failure.
# Exit status: 0 when every scenario passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

VM_TIMEOUT=${VM_TIMEOUT:-900}
VM_MEMORY=${VM_MEMORY:-1536}
VM_SCENARIOS=${VM_SCENARIOS:-}

say() { printf 'vm-test: %s\n' "$*"; }
skip() {
	printf '\n*** vm-test: SKIPPED: %s ***\n' "$*" >&2
	if [ "${CI:-}" = true ]; then
		echo "vm-test: under CI a skipped real-kernel lane is a failure" >&2
		echo "0 passed, 1 failed"
		exit 1
	fi
	exit 0
}

if [ "$(id -u)" -ne 0 ]; then
	echo "vm-test: run as root (sudo scripts/vm-test.sh): it installs Debian packages" >&2
	exit 2
fi

mkdir -p "$root/.tools"
cache="$(cd "$root/.tools" && pwd -P)/vm"
mkdir -p "$cache"

# --- Debian packages ---------------------------------------------------------
# qemu-system-x86: the VM. busybox-static: the guest's shell and tools.
# nvme-cli: the real host tool. e2fsprogs, xfsprogs, util-linux: mkfs, resize,
# blkid, fsck (copied into the guest with their libraries). cpio: the
# initramfs. kmod: modinfo (module dependencies).
packages=(qemu-system-x86 busybox-static nvme-cli cpio e2fsprogs xfsprogs btrfs-progs util-linux kmod file)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || true
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		skip "cannot install ${missing[*]} from Debian"
fi
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not found after installing qemu-system-x86"

# --- the kernel -----------------------------------------------------------------
# The package that linux-image-cloud-amd64 depends on now; the cached one
# when the package lists cannot say (offline).
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$kpkg" ]; then
	apt-get update -qq >/dev/null 2>&1 || true
	kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
fi
if [ -z "$kpkg" ]; then
	kpkg=$(find "$cache/kernel" -mindepth 1 -maxdepth 1 -name 'linux-image-*' -printf '%f\n' 2>/dev/null | sort | tail -n 1)
fi
[ -n "$kpkg" ] || skip "cannot find the cloud kernel package (apt-cache depends linux-image-cloud-amd64 says nothing, nothing cached)"
kdir="$cache/kernel/$kpkg"
if [ ! -f "$kdir/.unpacked" ]; then
	say "downloading $kpkg from Debian"
	mkdir -p "$cache/debs"
	rm -f "$cache/debs/$kpkg"_*.deb
	(cd "$cache/debs" && apt-get download "$kpkg" >/dev/null 2>&1) || skip "cannot download $kpkg"
	deb=$(ls "$cache/debs/$kpkg"_*.deb 2>/dev/null | head -n 1)
	[ -n "$deb" ] || skip "apt-get download left no $kpkg package"
	rm -rf "$kdir"
	mkdir -p "$kdir"
	dpkg-deb -x "$deb" "$kdir" || skip "cannot unpack $deb"
	rm -f "$deb"
	touch "$kdir/.unpacked"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$vmlinuz" ] || skip "$kpkg holds no vmlinuz"
kver=${vmlinuz##*/vmlinuz-}
moddir="$kdir/lib/modules/$kver"
say "kernel $kver (cached in ${kdir#"$root/"})"

# --- the project's binaries -------------------------------------------------------
bindir=""
if [ -x dist/rds-csi ] && [ -x dist/rds-sim ]; then
	bindir="$root/dist"
else
	if [ -z "${RDS_BIN_DIR:-}" ]; then
		# shellcheck source=scripts/env.sh
		. scripts/env.sh
	fi
	[ -x "$RDS_BIN_DIR/rds-csi" ] && [ -x "$RDS_BIN_DIR/rds-sim" ] && bindir="$RDS_BIN_DIR"
fi
if [ -z "$bindir" ]; then
	echo "vm-test: no rds-csi and rds-sim binaries in dist/ or \$RDS_BIN_DIR: run scripts/build-static.sh first" >&2
	echo "0 passed, 1 failed"
	exit 1
fi
for b in rds-csi rds-sim; do
	case "$(file -b "$bindir/$b")" in
	*"statically linked"* | *"static-pie linked"*) ;;
	*)
		echo "vm-test: $bindir/$b is not static; the guest has no matching libc for it" >&2
		echo "0 passed, 1 failed"
		exit 1
		;;
	esac
done
say "binaries from ${bindir#"$root/"}"

# --- the initramfs ------------------------------------------------------------------
work=$(mktemp -d /tmp/rds-csi-vm.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
rootfs="$work/root"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc/nvme,proc,sys,dev,tmp,run,mnt,vm,lib/modules}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
	[ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
cp "$bindir/rds-csi" "$bindir/rds-sim" "$rootfs/usr/bin/"

# Real tools, each with the libraries ldd lists and the loader.
copy_with_libs() {
	local tool=$1 path
	path=$(command -v "$tool" 2>/dev/null || true)
	[ -n "$path" ] || skip "the tool $tool is not installed"
	cp -L "$path" "$rootfs/usr/sbin/$tool"
	ldd "$path" 2>/dev/null | awk '/=>/ { print $3 } !/=>/ && $1 ~ /^\// { print $1 }' | while read -r lib; do
		[ -n "$lib" ] && [ -f "$lib" ] || continue
		mkdir -p "$rootfs$(dirname "$lib")"
		[ -e "$rootfs$lib" ] || cp -L "$lib" "$rootfs$lib"
	done
}
for tool in nvme mkfs.ext4 mkfs.xfs blkid resize2fs xfs_growfs e2fsck xfs_repair; do
	copy_with_libs "$tool"
done
# Btrfs tools for the snapshot scenario (rds-sim runs `btrfs subvolume`);
# without them that scenario says SKIPPED, the others run.
for tool in mkfs.btrfs btrfs; do
	if command -v "$tool" >/dev/null 2>&1; then
		copy_with_libs "$tool"
	else
		say "no $tool here (install btrfs-progs): the snapshot scenario will be SKIPPED"
	fi
done
# The loader at the path the binaries name (and the usual one).
[ -e "$rootfs/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$rootfs/lib64/"

# Modules, in dependency order (modinfo's `depends`), each loaded once.
declare -A loaded=()
order=()
find_module() { find "$moddir/kernel" -name "$1.ko" -o -name "${1//-/_}.ko" -o -name "${1//_/-}.ko" | head -n 1; }
add_module() {
	local name=$1 file dep
	[ -n "${loaded[$name]:-}" ] && return 0
	file=$(find_module "$name")
	[ -n "$file" ] || skip "kernel $kver has no module $name"
	loaded[$name]=1
	for dep in $(modinfo -F depends "$file" | tr ',' ' '); do
		add_module "$dep"
	done
	cp "$file" "$rootfs/lib/modules/"
	order+=("$(basename "$file")")
}
for m in configfs nvmet nvmet-tcp nvme-fabrics nvme-tcp libcrc32c xfs; do
	add_module "$m"
done
# The snapshot scenario's Btrfs on a loop device: btrfs with its
# dependencies (zstd_compress, raid6_pq, xor, libcrc32c, from modinfo), the
# checksum modules it may ask for, and loop. Optional: a kernel without
# them leaves that scenario SKIPPED (said loudly), not the whole lane.
for m in loop btrfs xxhash_generic blake2b_generic; do
	if [ -n "$(find_module "$m")" ]; then
		add_module "$m"
	else
		say "kernel $kver has no module $m: the snapshot scenario will be SKIPPED"
	fi
done
# The two-node scenarios' private network between the guests: virtio-net
# (with virtio-pci and their dependencies). Optional like the above: a
# kernel without them leaves those scenarios SKIPPED.
for m in virtio_pci virtio_net; do
	if [ -n "$(find_module "$m")" ]; then
		add_module "$m"
	else
		say "kernel $kver has no module $m: the two-node scenarios will be SKIPPED"
	fi
done
printf '%s\n' "${order[@]}" >"$rootfs/lib/modules/order"

cp scripts/vm/init "$rootfs/init"
cp scripts/vm/*.sh "$rootfs/vm/"
chmod +x "$rootfs/init" "$rootfs"/vm/*.sh
echo "$VM_SCENARIOS" >"$rootfs/vm/scenarios"
(cd "$rootfs" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"
say "initramfs $(du -m "$work/initrd.gz" | cut -f1) MiB; booting (TCG, ${VM_MEMORY} MiB, limit ${VM_TIMEOUT}s)"

# --- the peer guest ------------------------------------------------------------------------
# The two-node scenarios need a second NVMe host: one kernel is one host
# (two node plugins in one guest share its controllers, and native
# multipath merges their paths). The peer boots the same initramfs with
# rdsvm=peer: it runs no scenario, only an agent on TCP port 7000 that the
# main guest sends shell scripts to (scripts/vm/agent.sh). The two talk over
# a private network: QEMU's UDP socket backend between two host loopback
# ports, each guest with a virtio NIC (main 10.99.0.1, peer 10.99.0.2);
# nothing else is on it. Booted only when a two-node scenario is selected.
two_node="fence-lost-node fence-export rwx-block"
need_peer=false
if [ -z "$(echo "$VM_SCENARIOS" | tr -d ' ')" ]; then
	need_peer=true
else
	for n in $two_node; do
		echo " $VM_SCENARIOS " | grep -q " $n " && need_peer=true
	done
fi
main_nic=(-nic none)
peer_pid=""
peer_console="$work/peer-console.log"
if $need_peer; then
	# Two UDP ports for this run (a random pair, so two lanes on one host
	# do not meet).
	p1=$((20000 + RANDOM % 20000))
	p2=$((p1 + 1))
	nic() { echo "socket,id=n0,udp=127.0.0.1:$2,localaddr=127.0.0.1:$1"; }
	main_nic=(-netdev "$(nic "$p1" "$p2")" -device virtio-net-pci,netdev=n0,mac=52:54:00:99:00:01)
	timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 768 \
		-nographic -no-reboot -netdev "$(nic "$p2" "$p1")" -device virtio-net-pci,netdev=n0,mac=52:54:00:99:00:02 \
		-kernel "$vmlinuz" -initrd "$work/initrd.gz" \
		-append "console=ttyS0 loglevel=4 panic=-1 rdinit=/init rdsvm=peer" </dev/null \
		>"$peer_console" 2>&1 &
	peer_pid=$!
	say "peer guest booting (UDP ports $p1/$p2)"
fi
stop_peer() {
	if [ -n "$peer_pid" ]; then
		kill "$peer_pid" 2>/dev/null || true
		wait "$peer_pid" 2>/dev/null || true
		peer_pid=""
	fi
}
cleanup() {
	stop_peer
	rm -rf "$work"
}

# --- boot and collect -------------------------------------------------------------------
# The guest prints `VMTEST <word> ...` lines; everything else is the console.
console="$work/console.log"
keep_log="${VM_CONSOLE_LOG:-$cache/last-console.log}"
started=$(date +%s)
set +e
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m "$VM_MEMORY" \
	-nographic -no-reboot "${main_nic[@]}" \
	-kernel "$vmlinuz" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 loglevel=4 panic=-1 rdinit=/init rdsvm=main" </dev/null 2>&1 |
	sed -u 's/\r$//; s/\x1b\[[0-9;?]*[a-zA-Z]//g; s/.*\(VMTEST \|VMLOG \)/\1/' | tee "$console" |
	grep --line-buffered -E '^(VMTEST|VMLOG) ' | sed -u 's/^VMTEST /vm: /; s/^VMLOG /vm|   /'
qemu_rc=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - started))
mkdir -p "$(dirname "$keep_log")" 2>/dev/null && cp "$console" "$keep_log" 2>/dev/null || true
if [ -n "$peer_pid" ]; then
	stop_peer
	# The peer's own lines (its boot, its agent's diagnostics).
	sed 's/\r$//; s/\x1b\[[0-9;?]*[a-zA-Z]//g; s/.*\(VMLOG \)/\1/' "$peer_console" |
		sed -n 's/^VMLOG /vm-peer|   /p'
	cp "$peer_console" "${keep_log%.log}-peer.log" 2>/dev/null || true
fi

passed=$(grep -c '^VMTEST PASS ' "$console" || true)
skipped=$(grep -c '^VMTEST SKIPPED ' "$console" || true)
if [ "$skipped" -gt 0 ]; then
	printf '\n*** vm-test: %s scenario(s) SKIPPED: ***\n' "$skipped" >&2
	grep '^VMTEST SKIPPED ' "$console" | sed 's/^VMTEST /    /' >&2
fi
failed=$(grep -c '^VMTEST FAIL ' "$console" || true)
if ! grep -q '^VMTEST DONE' "$console"; then
	if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
		say "the VM did not finish within ${VM_TIMEOUT}s and was killed: counted as a failure"
	else
		say "the VM stopped before the scenarios finished (qemu exit $qemu_rc): counted as a failure"
	fi
	say "last console lines (whole console in ${keep_log#"$root/"}):"
	tail -n 40 "$console" | sed 's/^/vm|   /'
	failed=$((failed + 1))
fi
say "VM ran ${elapsed}s (boot, scenarios, power off)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
