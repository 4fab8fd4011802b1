#!/usr/bin/env bash
# Reproduces every figure in BENCHMARKS.md, in one run, on this machine (~40 minutes on 2 cores).
# Logs and reports go to target/bench-logs/. Run it on an otherwise idle machine: the figures
# are ratios measured within one run, but a busy neighbour still adds noise.
#
#   scripts/benchmarks.sh            # everything
#   scripts/benchmarks.sh quick      # skip the 40-million-entry runs
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench-logs
mkdir -p "$out"
step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "build"
cargo build --release --workspace
(cd compare/node && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --features system-alloc --target-dir target/system-alloc --bin idgate

step "engine ratios (issue 2): engine vs raw, 2 vs 1 thread, parse share, warm vs cold"
cargo bench --bench ratios 2>&1 | tee "$out/ratios.txt"

step "offline verify (issue 2): whole process vs raw primitive, 50,000 presentations"
cargo bench --bench offline -- --corpus-dir target/offline-corpus 2>&1 | tee "$out/offline.txt"

step "allocator: mimalloc vs system, idgate verify on the same 50,000 presentations"
{
  for round in 1 2 3 4 5; do
    for build in mimalloc system; do
      bin=target/release/idgate
      [ "$build" = mimalloc ] || bin=target/system-alloc/release/idgate
      start=$(date +%s%N)
      "$bin" verify --trust target/offline-corpus/trust.jwks.json --at 1763900000 \
        target/offline-corpus/presentations.txt > /dev/null
      end=$(date +%s%N)
      echo "$build round $round: $(( (end - start) / 1000000 )) ms"
    done
  done
} 2>&1 | tee "$out/allocator.txt"

step "criterion (issue 2): per-signature cost by batch size, parse steps, cache, fallback"
cargo bench --bench engine 2>&1 | tee "$out/engine.txt"

step "design choices: replay store, revocation table, metrics encoder vs the crates; envelope parse share"
cargo bench --bench choices 2>&1 | tee "$out/choices.txt"

step "revocation list in process (issue 4): import, load, memory, lookups at 10M"
cargo bench --bench revocations 2>&1 | tee "$out/revocations-10m.txt"
if [ "${1:-}" != quick ]; then
  cargo bench --bench revocations -- --entries 40000000 2>&1 | tee "$out/revocations-40m.txt"
fi

step "HTTP suite (issues 3, 5): every scenario, ceiling beside it, wrk cross-check, Node and Go comparisons"
# A failed check is a finding to report, not a reason to skip the remaining steps.
./target/release/loadtest --spawn --wrk --compare-node compare/node --compare-go compare/go --json "$out/suite.json" --html "$out/suite.html" \
  2>&1 | tee "$out/suite.txt" || echo "(some checks failed: see $out/suite.txt)"

step "stall test (issue 5): a 1 s SIGSTOP in an open-loop run"
./target/release/loadtest --spawn --scenario status:1000 --rate 200 --stall-ms 1000 \
  --json "$out/stall.json" --html "$out/stall.html" 2>&1 | tee "$out/stall.txt"

step "national-scale list end to end (issue 4): start-up, RSS per entry, status IDs/s"
./target/release/loadtest --spawn --revocation-list 10000000 --scenario status:10000 \
  --no-latency-phases --json "$out/list-10m.json" --html "$out/list-10m.html" 2>&1 | tee "$out/list-10m.txt"
if [ "${1:-}" != quick ]; then
  ./target/release/loadtest --spawn --revocation-list 40000000 --scenario status:10000 \
    --json "$out/list-40m.json" --html "$out/list-40m.html" 2>&1 | tee "$out/list-40m.txt"
fi
step "Redis replay store vs memory (issue 16): A/B rounds, round trips, bytes per key"
if command -v redis-server >/dev/null; then
  ./target/release/loadtest --spawn --replay memory,redis --rounds 5 --redis-fill 1000000 \
    --scenario verify:256 --scenario verify:1 --duration 10 --warmup 2 \
    --json "$out/redis-ab.json" --html "$out/redis-ab.html" 2>&1 | tee "$out/redis-ab.txt"
else
  echo "(skipped: redis-server is not installed)"
fi
step "shared revocation feed (issue 17): propagation, the busy instance, a 10M import"
if command -v redis-server >/dev/null; then
  ./target/release/loadtest --feed --duration 10 --warmup 2 --rounds 8 --no-ceiling \
    --json "$out/feed.json" 2>&1 | tee "$out/feed.txt"
else
  echo "(skipped: redis-server is not installed)"
fi
step "done: $out"
