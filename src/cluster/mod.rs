//! Peer votes: instances in several places agree before an address leaves the answers.
//!
//! Why this exists: one instance sees a backend from where it stands, and a local network
//! problem must not take a healthy backend out of service. Instances share their verdicts
//! (chitchat gossip, every datagram sealed), and an address leaves only when enough of them
//! agree, by a rule every instance computes alike, so that every instance gives the same
//! answer. It follows `health` in the data flow: it publishes this instance's verdicts and
//! hands the peers' votes to the publisher, and `health::agreement` decides with them.
//! - [`gossip`]: running chitchat: this instance's votes out, the live peers' votes in.
//! - [`seal`]: sealing and opening gossip datagrams, with replay protection.
//! - [`transport`]: chitchat's UDP transport with every datagram sealed.

pub mod gossip;
pub mod seal;
pub mod transport;
