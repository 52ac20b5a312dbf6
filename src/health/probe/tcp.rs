//! TCP connect probes: the port accepts a connection within the timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Outcome;

/// Connects to one address and port, then closes.
pub struct TcpChecker {
    address: SocketAddr,
    timeout: Duration,
}

impl TcpChecker {
    pub fn new(address: SocketAddr, timeout: Duration) -> Self {
        Self { address, timeout }
    }
}

impl TcpChecker {
    /// Sends one probe.
    pub async fn check(&self) -> Outcome {
        let start = Instant::now();
        let result =
            tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(self.address)).await;
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
