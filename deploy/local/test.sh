#!/usr/bin/env bash
# Installs and starts the test services (PostgreSQL and a real Kafka broker), then runs every
# check CI runs: formatting, clippy with warnings denied, and the whole test suite against
# those services. Safe to run again: services already running are reused.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Builds go to a directory outside the clone, so repeated runs (and fresh clones on the same
# machine) reuse compiled dependencies instead of rebuilding librdkafka every time.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/leadbridge/target}"

bash deploy/local/services.sh up
# Topics and databases a killed run left behind slow the broker down and fill the disk (see
# services.sh); none is in use now.
bash deploy/local/services.sh purge-test-data
eval "$(bash deploy/local/services.sh env)"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
