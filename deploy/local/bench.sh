#!/usr/bin/env bash
# Runs the hub benchmark (benches/hub.rs) against the local Kafka and a PostgreSQL cluster
# with production durability (services.sh up-bench): Kafka's ProducerPerformance as the
# ceiling, the hub's batch and single ingest through to Kafka, the police adapter,
# validation alone. Prints the machine, its load before and after, and the commit, so the
# figures can be written down with them. Sizes: see the environment variables in
# benches/hub.rs (BENCH_LEADS, BENCH_PERF_RECORDS, BENCH_STEADY_LEADS, BENCH_E2E_LEADS).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/leadbridge/target}"
bash deploy/local/services.sh up-bench
eval "$(bash deploy/local/services.sh env)"
# Build first, so the load average below is that of the machine, not of our compile.
# `bench.sh tlog` runs the transparency-log benchmark (benches/tlog.rs) instead, `bench.sh connectors`
# the connectors benchmark (benches/connectors.rs).
BENCH="${1:-hub}"
cargo bench --bench "$BENCH" --no-run
echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "== date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches || echo ' (with uncommitted changes)')"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
started=$SECONDS
cargo bench --bench "$BENCH"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg); benchmark took $((SECONDS - started)) s"
