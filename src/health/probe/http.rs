//! HTTP(S) probes through reqwest with rustls: status, latency, and optionally a body digest.
//!
//! Every probe opens a fresh connection (no keep-alive: a pooled connection would hide a path
//! that no longer accepts new ones) to the literal address; with `host` set, the request still
//! goes to that address but carries `Host: host` and, over HTTPS, uses it as the TLS server
//! name and checks the certificate against it. Redirects are not followed unless configured.
//! The body is read up to `MAX_BODY` bytes, so a huge object cannot exhaust memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{root_cause, Outcome, ProbeError};
use crate::config::HttpCheck;

/// The most body a probe reads.
pub const MAX_BODY: usize = 1 << 20;

/// The User-Agent of every probe.
const USER_AGENT: &str = concat!("healthdns/", env!("CARGO_PKG_VERSION"), " (health check)");

/// TLS for HTTPS probes that trust only the certificates in `ca_file` (an internal CA).
pub fn tls_config_with_ca(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in crate::config::read_certificates(ca_file)? {
        roots
            .add(certificate)
            .map_err(|error| format!("{}: {error}", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS for HTTPS probes: the system's trust store (rustls-platform-verifier), ring crypto.
pub fn tls_config() -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_platform_verifier()
        .map_err(|error| error.to_string())?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Fetches one URL from one address.
pub struct HttpChecker {
    client: reqwest::Client,
    url: reqwest::Url,
    expect_status: Vec<u16>,
    max_latency: Option<Duration>,
    body_sha256: Option<[u8; 32]>,
    timeout: Duration,
}

impl HttpChecker {
    pub fn new(
        check: &HttpCheck,
        address: IpAddr,
        timeout: Duration,
        tls: rustls::ClientConfig,
        source: Option<IpAddr>,
    ) -> Result<Self, ProbeError> {
        let text = check.url_for(address);
        let error = |message: String| ProbeError::Http {
            url: text.clone(),
            message,
        };
        let url = reqwest::Url::parse(&text).map_err(|parse| error(parse.to_string()))?;
        let redirect = if check.follow_redirects {
            reqwest::redirect::Policy::limited(5)
        } else {
            reqwest::redirect::Policy::none()
        };
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .redirect(redirect)
            .user_agent(USER_AGENT)
            .local_address(source)
            .tls_backend_preconfigured(tls);
        if let Some(host) = &check.host {
            let port = url.port_or_known_default().unwrap_or(80);
            builder = builder.resolve(host, SocketAddr::new(address, port));
        }
        let client = builder.build().map_err(|build| error(root_cause(&build)))?;
        Ok(Self {
            client,
            url,
            expect_status: check.expect_status.clone(),
            max_latency: check.max_latency,
            body_sha256: check.body_sha256,
            timeout,
        })
    }

    async fn fetch(&self) -> Result<(), String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|error| format!("http: {}", root_cause(&error)))?;
        let status = response.status().as_u16();
        if !self.expect_status.contains(&status) {
            return Err(format!(
                "http: status {status}, expected one of {:?}",
                self.expect_status
            ));
        }
        let mut hasher = Sha256::new();
        let mut length = 0usize;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| format!("http: reading the body: {}", root_cause(&error)))?
        {
            length += chunk.len();
            if length > MAX_BODY {
                if self.body_sha256.is_some() {
                    return Err(format!(
                        "http: body over {MAX_BODY} bytes, too large to check its digest"
                    ));
                }
                break;
            }
            if self.body_sha256.is_some() {
                hasher.update(&chunk);
            }
        }
        if let Some(expected) = self.body_sha256 {
            let digest: [u8; 32] = hasher.finalize().into();
            if digest != expected {
                return Err(format!(
                    "http: body sha256 {}, expected {}",
                    hex::encode(digest),
                    hex::encode(expected)
                ));
            }
        }
        Ok(())
    }
}

impl HttpChecker {
    /// Sends one probe.
    pub async fn check(&self) -> Outcome {
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.fetch()).await;
        let latency = start.elapsed();
        match result {
            Err(_) => Outcome::fail(
                latency,
                format!("http: no complete response within {:?}", self.timeout),
            ),
            Ok(Err(reason)) => Outcome::fail(latency, reason),
            Ok(Ok(())) => match self.max_latency {
                Some(max) if latency > max => Outcome::fail(
                    latency,
                    format!("http: answered in {latency:?}, over max_latency {max:?}"),
                ),
                _ => Outcome::pass(latency),
            },
        }
    }
}
