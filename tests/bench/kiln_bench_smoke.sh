#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# kiln-bench smoke test: a few seconds of load against a `kiln dev` the
# benchmark starts itself, then the benchmark's own checker validates the
# JSON result: well-formed, and sent = results + errors in total, per tool
# and per tenant. Nothing here looks at a time (CONVENTIONS.md: benchmarks
# are never timed tests). The checker is also shown a tampered copy, which
# it must refuse, so this test can fail.
# usage: kiln_bench_smoke.sh PATH/TO/kiln-bench
set -u
bench=$1
if [ "$(id -u)" != 0 ]; then
	echo "skipped: kiln dev needs root (user namespaces with id maps, cgroups)"
	exit 77
fi
out=$(mktemp -d /tmp/kiln-bench-smoke-XXXXXX) || exit 1
trap 'rm -rf "$out"' EXIT

"$bench" --help > "$out/help.txt" || { echo "FAIL: --help"; exit 1; }
grep -q -- '--check-json' "$out/help.txt" || { echo "FAIL: --help lacks --check-json"; exit 1; }

"$bench" --smoke --quiet --json "$out/r.json" --html "$out/r.html" --svg-dir "$out/svg" \
	> "$out/table.txt" 2> "$out/stderr.txt"
rc=$?
if [ $rc != 0 ]; then
	echo "FAIL: kiln-bench --smoke exited $rc"
	cat "$out/table.txt" "$out/stderr.txt"
	exit 1
fi
"$bench" --check-json "$out/r.json" || { echo "FAIL: the result does not add up"; exit 1; }
grep -q '<svg' "$out/r.html" || { echo "FAIL: the HTML report has no chart"; exit 1; }
[ -s "$out/svg/latency-cdf.svg" ] || { echo "FAIL: no latency-cdf.svg"; exit 1; }

# The checker must refuse a result whose counts do not add up.
sed '0,/"results": /s//"results": 9/' "$out/r.json" > "$out/bad.json"
if "$bench" --check-json "$out/bad.json" > "$out/bad.txt"; then
	echo "FAIL: --check-json accepted a result whose counts do not add up"
	exit 1
fi
echo "kiln-bench smoke: $(cat "$out/bad.txt" | head -1)"
echo "1 passed, 0 failed"
