//! `connect hj212` on real TCP, with the real hub: a station's stream with garbage, a CRC
//! error, a frame cut into pieces, a duplicate, an unknown MN and a wrong password gives
//! exactly the expected answers and leads; a hub outage loses nothing; idle, trickling and
//! over-the-cap connections are closed while the others are served.

use std::net::SocketAddr;
use std::time::Duration;

use leadbridge::connectors::hj212::config::ListenerConfig;
use leadbridge::connectors::hj212::server::{Counters, Listener};
use leadbridge::connectors::hj212::store::ListenerStore;
use leadbridge::connectors::hub::{HubClient, HubOptions};
use leadbridge::contract::lead::Agency;
use leadbridge::contract::validate::Validator;
use leadbridge::Roles;
use leadbridge_hj212::{Frame, Packet};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connect::{hub_options, samples};
use crate::helpers::{app, drop_test_database, fresh_postgres_database, fresh_sqlite_url, Backend};

const MN: &str = "370305A00000000000000017";

/// The sample's packets, one per line, CRLF included.
fn capture() -> Vec<Vec<u8>> {
    let bytes = std::fs::read(samples().join("environment/hj212.capture")).unwrap();
    let mut packets = Vec::new();
    let mut start = 0;
    for at in 0..bytes.len().saturating_sub(1) {
        if &bytes[at..at + 2] == b"\r\n" {
            packets.push(bytes[start..at + 2].to_vec());
            start = at + 2;
        }
    }
    assert_eq!(start, bytes.len());
    assert_eq!(packets.len(), 30);
    packets
}

/// The sample's configuration on a free port, with `store` and the given overrides.
fn config(store: &str, overrides: &[(&str, &str)]) -> ListenerConfig {
    let mut text = std::fs::read_to_string(samples().join("environment/HJ212.toml")).unwrap();
    text = text.replace("\"0.0.0.0:9212\"", "\"127.0.0.1:0\"");
    text = text.replace(
        "\"sqlite://leadbridge-connect/hj212.db\"",
        &format!("\"{store}\""),
    );
    for (from, to) in overrides {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    ListenerConfig::parse("HJ212.toml", &text).unwrap()
}

async fn start(config: ListenerConfig, hub: Option<&HubOptions>) -> Listener {
    let store = ListenerStore::open(&config.store, Validator::built_in().unwrap())
        .await
        .unwrap();
    let hub = hub.map(|options| HubClient::new(options.clone()).unwrap());
    Listener::start(config, store, hub).await.unwrap()
}

/// A packet of the station with its data segment changed by `edit`, framed again.
fn reframed(packet: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
    let frame = Frame::parse_with_max_len(packet, 1100).unwrap();
    Frame::encode_with_max_len(&edit(frame.data()), 1100).unwrap()
}

/// Reads answers until `count` frames came, parsed.
async fn answers(stream: &mut TcpStream, count: usize) -> Vec<Packet> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let read_all = async {
        while bytes.windows(2).filter(|w| *w == b"\r\n").count() < count {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the listener closed the connection");
            bytes.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the answers came");
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(|line| leadbridge_hj212::parse_packet(line).unwrap())
        .collect()
}

/// Waits until the listener's outbox is empty (a liveness bound, not a speed check).
async fn drained(listener: &Listener) {
    for _ in 0..600 {
        if listener.store().waiting(1).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the outbox never drained");
}

/// The listener's outbox: (case_id, revision, outcome), in order.
async fn outbox(listener: &Listener) -> Vec<(String, i64, Option<String>)> {
    let pool = listener.store().store().inspection_pool().await.unwrap();
    sqlx::query("SELECT case_id, revision, outcome FROM hj212_outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

fn case(tag: &str, pollutant: &str) -> String {
    format!("HJ212-{tag}-{MN}-{pollutant}-20261112")
}

#[tokio::test]
async fn a_stream_with_bad_frames_a_split_frame_and_a_duplicate_gives_exactly_the_expected_answers_and_leads(
) {
    let app = app(Backend::Real).roles(Roles::HUB).spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_options(&app, Agency::Environment, dir.path());
    let store_url = fresh_postgres_database().await;
    let listener = start(config(&store_url, &[]), Some(&hub)).await;
    let packets = capture();

    // What the station sends, and the answers it must get, in order: (CN, QN, QnRtn).
    let mut writes: Vec<Vec<u8>> = vec![b"\x00\x01noise before the first frame".to_vec()];
    let mut expected: Vec<(u16, Option<String>, Option<String>)> = Vec::new();
    let expect_ack = |expected: &mut Vec<_>, packet: &[u8]| {
        let parsed = leadbridge_hj212::parse_packet(packet).unwrap();
        if parsed.flag.is_some_and(|flag| flag.ack_required()) {
            expected.push((9014, parsed.qn.map(|qn| qn.to_qn()), None));
        }
    };
    for (index, packet) in packets.iter().enumerate() {
        match index {
            2 => {
                // A copy with a wrong CRC goes first: not answered, and the good one still is.
                let mut bad = packet.clone();
                let at = bad.len() - 3;
                bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
                writes.push(bad);
                writes.push(packet.clone());
            }
            5 => {
                // Cut into three reads.
                writes.push(packet[..7].to_vec());
                writes.push(packet[7..200].to_vec());
                writes.push(packet[200..].to_vec());
            }
            8 => {
                // Sent again with a new QN (a retry after a lost answer): answered twice,
                // stored once, as the same MN, CN and DataTime.
                let retry = reframed(packet, |data| {
                    data.replacen("QN=20261112", "QN=20261113", 1)
                });
                assert_ne!(&retry, packet);
                writes.push(packet.clone());
                expect_ack(&mut expected, packet);
                writes.push(retry.clone());
                expect_ack(&mut expected, &retry);
                continue;
            }
            _ => writes.push(packet.clone()),
        }
        expect_ack(&mut expected, packet);
        if index == 11 {
            // A status packet without DataTime: stored (keyed by its QN) and answered.
            let status = reframed(packet, |data| {
                let qn = &data[data.find("QN=").unwrap() + 3..data.find(";ST=").unwrap()];
                format!("QN={qn};ST=32;CN=2081;PW=581203;MN={MN};Flag=5;CP=&&RestartTime=20261112110000&&")
            });
            expect_ack(&mut expected, &status);
            writes.push(status);
        }
        if index == 12 {
            let stranger = reframed(packet, |data| data.replace(MN, "370305A00000000000000099"));
            let wrong_pw = reframed(packet, |data| data.replace("PW=581203", "PW=000000"));
            for (bytes, qn_rtn) in [(stranger, "4"), (wrong_pw, "3")] {
                let parsed = leadbridge_hj212::parse_packet(&bytes).unwrap();
                expected.push((9011, parsed.qn.map(|qn| qn.to_qn()), Some(qn_rtn.into())));
                writes.push(bytes);
            }
        }
    }
    let mut stream = TcpStream::connect(listener.address).await.unwrap();
    for bytes in &writes {
        stream.write_all(bytes).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = answers(&mut stream, expected.len()).await;
    let got: Vec<(u16, Option<String>, Option<String>)> = got
        .iter()
        .map(|answer| {
            assert_eq!(answer.st, 91, "answers are system interaction");
            assert_eq!(answer.mn.len(), 24);
            (
                answer.cn.code(),
                answer.qn.map(|qn| qn.to_qn()),
                answer.cp.param("QnRtn").map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(got, expected);
    // Nothing more: the bad frame got no answer.
    let mut extra = [0u8; 64];
    let more = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut extra)).await;
    assert!(more.is_err(), "an unexpected answer: {more:?}");

    let counters = &listener.counters;
    // Answered means stored: every packet is there as soon as its answer is.
    let stored: i64 = {
        let pool = listener.store().store().inspection_pool().await.unwrap();
        sqlx::query("SELECT count(*) FROM hj212_packets")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(stored, 31, "the day's 30 packets and the status packet");
    assert_eq!(Counters::get(&counters.stored), 31);
    assert_eq!(Counters::get(&counters.duplicates), 1);
    assert_eq!(
        Counters::get(&counters.bad_frames),
        2,
        "the noise and the CRC error"
    );
    assert_eq!(Counters::get(&counters.unknown_mn), 1);
    assert_eq!(Counters::get(&counters.wrong_password), 1);

    drained(&listener).await;
    let accepted = Some("accepted".to_owned());
    assert_eq!(
        outbox(&listener).await,
        vec![
            (case("E", "w01018"), 1, accepted.clone()),
            (case("E", "w01018"), 2, accepted.clone()),
            (case("E", "w21003"), 1, accepted.clone()),
            (case("E", "w01018"), 3, accepted.clone()),
            (case("T", "w01018"), 1, accepted.clone()),
            (case("T", "w01018"), 2, accepted.clone()),
        ],
        "one lead per station, pollutant and day; later hours add revisions"
    );

    // The hub holds exactly these leads, and the exceedance rests on the hours' packets.
    let pool = app.store.inspection_pool().await.unwrap();
    let leads: Vec<(String, i64)> = sqlx::query(
        "SELECT case_id, current_revision FROM leads WHERE agency = 'environment' ORDER BY case_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect();
    assert_eq!(
        leads,
        vec![
            (case("E", "w01018"), 3),
            (case("E", "w21003"), 1),
            (case("T", "w01018"), 2)
        ]
    );
    let document: String = sqlx::query(
        "SELECT r.document FROM lead_revisions r JOIN leads l ON l.lead_id = r.lead_id \
         WHERE l.case_id = $1 AND r.revision = 3",
    )
    .bind(case("E", "w01018"))
    .fetch_one(pool)
    .await
    .unwrap()
    .get(0);
    let lead: Value = serde_json::from_str(&document).unwrap();
    let measured: Vec<(f64, f64, &str)> = lead["facts"]["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["method"], "online");
            assert_eq!(m["unit"], "mg/L");
            (
                m["value"].as_f64().unwrap(),
                m["limit"].as_f64().unwrap(),
                m["sampled_at"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        measured,
        vec![
            (63.7, 50.0, "2026-11-12T02:00:00+08:00"),
            (78.2, 50.0, "2026-11-12T03:00:00+08:00"),
            (55.1, 50.0, "2026-11-12T04:00:00+08:00"),
        ],
        "hourly averages only: the 10 h -Max and the 10:30 minute average make no measurement"
    );
    let hashes: Vec<&str> = lead["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["kind"], "monitoring_report");
            a["sha256"].as_str().unwrap()
        })
        .collect();
    let hour_packet = |hour: &str| {
        let wanted = format!("DataTime=20261112{hour}0000");
        let packet = packets
            .iter()
            .find(|p| {
                let text = String::from_utf8_lossy(p);
                text.contains("CN=2061") && text.contains(&wanted)
            })
            .unwrap();
        hex::encode(Sha256::digest(packet))
    };
    assert_eq!(
        hashes,
        vec![hour_packet("02"), hour_packet("03"), hour_packet("04")]
    );
    let raw_kept: i64 = {
        let pool = listener.store().store().inspection_pool().await.unwrap();
        sqlx::query("SELECT count(*) FROM hj212_packets WHERE sha256 = $1")
            .bind(hour_packet("03"))
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(raw_kept, 1, "the raw packet is kept under its hash");

    // A packet that cannot be stored is not answered, so the station sends it again.
    let listener_pool = listener.store().store().inspection_pool().await.unwrap();
    sqlx::query("ALTER TABLE hj212_packets RENAME TO hj212_packets_away")
        .execute(listener_pool)
        .await
        .unwrap();
    let next_day = reframed(&packets[0], |data| data.replace("20261112", "20261113"));
    stream.write_all(&next_day).await.unwrap();
    let unanswered = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut extra)).await;
    assert!(
        unanswered.is_err(),
        "not stored, yet answered: {unanswered:?}"
    );
    assert_eq!(Counters::get(&counters.store_failures), 1);
    sqlx::query("ALTER TABLE hj212_packets_away RENAME TO hj212_packets")
        .execute(listener_pool)
        .await
        .unwrap();
    stream.write_all(&next_day).await.unwrap();
    assert_eq!(answers(&mut stream, 1).await[0].cn.code(), 9014);
    assert_eq!(Counters::get(&counters.stored), 32);

    listener.stop().await;
    drop_test_database(&store_url).await;
    app.wait_until_outbox_drained().await;
    app.stop().await;
}

#[tokio::test]
async fn leads_made_while_the_hub_is_down_wait_in_the_outbox_and_reach_it_after_a_restart() {
    let app = app(Backend::Real).roles(Roles::HUB).spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_options(&app, Agency::Environment, dir.path());
    let store_url = fresh_sqlite_url(dir.path());
    // Nothing listens on a port just released.
    let down = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let unreachable = HubOptions {
        url: format!("https://{down}"),
        ..hub.clone()
    };
    let packets = capture();
    let listener = start(config(&store_url, &[]), Some(&unreachable)).await;
    send_all(listener.address, &packets).await;
    // The packets are answered while the hub is down: storing them is what an answer means.
    let waiting = listener.store().waiting(100).await.unwrap();
    assert_eq!(waiting.len(), 6, "the revisions wait for the hub");
    listener.stop().await;

    let listener = start(config(&store_url, &[]), Some(&hub)).await;
    drained(&listener).await;
    let outcomes: Vec<Option<String>> = outbox(&listener)
        .await
        .into_iter()
        .map(|(_, _, o)| o)
        .collect();
    assert_eq!(outcomes, vec![Some("accepted".to_owned()); 6]);
    // The station sends the day again: all duplicates, nothing new for the hub.
    send_all(listener.address, &packets).await;
    assert_eq!(Counters::get(&listener.counters.duplicates), 30);
    assert_eq!(Counters::get(&listener.counters.revisions), 0);
    assert_eq!(outbox(&listener).await.len(), 6);
    listener.stop().await;

    // The store is lost: a listener made anew from the same packets makes the same leads, and
    // the hub recognises each as a replay rather than refusing it.
    let listener = start(config(&fresh_sqlite_url(dir.path()), &[]), Some(&hub)).await;
    send_all(listener.address, &packets).await;
    drained(&listener).await;
    let outcomes: Vec<Option<String>> = outbox(&listener)
        .await
        .into_iter()
        .map(|(_, _, o)| o)
        .collect();
    assert_eq!(outcomes, vec![Some("replayed".to_owned()); 6]);
    listener.stop().await;
    app.wait_until_outbox_drained().await;
    app.stop().await;
}

#[tokio::test]
async fn a_case_the_hub_holds_with_other_content_is_sent_again_as_the_next_revision() {
    let app = app(Backend::Real).roles(Roles::HUB).spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_options(&app, Agency::Environment, dir.path());
    let packets = capture();
    // Another listener (or an older store) already sent this case's revision 1, otherwise.
    let listener = start(config(&fresh_sqlite_url(dir.path()), &[]), Some(&hub)).await;
    send_all(listener.address, &packets[..3]).await;
    drained(&listener).await;
    listener.stop().await;
    let other_limit = config(
        &fresh_sqlite_url(dir.path()),
        &[("w01018 = 50.0", "w01018 = 40.0")],
    );
    let listener = start(other_limit, Some(&hub)).await;
    send_all(listener.address, &packets[..3]).await;
    drained(&listener).await;
    let rows = outbox(&listener).await;
    let cod: Vec<(i64, Option<String>)> = rows
        .iter()
        .filter(|(case_id, _, _)| *case_id == case("E", "w01018"))
        .map(|(_, revision, outcome)| (*revision, outcome.clone()))
        .collect();
    assert_eq!(
        cod,
        vec![
            (1, Some("rejected".to_owned())),
            (2, Some("accepted".to_owned()))
        ],
        "{rows:?}"
    );
    listener.stop().await;
    app.wait_until_outbox_drained().await;
    app.stop().await;
}

/// Sends `packets` on one connection and waits for the answers of those that ask for one.
async fn send_all(address: SocketAddr, packets: &[Vec<u8>]) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut wanted = 0;
    for packet in packets {
        stream.write_all(packet).await.unwrap();
        let parsed = leadbridge_hj212::parse_packet(packet).unwrap();
        wanted += usize::from(parsed.flag.is_some_and(|flag| flag.ack_required()));
    }
    let got = answers(&mut stream, wanted).await;
    assert!(got.iter().all(|answer| answer.cn.code() == 9014));
}

#[tokio::test]
async fn idle_trickling_and_over_the_cap_connections_are_closed_and_the_others_served() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 2000;
    let listener = start(
        config(
            &fresh_sqlite_url(dir.path()),
            &[
                (
                    "idle_timeout_secs = 300",
                    "idle_timeout_secs = 3\nframe_timeout_secs = 2",
                ),
                (
                    "max_connections = 2000",
                    &format!("max_connections = {cap}"),
                ),
            ],
        ),
        None,
    )
    .await;
    let address = listener.address;
    // The cap's worth of idle connections, accepted.
    let mut idle = Vec::with_capacity(cap);
    for _ in 0..cap {
        idle.push(TcpStream::connect(address).await.unwrap());
    }
    for _ in 0..300 {
        if Counters::get(&listener.counters.connections) == cap as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(Counters::get(&listener.counters.connections), cap as u64);
    // One more is closed at once: a packet it sends gets no answer, and it is closed well
    // before the idle timeout.
    let packets = capture();
    let mut over = TcpStream::connect(address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = over.write_all(&packets[0]).await;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), over.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the connection over the cap is closed unanswered: {closed:?}"
    );
    assert_eq!(Counters::get(&listener.counters.refused_over_cap), 1);
    // One of the idle connections still works.
    let first = &mut idle[0];
    first.write_all(&packets[0]).await.unwrap();
    let got = answers(first, 1).await;
    assert_eq!(got[0].cn.code(), 9014);
    // The idle ones are closed after the idle timeout.
    let mut closed_idle = 0;
    for stream in idle.iter_mut() {
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte)).await
        {
            closed_idle += 1;
        }
    }
    assert_eq!(closed_idle, cap);
    // A client trickling one byte at a time, never idle for long, is closed by the frame timeout.
    let mut slow = TcpStream::connect(address).await.unwrap();
    let mut sent = 0;
    let trickle = async {
        for &b in packets[1].iter() {
            if slow.write_all(&[b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // At 200 ms a byte the packet would take 100 s; the 2 s frame timeout ends it long before.
    let cut_off = tokio::time::timeout(Duration::from_secs(15), trickle).await;
    assert!(
        cut_off.is_ok(),
        "the trickling client is still connected after 15 s"
    );
    assert!(sent < packets[1].len(), "the trickling client was cut off");
    assert_eq!(Counters::get(&listener.counters.closed_slow), 1);
    assert_eq!(Counters::get(&listener.counters.closed_idle), cap as u64);
    listener.stop().await;
}

#[tokio::test]
async fn one_group_commit_stores_a_packet_and_its_retry_once_on_both_backends() {
    use leadbridge::connectors::hj212::store::{Incoming, Stored};
    let dir = tempfile::tempdir().unwrap();
    let postgres = fresh_postgres_database().await;
    for url in [fresh_sqlite_url(dir.path()), postgres.clone()] {
        let config = config(&url, &[]);
        let store = ListenerStore::open(&url, Validator::built_in().unwrap())
            .await
            .unwrap();
        let packets = capture();
        let incoming = |raw: &[u8]| {
            let packet = leadbridge_hj212::parse_packet(raw).unwrap();
            let time = packet.cp.data_time.unwrap();
            Incoming {
                raw: raw.to_vec(),
                sha256: hex::encode(Sha256::digest(raw)),
                mn: packet.mn.clone(),
                cn: packet.cn.code(),
                data_time: chrono::NaiveDate::from_ymd_opt(
                    time.year.into(),
                    time.month.into(),
                    time.day.into(),
                )
                .unwrap()
                .and_hms_opt(time.hour.into(), 0, 0)
                .unwrap(),
                part: 0,
                qn: packet.qn.map(|qn| qn.to_qn()),
                peer: "127.0.0.1:1".into(),
                received_at: chrono::Utc::now(),
                hourly: Vec::new(),
            }
        };
        let retry = reframed(&packets[0], |data| {
            data.replacen("QN=20261112", "QN=20261113", 1)
        });
        let batch = [
            incoming(&packets[0]),
            incoming(&packets[0]),
            incoming(&retry),
            incoming(&packets[1]),
        ];
        let (stored, _) = store.persist(&config, &batch).await.unwrap();
        assert_eq!(
            stored,
            vec![
                Stored::New,
                Stored::Duplicate,
                Stored::Duplicate,
                Stored::New
            ],
            "{url}"
        );
        let (again, _) = store.persist(&config, &batch[..1]).await.unwrap();
        assert_eq!(again, vec![Stored::Duplicate]);
        store.close().await;
    }
    drop_test_database(&postgres).await;
}
