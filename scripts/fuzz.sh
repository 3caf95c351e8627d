#!/usr/bin/env bash
# `make fuzz [FUZZ_SECONDS=60]`: builds each libFuzzer target (with AddressSanitizer) and runs it
# for FUZZ_SECONDS from the seed corpus in Fuzz/corpus; fails on any crash, sanitizer report or
# timeout (the input is kept under .build-fuzz/artifacts/). New inputs go to .build-fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
scripts/deps.sh
flags=(-Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DFUZZING -Xswiftc -use-ld=lld)
mkdir -p .build-fuzz/artifacts
for target in HTTPParserFuzz JSONFuzz RouterFuzz; do
  swift build --product "$target" "${flags[@]}" --scratch-path .build-fuzz
  mkdir -p ".build-fuzz/corpus/$target"
  echo "== $target for ${seconds}s"
  ".build-fuzz/debug/$target" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=".build-fuzz/artifacts/$target-" ".build-fuzz/corpus/$target" "Fuzz/corpus/$target" 2>&1 \
    | grep -E "^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)" || true
  # libFuzzer exits non-zero on a finding; the pipe above hides it, so check for artifacts.
  if ls ".build-fuzz/artifacts/$target-"* >/dev/null 2>&1; then
    echo "$target: findings in .build-fuzz/artifacts/" >&2
    exit 1
  fi
done
echo "fuzz: 3 targets, ${seconds}s each, no crash"
