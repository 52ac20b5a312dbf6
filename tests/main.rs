//! The integration tests: one binary, real sockets, servers on 127.0.0.1 port 0.

mod support;

mod api;
mod authoritative;
mod cli;
mod cluster;
mod compare_nsd;
mod faults;
mod golden;
mod health;
mod icmp;
mod reload;
mod secondary;
mod tls;
mod transport;
