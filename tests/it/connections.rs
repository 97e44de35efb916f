//! What misbehaving clients can hold on the HTTPS server (`src/shared/http/tls.rs`): the connection
//! caps, the handshake, header and idle timeouts and HTTP/2 keep-alive, against the real
//! listener over real TLS, on both backends. Attackers connect from 127.0.0.2
//! ([`ATTACKER_ADDRESS`]), agencies from 127.0.0.1, so the per-address cap binds only the
//! attackers.

use std::time::{Duration, Instant};

use futures::future::join_all;
use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::Principal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::helpers::{
    app, raw_tcp_from, raw_tls_from, sample_lead, unique_case_id, Backend, TestApp,
    ATTACKER_ADDRESS,
};

/// Reads (and discards) until the server closes the connection; how long that took, or
/// `None` if it was still open after `bound`. An error counts as closed: a dropped TLS
/// connection ends without close_notify.
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// [`closed_within`] for each stream, concurrently.
async fn watch_all<S: AsyncRead + Unpin>(
    streams: Vec<S>,
    bound: Duration,
) -> Vec<Option<Duration>> {
    join_all(
        streams
            .into_iter()
            .map(|mut stream| async move { closed_within(&mut stream, bound).await }),
    )
    .await
}

/// Polls `condition` every 50 ms for up to `bound`.
async fn eventually(bound: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() {
        assert!(Instant::now() < deadline, "never true: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 response: its status and body (by Content-Length).
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> (u16, String) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream
            .read(&mut buffer)
            .await
            .expect("the response arrives");
        assert!(read > 0, "closed before a response head: {received:?}");
        received.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8(received[..head_end].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    while received.len() < head_end + length {
        let read = stream.read(&mut buffer).await.expect("the body arrives");
        assert!(read > 0, "closed in the middle of the body");
        received.extend_from_slice(&buffer[..read]);
    }
    let body = String::from_utf8(received[head_end..head_end + length].to_vec()).unwrap();
    (status, body)
}

/// Sends a partial request head one byte every 250 ms, never finishing it, and reports when
/// the server closed the connection (see [`closed_within`]).
async fn slowloris<S: AsyncRead + AsyncWrite>(stream: S, bound: Duration) -> Option<Duration> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: ";
    let trickle = async {
        // 400 bytes at 4 a second outlast any bound used here.
        for byte in head.iter().copied().chain(std::iter::repeat_n(b'a', 400)) {
            if writer.write_all(&[byte]).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        closed = closed_within(&mut reader, bound) => closed,
        () = trickle => unreachable!("the trickle never ends"),
    }
}

fn metric(app_metrics: &str, line_start: &str) -> i64 {
    app_metrics
        .lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn rendered_metrics(app: &TestApp) -> String {
    // Anonymous, as a monitoring scraper is.
    let response = app
        .pki
        .client(None)
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("the hub answers /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The agency's POST of a valid lead, with a generous bound as liveness (not speed).
async fn agency_post_is_accepted(app: &TestApp) {
    let lead = sample_lead(&unique_case_id());
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        app.post_lead(Agency::Environment, &lead),
    )
    .await
    .expect("the agency is answered within 10 s despite the attack");
    assert_eq!(response.status(), 202);
}

const PER_ADDRESS: usize = 20;
const SLOWLORIS: usize = 6;
const NEVER_HANDSHAKE: usize = 4;
const IDLE_ANONYMOUS: usize = 5;
const IDLE_WITH_CERTIFICATE: usize = 5;
const OVER_THE_CAP: usize = 10;

async fn a_flood_of_slow_and_idle_connections_from_one_address_does_not_lock_out_an_agency(
    backend: Backend,
) {
    // The timeouts are far apart so that each kind of connection can only be closed by the
    // protection meant for it within its bound: the header timeout (2 s) well before the idle
    // timeout (15 s) could close a slowloris, the refusal at accept well before the
    // handshake timeout (10 s) could close a connection over the cap.
    let app = app(backend)
        .with_settings(|s| {
            s.server.handshake_timeout_secs = 10;
            s.server.header_read_timeout_secs = 2;
            s.server.idle_timeout_secs = 15;
            s.server.max_connections_per_address = PER_ADDRESS;
        })
        .spawn()
        .await;
    assert_eq!(
        SLOWLORIS + NEVER_HANDSHAKE + IDLE_ANONYMOUS + IDLE_WITH_CERTIFICATE,
        PER_ADDRESS
    );

    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..SLOWLORIS {
        slow.push(
            raw_tls_from(&app, ATTACKER_ADDRESS, None, &[b"http/1.1"])
                .await
                .unwrap(),
        );
    }
    let mut anonymous = Vec::new();
    for _ in 0..IDLE_ANONYMOUS {
        anonymous.push(
            raw_tls_from(&app, ATTACKER_ADDRESS, None, &[])
                .await
                .unwrap(),
        );
    }
    let mut with_certificate = Vec::new();
    let land = Principal::Agency(Agency::Land);
    for _ in 0..IDLE_WITH_CERTIFICATE {
        with_certificate.push(
            raw_tls_from(&app, ATTACKER_ADDRESS, Some(&land), &[])
                .await
                .unwrap(),
        );
    }
    let mut never_handshake = Vec::new();
    for _ in 0..NEVER_HANDSHAKE {
        never_handshake.push(raw_tcp_from(ATTACKER_ADDRESS, app.addr).await);
    }
    let gauge = app.metrics.connections_open.clone();
    eventually(Duration::from_secs(10), "the server holds the 20", || {
        gauge.get() == PER_ADDRESS as i64
    })
    .await;
    eprintln!(
        "{backend:?}: {PER_ADDRESS} connections open from {ATTACKER_ADDRESS} after {:?}",
        opened.elapsed()
    );

    // Over the cap: refused at accept, before any handshake.
    for _ in 0..OVER_THE_CAP {
        let mut extra = raw_tcp_from(ATTACKER_ADDRESS, app.addr).await;
        let closed = closed_within(&mut extra, Duration::from_secs(3)).await;
        assert!(
            closed.is_some(),
            "a connection over the per-address cap is closed at once"
        );
    }
    let rejected = app
        .metrics
        .connections_rejected
        .with_label_values(&["max_connections_per_address"])
        .get();
    assert_eq!(rejected, OVER_THE_CAP as u64);
    assert_eq!(gauge.get(), PER_ADDRESS as i64, "the held ones stay held");

    let trickle_started = Instant::now();
    let slow_closed = tokio::spawn(join_all(
        slow.into_iter()
            .map(|stream| slowloris(stream, Duration::from_secs(8))),
    ));
    agency_post_is_accepted(&app).await;

    let watch_started = Instant::now();
    let (slow_closed, never_closed, anonymous_closed, certificate_closed) = tokio::join!(
        slow_closed,
        watch_all(never_handshake, Duration::from_secs(20)),
        watch_all(anonymous, Duration::from_secs(25)),
        watch_all(with_certificate, Duration::from_secs(25)),
    );
    let slow_closed = slow_closed.unwrap();
    // Closing times are shown from `since`: when the trickle started, or when the
    // connections were opened.
    // Every kind is reported before any is judged, so that a failure shows them all.
    let still_open: Vec<String> = [
        (
            "slowloris (header timeout 2 s, idle 15 s), from the first trickled byte",
            &slow_closed,
            trickle_started,
            trickle_started,
        ),
        (
            "plain TCP, never a handshake (handshake timeout 10 s), from connect",
            &never_closed,
            watch_started,
            opened,
        ),
        (
            "idle TLS without a certificate (idle 15 s), from connect",
            &anonymous_closed,
            watch_started,
            opened,
        ),
        (
            "idle TLS with an agency certificate (idle 15 s), from connect",
            &certificate_closed,
            watch_started,
            opened,
        ),
    ]
    .into_iter()
    .filter_map(|(kind, closed, watched_from, since)| {
        let offset = watched_from.duration_since(since);
        let closed_at: Vec<_> = closed
            .iter()
            .map(|closed| closed.map(|after| format!("{:.2?}", offset + after)))
            .collect();
        eprintln!(
            "{backend:?}: {kind}: {} connections, closed by the server at {closed_at:?}",
            closed.len(),
        );
        (!closed.iter().all(Option::is_some)).then(|| format!("{kind}: {closed_at:?}"))
    })
    .collect();
    assert!(
        still_open.is_empty(),
        "every connection is closed by the server; still open: {still_open:#?}"
    );

    // Their places are given back: the address is served again.
    eventually(Duration::from_secs(5), "the places are released", || {
        gauge.get() <= 2
    })
    .await;
    let mut again = raw_tls_from(&app, ATTACKER_ADDRESS, None, &[])
        .await
        .unwrap();
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut again).await.0, 200);

    let metrics = rendered_metrics(&app).await;
    let closed = |reason: &str| {
        metric(
            &metrics,
            &format!("leadbridge_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(
        metric(
            &metrics,
            "leadbridge_connections_rejected_total{reason=\"max_connections_per_address\"}"
        ),
        OVER_THE_CAP as i64,
        "{metrics}"
    );
    assert_eq!(closed("handshake_timeout"), NEVER_HANDSHAKE as i64);
    // At least: the agency's own keep-alive connection may have been closed meanwhile too.
    assert!(closed("header_timeout") >= SLOWLORIS as i64, "{metrics}");
    assert!(
        closed("idle") >= (IDLE_ANONYMOUS + IDLE_WITH_CERTIFICATE) as i64,
        "{metrics}"
    );
    assert!(metric(&metrics, "leadbridge_connections_open") >= 1);
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_slow_and_idle_connections_does_not_lock_out_an_agency_real() {
    a_flood_of_slow_and_idle_connections_from_one_address_does_not_lock_out_an_agency(
        Backend::Real,
    )
    .await;
}

#[tokio::test]
async fn a_flood_of_slow_and_idle_connections_does_not_lock_out_an_agency_embedded() {
    a_flood_of_slow_and_idle_connections_from_one_address_does_not_lock_out_an_agency(
        Backend::Embedded,
    )
    .await;
}

async fn the_global_cap_refuses_everyone_and_frees_places_as_connections_end(backend: Backend) {
    const MAX: usize = 5;
    let app = app(backend)
        .with_settings(|s| {
            s.server.max_connections = MAX;
            s.server.handshake_timeout_secs = 30;
        })
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..MAX {
        held.push(raw_tcp_from(ATTACKER_ADDRESS, app.addr).await);
    }
    let gauge = app.metrics.connections_open.clone();
    eventually(Duration::from_secs(10), "the server holds all 5", || {
        gauge.get() == MAX as i64
    })
    .await;

    let mut extra = raw_tcp_from(ATTACKER_ADDRESS, app.addr).await;
    assert!(closed_within(&mut extra, Duration::from_secs(3))
        .await
        .is_some());
    // The cap is global: an agency from another address is refused as well.
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        app.client(Agency::Environment)
            .get(app.url("/healthz"))
            .send(),
    )
    .await
    .expect("refused at once, not left waiting");
    assert!(refused.is_err(), "over the global cap: {refused:?}");
    assert_eq!(
        app.metrics
            .connections_rejected
            .with_label_values(&["max_connections"])
            .get(),
        2
    );

    drop(held);
    eventually(Duration::from_secs(10), "the places are given back", || {
        gauge.get() == 0
    })
    .await;
    agency_post_is_accepted(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn the_global_cap_refuses_everyone_and_frees_places_real() {
    the_global_cap_refuses_everyone_and_frees_places_as_connections_end(Backend::Real).await;
}

#[tokio::test]
async fn the_global_cap_refuses_everyone_and_frees_places_embedded() {
    the_global_cap_refuses_everyone_and_frees_places_as_connections_end(Backend::Embedded).await;
}

async fn an_idle_keep_alive_connection_is_closed_but_a_slow_request_is_not(backend: Backend) {
    // The header timeout is far longer than the idle timeout, so that it is the idle timer
    // (and not hyper's wait for the next request head) that must close the keep-alive
    // connection within the bound.
    let app = app(backend)
        .with_settings(|s| {
            s.server.header_read_timeout_secs = 60;
            s.server.idle_timeout_secs = 2;
        })
        .spawn()
        .await;
    let agency = Principal::Agency(Agency::Environment);

    let mut keep_alive = raw_tls_from(&app, ATTACKER_ADDRESS, Some(&agency), &[])
        .await
        .unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut keep_alive).await.0, 200);
    let closed = closed_within(&mut keep_alive, Duration::from_secs(10)).await;
    eprintln!("{backend:?}: keep-alive connection closed {closed:?} after its response (idle 2 s)");
    assert!(closed.is_some(), "an idle keep-alive connection is closed");

    // A body streamed over 6.4 s, three idle timeouts, is one request in flight throughout.
    let mut slow = raw_tls_from(&app, ATTACKER_ADDRESS, Some(&agency), &[])
        .await
        .unwrap();
    let body = serde_json::to_vec(&sample_lead(&unique_case_id())).unwrap();
    slow.write_all(
        format!(
            "POST /v1/leads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    for chunk in body.chunks(body.len().div_ceil(16)) {
        slow.write_all(chunk)
            .await
            .expect("the server does not cut a request in flight");
        slow.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let (status, answer) = read_response(&mut slow).await;
    eprintln!(
        "{backend:?}: slow upload answered {status} after {:?}",
        started.elapsed()
    );
    assert_eq!(status, 202, "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_slow_request_is_not_real() {
    an_idle_keep_alive_connection_is_closed_but_a_slow_request_is_not(Backend::Real).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_slow_request_is_not_embedded() {
    an_idle_keep_alive_connection_is_closed_but_a_slow_request_is_not(Backend::Embedded).await;
}

async fn an_http2_peer_that_stops_answering_pings_is_dropped(backend: Backend) {
    // The idle timeout is far longer than the bound, so only the keep-alive ping can close.
    let app = app(backend)
        .with_settings(|s| {
            s.server.idle_timeout_secs = 600;
            s.server.http2_keep_alive_interval_secs = 1;
            s.server.http2_keep_alive_timeout_secs = 1;
        })
        .spawn()
        .await;
    let mut silent = raw_tls_from(&app, ATTACKER_ADDRESS, None, &[b"h2"])
        .await
        .unwrap();
    // The connection preface and an empty SETTINGS frame; then never a byte more, so the
    // server's pings go unanswered.
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(15)).await;
    eprintln!(
        "{backend:?}: silent HTTP/2 peer dropped after {closed:?} (ping every 1 s, 1 s to answer)"
    );
    assert!(
        closed.is_some(),
        "a peer that does not answer pings is dropped"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_dropped_real() {
    an_http2_peer_that_stops_answering_pings_is_dropped(Backend::Real).await;
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_dropped_embedded() {
    an_http2_peer_that_stops_answering_pings_is_dropped(Backend::Embedded).await;
}
