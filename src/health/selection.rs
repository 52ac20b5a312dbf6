//! Choosing what a pool answers, from what is believed about its addresses.
//!
//! Why this exists: how to check (probers) and when to believe a check (verdicts) are separate
//! from how to answer. This module is that last step, and it is pure: a function of the
//! addresses' up/down state, their recent latencies and the pool's previous answer, so every
//! policy is tested without sockets or clocks.
//!
//! Documented rules:
//! - Families are chosen separately: IPv4 addresses answer A, IPv6 answer AAAA, and
//!   `max_answers` caps each family. A name whose IPv6 addresses are all down while an IPv4
//!   one is up answers AAAA with NODATA.
//! - `select = "all"`: the healthy addresses in config order, the first `max_answers`.
//! - `select = "fastest"`: the live set (the previous answer) is kept while every member still
//!   passes; a member that fails is replaced by the fastest healthy address outside the set,
//!   and free places are filled the same way. Latency wiggles never reorder or churn answers.
//! - Answers list their addresses in config order whatever chose them (the server rotates them
//!   per query), so the same set is always the same answer.
//! - All down (no address of either family up) applies the pool's `all_down` policy:
//!   `serve_all` (the default: fail open, every configured address), `keep_last` (the last
//!   answer that had a healthy address; every address if there never was one), `empty`
//!   (NODATA) or `servfail`.
//! - Canary: while the canary address is up, it takes the place of the last address of its
//!   family in its one name's answer. If that family has a single address, the canary is added
//!   beside it rather than replacing it, so a canary is never a name's only address; with no
//!   address of that family, or while SERVFAIL is answered, nothing is added.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{AllDown, Select};

/// What is believed about one pool address right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub address: IpAddr,
    pub up: bool,
    /// Smoothed latency of recent passing probes; `None` before the first.
    pub latency: Option<Duration>,
}

/// A pool's answer before canaries: addresses in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolAnswer {
    pub addresses: Vec<IpAddr>,
    /// Answer SERVFAIL for A and AAAA.
    pub servfail: bool,
}

/// The policy inputs of one pool.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub select: Select,
    pub max_answers: usize,
    pub all_down: AllDown,
}

/// What selection remembers between rounds.
#[derive(Debug, Clone, Default)]
pub struct SelectionMemory {
    /// The previous answer that had a healthy address (the live set for `fastest`, the answer
    /// for `keep_last`).
    last_healthy: Option<Vec<IpAddr>>,
}

/// Decides the pool's answer; `candidates` are in config order.
pub fn choose(
    policy: Policy,
    candidates: &[Candidate],
    memory: &mut SelectionMemory,
) -> PoolAnswer {
    if !candidates.iter().any(|candidate| candidate.up) {
        return match policy.all_down {
            AllDown::ServeAll => every_address(candidates),
            AllDown::KeepLast => match &memory.last_healthy {
                Some(addresses) => PoolAnswer {
                    addresses: addresses.clone(),
                    servfail: false,
                },
                None => every_address(candidates),
            },
            AllDown::Empty => PoolAnswer::default(),
            AllDown::Servfail => PoolAnswer {
                addresses: Vec::new(),
                servfail: true,
            },
        };
    }
    let previous = memory.last_healthy.as_deref().unwrap_or(&[]);
    let mut chosen: Vec<IpAddr> = Vec::new();
    for is_v4 in [true, false] {
        let family: Vec<Candidate> = candidates
            .iter()
            .filter(|candidate| candidate.address.is_ipv4() == is_v4)
            .copied()
            .collect();
        chosen.extend(choose_family(policy, &family, previous));
    }
    // Config order, whatever chose them.
    let addresses: Vec<IpAddr> = candidates
        .iter()
        .map(|candidate| candidate.address)
        .filter(|address| chosen.contains(address))
        .collect();
    memory.last_healthy = Some(addresses.clone());
    PoolAnswer {
        addresses,
        servfail: false,
    }
}

fn every_address(candidates: &[Candidate]) -> PoolAnswer {
    PoolAnswer {
        addresses: candidates
            .iter()
            .map(|candidate| candidate.address)
            .collect(),
        servfail: false,
    }
}

/// The chosen addresses of one family (any order).
fn choose_family(policy: Policy, family: &[Candidate], previous: &[IpAddr]) -> Vec<IpAddr> {
    let healthy: Vec<&Candidate> = family.iter().filter(|candidate| candidate.up).collect();
    let cap = match policy.max_answers {
        0 => usize::MAX,
        cap => cap,
    };
    if healthy.len() <= cap {
        return healthy.iter().map(|candidate| candidate.address).collect();
    }
    match policy.select {
        Select::All => healthy
            .iter()
            .take(cap)
            .map(|candidate| candidate.address)
            .collect(),
        Select::Fastest => {
            let (mut kept, mut others): (Vec<&Candidate>, Vec<&Candidate>) = healthy
                .iter()
                .partition(|candidate| previous.contains(&candidate.address));
            let by_latency = |candidate: &&Candidate| candidate.latency.unwrap_or(Duration::MAX);
            if kept.len() > cap {
                // The cap shrank (a reload): keep the fastest of the live set.
                kept.sort_by_key(by_latency);
                kept.truncate(cap);
            }
            others.sort_by_key(by_latency);
            let free = cap - kept.len();
            kept.extend(others.into_iter().take(free));
            kept.iter().map(|candidate| candidate.address).collect()
        }
    }
}

/// A name's answer with the pool's canary applied (see the module rules).
pub fn with_canary(answer: &PoolAnswer, canary: Option<IpAddr>) -> PoolAnswer {
    let Some(canary) = canary else {
        return answer.clone();
    };
    if answer.servfail {
        return answer.clone();
    }
    let same_family: Vec<usize> = answer
        .addresses
        .iter()
        .enumerate()
        .filter(|(_, address)| address.is_ipv4() == canary.is_ipv4())
        .map(|(index, _)| index)
        .collect();
    let mut addresses = answer.addresses.clone();
    match same_family.as_slice() {
        [] => {}
        [_] => addresses.push(canary),
        [.., last] => addresses[*last] = canary,
    }
    PoolAnswer {
        addresses,
        servfail: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn candidate(address: &str, up: bool, latency_ms: u64) -> Candidate {
        Candidate {
            address: ip(address),
            up,
            latency: Some(Duration::from_millis(latency_ms)),
        }
    }

    fn policy(select: Select, max_answers: usize, all_down: AllDown) -> Policy {
        Policy {
            select,
            max_answers,
            all_down,
        }
    }

    fn addresses(answer: &PoolAnswer) -> Vec<String> {
        answer.addresses.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn all_takes_healthy_addresses_in_config_order_up_to_the_cap() {
        let candidates = [
            candidate("10.0.0.1", false, 1),
            candidate("10.0.0.2", true, 50),
            candidate("10.0.0.3", true, 5),
            candidate("10.0.0.4", true, 1),
            candidate("2001:db8::1", true, 1),
        ];
        let mut memory = SelectionMemory::default();
        let answer = choose(
            policy(Select::All, 2, AllDown::ServeAll),
            &candidates,
            &mut memory,
        );
        assert_eq!(addresses(&answer), ["10.0.0.2", "10.0.0.3", "2001:db8::1"]);
        let answer = choose(
            policy(Select::All, 0, AllDown::ServeAll),
            &candidates,
            &mut memory,
        );
        assert_eq!(
            addresses(&answer),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "2001:db8::1"]
        );
    }

    #[test]
    fn fastest_keeps_the_live_set_until_a_member_fails() {
        let fastest = policy(Select::Fastest, 2, AllDown::ServeAll);
        let mut memory = SelectionMemory::default();
        let mut candidates = vec![
            candidate("10.0.0.1", true, 30),
            candidate("10.0.0.2", true, 10),
            candidate("10.0.0.3", true, 20),
        ];
        let answer = choose(fastest, &candidates, &mut memory);
        assert_eq!(addresses(&answer), ["10.0.0.2", "10.0.0.3"]);

        // .1 becomes the fastest: no churn while the live set passes.
        candidates[0].latency = Some(Duration::from_millis(1));
        let answer = choose(fastest, &candidates, &mut memory);
        assert_eq!(addresses(&answer), ["10.0.0.2", "10.0.0.3"]);

        // .3 fails: only it is replaced, by the fastest outside the set.
        candidates[2].up = false;
        let answer = choose(fastest, &candidates, &mut memory);
        assert_eq!(addresses(&answer), ["10.0.0.1", "10.0.0.2"]);

        // .3 recovers and is fastest of all: still no churn.
        candidates[2].up = true;
        candidates[2].latency = Some(Duration::from_millis(0));
        let answer = choose(fastest, &candidates, &mut memory);
        assert_eq!(addresses(&answer), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn fastest_prefers_addresses_with_a_latency() {
        let mut memory = SelectionMemory::default();
        let candidates = [
            Candidate {
                address: ip("10.0.0.1"),
                up: true,
                latency: None,
            },
            candidate("10.0.0.2", true, 900),
        ];
        let answer = choose(
            policy(Select::Fastest, 1, AllDown::ServeAll),
            &candidates,
            &mut memory,
        );
        assert_eq!(addresses(&answer), ["10.0.0.2"]);
    }

    #[test]
    fn families_are_capped_separately_and_a_down_family_is_empty() {
        let mut memory = SelectionMemory::default();
        let candidates = [
            candidate("10.0.0.1", true, 1),
            candidate("10.0.0.2", true, 1),
            candidate("2001:db8::1", false, 1),
        ];
        let answer = choose(
            policy(Select::All, 1, AllDown::ServeAll),
            &candidates,
            &mut memory,
        );
        // No IPv6 is up: AAAA is NODATA, not the all-down policy.
        assert_eq!(addresses(&answer), ["10.0.0.1"]);
    }

    #[test]
    fn all_down_policies() {
        let up = [
            candidate("10.0.0.1", false, 1),
            candidate("10.0.0.2", true, 1),
        ];
        let down = [
            candidate("10.0.0.1", false, 1),
            candidate("10.0.0.2", false, 1),
        ];

        let mut memory = SelectionMemory::default();
        let serve_all = policy(Select::All, 0, AllDown::ServeAll);
        choose(serve_all, &up, &mut memory);
        assert_eq!(
            addresses(&choose(serve_all, &down, &mut memory)),
            ["10.0.0.1", "10.0.0.2"]
        );

        let mut memory = SelectionMemory::default();
        let keep_last = policy(Select::All, 0, AllDown::KeepLast);
        // Never healthy: every address.
        assert_eq!(
            addresses(&choose(keep_last, &down, &mut memory)),
            ["10.0.0.1", "10.0.0.2"]
        );
        choose(keep_last, &up, &mut memory);
        assert_eq!(
            addresses(&choose(keep_last, &down, &mut memory)),
            ["10.0.0.2"]
        );

        let mut memory = SelectionMemory::default();
        let empty = choose(policy(Select::All, 0, AllDown::Empty), &down, &mut memory);
        assert_eq!(empty, PoolAnswer::default());

        let servfail = choose(
            policy(Select::All, 0, AllDown::Servfail),
            &down,
            &mut memory,
        );
        assert!(servfail.servfail);
        assert!(servfail.addresses.is_empty());
    }

    #[test]
    fn all_down_keeps_the_fastest_live_set_for_afterwards() {
        let fastest = policy(Select::Fastest, 1, AllDown::Empty);
        let mut memory = SelectionMemory::default();
        let mut candidates = vec![
            candidate("10.0.0.1", true, 50),
            candidate("10.0.0.2", true, 10),
        ];
        assert_eq!(
            addresses(&choose(fastest, &candidates, &mut memory)),
            ["10.0.0.2"]
        );
        candidates[0].up = false;
        candidates[1].up = false;
        assert!(choose(fastest, &candidates, &mut memory)
            .addresses
            .is_empty());
        candidates[0].up = true;
        candidates[1].up = true;
        candidates[0].latency = Some(Duration::from_millis(1));
        assert_eq!(
            addresses(&choose(fastest, &candidates, &mut memory)),
            ["10.0.0.2"]
        );
    }

    #[test]
    fn canary_replaces_the_last_of_its_family_but_is_never_alone() {
        let answer = PoolAnswer {
            addresses: vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("2001:db8::1")],
            servfail: false,
        };
        assert_eq!(
            addresses(&with_canary(&answer, Some(ip("10.0.0.9")))),
            ["10.0.0.1", "10.0.0.9", "2001:db8::1"]
        );
        assert_eq!(
            addresses(&with_canary(&answer, Some(ip("2001:db8::9")))),
            ["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::9"]
        );
        assert_eq!(with_canary(&answer, None), answer);
        let v6_only = PoolAnswer {
            addresses: vec![ip("2001:db8::1")],
            servfail: false,
        };
        assert_eq!(with_canary(&v6_only, Some(ip("10.0.0.9"))), v6_only);
        let servfail = PoolAnswer {
            addresses: Vec::new(),
            servfail: true,
        };
        assert_eq!(with_canary(&servfail, Some(ip("10.0.0.9"))), servfail);
    }
}
