#!/bin/bash
# The command line: help, version, usage errors with status 2, status
# without a record, and a configuration dump that reads back as itself.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

run 0 "$AGENT" --help
expect_in "$T/out" "seed "
expect_in "$T/out" "status [--json]"
run 0 "$AGENT" --version
grep -qE '^seedbed-agent [0-9]+\.[0-9]+' "$T/out" || fail "--version printed '$(cat "$T/out")'"

run 2 "$AGENT"
expect_in "$T/err" "No command given"
run 2 "$AGENT" frobnicate
expect_in "$T/err" "Unknown command 'frobnicate'"
run 2 "$AGENT" --frobnicate seed
run 2 "$AGENT" seed extra
expect_in "$T/err" "Unexpected argument 'extra'"
run 2 "$AGENT" config
expect_in "$T/err" "'config' needs --dump"
run 2 "$AGENT" --json seed
run 2 "$AGENT" --root relative/path seed
expect_in "$T/err" "--root needs an absolute path"
run 2 "$AGENT" --log-level=loud seed

mkdir -p "$T/root"
run 6 "$AGENT" --root "$T/root" status
expect_in "$T/err" "No record at '$T/root/run/seedbed/seed.json'"
run 6 "$AGENT" --record "$T/nothing.json" status --json

# The dump is valid configuration: fed back, it dumps the same.
mkdir -p "$T/root/etc/seedbed/seedbed.yaml.d"
printf 'entropy:\n  timeout: 7s\n  sources: [cpu, virtio]\n' >"$T/root/etc/seedbed/seedbed.yaml"
printf 'entropy:\n  virtio:\n    quality: 512\n' >"$T/root/etc/seedbed/seedbed.yaml.d/10-q.yaml"
run 0 "$AGENT" --root "$T/root" config --dump
cp "$T/out" "$T/dump.yaml"
expect_in "$T/dump.yaml" "  timeout: 7s  # $T/root/etc/seedbed/seedbed.yaml:2:12"
expect_in "$T/dump.yaml" "  sources: [cpu, virtio]"
expect_in "$T/dump.yaml" "    quality: 512  # $T/root/etc/seedbed/seedbed.yaml.d/10-q.yaml:3:14"
run 0 "$AGENT" --root "$T/root" --config "$T/dump.yaml" config --dump
sed 's/  #.*//' "$T/dump.yaml" >"$T/a"
sed 's/  #.*//' "$T/out" >"$T/b"
diff -u "$T/a" "$T/b" || fail "the dump does not read back as itself"

# Kernel command line overrides, rd. ones only in an initramfs.
mkdir -p "$T/root/proc"
echo "quiet seedbed.entropy.timeout=3s rd.seedbed.entropy.timeout=1s" >"$T/root/proc/cmdline"
run 0 "$AGENT" --root "$T/root" config --dump
expect_in "$T/out" "  timeout: 3s  # $T/root/proc/cmdline:1:7"
touch "$T/root/etc/initrd-release"
run 0 "$AGENT" --root "$T/root" config --dump
expect_in "$T/out" "  timeout: 1s  # $T/root/proc/cmdline:1:34"
# initramfs-tools' has no /etc/initrd-release, but its own scripts.
rm "$T/root/etc/initrd-release"
mkdir -p "$T/root/scripts" "$T/root/conf"
touch "$T/root/scripts/functions"
run 0 "$AGENT" --root "$T/root" config --dump
expect_in "$T/out" "  timeout: 3s  # $T/root/proc/cmdline:1:7"
touch "$T/root/conf/initramfs.conf"
run 0 "$AGENT" --root "$T/root" config --dump
expect_in "$T/out" "  timeout: 1s  # $T/root/proc/cmdline:1:34"
rm -r "$T/root/scripts" "$T/root/conf"
touch "$T/root/etc/initrd-release"
run 0 "$AGENT" --root "$T/root" --no-cmdline config --dump
expect_in "$T/out" "  timeout: 7s"
