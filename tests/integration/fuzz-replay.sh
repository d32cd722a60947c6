#!/bin/bash
# The fuzz targets' replay driver (tests/fuzz/replay.c), which make check
# runs over the seeds and regressions: an input that hangs fails the run
# and is named, rather than blocking make check; its errors are seen
# after a target silenced stderr; an empty corpus is a failure.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

FUZZ=${top_builddir:?}/tests/fuzz/fuzz-egd

# A FIFO with no writer hangs in open(): the same alarm covers reading
# and running an input.
mkfifo "$T/hang"
start=$SECONDS
run 1 env SEEDBED_FUZZ_TIMEOUT=1 timeout 20 "$FUZZ" "$T/hang"
[ $((SECONDS - start)) -lt 10 ] || fail "the timeout took $((SECONDS - start)) s"
expect_in "$T/err" "Timed out: '$T/hang' ran for more than 1 s (a hang)."

# An error after the first input, when fuzz_setup() has pointed stdio's
# stderr to /dev/null, still reaches fd 2.
first=$(find "$top_srcdir/tests/fuzz/corpus/egd" -type f | head -n 1)
run 1 "$FUZZ" "$first" "$T/missing"
expect_in "$T/err" "Cannot find '$T/missing': No such file or directory"

# A target whose corpus is empty has tested nothing: it fails.
mkdir -p "$T/src/tests/fuzz/corpus/egd" "$T/src/tests/fuzz/regressions/egd"
run 1 env top_srcdir="$T/src" "$FUZZ"
expect_in "$T/err" "No inputs in '$T/src/tests/fuzz/corpus/egd'"
cp "$first" "$T/src/tests/fuzz/corpus/egd/"
run 0 env top_srcdir="$T/src" "$FUZZ"
expect_in "$T/out" "1 inputs replayed without a crash."

echo "PASS: replay times out, reports errors, needs a corpus"
