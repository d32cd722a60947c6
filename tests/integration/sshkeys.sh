#!/bin/bash
# SSH host keys checked with the real OpenSSH, no mocks: ssh-keygen reads
# every key and prints the fingerprints our console block shows; cloud-init's
# own loop over the same files prints our blocks byte for byte; a new
# instance gets new keys; sshd -t accepts them; and a real sshd serves
# them to ssh-keyscan.  The library is driven by tests/helpers/sshkeys-driver
# until seedbed-agent has its sshkeys command.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

DRIVER=${SEEDBED_SSHKEYS_DRIVER:-$top_builddir/tests/helpers/sshkeys-driver}
SSHD=/usr/sbin/sshd
[ "$(id -u)" -eq 0 ] || skip "host keys are root's, and sshd needs root"
[ -x "$DRIVER" ] || skip "no '$DRIVER'"
command -v ssh-keygen >/dev/null || skip "ssh-keygen is not installed (openssh-client)"
command -v ssh-keyscan >/dev/null || skip "ssh-keyscan is not installed (openssh-client)"
[ -x "$SSHD" ] || skip "sshd is not installed (openssh-server)"
# The shell's glob below sorts as cloud-init's /bin/sh does.
export LC_ALL=C

HASHES="#############################################################"

# What cloud-init's tools/write-ssh-key-fingerprints prints for the keys in
# DIR: the same loop, with echo where it calls "logger -s" (which would add
# a syslog header).  Written from its behaviour, not copied.
cloud_init_blocks() {
	local dir=$1 f shown=0
	for f in "$dir"/ssh_host_*key.pub; do
		[ -f "$f" ] || continue
		if [ $shown -eq 0 ]; then
			echo "$HASHES"
			echo "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
			shown=1
		fi
		ssh-keygen -l -f "$f"
	done
	if [ $shown -eq 1 ]; then
		echo "-----END SSH HOST KEY FINGERPRINTS-----"
		echo "$HASHES"
	fi
	shown=0
	for f in "$dir"/ssh_host_*key.pub; do
		[ -f "$f" ] || continue
		if [ $shown -eq 0 ]; then
			echo "-----BEGIN SSH HOST KEY KEYS-----"
			shown=1
		fi
		cat "$f"
	done
	if [ $shown -eq 1 ]; then
		echo "-----END SSH HOST KEY KEYS-----"
	fi
}

# fingerprints FILE: "BITS SHA256:... (TYPE)" of a console capture, sorted.
fingerprints() {
	sed -n '/^-----BEGIN SSH HOST KEY FINGERPRINTS-----$/,/^-----END SSH HOST KEY FINGERPRINTS-----$/p' "$1" |
		grep -v -- '-----' | awk '{ print $1, $2, $NF }' | sort
}

# check_keys ROOT: every key is sound, as OpenSSH sees it.
check_keys() {
	local root=$1 t k
	for t in ecdsa ed25519 rsa; do
		k=$root/etc/ssh/ssh_host_${t}_key
		[ -f "$k" ] || continue
		[ "$(stat -c '%a %U:%G' "$k")" = "600 root:root" ] || fail "$k: $(stat -c '%a %U:%G' "$k")"
		[ "$(stat -c '%a %U:%G' "$k.pub")" = "644 root:root" ] || fail "$k.pub: $(stat -c '%a %U:%G' "$k.pub")"
		# The .pub is the private key's public half.
		ssh-keygen -y -f "$k" >"$T/derived" 2>"$T/keygen.err" || { cat "$T/keygen.err"; fail "ssh-keygen cannot read '$k'"; }
		[ "$(cut -d' ' -f1,2 "$T/derived")" = "$(cut -d' ' -f1,2 "$k.pub")" ] || fail "'$k.pub' is not the key in '$k'"
		# The private file's fingerprint and size are the .pub's.
		[ "$(ssh-keygen -l -f "$k" | awk '{ print $1, $2, $NF }')" = \
			"$(ssh-keygen -l -f "$k.pub" | awk '{ print $1, $2, $NF }')" ] || fail "'$k' and its .pub differ"
		# No temporary file left.
		! compgen -G "$k*.tmp" >/dev/null || fail "temporary files left: $(echo "$k"*.tmp)"
	done
}

# --- First boot: all three keys, the default sizes, cloud-init's blocks.
R=$T/root
mkdir -p "$R/etc" "$R/sys/class/dmi/id"
echo 0123456789abcdef0123456789abcdef >"$R/etc/machine-id"
echo 4C4C4544-0037-3610-8056-B4C04F4B4E32 >"$R/sys/class/dmi/id/product_uuid"
run 0 "$DRIVER" --root "$R"
cp "$T/out" "$T/console1"
expect_in "$T/err" "key ed25519 created"
expect_in "$T/err" "key rsa created"
check_keys "$R"
cloud_init_blocks "$R/etc/ssh" >"$T/expected"
diff -u "$T/expected" "$T/console1" || fail "the console blocks are not what cloud-init prints"
[ "$(fingerprints "$T/console1" | wc -l)" -eq 3 ] || fail "not three fingerprints"
fingerprints "$T/console1" | grep -q '^3072 SHA256:.* (RSA)$' || fail "RSA is not 3072 bits"
fingerprints "$T/console1" | grep -q '^256 SHA256:.* (ECDSA)$' || fail "ECDSA is not P-256"
# Host keys made without a comment: ssh-keygen says so.
[ "$(grep -c ' no comment (' "$T/console1")" -eq 3 ] || fail "fingerprint lines without 'no comment'"
[ "$(json "$R/var/lib/seedbed/ssh-keys.json" .instance.machine_id)" = 0123456789abcdef0123456789abcdef ] ||
	fail "machine ID not recorded"
# The record is world-readable and the UUID root-only: the record holds
# its keyed hash, never the UUID.
uuid_private "$R" 4c4c4544-0037-3610-8056-b4c04f4b4e32
[ "$(stat -c %a "$R/var/lib/seedbed/ssh-keys.json")" = 644 ] || fail "ssh-keys.json is not 0644"
[ "$(json "$R/var/lib/seedbed/ssh-keys.json" .instance.product_uuid)" = null ] || fail "the UUID is recorded in the clear"
json "$R/var/lib/seedbed/ssh-keys.json" .instance.product_uuid_hmac | grep -qxE '[0-9a-f]{64}' ||
	fail "no hash of the product UUID recorded"
[ "$(json "$R/var/lib/seedbed/ssh-keys.json" '.keys | length')" = 3 ] || fail "keys not recorded"
[ "$(json "$R/var/lib/seedbed/ssh-keys.json" '.keys[2].fingerprint')" = \
	"$(ssh-keygen -l -f "$R/etc/ssh/ssh_host_rsa_key.pub" | awk '{ print $2 }')" ] || fail "recorded RSA fingerprint"

# --- Next boot of the same instance: nothing changes.
run 0 "$DRIVER" --root "$R"
expect_in "$T/err" "instance same"
[ "$(grep -c '^key .* kept ' "$T/err")" -eq 3 ] || fail "keys not kept: $(cat "$T/err")"
cmp -s "$T/out" "$T/console1" || fail "the second run's console blocks differ"

# --- A record from before the UUID was hashed (in the clear) is still the
# same instance, and this run's record heals it; a lost instance key
# makes the UUID unknown, and the machine-id keeps the keys.
jq '.instance = { product_uuid: "4c4c4544-0037-3610-8056-b4c04f4b4e32", machine_id: .instance.machine_id }' \
	"$R/var/lib/seedbed/ssh-keys.json" >"$T/old.json"
cp "$T/old.json" "$R/var/lib/seedbed/ssh-keys.json"
for case in old-record lost-key; do
	[ "$case" = old-record ] || rm "$R/var/lib/seedbed/instance-key"
	run 0 "$DRIVER" --root "$R"
	expect_in "$T/err" "instance same"
	if [ "$case" = lost-key ]; then
		expect_in "$T/err" "('$R/var/lib/seedbed/instance-key'): taking the recorded UUID as unknown"
		[ "$(grep -c "taking the recorded UUID as unknown" "$T/err")" -eq 1 ] || fail "said more than once"
	fi
	[ "$(grep -c '^key .* kept ' "$T/err")" -eq 3 ] || fail "$case: keys not kept: $(cat "$T/err")"
	uuid_private "$R" 4c4c4544-0037-3610-8056-b4c04f4b4e32
done

# --- A crash between the private and the public key: the .pub comes back.
rm "$R/etc/ssh/ssh_host_ed25519_key.pub"
run 0 "$DRIVER" --root "$R"
expect_in "$T/err" "key ed25519 repaired"
cmp -s "$T/out" "$T/console1" || fail "the repaired key is not the same key"
check_keys "$R"

# --- A garbage key is replaced by a sound one.
echo garbage >"$R/etc/ssh/ssh_host_ecdsa_key"
run 0 "$DRIVER" --root "$R"
expect_in "$T/err" "key ecdsa replaced"
check_keys "$R"
cp "$T/out" "$T/console1"

# --- A new instance (the image copied to another VM, or booted afresh)
# gets all new keys: the VM's UUID, then the machine ID.
for change in uuid machine-id; do
	case $change in
	uuid) echo 4c4c4544-0037-3610-8056-b4c04f4b4e99 >"$R/sys/class/dmi/id/product_uuid" ;;
	machine-id) echo fedcba9876543210fedcba9876543210 >"$R/etc/machine-id" ;;
	esac
	run 0 "$DRIVER" --root "$R"
	expect_in "$T/err" "instance new"
	uuid_private "$R" 4c4c4544-0037-3610-8056-b4c04f4b4e99
	[ "$(grep -c '^key .* replaced ' "$T/err")" -eq 3 ] || fail "$change: keys not replaced: $(cat "$T/err")"
	check_keys "$R"
	fingerprints "$T/console1" >"$T/old.fp"
	fingerprints "$T/out" >"$T/new.fp"
	! grep -qFxf "$T/old.fp" "$T/new.fp" || fail "$change: a fingerprint survived the new instance"
	cp "$T/out" "$T/console1"
done
# A machine ID not made yet proves nothing: the keys stay.
echo uninitialized >"$R/etc/machine-id"
run 0 "$DRIVER" --root "$R"
[ "$(grep -c '^key .* kept ' "$T/err")" -eq 3 ] || fail "keys replaced for an unknown machine ID"

# --- Other sizes and a comment, as ssh-keygen reads them.
R2=$T/sizes
run 0 "$DRIVER" --root "$R2" --types ecdsa,rsa --ecdsa-bits 521 --rsa-bits 4096 --comment "root@seedbed-test"
check_keys "$R2"
cloud_init_blocks "$R2/etc/ssh" >"$T/expected"
diff -u "$T/expected" "$T/out" || fail "the console blocks are not what cloud-init prints (sizes, comment)"
expect_in "$T/out" " root@seedbed-test (ECDSA)"
fingerprints "$T/out" | grep -q '^521 SHA256:.* (ECDSA)$' || fail "ECDSA is not P-521"
fingerprints "$T/out" | grep -q '^4096 SHA256:.* (RSA)$' || fail "RSA is not 4096 bits"

# --- sshd: the configuration test accepts the keys, and a real server
# on a loopback port serves exactly them.
[ -d /run/sshd ] || mkdir -m 0755 /run/sshd # privilege separation
sshd_config() {
	cat >"$T/sshd_config" <<-EOF
		ListenAddress 127.0.0.1
		HostKey $R/etc/ssh/ssh_host_ecdsa_key
		HostKey $R/etc/ssh/ssh_host_ed25519_key
		HostKey $R/etc/ssh/ssh_host_rsa_key
		PidFile $T/sshd.pid
		UsePAM no
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		AuthorizedKeysFile none
	EOF
}
sshd_config
"$SSHD" -t -f "$T/sshd_config" 2>"$T/sshd-t.err" || { cat "$T/sshd-t.err"; fail "sshd -t refuses the keys"; }
[ ! -s "$T/sshd-t.err" ] || { cat "$T/sshd-t.err"; fail "sshd -t complains"; }

sshd_pid=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
	if [ -n "$sshd_pid" ]; then
		kill "$sshd_pid" 2>/dev/null || :
		wait "$sshd_pid" 2>/dev/null || :
	fi
	[ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Another test may take the port between our look and sshd's bind: retry.
for attempt in 1 2 3; do
	port=$(free_port)
	: >"$T/sshd.log"
	"$SSHD" -D -e -f "$T/sshd_config" -p "$port" 2>"$T/sshd.log" &
	sshd_pid=$!
	wait_line "$T/sshd.log" "Server listening on 127.0.0.1 port $port" "$sshd_pid" 10 && break
	kill "$sshd_pid" 2>/dev/null || :
	wait "$sshd_pid" 2>/dev/null || :
	sshd_pid=
	[ "$attempt" -lt 3 ] || { cat "$T/sshd.log"; fail "sshd did not start"; }
done

ssh-keyscan -T 10 -p "$port" -t ecdsa,ed25519,rsa 127.0.0.1 >"$T/scan" 2>"$T/scan.err" || :
[ "$(grep -vc '^#' "$T/scan")" -eq 3 ] || { cat "$T/scan.err" "$T/sshd.log"; fail "ssh-keyscan did not get three keys"; }
ssh-keygen -l -f - <"$T/scan" | awk '{ print $1, $2, $NF }' | sort >"$T/scan.fp"
fingerprints "$T/console1" >"$T/ours.fp"
diff -u "$T/ours.fp" "$T/scan.fp" || fail "sshd serves other keys than our console block shows"
# And the keys themselves, as the console's keys block shows them.
grep -v '^#' "$T/scan" | awk '{ print $2, $3 }' | sort >"$T/scan.keys"
sed -n '/^-----BEGIN SSH HOST KEY KEYS-----$/,/^-----END SSH HOST KEY KEYS-----$/p' "$T/console1" |
	grep -v -- '-----' | awk '{ print $1, $2 }' | sort >"$T/ours.keys"
diff -u "$T/ours.keys" "$T/scan.keys" || fail "sshd serves other keys than our keys block shows"
