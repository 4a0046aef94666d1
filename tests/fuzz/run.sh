#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Run one libFuzzer target (ctest label `fuzz`, tests/fuzz/CMakeLists.txt):
#   run.sh FUZZER CORPUS ARTIFACTS [libFuzzer flags...]
# for KILN_FUZZ_SECONDS (default KILN_FUZZ_DEFAULT_SECONDS, else 30) on a
# scratch copy of CORPUS, so the committed corpus never grows from a run.
# Crashing inputs land in ARTIFACTS. KILN_FUZZ_KEEP=DIR keeps the grown
# corpus in DIR/<target> (to minimise and commit new seeds by hand).
set -eu
fuzzer=$1 corpus=$2 artifacts=$3
shift 3
secs=${KILN_FUZZ_SECONDS:-${KILN_FUZZ_DEFAULT_SECONDS:-30}}
name=$(basename "$fuzzer")
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-fuzz-$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/corpus" "$artifacts"
cp -R "$corpus/." "$work/corpus/"
# libFuzzer's own exit code for a crash is 77, which ctest setups often read
# as "skipped": make every finding exit 1. stdin is /dev/null so no input
# can make a target wait on the terminal.
rc=0
"$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	-error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 \
	-artifact_prefix="$artifacts/" "$@" "$work/corpus" </dev/null || rc=$?
if [ -n "${KILN_FUZZ_KEEP:-}" ]; then
	mkdir -p "$KILN_FUZZ_KEEP/$name"
	cp -R "$work/corpus/." "$KILN_FUZZ_KEEP/$name/"
fi
if [ "$rc" -ne 0 ]; then
	echo "fuzz: $name failed (exit $rc); the input is in $artifacts/" >&2
	echo "fuzz: reproduce with: $fuzzer $artifacts/<file>" >&2
fi
exit "$rc"
