#!/bin/bash
# shellcheck disable=SC2154 # moddir, initdir, hostonly, ... come from dracut
# seedbed: seed the kernel's RNG from the host's virtio-rng device early in
# the initramfs (seedbed-agent seed) and leave the record in /run/seedbed/
# for the real root, whose seedbed-seed.service then has nothing to do.

# The agent where a package (prefix /usr) or "make install" (default prefix
# /usr/local, which is not on dracut's PATH) put it.
seedbed_agent() {
    find_binary seedbed-agent || find_binary /usr/local/sbin/seedbed-agent
}

# called by dracut
check() {
    if ! seedbed_agent > /dev/null; then
        dinfo "dracut module 'seedbed' will not be installed, because command 'seedbed-agent' could not be found!"
        return 1
    fi

    # For this host only: wanted where there is a virtio entropy device
    # (virtio device ID 4, on any transport) to seed from.
    if [[ $hostonly ]] || [[ $mount_needs ]]; then
        grep -qsx 0x0004 /sys/bus/virtio/devices/*/device && return 0
        return 255
    fi

    # A generic initramfs (cloud images): the agent was installed to be used.
    return 0
}

# called by dracut
depends() {
    # systemd is optional: install() picks a unit or a hook.
    return 0
}

# called by dracut
installkernel() {
    # Not only what this host has loaded: the image may boot elsewhere, and
    # the agent loads virtio_rng itself.  The transports put the device on
    # the virtio bus; rng-core is a module on older kernels.
    hostonly='' instmods virtio_rng rng-core virtio_pci virtio_mmio virtio_ccw
}

# called by dracut
install() {
    local agent
    agent=$(seedbed_agent) || return 1

    # At a fixed path, with the libraries it links, so that the unit and
    # the hook need no substitution.
    inst "$agent" /usr/sbin/seedbed-agent

    # The image's configuration (on-timeout, sources, timeout), as the real
    # root has it when the initramfs is made; rd.seedbed.* on the kernel
    # command line overrides it.  None is needed.
    inst_multiple -o /etc/seedbed/seedbed.yaml "/etc/seedbed/seedbed.yaml.d/*.yaml"

    if dracut_module_included "systemd"; then
        inst_multiple -o "$systemdsystemunitdir"/modprobe@.service
        inst_simple "$moddir/seedbed-initrd-seed.service" \
            "$systemdsystemunitdir/seedbed-initrd-seed.service"
        $SYSTEMCTL -q --root "$initdir" add-wants sysinit.target seedbed-initrd-seed.service
    else
        # pre-udev: the first hook after /proc, /sys, /dev and /run are
        # mounted and the command line is parsed (rd.seedbed.*), before
        # udevd starts and long before any cryptsetup.
        inst_hook pre-udev 10 "$moddir/seedbed-seed.sh"
    fi
}
