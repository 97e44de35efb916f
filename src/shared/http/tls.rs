//! HTTPS with optional mutual TLS: the listener accepts TLS itself so the verified client
//! certificate can reach the handlers.
//!
//! A client certificate is verified against the configured client CA during the handshake; a
//! connection that presents an unverifiable certificate never reaches the router. A connection
//! without a certificate is allowed (health checks and metrics need none) and carries no
//! principal, so every endpoint that needs one answers 401.
//!
//! What a client — anonymous or not, the limits apply before anyone is identified — can hold
//! (the numbers are [`ServerSettings`]):
//!
//! - at most `max_connections_per_address` connections from its IP address, and all clients
//!   together at most `max_connections`. The caps are checked at accept, before the TLS
//!   handshake costs anything; a connection over a cap is closed at once, counted in
//!   `connections_rejected_total`, and never delays the accept loop;
//! - a connection that has not finished its TLS handshake, for `handshake_timeout_secs`;
//! - an HTTP/1 request head still arriving, for `header_read_timeout_secs`;
//! - a connection with no request in flight, for `idle_timeout_secs` — whether it never made
//!   a request, is between keep-alive requests, or is an HTTP/2 connection that only answers
//!   pings. Trickled bytes that never complete a request do not count as activity;
//! - a silent HTTP/2 peer is pinged every `http2_keep_alive_interval_secs` and dropped when it
//!   does not answer within `http2_keep_alive_timeout_secs`.
//!
//! A request in flight (its body being received, its handler running, its response being
//! sent) is never cut by the idle timer, however slow. Connections closed by these rules are
//! counted in `connections_closed_total`. Failed accepts (out of file descriptors and the
//! like) cannot flood the log: the first is logged, then at most one line every
//! [`ACCEPT_ERROR_SUMMARY_INTERVAL`] says how many went unlogged.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntGauge;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::shared::config::{ServerSettings, TlsSettings};
use crate::shared::identity::{IdentityError, Principal};
use crate::shared::telemetry::Metrics;

/// Who the connection a request came on belongs to.
#[derive(Clone, Debug)]
pub enum ClientIdentity {
    /// No client certificate was presented.
    Anonymous,
    /// A verified certificate naming exactly one principal.
    Principal(Principal),
    /// A verified certificate whose subject names no principal unambiguously; every request
    /// that needs one is answered 401 with this reason.
    Refused(IdentityError),
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Pem(#[from] crate::shared::pki::pem::PemError),
    #[error("invalid TLS configuration: {0}")]
    Invalid(String),
}

/// The server's rustls configuration: its certificate, and client certificates optional but
/// verified against `client_ca` when presented.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for certificate in crate::shared::pki::pem::read_certificates(&settings.client_ca)? {
        roots
            .add(certificate)
            .map_err(|error| TlsSetupError::Invalid(format!("client CA: {error}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|error| TlsSetupError::Invalid(error.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsSetupError::Invalid(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            crate::shared::pki::pem::read_certificates(&settings.cert)?,
            crate::shared::pki::pem::read_private_key(&settings.key)?,
        )
        .map_err(|error| TlsSetupError::Invalid(format!("server certificate: {error}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How often, at most, a run of failed accepts is summarised in the log.
pub const ACCEPT_ERROR_SUMMARY_INTERVAL: Duration = Duration::from_secs(5);

/// After a failed accept: the error is usually out-of-descriptors, which lasts until some
/// connection closes, so retrying at once would spin a core.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How long a connection closed for idleness gets to say goodbye (TLS close_notify, HTTP/2
/// GOAWAY) before it is dropped. It has no request in flight, so nothing is lost; the limit is
/// for a client that does not read, and for a fresh HTTP/1 connection, which hyper's graceful
/// shutdown only closes once a request completes.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    settings: ServerSettings,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(config);
    let organization: Arc<str> = settings.client_organization.clone().into();
    let handshake_timeout = Duration::from_secs(settings.handshake_timeout_secs);
    let idle_timeout = Duration::from_secs(settings.idle_timeout_secs);
    let http = Arc::new(http_builder(&settings));
    let limits = ConnectionLimits::new(
        settings.max_connections,
        settings.max_connections_per_address,
        metrics.connections_open.clone(),
    );
    let shutdown_grace = Duration::from_secs(settings.shutdown_grace_secs);
    let mut accept_errors = AcceptErrorLog::default();
    // Every connection's task, so shutdown can wait for the requests in progress.
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            // Reap finished connections so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    metrics.connection_accept_errors.inc();
                    match accept_errors.failed(Instant::now()) {
                        AcceptErrorReport::Log { suppressed: 0 } => {
                            tracing::warn!(%error, "Accept failed.");
                        }
                        AcceptErrorReport::Log { suppressed } => tracing::warn!(
                            %error,
                            suppressed,
                            "Accept failed (and {suppressed} more times since the last report)."
                        ),
                        AcceptErrorReport::Quiet => {}
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if let Some(suppressed) = accept_errors.succeeded(Instant::now()) {
            tracing::warn!(
                suppressed,
                "Accepting again; {suppressed} failed accepts were not logged."
            );
        }
        // Dropping the stream closes it: refusing costs no handshake and never waits.
        let permit = match limits.try_acquire(peer.ip()) {
            Ok(permit) => permit,
            Err(cap) => {
                metrics
                    .connections_rejected
                    .with_label_values(&[cap.reason()])
                    .inc();
                tracing::debug!(%peer, reason = cap.reason(), "Connection refused at a cap.");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let organization = organization.clone();
        let http = http.clone();
        let metrics = metrics.clone();
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            // Held until the connection ends, however it ends.
            let _permit = permit;
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    closed(&metrics, "handshake_failed");
                    tracing::debug!(%peer, %error, "TLS handshake failed.");
                    return;
                }
                Err(_) => {
                    closed(&metrics, "handshake_timeout");
                    tracing::debug!(%peer, "TLS handshake timed out.");
                    return;
                }
            };
            let identity = match tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
            {
                None => ClientIdentity::Anonymous,
                Some(certificate) => {
                    match Principal::from_certificate(certificate, &organization) {
                        Ok(principal) => ClientIdentity::Principal(principal),
                        Err(error) => {
                            tracing::warn!(%peer, %error, "A verified client certificate names no principal; its requests get 401.");
                            ClientIdentity::Refused(error)
                        }
                    }
                }
            };
            let activity = Activity::new();
            let service = {
                let activity = activity.clone();
                hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(identity.clone());
                    let router = router.clone();
                    // From here until the response body is sent or dropped, the connection is
                    // busy and the idle timer leaves it alone.
                    let in_flight = activity.request_started();
                    async move {
                        let response = router
                            .oneshot(request)
                            .await
                            .unwrap_or_else(|never| match never {});
                        Ok::<_, Infallible>(response.map(|inner| TrackedBody {
                            inner,
                            _in_flight: in_flight,
                        }))
                    }
                })
            };
            let connection = http.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = activity.idle(idle_timeout) => {
                    closed(&metrics, "idle");
                    tracing::debug!(%peer, "Closing an idle connection.");
                    connection.as_mut().graceful_shutdown();
                    // Past the grace the connection future is dropped, which closes the socket.
                    tokio::time::timeout(IDLE_CLOSE_GRACE, connection.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
                () = async {
                    // The guard `wait_for` returns must not live across the arm's awaits.
                    let _ = stop.wait_for(|stopping| *stopping).await;
                } => {
                    // Requests in progress finish and are answered; keep-alive ends after them.
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(shutdown_grace, connection.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(error) = result {
                if is_header_timeout(&*error) {
                    closed(&metrics, "header_timeout");
                }
                tracing::debug!(%peer, %error, "Connection ended with an error.");
            }
        });
    }
    // No new connections from here; the open ones finish what they started, for at most the
    // grace (plus the idle close grace, for connections hyper cannot close gracefully).
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            open,
            "Waiting for open connections to finish their requests."
        );
    }
    let drained = tokio::time::timeout(shutdown_grace + IDLE_CLOSE_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            cut = connections.len(),
            "Closing connections still busy after the shutdown grace."
        );
        connections.shutdown().await;
    }
}

fn closed(metrics: &Metrics, reason: &str) {
    metrics
        .connections_closed
        .with_label_values(&[reason])
        .inc();
}

fn is_header_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// HTTP/1 and HTTP/2 with the timers from the settings.
fn http_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(settings.header_read_timeout_secs));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(settings.http2_keep_alive_interval_secs))
        .keep_alive_timeout(Duration::from_secs(settings.http2_keep_alive_timeout_secs));
    builder
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cap {
    Total,
    PerAddress,
}

impl Cap {
    /// The metric label, named after the setting.
    fn reason(self) -> &'static str {
        match self {
            Cap::Total => "max_connections",
            Cap::PerAddress => "max_connections_per_address",
        }
    }
}

/// The open connections, in total and per client address.
#[derive(Clone)]
struct ConnectionLimits {
    inner: Arc<Mutex<OpenConnections>>,
    max_total: usize,
    max_per_address: usize,
    gauge: IntGauge,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    // Only addresses with an open connection have an entry, so the map is bounded by
    // `max_total`.
    per_address: HashMap<IpAddr, usize>,
}

/// One open connection's place under the caps; given back on drop.
struct ConnectionPermit {
    limits: ConnectionLimits,
    address: IpAddr,
}

impl ConnectionLimits {
    fn new(max_total: usize, max_per_address: usize, gauge: IntGauge) -> Self {
        ConnectionLimits {
            inner: Arc::default(),
            max_total,
            max_per_address,
            gauge,
        }
    }

    fn try_acquire(&self, address: IpAddr) -> Result<ConnectionPermit, Cap> {
        let address = client_network(address);
        let mut open = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.max_total {
            return Err(Cap::Total);
        }
        let from_address = open.per_address.entry(address).or_insert(0);
        if *from_address >= self.max_per_address {
            return Err(Cap::PerAddress);
        }
        *from_address += 1;
        open.total += 1;
        self.gauge.inc();
        Ok(ConnectionPermit {
            limits: self.clone(),
            address,
        })
    }
}

/// What the per-address cap counts as one client: an IPv4 address, or an IPv6 /64 — the
/// smallest prefix a site is given, so one host cannot spread over its 2^64 addresses.
fn client_network(address: IpAddr) -> IpAddr {
    // An IPv4 client on a dual-stack socket is the same client as over IPv4.
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(count) = open.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.per_address.remove(&self.address);
            }
        }
        self.limits.gauge.dec();
    }
}

/// Whether a connection is busy, and since when it is not.
#[derive(Clone)]
struct Activity(Arc<Mutex<ActivityState>>);

struct ActivityState {
    in_flight: usize,
    last_change: Instant,
}

/// One request in flight on a connection; the connection is idle again from its drop.
struct InFlight(Activity);

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(Mutex::new(ActivityState {
            in_flight: 0,
            last_change: Instant::now(),
        })))
    }

    fn state(&self) -> MutexGuard<'_, ActivityState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn request_started(&self) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        state.last_change = Instant::now();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let wake_at = {
                let state = self.state();
                if state.in_flight > 0 {
                    // A request that ends resets the clock, so idleness cannot begin before
                    // `timeout` from now: look again then.
                    Instant::now() + timeout
                } else {
                    state.last_change + timeout
                }
            };
            if wake_at <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(wake_at).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight -= 1;
        state.last_change = Instant::now();
    }
}

/// A response body that keeps its request in flight until it is fully sent or dropped, so a
/// slow download is not taken for idleness.
struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What to log about a failed accept.
#[derive(Debug, PartialEq, Eq)]
enum AcceptErrorReport {
    /// Log this failure, saying how many went unlogged since the last line.
    Log {
        suppressed: u64,
    },
    Quiet,
}

/// Rate limit for accept-failure logs: out of descriptors, every accept fails, and a line per
/// failure would flood the log (and the disk) exactly when the operator needs to read it.
#[derive(Default)]
struct AcceptErrorLog {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrorLog {
    fn due(&self, now: Instant) -> bool {
        self.last_logged
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_ERROR_SUMMARY_INTERVAL)
    }

    fn failed(&mut self, now: Instant) -> AcceptErrorReport {
        if self.due(now) {
            self.last_logged = Some(now);
            AcceptErrorReport::Log {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            AcceptErrorReport::Quiet
        }
    }

    /// After a successful accept: the number of failures to report now, so that a run of
    /// failures that ended is not left unreported; no more often than failures are.
    fn succeeded(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed > 0 && self.due(now) {
            self.last_logged = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_of_accept_failures_logs_one_line_then_one_per_interval_and_loses_no_count() {
        let start = Instant::now();
        let mut log = AcceptErrorLog::default();
        let mut lines = 0;
        let mut reported = 0;
        // 12 s of failures every 10 ms: denser than the accept loop's pause allows.
        for step in 0..1200u32 {
            let now = start + Duration::from_millis(10) * step;
            if let AcceptErrorReport::Log { suppressed } = log.failed(now) {
                lines += 1;
                reported += suppressed + 1;
            }
        }
        assert_eq!(lines, 3, "at 0 s, 5 s and 10 s");
        let end = start + Duration::from_secs(13);
        assert_eq!(log.succeeded(end), None, "not yet due");
        let end = start + Duration::from_secs(15);
        reported += log.succeeded(end).expect("the rest is reported once due");
        assert_eq!(reported, 1200);
        assert_eq!(log.succeeded(end + Duration::from_secs(60)), None);
    }

    #[test]
    fn one_ipv6_host_cannot_spread_over_its_64_prefix() {
        let gauge = IntGauge::new("open", "open").unwrap();
        let limits = ConnectionLimits::new(10, 2, gauge);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_prefix: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let next_prefix: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _first = limits.try_acquire(one).unwrap();
        let _second = limits.try_acquire(same_prefix).unwrap();
        assert_eq!(
            limits
                .try_acquire("2001:db8:1:2:abcd::9".parse().unwrap())
                .err(),
            Some(Cap::PerAddress),
            "a third address of the same /64 is the same client"
        );
        assert!(
            limits.try_acquire(next_prefix).is_ok(),
            "another /64 is another client"
        );
    }

    #[test]
    fn permits_are_counted_per_address_and_given_back_on_drop() {
        let gauge = IntGauge::new("open", "open").unwrap();
        let limits = ConnectionLimits::new(3, 2, gauge.clone());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = limits.try_acquire(a).unwrap();
        let second = limits.try_acquire(a_mapped).unwrap();
        assert_eq!(limits.try_acquire(a).err(), Some(Cap::PerAddress));
        let third = limits.try_acquire(b).unwrap();
        assert_eq!(limits.try_acquire(b).err(), Some(Cap::Total));
        assert_eq!(gauge.get(), 3);
        drop(first);
        assert_eq!(gauge.get(), 2);
        let again = limits.try_acquire(a).unwrap();
        drop((second, third, again));
        assert_eq!(gauge.get(), 0);
        assert!(limits.inner.lock().unwrap().per_address.is_empty());
    }
}
