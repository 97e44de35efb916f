//! HTTPS with optional mutual TLS: the listener accepts TLS itself so the verified client
//! certificate can reach the handlers.
//!
//! A client certificate is verified against the configured client CA during the handshake; a
//! connection that presents an unverifiable certificate never reaches the router. A connection
//! without a certificate is allowed (health checks and metrics need none) and carries no
//! principal, so every endpoint that needs one answers 401.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::TlsSettings;
use crate::identity::{IdentityError, Principal};

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
    Pem(#[from] crate::pki::pem::PemError),
    #[error("invalid TLS configuration: {0}")]
    Invalid(String),
}

/// The server's rustls configuration: its certificate, and client certificates optional but
/// verified against `client_ca` when presented.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for certificate in crate::pki::pem::read_certificates(&settings.client_ca)? {
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
            crate::pki::pem::read_certificates(&settings.cert)?,
            crate::pki::pem::read_private_key(&settings.key)?,
        )
        .map_err(|error| TlsSetupError::Invalid(format!("server certificate: {error}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    handshake_timeout: Duration,
    organization: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(config);
    let organization: Arc<str> = organization.into();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let organization = organization.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed.");
                    return;
                }
                Err(_) => {
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
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(identity.clone());
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(
                        router
                            .oneshot(request)
                            .await
                            .unwrap_or_else(|never| match never {}),
                    )
                }
            });
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, %error, "Connection ended with an error.");
            }
        });
    }
}
