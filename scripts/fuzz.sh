#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that read tenant bytes (see
# docs/RELIABILITY.md "Fuzzing"). Stable toolchain: libFuzzer (libfuzzer-sys,
# built from its bundled C++ source) with LLVM SanitizerCoverage enabled by
# stable codegen flags; no nightly, no cargo-fuzz needed.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   default 60 s, every target
#   FUZZ_JOBS=1 (one process: the machine is shared), FUZZ_NICE=19
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh                   build the harness only
#   FUZZ_SKIP_BUILD=1 scripts/fuzz.sh ...               reuse the last build
#
# Each target starts from fuzz/corpus/<target>/, runs for the set time in a
# scratch corpus, and the new inputs that add coverage are merged back into
# fuzz/corpus/<target>/ (hand-written seeds are the seed-* files there). Crashes, timeouts and
# out-of-memory inputs land in fuzz/artifacts/<target>/. Per-target stats
# (executions, coverage, crashes) are printed at the end and written to
# fuzz/work/stats.tsv.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
FUZZ=$(pwd)
SECS=${1:-60}
shift || true
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
  TARGETS=(safetensors gguf ndjson lfs_batch gitattributes gitignore card markdown repo_path names viewer_filter git_push_commands viewer_convert
    chat_template tool_calls forced_schema schema_grammar finetune_data tokenizer)
fi
NICE=${FUZZ_NICE:-19}
HOST=$(rustc -vV | sed -n 's/^host: //p')

command -v c++ >/dev/null || { echo "libfuzzer-sys needs a C++ compiler (apt-get install g++)"; exit 1; }

# SanitizerCoverage: 8-bit edge counters + PC table (libFuzzer's coverage
# feedback) and comparison tracing (libFuzzer's value profile / CMP hints).
# --target keeps the flags off build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cforce-frame-pointers=yes"
export CARGO_TARGET_DIR="$FUZZ/target"
if [[ -z "${FUZZ_SKIP_BUILD:-}" ]]; then
  nice -n "$NICE" cargo build --release --locked --target "$HOST" --bins
fi
BIN="$CARGO_TARGET_DIR/$HOST/release"
[[ -n "${FUZZ_BUILD_ONLY:-}" ]] && exit 0

mkdir -p work artifacts
printf 'target\tseconds\texecs\texecs_per_s\tcov_start\tcov_end\tft_end\tcorpus_before\tcorpus_after\tcrashes\tslow_units\n' > work/stats.tsv
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  rm -rf "work/$t" && mkdir -p "work/$t"
  # Inputs up to 64 KiB; the rule-file targets compile one regex per rule, so
  # shorter inputs keep them at a useful rate (the limits on rule counts are
  # tested elsewhere).
  case $t in
    gitattributes|gitignore) maxlen=1024 ;;
    *) maxlen=65536 ;;
  esac
  before=$(find "corpus/$t" -type f | wc -l)
  echo "=== $t: ${SECS}s from $before seed inputs"
  # -rss_limit_mb / -malloc_limit_mb: an input that makes a parser allocate
  # more than 512 MiB is a finding; -timeout: so is one taking over 30 s of
  # wall-clock time (generous: niced on a loaded machine, a 26 ms input once
  # took 6 s; re-run a timeout-* artifact alone and check its CPU time).
  set +e
  nice -n "$NICE" "$BIN/$t" "work/$t" "corpus/$t" \
    -max_total_time="$SECS" -timeout=30 -rss_limit_mb=1024 -malloc_limit_mb=512 \
    -max_len="$maxlen" -print_final_stats=1 -use_value_profile=1 \
    -artifact_prefix="artifacts/$t/" -close_fd_mask=1 \
    > "work/$t.log" 2>&1
  rc=$?
  set -e
  grep -E "^#[0-9]+ +INITED" "work/$t.log" | head -n 1 || true
  grep -E "^#[0-9]+ +(pulse|NEW|REDUCE)" "work/$t.log" | tail -n 1 || true
  # Minimise back into the checked-in corpus: a fresh folder starts with the
  # hand-made seed-* files and the minimised findings found-* (always kept),
  # and libFuzzer's -merge=1 adds only the inputs of the old corpus and of
  # this run that reach edges the folder does not yet reach (sha1 names).
  rm -rf "work/$t.min" && mkdir -p "work/$t.min" "work/$t.old"
  find "corpus/$t" -maxdepth 1 -type f \( -name 'seed-*' -o -name 'found-*' \) -exec cp {} "work/$t.min/" \;
  find "corpus/$t" -maxdepth 1 -type f ! -name 'seed-*' ! -name 'found-*' -exec mv {} "work/$t.old/" \;
  if nice -n "$NICE" "$BIN/$t" -merge=1 "work/$t.min" "work/$t.old" "work/$t" \
      -timeout=30 -rss_limit_mb=1024 -max_len="$maxlen" -artifact_prefix="artifacts/$t/" \
      > "work/$t.merge.log" 2>&1; then
    rm -rf "corpus/$t" && cp -r "work/$t.min" "corpus/$t"
  else
    echo "!!! merge of $t failed (see fuzz/work/$t.merge.log); corpus left as it was"
    cp "work/$t.old/"* "corpus/$t/" 2>/dev/null || true
  fi
  rm -rf "work/$t.old"
  after=$(find "corpus/$t" -type f | wc -l)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "work/$t.log" | tail -n1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "work/$t.log" | tail -n1)
  cov0=$(grep -E "INITED" "work/$t.log" | sed -n 's/.*cov: \([0-9]*\).*/\1/p' | head -n1)
  cov1=$(grep -E "^#[0-9]+" "work/$t.log" | sed -n 's/.*cov: \([0-9]*\).*/\1/p' | tail -n1)
  ft1=$(grep -E "^#[0-9]+" "work/$t.log" | sed -n 's/.*ft: \([0-9]*\).*/\1/p' | tail -n1)
  crashes=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  slow=$(find "artifacts/$t" -type f -name 'slow-unit-*' | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$SECS" "${execs:-?}" "${eps:-?}" \
    "${cov0:-?}" "${cov1:-?}" "${ft1:-?}" "$before" "$after" "$crashes" "$slow" >> work/stats.tsv
  if [[ $rc -ne 0 ]]; then
    echo "!!! $t stopped with status $rc: see fuzz/work/$t.log and fuzz/artifacts/$t/"
    grep -E "ERROR|panicked|SUMMARY" "work/$t.log" | head -n 5 || true
  fi
done
echo
column -t work/stats.tsv
