#!/bin/bash
# seedbed-agent vm-fork, the real agent with the real OpenSSH, under
# --root: after a VM generation change every host key is made anew, the
# console blocks show the new ones, ssh-keys.json says why, seed.json
# lists the run, and vm-forks.json keeps each change with the keys it
# replaced; vm-fork.ssh: keep keeps them; a run killed half way leaves
# its decision pending, and the next boot's firstboot replaces every key
# from before the change.  The VM itself (QEMU's vmgenid, a restored
# snapshot) is tests/vm/firstboot-vm.sh's.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "vm-fork runs as root"
command -v ssh-keygen >/dev/null || skip "ssh-keygen is not installed (openssh-client)"
command -v jq >/dev/null || skip "jq is not installed"

WHY="made anew: the VM generation ID changed, the running VM was restored from a snapshot or cloned"
R=$T/root
mkdir -p "$R/etc"
echo 5eedbed05eedbed05eedbed05eedbed0 >"$R/etc/machine-id"
head -c 262144 /dev/urandom >"$T/hwrng"
make_fake_virtio "$R" pci "$T/hwrng"
STATE=$R/var/lib/seedbed/ssh-keys.json
FORKS=$R/var/lib/seedbed/vm-forks.json

# fps: "TYPE SHA256:..." of each key on disk, as ssh-keygen reads it.
fps() {
	local t
	for t in ed25519 ecdsa rsa; do
		echo "$t $(ssh-keygen -l -f "$R/etc/ssh/ssh_host_${t}_key" | awk '{ print $2 }')"
	done
}

# console_fps: the fingerprints of the block vm-fork printed.
console_fps() {
	sed -n '/BEGIN SSH HOST KEY FINGERPRINTS/,/END SSH HOST KEY FINGERPRINTS/p' "$T/out" | grep -v -- ----- |
		awk '{ print $2 }' | sort
}

run 0 "$AGENT" --root "$R" --no-cmdline firstboot
fps >"$T/fp0"

# --- A generation change: every key anew, and said why. ----------------
run 0 "$AGENT" --root "$R" --no-cmdline vm-fork
fps >"$T/fp1"
if grep -qFf <(awk '{ print $2 }' "$T/fp0") "$T/fp1"; then
	fail "a key made before the change survived it"
fi
awk '{ print $2 }' "$T/fp1" | sort | diff -u - <(console_fps) || fail "the console block shows other keys"
expect_in "$T/err" "The VM generation ID changed"
expect_in "$T/err" "reseeded with"
[ "$(json "$STATE" '[.keys[] | select(.reason == "'"$WHY"'" and .crng_ready and .created != null)] | length')" = 3 ] ||
	fail "ssh-keys.json does not say why: $(cat "$STATE")"
[ "$(json "$STATE" '.pending // "none"')" = none ] || fail "ssh-keys.json is still pending"
rec=$R/run/seedbed/seed.json
[ "$(json "$rec" .command)" = vm-fork ] || fail "seed.json: $(json "$rec" .command)"
[ "$(json "$rec" '[.ssh_keys[] | select(.action == "replaced" and .reason == "'"$WHY"'")] | length')" = 3 ] ||
	fail "seed.json keys: $(json "$rec" .ssh_keys)"
# The record of changes: the keys before and after, the reseed.
[ "$(json "$FORKS" '.events | length')" = 1 ] || fail "vm-forks.json: $(cat "$FORKS")"
ev='.events[-1]'
[ "$(json "$FORKS" "$ev.result + \" \" + $ev.ssh + \" \" + ($ev.reseeded | tostring) + \" \" + ($ev.crng_ready | tostring)")" = \
	"regenerated regenerate true true" ] || fail "vm-forks.json event: $(json "$FORKS" "$ev")"
json "$FORKS" "$ev.keys[] | .type + \" \" + .previous" | diff -u "$T/fp0" - || fail "vm-forks.json: the previous keys"
json "$FORKS" "$ev.keys[] | .type + \" \" + .new" | diff -u "$T/fp1" - || fail "vm-forks.json: the new keys"
[ "$(stat -c %a "$FORKS")" = 644 ] || fail "vm-forks.json mode $(stat -c %a "$FORKS")"
for t in ed25519 ecdsa rsa; do
	[ "$(stat -c '%a %U' "$R/etc/ssh/ssh_host_${t}_key")" = "600 root" ] || fail "$t key mode"
done

# --- A second change (a clone of a clone): anew again, both recorded. --
run 0 "$AGENT" --root "$R" --no-cmdline vm-fork
fps >"$T/fp2"
if grep -qFf <(awk '{ print $2 }' "$T/fp1") "$T/fp2"; then
	fail "a key of the first change survived the second"
fi
[ "$(json "$FORKS" '.events | length')" = 2 ] || fail "vm-forks.json keeps $(json "$FORKS" '.events | length') events"
json "$FORKS" '.events[-1].keys[] | .type + " " + .previous' | diff -u "$T/fp1" - ||
	fail "the second change's previous keys are not the first's new ones"

# --- vm-fork.ssh: keep. --------------------------------------------------
mkdir -p "$R/etc/seedbed"
printf 'vm-fork:\n  ssh: keep\n' >"$R/etc/seedbed/seedbed.yaml"
run 0 "$AGENT" --root "$R" --no-cmdline vm-fork
fps | diff -u "$T/fp2" - || fail "vm-fork.ssh: keep changed the keys"
expect_in "$T/err" "vm-fork.ssh is keep"
if grep -q 'BEGIN SSH HOST KEY' "$T/out"; then
	fail "keep printed key blocks"
fi
[ "$(json "$FORKS" '.events[-1].result + " " + .events[-1].ssh')" = "kept keep" ] ||
	fail "keep's event: $(json "$FORKS" '.events[-1]')"
rm "$R/etc/seedbed/seedbed.yaml"

# --- Killed half way (a reset), finished at the next boot. -------------
# RSA 8192 takes seconds: the kill lands after the Ed25519 key is
# replaced and before the RSA key is.
printf 'ssh:\n  key-types: [ed25519, rsa]\n  rsa-bits: 8192\n' >"$R/etc/seedbed/seedbed.yaml"
fps2() { fps | grep -v '^ecdsa '; }
fps2 >"$T/fp-before-kill"
"$AGENT" --root "$R" --no-cmdline vm-fork >"$T/killed.out" 2>"$T/killed.err" &
pid=$!
wait_line "$T/killed.err" "Replaced SSH host key '/etc/ssh/ssh_host_ed25519_key'" "$pid" 30 || true
kill -KILL "$pid" 2>/dev/null || fail "vm-fork ended before it could be killed: $(cat "$T/killed.err")"
wait "$pid" 2>/dev/null || true
fps2 >"$T/fp-killed"
[ "$(grep '^ed25519 ' "$T/fp-killed")" != "$(grep '^ed25519 ' "$T/fp-before-kill")" ] ||
	fail "the Ed25519 key was not replaced before the kill: $(cat "$T/killed.err")"
[ "$(grep '^rsa ' "$T/fp-killed")" = "$(grep '^rsa ' "$T/fp-before-kill")" ] || fail "the RSA key was replaced before the kill"
[ "$(json "$STATE" '.pending + " " + (.keys | length | tostring)')" = "vm-fork 0" ] ||
	fail "the killed run left no pending record: $(cat "$STATE")"
# The next boot (RSA at its usual size again, to be quick).
printf 'ssh:\n  key-types: [ed25519, rsa]\n' >"$R/etc/seedbed/seedbed.yaml"
run 0 "$AGENT" --root "$R" --no-cmdline firstboot
expect_in "$T/err" "did not finish: finishing it"
fps2 >"$T/fp3"
if grep -qxFf "$T/fp-before-kill" "$T/fp3"; then
	fail "a key from before the change survived its replacement's finish"
fi
[ "$(json "$STATE" '.pending // "none"')" = none ] || fail "still pending: $(cat "$STATE")"
[ "$(json "$STATE" '[.keys[] | select(.reason == "'"$WHY"'")] | length')" = 2 ] || fail "reasons: $(json "$STATE" .keys)"
[ "$(json "$R/var/lib/seedbed/firstboot.json" '.version')" = 1 ] || fail "firstboot.json is gone"
# And the boot after: nothing to finish.
run 0 "$AGENT" --root "$R" --no-cmdline firstboot
expect_in "$T/err" "First boot was already done"
fps2 | diff -u "$T/fp3" - || fail "a boot with nothing pending changed the keys"
rm "$R/etc/seedbed/seedbed.yaml"

# --- A vm-forks.json that is not ours is replaced, and says so. ----------
echo 'not json' >"$FORKS"
run 0 "$AGENT" --root "$R" --no-cmdline vm-fork
expect_in "$T/err" "is not a seedbed record of VM generation changes"
[ "$(json "$FORKS" '.events | length')" = 1 ] || fail "vm-forks.json after a bad one: $(cat "$FORKS")"

# The records anyone may read hold no SMBIOS UUID (there is none under
# this root, nor any secret): every file here is 0644 or root's alone.
while IFS= read -r -d '' f; do
	m=$(stat -c %a "$f")
	case $m in 644 | 600 | 400) ;; *) fail "'$f' has mode $m" ;; esac
done < <(find "$R/var/lib/seedbed" -type f -print0)
echo "vm-fork: keys anew twice, kept under keep, a half-done change finished at the next boot"
