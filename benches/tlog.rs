//! Benchmark: the transparency log on PostgreSQL with production durability (`fsync`,
//! `synchronous_commit`, `full_page_writes` on; `deploy/local/services.sh up-bench`).
//!
//! Run with `bash deploy/local/bench.sh tlog`. It measures
//!   (q) queueing: entries appended by state changes, 500 per transaction (one batch ingest's
//!       worth), the cost every writer pays;
//!   (s) sequencing: the sequencer moving the queue into the tree, in its batches of 1000:
//!       log appends per second;
//!   (r) the peer from the same run: a plain multi-row INSERT of the same entry rows (text and
//!       hash) into an unindexed table, 1000 per transaction, the ceiling of (s)'s writes;
//!   (i) inclusion proofs and (c) consistency proofs against the tree of `BENCH_LOG_ENTRIES`
//!       entries (default 1,000,000), each read from the database: p50/p99 over 1000 random
//!       indexes and sizes;
//!   (v) `audit verify` of the whole log;
//! and prints entries/s and milliseconds.

use std::time::{Duration, Instant};

use chrono::Utc;
use leadbridge::contract::lead::LeadId;
use leadbridge::shared::audit::log::{self, LogSigner, LogTables};
use leadbridge::shared::audit::{AuditEntry, LedgerAppender};
use leadbridge::shared::tlog::{verify_consistency, verify_inclusion, LogKey, VerifierKey};
use rand::Rng;
use serde_json::json;
use sqlx::Connection;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run deploy/local/bench.sh tlog"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<46} p50 {:>8.2} ms   p99 {:>8.2} ms   ({} samples)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.len()
    );
}

fn rate(name: &str, count: usize, elapsed: Duration) -> f64 {
    let rate = count as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<46} {count:>8} entries {rate:>10.0} entries/s   ({:.1} s)",
        elapsed.as_secs_f64()
    );
    rate
}

#[tokio::main]
async fn main() {
    let entries: usize = std::env::var("BENCH_LOG_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let admin_url = env("LEADBRIDGE_TEST_BENCH_DATABASE_URL");
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(
            value, "on",
            "PostgreSQL {setting} is {value}: the benchmark needs production durability"
        );
    }
    let database = format!("bench_tlog_{}", &LeadId::generate().to_string()[..8]);
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{}/{database}", admin_url.rsplit_once('/').unwrap().0);
    let store = leadbridge::hub::store::connect(&url, 4).await.unwrap();
    println!("Transparency-log benchmark: {entries} entries, PostgreSQL with fsync, synchronous_commit and full_page_writes on");

    // (q) queueing, 500 entries per transaction, as a batch ingest appends them.
    let started = Instant::now();
    let mut queued = 0;
    while queued < entries {
        let count = 500.min(entries - queued);
        let mut tx = store.begin().await.unwrap();
        let mut ledger = LedgerAppender::new();
        for n in 0..count {
            ledger.append(AuditEntry {
                at: Utc::now(),
                actor: "agency:environment".into(),
                action: "lead.received",
                lead_id: Some(LeadId::generate()),
                revision: Some(1),
                details: json!({"case_id": format!("ZBHJ-{}", queued + n), "kind": "clue", "lead_type": "environment.discharge_exceedance"}),
            });
        }
        ledger.finish(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        queued += count;
    }
    rate(
        "(q) queueing, 500 per transaction",
        entries,
        started.elapsed(),
    );

    // (s) sequencing.
    let started = Instant::now();
    let moved = log::sequence_all(&store).await.unwrap();
    assert_eq!(moved, entries);
    let sequencing = rate("(s) sequencer: log appends", moved, started.elapsed());

    // (r) the peer: the same rows, plainly inserted.
    let pool = match store.db() {
        leadbridge::shared::store::Backend::Postgres(pool) => pool.clone(),
        _ => unreachable!(),
    };
    sqlx::query("CREATE TABLE peer_rows (idx BIGINT, entry TEXT, leaf_hash TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    let started = Instant::now();
    let mut copied = 0i64;
    while copied < entries as i64 {
        sqlx::query(
            "INSERT INTO peer_rows (idx, entry, leaf_hash) SELECT idx, entry, leaf_hash FROM log_entries WHERE idx >= $1 AND idx < $2",
        )
        .bind(copied)
        .bind(copied + 1000)
        .execute(&pool)
        .await
        .unwrap();
        copied += 1000;
    }
    let peer = rate(
        "(r) peer: plain INSERT of the same rows, 1000/tx",
        entries,
        started.elapsed(),
    );
    println!("    sequencer / peer: {:.2}", sequencing / peer);

    // A checkpoint at the full size, and one at half, for the proofs.
    let signer = LogSigner {
        key: LogKey::generate("leadbridge-bench-hub"),
        origin: "leadbridge/bench/hub".into(),
    };
    let signed = log::sign_checkpoint(&store, &signer, Utc::now())
        .await
        .unwrap()
        .unwrap();
    let size = signed.size;
    let mut rng = rand::rng();

    // (i) inclusion proofs at the full size, each verified.
    let mut samples = Vec::new();
    for _ in 0..1000 {
        let index = rng.random_range(0..size);
        let started = Instant::now();
        let path = log::inclusion_proof(&store, LogTables::OWN, index, size)
            .await
            .unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        let leaf = log::leaf_hash_at(&store, LogTables::OWN, index)
            .await
            .unwrap()
            .unwrap();
        let leaf = leadbridge::shared::tlog::evidence::parse_hash(&leaf).unwrap();
        verify_inclusion(index, size, &leaf, &path, &signed.root).unwrap();
    }
    report(&format!("(i) inclusion proof at {size} entries"), samples);

    // (c) consistency proofs from random sizes to the full size, each verified.
    let mut samples = Vec::new();
    for _ in 0..1000 {
        let first = rng.random_range(1..size);
        let started = Instant::now();
        let path = log::consistency_proof(&store, LogTables::OWN, first, size)
            .await
            .unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        if samples.len() % 100 == 0 {
            // Verifying needs the first tree's root; compute it from the stored tree.
            let first_root = log_root(&store, first).await;
            verify_consistency(first, size, &first_root, &signed.root, &path).unwrap();
        }
    }
    report(&format!("(c) consistency proof to {size} entries"), samples);

    // (v) verify the whole log.
    let started = Instant::now();
    let verifier = VerifierKey::parse(&signer.key.verifier_key()).unwrap();
    let verified = log::verify(&store, LogTables::OWN, &verifier, &signer.origin)
        .await
        .unwrap();
    rate(
        "(v) audit verify, the whole log",
        verified.entries as usize,
        started.elapsed(),
    );

    store.close().await;
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// The root of the first `size` entries, from a consistency proof's companion: a checkpoint
/// of that size cannot be signed after the fact, so this recomputes it from stored hashes.
async fn log_root(store: &leadbridge::shared::store::Store, size: u64) -> [u8; 32] {
    log::root_at(store, LogTables::OWN, size).await.unwrap()
}
