//! The agreement rule: when an address is down for the whole cluster (peer votes).
//!
//! Why this exists: every instance must give the same answer, so the decision must be a pure
//! function of the votes that every instance sees alike (the live instances' published
//! verdicts), never of which instance computes it. Nothing here has a clock or a socket.
//!
//! Documented rules:
//! - Voters: the live instances (by node name, newest generation only) that have published a
//!   verdict for the address, this one included. An instance with no verdict yet (still in its
//!   first probe round, or not probing that pool) does not vote.
//! - `min_peers_agree = k`: down when at least k + 1 voters say down.
//! - `quorum = "majority"`: down when more than half of the voters say down, and at least two
//!   do: one instance alone never takes an address out.
//! - An isolated instance (no live peer) therefore cannot reach agreement unless k = 0: it
//!   keeps serving the address (fail-open, as goavail intended), and reports itself isolated.
//! - A peer that restarts or leaves stops counting once the failure detector declares it dead;
//!   until then its last votes count.
//! - Split votes: below the threshold the address stays in; the votes are shown in the status.

pub use crate::config::Agreement;

/// True when the cluster takes the address out: `down` of `voters` say down.
pub fn cluster_down(agreement: Agreement, down: usize, voters: usize) -> bool {
    debug_assert!(down <= voters);
    match agreement {
        Agreement::MinPeersAgree(others) => down > others as usize,
        Agreement::Majority => down >= 2 && down * 2 > voters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (down, voters) split for 1, 2, 3 and 5 voters, under k = 0, 1, 2 and majority.
    #[test]
    fn the_rule_for_every_split() {
        /// (down, voters, expected).
        type Cases = &'static [(usize, usize, bool)];
        let table: [(Agreement, Cases); 4] = [
            (
                Agreement::MinPeersAgree(0),
                &[
                    (0, 1, false),
                    (1, 1, true),
                    (1, 2, true),
                    (1, 3, true),
                    (1, 5, true),
                ],
            ),
            (
                Agreement::MinPeersAgree(1),
                &[
                    // Isolated: cannot reach agreement, fail open.
                    (1, 1, false),
                    (1, 2, false),
                    (2, 2, true),
                    (1, 3, false),
                    (2, 3, true),
                    (3, 3, true),
                    (1, 5, false),
                    (2, 5, true),
                ],
            ),
            (
                Agreement::MinPeersAgree(2),
                &[
                    (2, 2, false),
                    (2, 3, false),
                    (3, 3, true),
                    (2, 5, false),
                    (3, 5, true),
                ],
            ),
            (
                Agreement::Majority,
                &[
                    (1, 1, false),
                    (1, 2, false),
                    (2, 2, true),
                    (1, 3, false),
                    (2, 3, true),
                    (2, 4, false),
                    (3, 4, true),
                    (2, 5, false),
                    (3, 5, true),
                ],
            ),
        ];
        for (agreement, cases) in table {
            for &(down, voters, expected) in cases {
                assert_eq!(
                    cluster_down(agreement, down, voters),
                    expected,
                    "{agreement:?}: {down} of {voters} say down"
                );
            }
        }
    }

    /// Dead peers do not vote: the same votes minus a dead peer's can flip the result, and
    /// every instance that sees the same live votes decides the same.
    #[test]
    fn dead_peers_stop_counting() {
        let k1 = Agreement::MinPeersAgree(1);
        // Three live voters, two say down: out.
        assert!(cluster_down(k1, 2, 3));
        // One of the two "down" voters dies: one of two left says down: back in.
        assert!(!cluster_down(k1, 1, 2));
        // Majority of five with two dead: 2 of 3 is a majority.
        assert!(!cluster_down(Agreement::Majority, 2, 5));
        assert!(cluster_down(Agreement::Majority, 2, 3));
    }
}
