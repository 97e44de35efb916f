//! The HTTP sink: POSTs each delivery to a police unit's case-management system (CMS) over
//! HTTPS with mutual TLS.
//!
//! Guarantee: a delivery counts as delivered only when the CMS answered 2xx with a JSON object
//! carrying a non-empty string `cms_ref`. Every attempt at the same (lead_id, revision) carries
//! the same `Idempotency-Key: <lead_id>:<revision>`, so a CMS that honours the header opens one
//! case however often the worker retries; the sink cannot enforce that on a CMS that ignores it.
//!
//! Trust is narrow on purpose: the configured CA is the only root (no system or bundled roots),
//! the sink always presents its client certificate, redirects are not followed (a redirected
//! POST would lose its body or land elsewhere), and no proxy from the environment is used.
//! After `breaker_failures` consecutive failed attempts the circuit opens and attempts are
//! refused without contacting the CMS for `breaker_open_ms` (see [`super::breaker`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::{StatusCode, Url};
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};

use super::breaker::{CircuitBreaker, Transition};
use super::{BoxFuture, Delivered, Delivery, DeliveryError, DeliverySink};
use crate::shared::telemetry::{events, Metrics};

/// Header carrying `<lead_id>:<revision>`.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Header carrying the code of the police unit the lead was routed to.
pub const UNIT_HEADER: &str = "x-leadbridge-unit";

/// Longest error excerpt, in characters.
const EXCERPT_CHARS: usize = 200;
/// Most of an answer the sink reads; a CMS answer is a small JSON object.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where and how to reach one unit's case-management system.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkSettings {
    /// `https://` URL of the CMS intake endpoint; every delivery is POSTed to it.
    pub url: String,
    /// PEM CA certificate(s) that issued the CMS's server certificate: the only roots trusted.
    pub ca: PathBuf,
    /// PEM certificate chain the sink presents as its client certificate.
    pub client_cert: PathBuf,
    /// PEM private key of `client_cert`.
    pub client_key: PathBuf,
    /// How long one attempt may take, from connecting until the whole answer is read.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failed attempts (no answer, timeout, 5xx/408/429, unusable 2xx) that open
    /// the circuit.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit refuses attempts before it lets one trial through.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_open_ms() -> u64 {
    30_000
}

/// Why an [`HttpSink`] could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SinkSetupError {
    #[error(transparent)]
    Pem(#[from] crate::shared::pki::pem::PemError),
    #[error("invalid case-management system URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("invalid HTTP sink settings: {0}")]
    Invalid(String),
}

/// Delivers to one CMS. Cheap to share: one connection pool and one circuit breaker for every
/// concurrent delivery through it.
#[derive(Debug)]
pub struct HttpSink {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
    breaker: CircuitBreaker,
    telemetry: Option<BreakerTelemetry>,
}

/// Where the breaker's state changes are reported: the metrics and the unit they are labelled
/// with.
struct BreakerTelemetry {
    metrics: Metrics,
    unit: String,
}

impl std::fmt::Debug for BreakerTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerTelemetry")
            .field("unit", &self.unit)
            .finish_non_exhaustive()
    }
}

impl HttpSink {
    /// Reads the certificates and key and builds the HTTPS client; contacts nobody.
    pub fn new(settings: &HttpSinkSettings) -> Result<HttpSink, SinkSetupError> {
        let url = parse_url(&settings.url)?;
        if settings.timeout_ms == 0 {
            return Err(SinkSetupError::Invalid(
                "timeout_ms must be at least 1".into(),
            ));
        }
        if settings.breaker_failures == 0 {
            return Err(SinkSetupError::Invalid(
                "breaker_failures must be at least 1".into(),
            ));
        }
        let timeout = Duration::from_millis(settings.timeout_ms);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(settings)?)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("leadbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| SinkSetupError::Invalid(format!("HTTPS client: {error}")))?;
        Ok(HttpSink {
            client,
            url,
            timeout,
            breaker: CircuitBreaker::new(
                settings.breaker_failures,
                Duration::from_millis(settings.breaker_open_ms),
            ),
            telemetry: None,
        })
    }

    /// Reports the breaker's state as `unit`'s in `metrics` (`police_breaker_state`), from now
    /// on; without it, state changes are only logged.
    pub fn observed(mut self, metrics: &Metrics, unit: &str) -> HttpSink {
        events::police_breaker_watched(metrics, unit, self.url.as_str());
        self.telemetry = Some(BreakerTelemetry {
            metrics: metrics.clone(),
            unit: unit.to_owned(),
        });
        self
    }

    fn breaker_changed(&self, unit: &str, state: &str, error: Option<&DeliveryError>) {
        let error = error.map(ToString::to_string);
        match &self.telemetry {
            Some(telemetry) => events::police_breaker_state(
                &telemetry.metrics,
                &telemetry.unit,
                self.url.as_str(),
                state,
                error.as_deref(),
            ),
            None => {
                tracing::info!(url = %self.url, unit, state, error, "Circuit to the case-management system changed state.")
            }
        }
    }

    /// The CMS intake endpoint.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The sink's circuit breaker, for inspection.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    async fn attempt(&self, delivery: &Delivery) -> Result<Delivered, DeliveryError> {
        let key = header_value("idempotency key", &delivery.idempotency_key())?;
        let unit = header_value("unit", &delivery.unit)?;
        let permit = match self.breaker.try_acquire(Instant::now()) {
            Ok(permit) => permit,
            Err(until) => {
                return Err(DeliveryError::CircuitOpen {
                    until: wall_clock(until, Instant::now()),
                })
            }
        };
        if permit.is_trial() {
            self.breaker_changed(&delivery.unit, "half_open", None);
        }
        let outcome = self.post(delivery, key, unit).await;
        let now = Instant::now();
        // A deliberate refusal shows a CMS that works: it must not open the circuit.
        let transition = match &outcome {
            Ok(_) | Err(DeliveryError::Rejected { .. }) => permit.succeeded(now),
            Err(_) => permit.failed(now),
        };
        match (transition, &outcome) {
            (Some(Transition::Opened { until }), Err(error)) => {
                tracing::debug!(url = %self.url, until = %wall_clock(until, now), "The circuit stays open until then.");
                self.breaker_changed(&delivery.unit, "open", Some(error));
            }
            (Some(Transition::Closed), _) => self.breaker_changed(&delivery.unit, "closed", None),
            _ => {}
        }
        outcome
    }

    async fn post(
        &self,
        delivery: &Delivery,
        key: HeaderValue,
        unit: HeaderValue,
    ) -> Result<Delivered, DeliveryError> {
        let response = self
            .client
            .post(self.url.clone())
            .header(IDEMPOTENCY_KEY, key)
            .header(UNIT_HEADER, unit)
            .header(ACCEPT, "application/json")
            .json(&delivery.body)
            .send()
            .await
            .map_err(|error| self.transport_error(&error))?;
        let status = response.status();
        match read_capped(response).await {
            Ok(body) => classify(status, &body),
            // The CMS may have opened the case and lost the answer: the retry's key finds it.
            Err(error) if status.is_success() => Err(self.transport_error(&error)),
            Err(_) => classify(status, b""),
        }
    }

    fn transport_error(&self, error: &reqwest::Error) -> DeliveryError {
        if error.is_timeout() {
            DeliveryError::Timeout(self.timeout)
        } else {
            DeliveryError::Connect(error_chain(error))
        }
    }
}

impl DeliverySink for HttpSink {
    fn deliver<'a>(
        &'a self,
        delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.attempt(delivery))
    }
}

fn parse_url(text: &str) -> Result<Url, SinkSetupError> {
    let invalid = |reason: String| SinkSetupError::Url {
        url: text.to_owned(),
        reason,
    };
    let url = Url::parse(text).map_err(|error| invalid(error.to_string()))?;
    if url.scheme() != "https" {
        return Err(invalid("leads go to a CMS over https only".into()));
    }
    if url.host().is_none() {
        return Err(invalid("no host".into()));
    }
    Ok(url)
}

fn tls_config(settings: &HttpSinkSettings) -> Result<rustls::ClientConfig, SinkSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for certificate in crate::shared::pki::pem::read_certificates(&settings.ca)? {
        roots
            .add(certificate)
            .map_err(|error| SinkSetupError::Invalid(format!("CA certificate: {error}")))?;
    }
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| SinkSetupError::Invalid(error.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            crate::shared::pki::pem::read_certificates(&settings.client_cert)?,
            crate::shared::pki::pem::read_private_key(&settings.client_key)?,
        )
        .map_err(|error| SinkSetupError::Invalid(format!("client certificate: {error}")))
}

fn header_value(what: &str, value: &str) -> Result<HeaderValue, DeliveryError> {
    HeaderValue::from_str(value)
        .map_err(|_| DeliveryError::Unsendable(format!("the {what} {value:?} is no header value")))
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(body)
}

/// What an answer means: success, or which error.
fn classify(status: StatusCode, body: &[u8]) -> Result<Delivered, DeliveryError> {
    let code = status.as_u16();
    if status.is_success() {
        return cms_ref(body)
            .map(|cms_ref| Delivered { cms_ref })
            .ok_or_else(|| DeliveryError::Garbage {
                status: code,
                excerpt: excerpt(body),
            });
    }
    let excerpt = excerpt(body);
    match code {
        408 | 429 => Err(DeliveryError::Status {
            status: code,
            excerpt,
        }),
        400..=499 => Err(DeliveryError::Rejected {
            status: code,
            excerpt,
        }),
        _ => Err(DeliveryError::Status {
            status: code,
            excerpt,
        }),
    }
}

/// Longest case reference kept; case-management numbers are short, and the reference goes into
/// the receipt, the timeline and the agency's feedback.
const MAX_CMS_REF_CHARS: usize = 128;

/// The answer's `cms_ref`: a non-empty string without control characters (which a database may
/// refuse and no case number holds) of at most `MAX_CMS_REF_CHARS`.
fn cms_ref(body: &[u8]) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let cms_ref = answer.as_object()?.get("cms_ref")?.as_str()?.trim();
    let usable = !cms_ref.is_empty()
        && cms_ref.chars().count() <= MAX_CMS_REF_CHARS
        && !cms_ref.chars().any(char::is_control);
    usable.then(|| cms_ref.to_owned())
}

/// The start of an answer, on one line, at most [`EXCERPT_CHARS`] characters.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let one_line = |c: char| if c.is_control() { ' ' } else { c };
    if text.chars().count() <= EXCERPT_CHARS {
        return text.chars().map(one_line).collect();
    }
    let mut excerpt: String = text.chars().take(EXCERPT_CHARS - 1).map(one_line).collect();
    excerpt.push('…');
    excerpt
}

/// An error and its causes: reqwest's own message rarely says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The wall-clock time of the monotonic `instant`, given the monotonic `now`.
fn wall_clock(instant: Instant, now: Instant) -> DateTime<Utc> {
    let ahead = instant.saturating_duration_since(now);
    let ahead = TimeDelta::from_std(ahead).unwrap_or(TimeDelta::MAX);
    Utc::now()
        .checked_add_signed(ahead)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::pki::pem::PemError;
    use serde_json::json;
    use std::path::Path;

    fn settings(url: &str, dir: &Path) -> HttpSinkSettings {
        HttpSinkSettings {
            url: url.into(),
            ca: dir.join("ca.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            timeout_ms: default_timeout_ms(),
            breaker_failures: default_breaker_failures(),
            breaker_open_ms: default_breaker_open_ms(),
        }
    }

    /// A self-signed certificate standing in for both the CA and the client certificate:
    /// setup only parses them.
    fn write_certificates(dir: &Path) {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), certificate.pem()).unwrap();
        std::fs::write(dir.join("client.pem"), certificate.pem()).unwrap();
        std::fs::write(dir.join("client.key"), key.serialize_pem()).unwrap();
    }

    #[test]
    fn settings_take_defaults_and_refuse_unknown_fields() {
        let parsed: HttpSinkSettings = serde_json::from_value(json!({
            "url": "https://cms.example/intake",
            "ca": "/etc/cms/ca.pem",
            "client_cert": "/etc/cms/client.pem",
            "client_key": "/etc/cms/client.key",
        }))
        .unwrap();
        assert_eq!(parsed.timeout_ms, 10_000);
        assert_eq!(parsed.breaker_failures, 5);
        assert_eq!(parsed.breaker_open_ms, 30_000);

        let unknown = serde_json::from_value::<HttpSinkSettings>(json!({
            "url": "https://cms.example/intake",
            "ca": "/etc/cms/ca.pem",
            "client_cert": "/etc/cms/client.pem",
            "client_key": "/etc/cms/client.key",
            "timeout": 5,
        }));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn a_sink_is_built_from_readable_certificates() {
        let dir = tempfile::tempdir().unwrap();
        write_certificates(dir.path());
        let sink = HttpSink::new(&settings("https://127.0.0.1:9/intake", dir.path())).unwrap();
        assert_eq!(sink.url().as_str(), "https://127.0.0.1:9/intake");
    }

    #[test]
    fn a_plain_http_or_malformed_url_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_certificates(dir.path());
        for url in [
            "http://cms.example/intake",
            "cms.example/intake",
            "https://",
        ] {
            let error = HttpSink::new(&settings(url, dir.path())).unwrap_err();
            assert!(
                matches!(error, SinkSetupError::Url { .. }),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn missing_or_empty_certificate_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let url = "https://cms.example/intake";
        let error = HttpSink::new(&settings(url, dir.path())).unwrap_err();
        assert!(
            matches!(&error, SinkSetupError::Pem(PemError::Read { path, .. }) if path.ends_with("ca.pem")),
            "{error}"
        );

        write_certificates(dir.path());
        std::fs::write(dir.path().join("client.pem"), "not a certificate").unwrap();
        let error = HttpSink::new(&settings(url, dir.path())).unwrap_err();
        assert!(
            matches!(&error, SinkSetupError::Pem(PemError::NoCertificate(path)) if path.ends_with("client.pem")),
            "{error}"
        );

        write_certificates(dir.path());
        std::fs::write(dir.path().join("client.key"), "").unwrap();
        let error = HttpSink::new(&settings(url, dir.path())).unwrap_err();
        assert!(
            matches!(&error, SinkSetupError::Pem(PemError::NoKey(path)) if path.ends_with("client.key")),
            "{error}"
        );
    }

    #[test]
    fn zero_timeout_or_breaker_threshold_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_certificates(dir.path());
        let mut zero_timeout = settings("https://cms.example/intake", dir.path());
        zero_timeout.timeout_ms = 0;
        assert!(matches!(
            HttpSink::new(&zero_timeout),
            Err(SinkSetupError::Invalid(_))
        ));
        let mut zero_failures = settings("https://cms.example/intake", dir.path());
        zero_failures.breaker_failures = 0;
        assert!(matches!(
            HttpSink::new(&zero_failures),
            Err(SinkSetupError::Invalid(_))
        ));
    }

    #[test]
    fn a_2xx_json_object_with_a_cms_ref_is_success() {
        for status in [StatusCode::OK, StatusCode::CREATED] {
            let delivered = classify(status, br#"{"cms_ref": "CMS-7", "extra": 1}"#).unwrap();
            assert_eq!(delivered.cms_ref, "CMS-7");
        }
    }

    #[test]
    fn a_cms_ref_longer_than_a_case_number_is_garbage() {
        let long = format!(r#"{{"cms_ref": "{}"}}"#, "9".repeat(MAX_CMS_REF_CHARS + 1));
        assert!(classify(StatusCode::OK, long.as_bytes()).is_err());
        let longest = format!(r#"{{"cms_ref": "{}"}}"#, "9".repeat(MAX_CMS_REF_CHARS));
        assert!(classify(StatusCode::OK, longest.as_bytes()).is_ok());
    }

    #[test]
    fn a_2xx_without_a_usable_cms_ref_is_garbage() {
        for body in [
            &b""[..],
            b"<html>ok</html>",
            b"[]",
            br#""CMS-1""#,
            br#"{"ref": "CMS-1"}"#,
            br#"{"cms_ref": ""}"#,
            br#"{"cms_ref": "   "}"#,
            br#"{"cms_ref": 17}"#,
            br#"{"cms_ref": null}"#,
            br#"{"cms_ref": "CMS\u0000-7"}"#,
            br#"{"cms_ref": "CMS-\u001b[2J"}"#,
        ] {
            let error = classify(StatusCode::OK, body).unwrap_err();
            assert!(
                matches!(error, DeliveryError::Garbage { status: 200, .. }),
                "{}: {error}",
                String::from_utf8_lossy(body)
            );
            assert!(error.is_retryable());
        }
    }

    #[test]
    fn statuses_map_to_retryable_or_final_errors() {
        for code in [500, 502, 503, 504, 408, 429, 301, 302, 307] {
            let status = StatusCode::from_u16(code).unwrap();
            let error = classify(status, b"try later").unwrap_err();
            assert!(
                matches!(&error, DeliveryError::Status { status, excerpt } if *status == code && excerpt == "try later"),
                "{code}: {error}"
            );
            assert!(error.is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 413, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            let error = classify(status, b"no").unwrap_err();
            assert!(
                matches!(&error, DeliveryError::Rejected { status, .. } if *status == code),
                "{code}: {error}"
            );
            assert!(!error.is_retryable(), "{code}");
        }
    }

    #[test]
    fn an_excerpt_is_one_line_of_at_most_200_characters() {
        assert_eq!(excerpt(b"  short\r\nanswer \n"), "short  answer");
        let long = "案".repeat(300);
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), 200);
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("案案"));
        let exact = "x".repeat(200);
        assert_eq!(excerpt(exact.as_bytes()), exact);
        assert_eq!(excerpt(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn an_invalid_header_value_is_unsendable_and_final() {
        let error = header_value("unit", "37\n0303").unwrap_err();
        assert!(matches!(error, DeliveryError::Unsendable(_)));
        assert!(!error.is_retryable());
    }

    #[test]
    fn a_monotonic_deadline_becomes_a_wall_clock_time_as_far_ahead() {
        let now = Instant::now();
        let before = Utc::now();
        let at = wall_clock(now + Duration::from_secs(30), now);
        let ahead = at - before;
        assert!(ahead >= TimeDelta::seconds(30) && ahead < TimeDelta::seconds(31));
        assert!(wall_clock(now, now + Duration::from_secs(5)) <= Utc::now());
    }
}
