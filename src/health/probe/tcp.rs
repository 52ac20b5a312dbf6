//! TCP connect probes: the port accepts a connection within the timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Outcome;

/// Connects to one address and port, then closes.
pub struct TcpChecker {
    address: SocketAddr,
    timeout: Duration,
    /// The local address to connect from, if set.
    source: Option<IpAddr>,
}

impl TcpChecker {
    pub fn new(address: SocketAddr, timeout: Duration, source: Option<IpAddr>) -> Self {
        Self {
            address,
            timeout,
            source,
        }
    }

    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let Some(source) = self.source else {
            return tokio::net::TcpStream::connect(self.address).await;
        };
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(self.address).await
    }
}

impl TcpChecker {
    /// Sends one probe.
    pub async fn check(&self) -> Outcome {
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.connect()).await;
        let latency = start.elapsed();
        match result {
            Ok(Ok(_stream)) => Outcome::pass(latency),
            Ok(Err(error)) => Outcome::fail(latency, format!("connect: {error}")),
            Err(_) => Outcome::fail(
                latency,
                format!("connect: no answer within {:?}", self.timeout),
            ),
        }
    }
}
