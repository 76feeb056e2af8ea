//! The webhook push sink: one HTTP POST of a JSON payload per push, to the URL a user
//! registered, over HTTPS (trusting the configured roots) or plain HTTP. Each request
//! carries an `Idempotency-Key` that is the same on every retry and redelivery, so a
//! receiver can drop the rare duplicate a crash between "sent" and "recorded" causes.

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why a push was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: connection failures, timeouts, 408, 429, 5xx.
    #[error("push sink failed, will retry: {0}")]
    Retry(String),
    /// The sink refused it for good (other 4xx, bad URL).
    #[error("push sink refused: {0}")]
    Permanent(String),
    /// 404 or 410: the subscription no longer exists at the sink; drop it.
    #[error("push subscription gone at the sink: {0}")]
    Gone(String),
}

/// Where pushes go.
#[async_trait]
pub trait PushSink: Send + Sync + 'static {
    /// Delivers one push (`body` is JSON) to `url`.
    async fn deliver(
        &self,
        url: &str,
        idempotency_key: &str,
        body: Bytes,
    ) -> Result<(), DeliveryError>;
}

/// POSTs to webhook URLs with hyper over tokio (and rustls for `https`).
pub struct WebhookSink {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// A sink trusting `roots` for `https` URLs; each request may take `timeout`.
    pub fn new(roots: rustls::RootCertStore, timeout: Duration) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout,
        }
    }

    /// Roots from PEM files (e.g. the system bundle `/etc/ssl/certs/ca-certificates.crt`);
    /// unreadable files are skipped with a warning, so plain-HTTP sinks still work.
    pub fn roots_from(paths: &[std::path::PathBuf]) -> rustls::RootCertStore {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for path in paths {
            match std::fs::read(path) {
                Ok(pem) => {
                    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                        let _ = roots.add(cert);
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "push CA file unreadable")
                }
            }
        }
        roots
    }

    async fn post(&self, url: &str, key: &str, body: Bytes) -> Result<u16, DeliveryError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| DeliveryError::Permanent(format!("bad URL {url:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(DeliveryError::Permanent(format!(
                    "not an http(s) URL: {url}"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| DeliveryError::Permanent(format!("no host in {url}")))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        let request = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "confab-notify")
            .header("idempotency-key", key)
            .body(Full::new(body))
            .map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        let retry = |e: &dyn std::fmt::Display| DeliveryError::Retry(format!("{url}: {e}"));
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| retry(&e))?;
        let _ = tcp.set_nodelay(true);
        let status = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| DeliveryError::Permanent(format!("bad host {host}: {e}")))?;
            let stream = self.tls.connect(name, tcp).await.map_err(|e| retry(&e))?;
            send(hyper_util::rt::TokioIo::new(stream), request)
                .await
                .map_err(|e| retry(&e))?
        } else {
            send(hyper_util::rt::TokioIo::new(tcp), request)
                .await
                .map_err(|e| retry(&e))?
        };
        Ok(status)
    }
}

async fn send<S>(io: S, request: http::Request<Full<Bytes>>) -> Result<u16, hyper::Error>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    // Read (and drop) the body so the exchange completes cleanly.
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[async_trait]
impl PushSink for WebhookSink {
    async fn deliver(
        &self,
        url: &str,
        idempotency_key: &str,
        body: Bytes,
    ) -> Result<(), DeliveryError> {
        let status = tokio::time::timeout(self.timeout, self.post(url, idempotency_key, body))
            .await
            .map_err(|_| {
                DeliveryError::Retry(format!("{url}: no answer in {:?}", self.timeout))
            })??;
        match status {
            200..=299 => Ok(()),
            404 | 410 => Err(DeliveryError::Gone(format!("{url} answered {status}"))),
            408 | 429 | 500..=599 => Err(DeliveryError::Retry(format!("{url} answered {status}"))),
            _ => Err(DeliveryError::Permanent(format!("{url} answered {status}"))),
        }
    }
}
