#!/bin/bash
# make fuzz: runs each fuzz target under libFuzzer for a while.
#   [FUZZ_FRESH=1] run.sh SRCDIR BUILDDIR SECONDS TARGET...
# Each target starts from its seed corpus and regression inputs, copied to
# BUILDDIR/fuzz-work/TARGET/corpus (the source tree is never written; what
# libFuzzer adds stays there for the next run, unless FUZZ_FRESH is set:
# then the corpus is made anew, so that the run does not depend on earlier
# ones), and prints its executions and coverage.  A crash, a leak, a
# timeout or a broken check leaves its input in
# BUILDDIR/fuzz-work/TARGET/crashes/, is named, and fails the run: make it
# a regression input (tests/fuzz/regressions/TARGET/) once fixed.  The
# last run's crash inputs are moved to crashes.prev/, not deleted: one not
# yet looked at is not lost by running again.
set -uo pipefail

srcdir=$1 builddir=$2 seconds=$3
shift 3

# The longest input each target is given: the byte streams of whole
# connections and guest memory need more room than a configuration.
max_len() {
	case $1 in
	vhost-user) echo 16384 ;;
	virtqueue) echo 65536 ;;
	*) echo 4096 ;;
	esac
}

failed=()
printf '%-14s %12s %8s %8s %8s  %s\n' target executions cov ft corpus result
for t in "$@"; do
	prog=$builddir/tests/fuzz/fuzz-$t
	work=$builddir/fuzz-work/$t
	[ -z "${FUZZ_FRESH:-}" ] || rm -rf "$work/corpus"
	mkdir -p "$work/corpus" "$work/crashes" "$work/crashes.prev" "$work/tmp"
	find "$work/crashes" -maxdepth 1 -type f -exec mv -f {} "$work/crashes.prev/" \;
	# The targets' temporary files (fuzz-records makes a directory) stay
	# in the build tree, and go with the next run.
	find "$work/tmp" -mindepth 1 -delete
	export TMPDIR=$work/tmp
	for d in corpus regressions; do
		if [ -d "$srcdir/tests/fuzz/$d/$t" ]; then
			find "$srcdir/tests/fuzz/$d/$t" -maxdepth 1 -type f ! -name '.*' -exec cp -f {} "$work/corpus/" \;
		fi
	done
	dict=()
	[ -f "$srcdir/tests/fuzz/$t.dict" ] && dict=("-dict=$srcdir/tests/fuzz/$t.dict")

	# -close_fd_mask=1: the targets print nothing worth reading to stdout.
	# -timeout: an input that takes 10 s is a hang, and a crash.
	"$prog" -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -close_fd_mask=1 -artifact_prefix="$work/crashes/" "${dict[@]}" \
		"$work/corpus" >"$work/log" 2>&1
	rc=$?

	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n1)
	# The last status line: "#12345  DONE  cov: 456 ft: 789 corp: 12/3456b ...".
	status=$(grep -E '^#[0-9]+' "$work/log" | tail -n1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
	corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status")
	crashes=$(find "$work/crashes" -type f | sort)
	if [ "$rc" -ne 0 ] || [ -n "$crashes" ]; then
		result="FAILED (exit $rc)"
		failed+=("$t")
	else
		result=ok
	fi
	printf '%-14s %12s %8s %8s %8s  %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
	if [ "$result" != ok ]; then
		while read -r c; do
			[ -z "$c" ] || echo "    crash input: $c"
		done <<<"$crashes"
		echo "    log: $work/log; its end:"
		tail -n 30 "$work/log" | sed 's/^/    | /'
	fi
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "FAILED: ${failed[*]}" >&2
	exit 1
fi
