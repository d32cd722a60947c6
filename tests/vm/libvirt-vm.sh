#!/bin/bash
# seedbed-device behind a libvirt-managed guest: Debian's libvirtd (in
# session mode, as an unprivileged user: the build machine has no
# systemd as PID 1 to run the system daemon) defines and starts a TCG
# domain whose virtio-rng uses libvirt's EGD backend on the device's
# socket, reconnecting as seedbed-device(8) recommends.  The guest
# reads 64 KiB from /dev/hwrng, and the device's metrics name those
# bytes after the libvirt domain.
# shellcheck source=tests/vm/lib.sh
. "${top_srcdir:?}/tests/vm/lib.sh"
# shellcheck source=tests/vm/host-device.sh
. "$top_srcdir/tests/vm/host-device.sh"

command -v libvirtd >/dev/null || skip "libvirt-daemon is not installed"
command -v virsh >/dev/null || skip "libvirt-clients is not installed"
command -v setpriv >/dev/null || skip "setpriv is not installed"
getent group nogroup >/dev/null || skip "no group nogroup to run libvirtd in"
[ "$(id -u)" -eq 0 ] || skip "running libvirtd as another user needs root"

DOMAIN=seedbed-$$
# libvirt's session daemon, all of its state in a directory of its own,
# as nobody.  Short: libvirt's monitor socket path must fit sun_path.
LV=$(mktemp -d /tmp/sblv.XXXXXX)
chmod 0755 "$LV"
mkdir -p "$LV"/{home,run,config,cache,data}
chmod 0700 "$LV/run"
chown -R nobody:nogroup "$LV"
chmod 0755 "$T"
as_nobody() {
	# LIBVIRT_AUTOSTART=0: a client that comes too early must not start
	# a daemon of its own that nobody would stop.
	setpriv --reuid=nobody --regid=nogroup --clear-groups env LIBVIRT_AUTOSTART=0 HOME="$LV/home" XDG_RUNTIME_DIR="$LV/run" \
		XDG_CONFIG_HOME="$LV/config" XDG_CACHE_HOME="$LV/cache" XDG_DATA_HOME="$LV/data" "$@"
}
virsh_() { as_nobody virsh -q -c qemu:///session "$@"; }
cleanup() {
	virsh_ destroy "$DOMAIN" >/dev/null 2>&1 || true
	virsh_ undefine "$DOMAIN" >/dev/null 2>&1 || true
	[ -z "${LIBVIRTD:-}" ] || kill "$LIBVIRTD" 2>/dev/null || true
	[ -z "${DEVICE_PID:-}" ] || kill "$DEVICE_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	[ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T" "$LV"
}
trap cleanup EXIT

cat >"$T/read.sh" <<'SCRIPT'
modprobe virtio_rng
echo 0 >/sys/class/misc/hw_random/rng_quality 2>/dev/null
head -c 65536 /dev/hwrng >/tmp/data
echo "READ $(wc -c </tmp/data) $(cat /sys/class/misc/hw_random/rng_current)" >/dev/ttyS0
SCRIPT
bash "$top_srcdir/tests/vm/mkinitramfs.sh" "$T/initrd.gz" "$KDIR" "$AGENT" "$T/read.sh" || fail "building the initramfs"
cp "$KDIR/vmlinuz" "$T/vmlinuz"
chmod 0644 "$T/vmlinuz" "$T/initrd.gz"

# The domain's QEMU runs as nobody: the socket must let it in.
printf 'listen:\n  socket-mode: "0666"\n' >"$T/device.yaml"
start_device lv --config "$T/device.yaml" --egd "unix:$T/egd.sock"

as_nobody libvirtd --timeout 600 >"$T/libvirtd.log" 2>&1 &
LIBVIRTD=$!
for _ in $(seq 200); do virsh_ version >/dev/null 2>&1 && break; sleep 0.1; done
virsh_ version >/dev/null 2>&1 || { cat "$T/libvirtd.log"; fail "libvirtd did not start"; }

cat >"$T/domain.xml" <<XML
<domain type='qemu'>
  <name>$DOMAIN</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$T/vmlinuz</kernel>
    <initrd>$T/initrd.gz</initrd>
    <cmdline>$GUEST_CMDLINE</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <serial type='file'><source path='$LV/console.log'/><target port='0'/></serial>
    <rng model='virtio'>
      <backend model='egd' type='unix'>
        <source mode='connect' path='$T/egd.sock'/>
        <reconnect enabled='yes' timeout='1'/>
      </backend>
    </rng>
    <memballoon model='none'/>
  </devices>
</domain>
XML
virsh_ define "$T/domain.xml" >/dev/null || fail "libvirt refused the domain"
virsh_ start "$DOMAIN" >/dev/null || { cat "$T/libvirtd.log" "$LV"/cache/libvirt/qemu/log/*.log 2>/dev/null; fail "the domain did not start"; }

for _ in $(seq 1800); do grep -q '^READ ' "$LV/console.log" && break; sleep 0.5; done
line=$(grep -a '^READ ' "$LV/console.log" | tr -d '\r') || { tail -20 "$LV/console.log"; fail "the guest did not read"; }
echo "guest: $line"
[ "$line" = "READ 65536 virtio_rng.0" ] || fail "the guest read '$line'"
served=$(metric lv "seedbed_vm_bytes_total{vm=\"$DOMAIN\",transport=\"egd\"}")
echo "the device served $served bytes to '$DOMAIN'"
[ "$served" -ge 65536 ] || { cat "$T/lv.scrape"; fail "the metrics do not name the bytes after the domain"; }
stop_device
