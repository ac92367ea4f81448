#!/usr/bin/env bash
# The endpoint scheduler at fleet scale (issue 14): the real `scheduler::tick`
# against the test kit's throwaway PostgreSQL, over a fleet seeded in bulk by SQL
# (hub-api/tests/it/scheduler_scale.rs, `fleet_bench`): 1,000 workers of
# 8/16/32/64 GiB (a fifth partly used) and 10,000 endpoints over 2,000 models
# (embedders to 7B decoders, real weight sizes and decoder configs, so
# `memory_need` sizes them as in production), min_replicas 0/1/2, 5% paused, half
# the min-0 ones idle for hours. Two fleets: worker memory as is, and halved
# (demand beyond capacity, for placement quality).
#
# For each: the time and statements (database round trips, counted from sqlx's
# statement log) of the first tick (everything pending), a settling tick (the
# workers have loaded what they were given: statuses go to running), the median
# steady tick (nothing to change), the tick after 5% of the workers go silent,
# and the next one; then the first placement against upper bounds (replicas,
# endpoints served and memory placed vs what the free memory could hold at best)
# and the balance (most / mean replicas per worker).
#
#   scripts/bench/scheduler.sh                     # 1,000 x 10,000
#   SCHED_WORKERS=100 SCHED_ENDPOINTS=1000 scripts/bench/scheduler.sh
#   CARGO_PROFILE_FLAGS=--release scripts/bench/scheduler.sh   # optimised build
#
# Also SCHED_MODELS (default endpoints/5) and SCHED_STEADY_ROUNDS (default 5).
# The default is the dev profile the tests use (dependencies optimised, the
# workspace crates not). Prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
echo "fleet: ${SCHED_WORKERS:-1000} workers x ${SCHED_ENDPOINTS:-10000} endpoints"
# shellcheck disable=SC2086
cargo test -p hub-api ${CARGO_PROFILE_FLAGS:-} --test it scheduler_scale::fleet_bench \
  -- --ignored --exact --nocapture 2>/dev/null | sed -n '/^[0-9]* workers x/,/^first placement/p'
