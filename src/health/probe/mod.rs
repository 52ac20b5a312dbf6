//! How to check an address: ICMP echo, TCP connect, HTTP(S) fetch.
//!
//! Why this exists: probing is I/O at the edge of the program, kept apart from deciding what
//! a result means. A checker holds no health state: `check()` sends one probe to one literal
//! address (never a DNS lookup) and reports an `Outcome`: passed or not, how long it took,
//! and, for a failure, why (connection refused, timeout, wrong status, ...). Thresholds
//! (`fall`/`rise`) live in `verdict`; what to answer lives in `selection`.

mod http;
mod icmp;
mod tcp;

use std::future::Future;
use std::time::Duration;

use std::net::IpAddr;

use crate::config::{CheckConfig, CheckKind};

pub use http::{tls_config, HttpChecker, MAX_BODY};
pub use icmp::{IcmpChecker, IcmpClients};
pub use tcp::TcpChecker;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub passed: bool,
    /// From sending the probe to its result.
    pub latency: Duration,
    /// Why it failed; empty when it passed.
    pub reason: String,
}

impl Outcome {
    pub fn pass(latency: Duration) -> Self {
        Self {
            passed: true,
            latency,
            reason: String::new(),
        }
    }

    pub fn fail(latency: Duration, reason: impl Into<String>) -> Self {
        Self {
            passed: false,
            latency,
            reason: reason.into(),
        }
    }
}

/// Something that probes one target. Implementations hold no health state.
pub trait Check: Send + Sync + 'static {
    /// The kind of probe, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Sends one probe and reports what it saw; never takes longer than the check's timeout
    /// by more than scheduling noise.
    fn check(&self) -> impl Future<Output = Outcome> + Send;
}

/// Probing cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Fix the system: grant the capability or widen the ping group range.
    #[error(
        "cannot open an ICMP socket for {family} ({}): allow unprivileged ping for the \
         server's group with `sysctl net.ipv4.ping_group_range=\"0 2147483647\"`, or give the \
         binary CAP_NET_RAW (`setcap cap_net_raw+ep healthdns`, or run as root)",
        error.kind()
    )]
    Icmp {
        family: &'static str,
        /// Not a `source`: surge-ping's text repeats the advice above.
        error: std::io::Error,
    },
    /// The TLS roots or the HTTP client could not be set up.
    #[error("cannot set up HTTP probes for {url}: {message}")]
    Http { url: String, message: String },
}

/// The checker of one target.
pub enum Checker {
    Icmp(IcmpChecker),
    Tcp(TcpChecker),
    Http(HttpChecker),
}

impl Check for Checker {
    fn kind(&self) -> &'static str {
        match self {
            Self::Icmp(_) => "icmp",
            Self::Tcp(_) => "tcp",
            Self::Http(_) => "http",
        }
    }

    async fn check(&self) -> Outcome {
        match self {
            Self::Icmp(checker) => checker.check().await,
            Self::Tcp(checker) => checker.check().await,
            Self::Http(checker) => checker.check().await,
        }
    }
}

/// Builds checkers, sharing what can be shared: one ICMP socket per family, one TLS setup.
pub struct Probers {
    icmp: IcmpClients,
    /// Built when there is an HTTP target (reqwest needs a TLS setup even for plain HTTP).
    tls: Option<rustls::ClientConfig>,
}

impl Probers {
    /// Opens what `targets` (address, check) need. Must run inside a tokio runtime (ICMP
    /// receivers are tasks).
    pub fn new<'a>(
        targets: impl Iterator<Item = (IpAddr, &'a CheckConfig)> + Clone,
    ) -> Result<Self, ProbeError> {
        let needs = |family_v4: bool| {
            targets.clone().any(|(address, check)| {
                matches!(check.kind, CheckKind::Icmp) && address.is_ipv4() == family_v4
            })
        };
        let icmp = IcmpClients::open(needs(true), needs(false))?;
        let tls = targets
            .clone()
            .find_map(|(_, check)| match &check.kind {
                CheckKind::Http(http) => Some(http.url.clone()),
                _ => None,
            })
            .map(|url| http::tls_config().map_err(|message| ProbeError::Http { url, message }))
            .transpose()?;
        Ok(Self { icmp, tls })
    }

    /// The checker of `check` on `address`.
    pub fn checker(&self, address: IpAddr, check: &CheckConfig) -> Result<Checker, ProbeError> {
        let timeout = check.timeout;
        // A source of the other family does not apply to this address.
        let source = check
            .source
            .filter(|source| source.is_ipv4() == address.is_ipv4());
        Ok(match &check.kind {
            CheckKind::Icmp => match source {
                None => Checker::Icmp(self.icmp.checker(address, timeout)),
                Some(source) => Checker::Icmp(IcmpClients::checker_from(address, timeout, source)?),
            },
            CheckKind::Tcp { port } => {
                Checker::Tcp(TcpChecker::new((address, *port).into(), timeout, source))
            }
            CheckKind::Http(http) => {
                let tls = match &http.ca_file {
                    Some(ca_file) => {
                        http::tls_config_with_ca(ca_file).map_err(|message| ProbeError::Http {
                            url: http.url.clone(),
                            message,
                        })?
                    }
                    None => self
                        .tls
                        .clone()
                        .expect("TLS is set up when there is an HTTP target"),
                };
                Checker::Http(HttpChecker::new(http, address, timeout, tls, source)?)
            }
        })
    }
}

/// The innermost cause of an error, which is the one an operator can act on
/// ("Connection refused (os error 111)" rather than "error sending request").
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
