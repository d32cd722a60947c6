#!/bin/bash
# The fuzz targets' replay driver (tests/fuzz/replay.c), which make check
# runs over the seeds and regressions: an input that hangs fails the run
# and is named, rather than blocking make check.
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

echo "PASS: replay times out"
