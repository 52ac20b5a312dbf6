//! Turning a stream of probe results into up/down: the `fall`/`rise` state machine.
//!
//! Why this exists: one lost packet or one slow response must not move DNS answers, and one
//! lucky probe must not bring back a broken backend. A checker only reports what one probe saw;
//! this module decides what the server believes, and nothing else. It is pure (no clock, no
//! I/O), so every threshold rule is tested directly.
//!
//! Documented rules:
//! - Starting state: the verdict saved in the state file at the last stop, if there is one
//!   (then `fall`/`rise` apply from the first result, so a restart does not flap); else
//!   unknown, and the first result decides at once (up if it passed, down if it
//!   failed), so the cold-start probe round gives a health-checked first answer.
//! - An up target goes down once it has failed `fall` probes with no run of `rise`
//!   consecutive passes between them. A steady failure therefore still takes `fall`
//!   consecutive failures, but a flaky target (failing every other probe, say) goes down too
//!   instead of staying in the answers forever; only `rise` passes in a row, the same proof
//!   that brings a down target back, clear its failure count (gdnsd's `ok_thresh` does the
//!   same). With `rise = 1` a single pass clears it, which is the old consecutive rule.
//! - A down target comes back after `rise` consecutive passes; any failure restarts that run.

/// What is believed about one (address, check); "up", "down" or "unknown" in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No probe has finished yet.
    Unknown,
    Up,
    Down,
}

impl std::fmt::Display for State {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Unknown => "unknown",
        })
    }
}

/// The fall/rise machine of one (address, check).
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    state: State,
    /// Up: failures since the last run of `rise` passes. Down: consecutive passes.
    streak: u32,
    /// Up: consecutive passes since the last failure.
    passes: u32,
}

impl Default for Verdict {
    fn default() -> Self {
        Self::new()
    }
}

impl Verdict {
    pub const fn new() -> Self {
        Self {
            state: State::Unknown,
            streak: 0,
            passes: 0,
        }
    }

    /// A machine that starts in `state` (restored from the state file) instead of unknown:
    /// the next results then need `fall` or `rise` to change it, so a restart does not flap.
    pub const fn starting(state: State) -> Self {
        Self {
            state,
            streak: 0,
            passes: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn observe(&mut self, passed: bool, fall: u32, rise: u32) -> Option<State> {
        match (self.state, passed) {
            (State::Unknown, _) => {
                self.state = if passed { State::Up } else { State::Down };
                self.streak = 0;
                self.passes = 0;
                return Some(self.state);
            }
            (State::Up, true) => {
                self.passes += 1;
                if self.passes >= rise {
                    self.streak = 0;
                }
            }
            (State::Up, false) => {
                self.passes = 0;
                self.streak += 1;
                if self.streak >= fall {
                    self.state = State::Down;
                    self.streak = 0;
                    return Some(State::Down);
                }
            }
            (State::Down, false) => self.streak = 0,
            (State::Down, true) => {
                self.streak += 1;
                if self.streak >= rise {
                    self.state = State::Up;
                    self.streak = 0;
                    self.passes = 0;
                    return Some(State::Up);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_result_decides() {
        let mut verdict = Verdict::new();
        assert_eq!(verdict.state(), State::Unknown);
        assert_eq!(verdict.observe(false, 3, 2), Some(State::Down));
        let mut verdict = Verdict::new();
        assert_eq!(verdict.observe(true, 3, 2), Some(State::Up));
    }

    #[test]
    fn falls_after_fall_consecutive_failures_only() {
        let mut verdict = Verdict::new();
        verdict.observe(true, 3, 2);
        assert_eq!(verdict.observe(false, 3, 2), None);
        assert_eq!(verdict.observe(false, 3, 2), None);
        // `rise` passes in a row clear the count.
        assert_eq!(verdict.observe(true, 3, 2), None);
        assert_eq!(verdict.observe(true, 3, 2), None);
        assert_eq!(verdict.observe(false, 3, 2), None);
        assert_eq!(verdict.observe(false, 3, 2), None);
        assert!(verdict.is_up());
        assert_eq!(verdict.observe(false, 3, 2), Some(State::Down));
        assert!(!verdict.is_up());
    }

    #[test]
    fn rises_after_rise_consecutive_passes_only() {
        let mut verdict = Verdict::new();
        verdict.observe(false, 3, 2);
        assert_eq!(verdict.observe(true, 3, 2), None);
        assert_eq!(verdict.observe(false, 3, 2), None);
        assert_eq!(verdict.observe(true, 3, 2), None);
        assert_eq!(verdict.observe(true, 3, 2), Some(State::Up));
        // Once up, a single failure does not flip it back with fall = 2.
        assert_eq!(verdict.observe(false, 2, 2), None);
        assert_eq!(verdict.observe(false, 2, 2), Some(State::Down));
    }

    #[test]
    fn a_flaky_target_goes_down() {
        // Failing every other probe: with fall 3, rise 2 it leaves after its third failure.
        let mut verdict = Verdict::new();
        verdict.observe(true, 3, 2);
        let mut results = Vec::new();
        for probe in 0..10 {
            results.push(verdict.observe(probe % 2 == 0, 3, 2));
        }
        // Even probes pass, odd ones fail: the failures at 1, 3 and 5 take it down at 5.
        assert_eq!(results.iter().position(Option::is_some), Some(5));
        assert_eq!(results[5], Some(State::Down));
        // Flaky while down: it never gets `rise` passes in a row, so it stays down.
        assert!(results[6..].iter().all(Option::is_none));
        assert!(!verdict.is_up());
        // Two passes for every failure, but never `rise` = 3 in a row: down as well.
        let mut verdict = Verdict::new();
        verdict.observe(true, 3, 3);
        let pattern = [true, true, false];
        let flips: Vec<_> = (0..9)
            .map(|probe| verdict.observe(pattern[probe % 3], 3, 3))
            .collect();
        assert_eq!(flips[8], Some(State::Down), "{flips:?}");
    }

    #[test]
    fn rise_of_one_keeps_the_consecutive_rule() {
        let mut verdict = Verdict::new();
        verdict.observe(true, 3, 1);
        for _ in 0..5 {
            assert_eq!(verdict.observe(false, 3, 1), None);
            assert_eq!(verdict.observe(false, 3, 1), None);
            assert_eq!(verdict.observe(true, 3, 1), None);
        }
        assert!(verdict.is_up());
    }

    #[test]
    fn fall_and_rise_of_one_flip_on_every_disagreeing_result() {
        let mut verdict = Verdict::new();
        verdict.observe(true, 1, 1);
        assert_eq!(verdict.observe(false, 1, 1), Some(State::Down));
        assert_eq!(verdict.observe(true, 1, 1), Some(State::Up));
    }
}
