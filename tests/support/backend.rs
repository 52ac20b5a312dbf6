//! Real HTTP backends on loopback addresses, whose behaviour a test changes while they run.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The body a healthy backend serves.
pub const HEALTHY_BODY: &str = "healthy\n";

/// How a backend answers a request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 with `HEALTHY_BODY`.
    Healthy,
    /// This status with `HEALTHY_BODY`.
    Status(u16),
    /// 200 with this body.
    Body(&'static str),
    /// 200 with `HEALTHY_BODY` after this long.
    Delay(Duration),
    /// Accepts the connection, reads the request, never answers.
    Hang,
    /// 200 with a body of this many bytes, sent until the client stops reading.
    Huge(usize),
    /// 200 and a 1,000-byte body, sent one byte a second.
    Trickle,
    /// Half a response, then a TCP reset.
    Reset,
    /// 503 to requests from these source addresses, 200 to any other: a backend that looks
    /// down from some vantage points only.
    FailFrom(Vec<IpAddr>),
}

/// One HTTP server on one address, in threads of this test process.
pub struct Backend {
    pub address: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Connections accepted so far: each probe is one.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Backend {
    /// Serves on exactly `address`; `None` if it cannot be bound.
    pub fn try_start(address: SocketAddr, behaviour: Behaviour) -> Option<Self> {
        let mut backend = Self {
            address,
            behaviour: Arc::new(Mutex::new(behaviour)),
            accepted: Arc::default(),
            running: None,
        };
        backend.try_resume().then_some(backend)
    }

    /// How many connections (probes) this backend has accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until this backend has seen `count` more probes than now: the server has gone
    /// through that many probe rounds (a condition to await instead of a sleep).
    pub fn await_probes(&self, count: usize) {
        let target = self.accepted() + count;
        assert!(
            super::wait_until(Duration::from_secs(10), || self.accepted() >= target),
            "{} saw {} more probes in 10 s",
            self.address,
            count
        );
    }

    /// Changes how later requests are answered.
    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Closes the listening socket: new connections are refused, as when the process dies.
    pub fn stop(&mut self) {
        if let Some((stopping, thread)) = self.running.take() {
            stopping.store(true, Ordering::SeqCst);
            // Wake the blocked accept.
            let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
            thread.join().unwrap();
        }
    }

    /// Listens again on the same address.
    pub fn resume(&mut self) {
        let start = Instant::now();
        while !self.try_resume() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "cannot rebind {}",
                self.address
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_resume(&mut self) -> bool {
        let Ok(listener) = TcpListener::bind(self.address) else {
            return false;
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let behaviour = self.behaviour.clone();
        let flag = stopping.clone();
        let accepted = self.accepted.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let behaviour = behaviour.lock().unwrap().clone();
                let flag = flag.clone();
                std::thread::spawn(move || answer(stream, behaviour, &flag));
            }
        });
        self.running = Some((stopping, thread));
        true
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut stream: TcpStream, behaviour: Behaviour, stopping: &AtomicBool) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(length) => request.extend_from_slice(&buffer[..length]),
        }
    }
    let respond = |stream: &mut TcpStream, status: u16, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status} Test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    match behaviour {
        Behaviour::Healthy => respond(&mut stream, 200, HEALTHY_BODY.as_bytes()),
        Behaviour::FailFrom(sources) => {
            let from = stream.peer_addr().map(|peer| peer.ip()).ok();
            let status = if from.is_some_and(|ip| sources.contains(&ip)) {
                503
            } else {
                200
            };
            respond(&mut stream, status, HEALTHY_BODY.as_bytes());
        }
        Behaviour::Status(status) => respond(&mut stream, status, HEALTHY_BODY.as_bytes()),
        Behaviour::Body(body) => respond(&mut stream, 200, body.as_bytes()),
        Behaviour::Delay(delay) => {
            std::thread::sleep(delay);
            respond(&mut stream, 200, HEALTHY_BODY.as_bytes());
        }
        Behaviour::Hang => {
            let start = Instant::now();
            while !stopping.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Behaviour::Trickle => {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            let start = Instant::now();
            while !stopping.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(30) {
                if stream.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Behaviour::Reset => {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\nhalf";
            let _ = stream.write_all(head.as_bytes());
            // Linger 0: close sends RST instead of FIN.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
        }
        Behaviour::Huge(length) => {
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < length {
                let part = chunk.len().min(length - sent);
                if stream.write_all(&chunk[..part]).is_err() {
                    return;
                }
                sent += part;
            }
        }
    }
}

/// Backends on `prefix.1`, `prefix.2`, ... (e.g. prefix "127.61.0"), all on one port, so one
/// URL template (`http://{address}:PORT/`) reaches each of them.
pub fn backends(prefix: &str, behaviours: Vec<Behaviour>) -> (u16, Vec<Backend>) {
    for _ in 0..50 {
        let first: IpAddr = format!("{prefix}.1").parse().unwrap();
        let probe = TcpListener::bind((first, 0)).expect("bind a loopback address");
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let started: Option<Vec<Backend>> = behaviours
            .iter()
            .enumerate()
            .map(|(index, behaviour)| {
                let address: IpAddr = format!("{prefix}.{}", index + 1).parse().unwrap();
                Backend::try_start(SocketAddr::new(address, port), behaviour.clone())
            })
            .collect();
        if let Some(started) = started {
            return (port, started);
        }
    }
    panic!("no port free on every address of {prefix}.x");
}
