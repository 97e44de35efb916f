#!/usr/bin/env bash
# Runs the hub benchmark (benches/hub.rs) against the local PostgreSQL and Kafka:
# raw producer ceiling, hub batch and single ingest through to Kafka, validation alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/leadbridge/target}"
bash deploy/local/services.sh up
eval "$(bash deploy/local/services.sh env)"
cargo bench --bench hub
