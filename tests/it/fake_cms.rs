//! A fake police case-management system (CMS) that the test controls: HTTPS on 127.0.0.1 with
//! a server certificate from the test's CA, and a client certificate from that same CA
//! required during the handshake, so the mutual TLS under test is real.
//!
//! The test switches how it answers ([`Mode`]), stops and restarts it on the same port (an
//! outage), and reads every request it received, in arrival order, each with the answer it
//! got ([`Answer`]) and the connection it came on. That raw record is the only record: it is
//! written as each request arrives, under the same lock that decides the answer, and nothing in
//! it is folded or deduplicated, so a test counts real duplicates. In [`Mode::Accept`] the fake
//! answers idempotently per `Idempotency-Key`, like the CMS the sink expects: a key it opened a
//! case for gets that case's `cms_ref` again ([`Answer::Repeated`]) and no second case.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use leadbridge::police::sink::HttpSinkSettings;
use leadbridge::shared::identity::Principal;
use leadbridge::shared::pki::DevCa;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Path of the intake endpoint; [`FakeCms::url`] includes it.
const INTAKE_PATH: &str = "/intake";

/// How the fake CMS answers a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `201 {"cms_ref": "CMS-<n>"}`, the same `cms_ref` again for a repeated idempotency key.
    Accept,
    /// This status, with a short JSON error body.
    Fail(u16),
    /// Never answers (until the fake CMS is stopped).
    Hang,
    /// `200` with an HTML page instead of JSON.
    Garbage,
}

/// What the fake CMS answered one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `201`: the first acceptance of this key, which opened a case.
    Opened(String),
    /// `201`: a key that already has a case; its `cms_ref` again, and no new case.
    Repeated(String),
    /// `400`: no `Idempotency-Key` or no JSON body (in [`Mode::Accept`]).
    Refused,
    /// The status of [`Mode::Fail`].
    Failed(u16),
    /// None: [`Mode::Hang`], until the sender gave up or the fake CMS stopped.
    Hung,
    /// `200` with HTML ([`Mode::Garbage`]).
    Garbage,
}

/// One request as it arrived, and what it was answered.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedDelivery {
    /// The `Idempotency-Key` header (empty when absent).
    pub lead_id_revision: String,
    /// The `X-LeadBridge-Unit` header (empty when absent).
    pub unit: String,
    /// The JSON body (`null` when it was not JSON).
    pub body: Value,
    pub answer: Answer,
    /// Which connection it came on: the n-th the fake CMS accepted, from 1 (see
    /// [`FakeCms::connections_accepted`]).
    pub connection: usize,
}

#[derive(Debug)]
struct Ledger {
    mode: Mode,
    received: Vec<ReceivedDelivery>,
    handshake_errors: Vec<String>,
    connections_accepted: usize,
}

type Shared = Arc<Mutex<Ledger>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Ledger> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct FakeCms {
    address: SocketAddr,
    tls: Arc<ServerConfig>,
    shared: Shared,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FakeCms {
    /// Serves on a free port of 127.0.0.1 with a server certificate issued by `ca` for
    /// `127.0.0.1` and `localhost`, accepting only client certificates issued by `ca`.
    pub async fn start(ca: &DevCa) -> FakeCms {
        let server = ca
            .issue_server(&["127.0.0.1", "localhost"])
            .expect("issue the fake CMS's server certificate");
        let tls = server_config(&ca.cert_pem(), &server.cert_pem, &server.key_pem);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cms = FakeCms {
            address: listener.local_addr().unwrap(),
            tls,
            shared: Arc::new(Mutex::new(Ledger {
                mode: Mode::Accept,
                received: Vec::new(),
                handshake_errors: Vec::new(),
                connections_accepted: 0,
            })),
            server: Mutex::new(None),
        };
        cms.spawn(listener);
        cms
    }

    /// The intake endpoint, e.g. `https://127.0.0.1:41234/intake`; the same after a restart.
    pub fn url(&self) -> String {
        format!("https://{}{INTAKE_PATH}", self.address)
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.shared).mode = mode;
    }

    /// Every request, in arrival order, whatever the mode and the answer.
    pub fn received(&self) -> Vec<ReceivedDelivery> {
        lock(&self.shared).received.clone()
    }

    /// How many cases were opened so far (arrivals answered [`Answer::Opened`]).
    pub fn opened(&self) -> usize {
        lock(&self.shared)
            .received
            .iter()
            .filter(|r| matches!(r.answer, Answer::Opened(_)))
            .count()
    }

    /// The answers each key got, in arrival order, after checking the delivery worker's
    /// contract over the raw record: at least once towards the CMS, deduplicated by the key.
    /// Every request carried a key and `unit`; each key was accepted exactly once, by its last
    /// arrival, which opened its case; every earlier arrival of the key is a retry after an
    /// attempt that did not succeed (a failure status, no answer, garbage). A second delivery
    /// after a success, or one without the key, fails here.
    pub fn assert_each_key_accepted_once_after_failures(
        &self,
        unit: &str,
    ) -> BTreeMap<String, Vec<Answer>> {
        let received = self.received();
        let per_key = answers_per_key(&received, unit);
        for (key, answers) in &per_key {
            let (last, retried) = answers.split_last().expect("a key has an arrival");
            assert!(
                matches!(last, Answer::Opened(_)),
                "{key}: the last arrival must open the case: {answers:?}"
            );
            assert!(
                retried
                    .iter()
                    .all(|a| matches!(a, Answer::Failed(_) | Answer::Hung | Answer::Garbage)),
                "{key}: an arrival other than the last was not a failed attempt: {answers:?}"
            );
        }
        per_key
    }

    /// How many TCP connections were accepted so far; an arrival's `connection` is at most
    /// this. Taken once a sender is dead, it bounds that sender's connections: what it had
    /// written to them may still be read and answered afterwards, so its arrivals are those on
    /// connections up to the count, whenever they arrive. A connection accepted later is never
    /// its: the handshake needs the client's certificate, which a dead sender cannot send.
    pub fn connections_accepted(&self) -> usize {
        lock(&self.shared).connections_accepted
    }

    /// Why each failed TLS handshake failed, as the fake CMS saw it.
    pub fn handshake_errors(&self) -> Vec<String> {
        lock(&self.shared).handshake_errors.clone()
    }

    /// Stops listening and drops every open connection (and any hanging request): the port
    /// refuses connections until [`FakeCms::restart`].
    pub async fn stop(&self) {
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            server.abort();
            // The accept loop owns the listener and the connections: once it is gone, so are they.
            let _ = server.await;
        }
    }

    /// Listens again on the same port, keeping the mode and the record.
    pub async fn restart(&self) {
        self.stop().await;
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    tracing::debug!(%error, "Port not free yet; retrying.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cannot listen on {} again: {error}", self.address),
            }
        };
        self.spawn(listener);
    }

    /// Settings for an `HttpSink` that talks to this CMS: the CA as trust root and a client
    /// certificate from it, written under `dir`. The fake CMS checks only the chain, so the
    /// certificate names an arbitrary principal.
    pub fn sink_settings(&self, ca: &DevCa, dir: &Path) -> HttpSinkSettings {
        let client = ca
            .issue_client(&Principal::Investigator {
                unit: "370300".into(),
            })
            .expect("issue the sink's client certificate");
        let ca_path = dir.join("cms-ca.pem");
        let cert_path = dir.join("sink.pem");
        let key_path = dir.join("sink.key");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        std::fs::write(&cert_path, &client.cert_pem).unwrap();
        std::fs::write(&key_path, &client.key_pem).unwrap();
        HttpSinkSettings {
            url: self.url(),
            ca: ca_path,
            client_cert: cert_path,
            client_key: key_path,
            timeout_ms: 2_000,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
        }
    }

    fn spawn(&self, listener: TcpListener) {
        let router = Router::new()
            .route(INTAKE_PATH, post(intake))
            .with_state(self.shared.clone());
        let task = tokio::spawn(serve(
            listener,
            TlsAcceptor::from(self.tls.clone()),
            router,
            self.shared.clone(),
        ));
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }
}

impl Drop for FakeCms {
    fn drop(&mut self) {
        if let Some(server) = self
            .server
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            server.abort();
        }
    }
}

fn server_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca_pem) {
        roots.add(certificate).unwrap();
    }
    // No `allow_unauthenticated`: a connection without a client certificate from the CA fails
    // its handshake.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .expect("a PEM private key");
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(cert_pem), key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The accept loop of `src/shared/http/tls.rs`, with the connections owned by the loop so that
/// aborting it closes them all.
async fn serve(listener: TcpListener, acceptor: TlsAcceptor, router: Router, shared: Shared) {
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shared = shared.clone();
        let connection = {
            let mut ledger = lock(&shared);
            ledger.connections_accepted += 1;
            Connection(ledger.connections_accepted)
        };
        connections.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        lock(&shared).handshake_errors.push(error.to_string());
                        return;
                    }
                    Err(_) => {
                        lock(&shared)
                            .handshake_errors
                            .push("handshake timed out".into());
                        return;
                    }
                };
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let router = router.clone();
                request.extensions_mut().insert(connection);
                async move {
                    Ok::<_, Infallible>(
                        router
                            .oneshot(request)
                            .await
                            .unwrap_or_else(|never| match never {}),
                    )
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// The serial of the connection a request came on, from the accept loop to [`intake`].
#[derive(Clone, Copy, Debug)]
struct Connection(usize);

async fn intake(
    State(shared): State<Shared>,
    Extension(Connection(connection)): Extension<Connection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let json = serde_json::from_slice::<Value>(&body).ok();
    let key = header("idempotency-key");
    // Recorded and answered under one lock, so the record's order is the order of the answers
    // and two concurrent requests with one key cannot both open a case.
    let answer = {
        let mut ledger = lock(&shared);
        let answer = match ledger.mode {
            Mode::Accept if key.is_empty() || json.is_none() => Answer::Refused,
            Mode::Accept => {
                let existing = ledger.received.iter().find_map(|r| match &r.answer {
                    Answer::Opened(cms_ref) if r.lead_id_revision == key => Some(cms_ref.clone()),
                    _ => None,
                });
                match existing {
                    Some(cms_ref) => Answer::Repeated(cms_ref),
                    None => {
                        let opened = ledger
                            .received
                            .iter()
                            .filter(|r| matches!(r.answer, Answer::Opened(_)))
                            .count();
                        Answer::Opened(format!("CMS-{}", opened + 1))
                    }
                }
            }
            Mode::Fail(status) => Answer::Failed(status),
            Mode::Hang => Answer::Hung,
            Mode::Garbage => Answer::Garbage,
        };
        ledger.received.push(ReceivedDelivery {
            lead_id_revision: key,
            unit: header("x-leadbridge-unit"),
            body: json.unwrap_or(Value::Null),
            answer: answer.clone(),
            connection,
        });
        answer
    };
    match answer {
        Answer::Refused => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "a JSON body and an Idempotency-Key are required"})),
        )
            .into_response(),
        Answer::Opened(cms_ref) | Answer::Repeated(cms_ref) => {
            (StatusCode::CREATED, Json(json!({ "cms_ref": cms_ref }))).into_response()
        }
        Answer::Failed(status) => (
            StatusCode::from_u16(status).expect("a valid HTTP status"),
            Json(json!({"error": format!("the fake CMS was told to answer {status}")})),
        )
            .into_response(),
        Answer::Hung => std::future::pending().await,
        Answer::Garbage => (
            StatusCode::OK,
            [(CONTENT_TYPE, "text/html")],
            "<html><body>Maintenance until 06:00</body></html>",
        )
            .into_response(),
    }
}

/// The answers per key in arrival order, after checking that every request carried a key and
/// was for `unit`.
pub fn answers_per_key(received: &[ReceivedDelivery], unit: &str) -> BTreeMap<String, Vec<Answer>> {
    let mut per_key: BTreeMap<String, Vec<Answer>> = BTreeMap::new();
    for (index, arrival) in received.iter().enumerate() {
        assert!(
            !arrival.lead_id_revision.is_empty(),
            "arrival {index} carried no Idempotency-Key: {:?}",
            arrival.answer
        );
        assert_eq!(
            arrival.unit, unit,
            "arrival {index} ({})",
            arrival.lead_id_revision
        );
        per_key
            .entry(arrival.lead_id_revision.clone())
            .or_default()
            .push(arrival.answer.clone());
    }
    per_key
}
