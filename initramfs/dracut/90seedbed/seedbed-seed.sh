#!/bin/sh
# seedbed, dracut without systemd: seed the kernel's RNG before udevd
# starts.  Sourced by /init (pre-udev hook): no exit, no stray variables.

# shellcheck source=/dev/null
type warn > /dev/null 2>&1 || . /lib/dracut-lib.sh

# The agent finds the device on /sys/bus/virtio, which stays empty until a
# transport driver is loaded, and udev's coldplug has not run yet.  A
# driver that is built in or absent is fine (-q).
modprobe -qab virtio_pci virtio_mmio

# The agent's exit status carries the policy (entropy.on-timeout): 0 ready
# or "continue", 4 not ready and "fail".  A failing gate does not stop the
# boot here: nothing in this initramfs makes a long-lived secret, and
# seedbed-firstboot.service in the real root passes the same gate again
# before it makes any key or volume, and refuses if it fails again.
# Dropping a cloud guest into an emergency shell would only make it
# unreachable.  The record in /run/seedbed/ survives switch_root.
seedbed_status=0
/usr/sbin/seedbed-agent seed || seedbed_status=$?
case $seedbed_status in
    0) ;;
    4) warn "seedbed: the kernel's random number generator is not ready; booting on, no secret is made until it is" ;;
    *) warn "seedbed: 'seedbed-agent seed' failed with status $seedbed_status; booting on" ;;
esac
unset seedbed_status
