//! Benchmark: the agency connectors, end to end, on the real services of `deploy/local` with
//! production durability (PostgreSQL `fsync`, `synchronous_commit`, `full_page_writes` on).
//!
//! Run with `bash deploy/local/bench.sh connectors`. It measures
//!   (f) `leadbridge connect file` (the release binary, its own process) importing a GBK CSV of
//!       `BENCH_CSV_ROWS` rows (default 100,000: the environment sample's penalty rows with new
//!       case numbers) into the hub on PostgreSQL and Kafka, until every row is answered 202:
//!       rows/s, and the connector's peak resident memory;
//!   (f-peer) the same leads, already mapped, sent by a bare batch client (500 per call, one
//!       call in flight as the connector does) to the same hub: what the hub takes without
//!       the connector's reading, decoding, mapping and checking;
//!   (l) `leadbridge connect hj212` (the release binary, its own process) with its store on the
//!       durable PostgreSQL, `BENCH_HJ212_CONNECTIONS` stations (default 1,000) connected at
//!       once, each sending minute data (and every tenth packet hourly data) and waiting for
//!       each answer, for `BENCH_HJ212_SECONDS` (default 30): packets answered per second,
//!       answer latency, and the listener's resident memory;
//!   (l-peer) a plain INSERT of the same raw packets, 256 per transaction (the listener's
//!       group commit), into an unindexed table of the same cluster.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leadbridge::app::Settings;
use leadbridge::connectors::mapping::Mapping;
use leadbridge::connectors::source::{self, Item};
use leadbridge::contract::lead::Agency;
use leadbridge::contract::validate::SchemaRegistry;
use leadbridge::shared::identity::Principal;
use leadbridge::Roles;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{bench_pki, durable_admin, env, env_or, fresh_settings, Hub};

const BINARY: &str = env!("CARGO_BIN_EXE_leadbridge");

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A field of `/proc/<pid>/status` in MiB (`VmHWM` peak resident set, `VmRSS` now).
fn memory_of(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())?;
    Some(kib / 1024.0)
}

/// The sample's penalty rows (GBK bytes), repeated to `rows` rows with case numbers of `run`.
fn big_csv(path: &Path, rows: usize, run: &str) {
    let sample = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/samples/environment/penalties.csv"),
    )
    .unwrap();
    let mut lines = sample.split_inclusive(|b| *b == b'\n');
    let header = lines.next().unwrap();
    let bodies: Vec<&[u8]> = lines
        .map(|line| {
            let comma = line.iter().position(|b| *b == b',').unwrap();
            &line[comma..]
        })
        .collect();
    let mut out = Vec::with_capacity(rows * 600);
    out.extend_from_slice(header);
    for i in 0..rows {
        out.extend_from_slice(format!("BENCH{run}-{i:07}").as_bytes());
        out.extend_from_slice(bodies[i % bodies.len()]);
    }
    std::fs::write(path, out).unwrap();
}

/// The leads the mapping makes of `input`, as the connector makes them.
fn mapped_leads(mapping: &Mapping, input: &Path) -> Vec<Value> {
    let identity = source::identify(input).unwrap();
    let mut rows = source::open(input, mapping.input.as_ref().unwrap(), &identity).unwrap();
    let bound = mapping.bind(rows.header(), "").unwrap();
    let mut leads = Vec::new();
    while let Some(item) = rows.next_item().unwrap() {
        if let Item::Row(row) = item {
            leads.push(bound.lead(&row).unwrap());
        }
    }
    leads
}

#[tokio::main]
async fn main() {
    let csv_rows = env_or("BENCH_CSV_ROWS", 100_000);
    let connections = env_or("BENCH_HJ212_CONNECTIONS", 1_000);
    let seconds = env_or("BENCH_HJ212_SECONDS", 30) as u64;
    let kafka = env("LEADBRIDGE_TEST_KAFKA");
    let admin_url = env("LEADBRIDGE_TEST_BENCH_DATABASE_URL");
    let mut admin = durable_admin(&admin_url).await;
    let work = tempfile::tempdir().unwrap();

    // The hub on PostgreSQL and Kafka, and the environment bureau's certificate.
    let (_pki_dir, ca, tls) = bench_pki();
    let mut settings = Settings::default();
    settings.kafka.bootstrap_servers = Some(kafka);
    settings.data_dir = work.path().join("hub");
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.tls = Some(tls);
    settings.relay.poll_interval_ms = 20;
    let mut databases = Vec::new();
    let hub_settings = fresh_settings(&settings, &admin_url, &mut admin, &mut databases).await;
    let hub = Hub::start(&hub_settings, Roles::HUB).await;
    let issued = ca
        .issue_client(&Principal::Agency(Agency::Environment))
        .unwrap();
    let (cert, key, ca_file) = (
        work.path().join("environment.pem"),
        work.path().join("environment.key"),
        work.path().join("ca.pem"),
    );
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    // Both connectors present the environment bureau's certificate.
    let certificates: [std::ffi::OsString; 6] = [
        "--cert".into(),
        cert.into_os_string(),
        "--key".into(),
        key.into_os_string(),
        "--ca".into(),
        ca_file.into_os_string(),
    ];

    // (f) connect file, its own process.
    let input = work.path().join("penalties-big.csv");
    big_csv(&input, csv_rows, "F");
    let size_mib = std::fs::metadata(&input).unwrap().len() as f64 / 1048576.0;
    let mapping_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/samples/environment/penalties.toml");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(BINARY)
        .args(["connect", "file", "--mapping"])
        .arg(&mapping_path)
        .args(["--hub", &hub.base])
        .args(&certificates)
        .arg("--state")
        .arg(work.path().join("state"))
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut peak = 0.0f64;
    let output = loop {
        if let Some(hwm) = memory_of(pid, "VmHWM") {
            peak = peak.max(hwm);
        }
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected =
        format!("rows {csv_rows}, accepted {csv_rows}, replayed 0, rejected 0, skipped 0");
    assert!(
        output.status.success() && stdout.contains(&expected),
        "connect file: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let file_rate = csv_rows as f64 / elapsed.as_secs_f64();
    println!(
        "(f) connect file, GBK CSV {csv_rows} rows ({size_mib:.1} MiB) → 202s   {file_rate:>8.0} rows/s   ({:.1} s; connector peak RSS {peak:.1} MiB)",
        elapsed.as_secs_f64()
    );

    // (f-peer) the same leads, mapped beforehand, sent bare.
    let peer_input = work.path().join("penalties-peer.csv");
    big_csv(&peer_input, csv_rows, "P");
    let mapping = Mapping::load(&mapping_path, &SchemaRegistry::built_in().unwrap()).unwrap();
    let leads = mapped_leads(&mapping, &peer_input);
    let client = common::client_builder(&ca, &issued.cert_pem, &issued.key_pem)
        .build()
        .unwrap();
    let started = Instant::now();
    for chunk in leads.chunks(500) {
        let response = client
            .post(format!("{}/v1/leads/batch", hub.base))
            .json(&json!({ "leads": chunk }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let answer: Value = response.json().await.unwrap();
        let accepted = answer["results"].as_array().map_or(0, |results| {
            results.iter().filter(|r| r["status"] == 202).count()
        });
        assert_eq!(accepted, chunk.len(), "{answer}");
    }
    let peer_rate = csv_rows as f64 / started.elapsed().as_secs_f64();
    println!(
        "(f-peer) the same leads, mapped beforehand, batch 500 × 1   {peer_rate:>8.0} rows/s   (connector / peer {:.2})",
        file_rate / peer_rate
    );
    hub.stop().await;

    // (l) connect hj212, its own process, store on the durable cluster.
    let store_db = format!("lb_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {store_db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    databases.push(store_db.clone());
    let server = admin_url.rsplit_once('/').unwrap().0;
    let store_url = format!("{server}/{store_db}");
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let mut config = format!(
        "listen = \"127.0.0.1:{port}\"\nidle_timeout_secs = 300\nmax_connections = {}\n\
         max_packet_bytes = 1100\nstore = \"{store_url}\"\nunit = \"淄博市生态环境局\"\n\
         unit_division = \"370300\"\n",
        connections + 100
    );
    let mns: Vec<String> = (0..connections)
        .map(|i| format!("370305B{i:017}"))
        .collect();
    for mn in &mns {
        config.push_str(&format!(
            "\n[[stations]]\nmn = \"{mn}\"\npassword = \"581203\"\nname = \"压测站点 {mn}\"\n\
             uscc = \"91370305MA3K56CR16\"\ndivision_code = \"370305\"\nunit_type = \"key_discharger\"\n\
             limits = {{ w01018 = 50.0, w21003 = 5.0 }}\n"
        ));
    }
    let config_path = work.path().join("HJ212-bench.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut listener = tokio::process::Command::new(BINARY)
        .arg("--config")
        .arg(&config_path)
        .args(["connect", "hj212", "--hub", "https://127.0.0.1:9"])
        .args(&certificates)
        .arg("--state")
        .arg(work.path().join("hj212-state"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let listener_pid = listener.id().unwrap();
    let address = format!("127.0.0.1:{port}");
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(&address).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_idle = memory_of(listener_pid, "VmRSS").unwrap_or(f64::NAN);
    let answered = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut stations = tokio::task::JoinSet::new();
    for (index, mn) in mns.iter().cloned().enumerate() {
        let (address, answered, measuring, stop) = (
            address.clone(),
            answered.clone(),
            measuring.clone(),
            stop.clone(),
        );
        stations.spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            let mut latencies = Vec::new();
            let mut buffer = vec![0u8; 2048];
            let mut k: i64 = 0;
            let base = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let hourly = k % 10 == 9;
                let (cn, at) = if hourly {
                    (2061, base + chrono::Duration::hours(k / 10))
                } else {
                    (2051, base + chrono::Duration::minutes(k))
                };
                let qn = format!("{}{:03}", at.format("%Y%m%d%H%M%S"), index % 1000);
                let data = format!(
                    "QN={qn};ST=32;CN={cn};PW=581203;MN={mn};Flag=5;CP=&&DataTime={};\
                     w00000-Min=5.54,w00000-Avg=6.52,w00000-Max=7.50,w00000-Cou=23.47,w00000-Flag=N;\
                     w01018-Min=28.6,w01018-Avg={}.{},w01018-Max=38.6,w01018-Cou=0.789,w01018-Flag=N;\
                     w21003-Min=2.07,w21003-Avg=2.44,w21003-Max=2.81,w21003-Cou=0.057,w21003-Flag=N&&",
                    at.format("%Y%m%d%H%M%S"),
                    30 + k % 7,
                    k % 10
                );
                let packet = leadbridge_hj212::Frame::encode_with_max_len(&data, 1100).unwrap();
                let sent = Instant::now();
                if stream.write_all(&packet).await.is_err() {
                    break;
                }
                let mut got = Vec::new();
                while !got.ends_with(b"\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return latencies,
                        Ok(n) => got.extend_from_slice(&buffer[..n]),
                    }
                }
                if measuring.load(Ordering::Relaxed) {
                    answered.fetch_add(1, Ordering::Relaxed);
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                k += 1;
            }
            latencies
        });
    }
    // Warm-up: every station connected and answered at least once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut rss_peak = 0.0f64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(rss) = memory_of(listener_pid, "VmRSS") {
            rss_peak = rss_peak.max(rss);
        }
    }
    measuring.store(false, Ordering::Relaxed);
    let measured = started.elapsed();
    let count = answered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let hwm = memory_of(listener_pid, "VmHWM").unwrap_or(f64::NAN);
    let mut latencies = Vec::new();
    while let Some(joined) = stations.join_next().await {
        latencies.extend(joined.unwrap());
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let listener_rate = count as f64 / measured.as_secs_f64();
    println!(
        "(l) connect hj212, {connections} connections, store on PostgreSQL   {listener_rate:>8.0} packets/s   p50 {:.1} ms   p99 {:.1} ms   ({count} packets in {:.0} s; RSS idle {rss_idle:.1} MiB, under load up to {rss_peak:.1} MiB, peak {hwm:.1} MiB)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        measured.as_secs_f64()
    );
    listener.kill().await.unwrap();

    // (l-peer) the same kind of rows, a plain INSERT, 256 per transaction.
    let peer_url = format!("{server}/{store_db}");
    let mut peer = <sqlx::PgConnection as sqlx::Connection>::connect(&peer_url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE peer_packets (sha256 TEXT, mn TEXT, cn INTEGER, data_time TEXT, raw TEXT, received_at TIMESTAMPTZ)")
        .execute(&mut peer)
        .await
        .unwrap();
    let raw: Vec<(String, String, String)> =
        sqlx::query_as("SELECT sha256, mn, raw FROM hj212_packets LIMIT 50000")
            .fetch_all(&mut peer)
            .await
            .unwrap();
    let started = Instant::now();
    for chunk in raw.chunks(256) {
        let mut tx = sqlx::Connection::begin(&mut peer).await.unwrap();
        let mut builder = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO peer_packets (sha256, mn, cn, data_time, raw, received_at) ",
        );
        builder.push_values(chunk, |mut row, (sha, mn, raw)| {
            row.push_bind(sha)
                .push_bind(mn)
                .push_bind(2051)
                .push_bind("20261101000000")
                .push_bind(raw)
                .push("now()");
        });
        builder.build().execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    let peer_rate = raw.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "(l-peer) plain INSERT of {} raw packets, 256 per transaction   {peer_rate:>8.0} rows/s   (listener / peer {:.2})",
        raw.len(),
        listener_rate / peer_rate
    );
    drop(peer);
    for name in databases {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}
