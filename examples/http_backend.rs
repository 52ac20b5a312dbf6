//! A minimal HTTP backend for the benchmarks' pools: answers every request on ADDRESS with
//! `200 ok` and closes the connection.
//!
//! The benchmarks stand these in for web servers on other machines, so they must cost the
//! measured machine as little as possible. Python's `http.server` took about 1.8 ms of CPU per
//! health probe here; when it ran on the DNS server's core during a latency measurement, each
//! probe stalled the server long enough to reach the p99 (bench/speed.sh). This one takes a
//! few microseconds of its own.
//!
//! Usage: http_backend ADDRESS:PORT   (loopback only; runs until killed)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

fn main() {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .and_then(|argument| argument.parse().ok())
        .expect("usage: http_backend ADDRESS:PORT");
    assert!(address.ip().is_loopback(), "loopback only");
    let listener = TcpListener::bind(address).expect("bind");
    let mut request = [0u8; 4096];
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        // Read until the end of the request's header (or the buffer fills), then answer.
        let mut length = 0;
        while length < request.len() {
            match stream.read(&mut request[length..]) {
                Ok(0) | Err(_) => break,
                Ok(read) => length += read,
            }
            if request[..length]
                .windows(4)
                .any(|window| window == b"\r\n\r\n")
            {
                let _ = stream.write_all(RESPONSE);
                break;
            }
        }
    }
}
