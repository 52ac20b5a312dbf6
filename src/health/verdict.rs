//! Turning a stream of probe results into up/down: the `fall`/`rise` state machine.
//!
//! Why this exists: one lost packet or one slow response must not move DNS answers, and one
//! lucky probe must not bring back a broken backend. A checker only reports what one probe saw;
//! this module decides what the server believes, and nothing else. It is pure (no clock, no
//! I/O), so every threshold rule is tested directly.
//!
//! Documented rules:
//! - Starting state: unknown. The first result decides at once (up if it passed, down if it
//!   failed), so the cold-start probe round gives a health-checked first answer.
//! - An up target goes down after `fall` consecutive failures; a down target comes back after
//!   `rise` consecutive successes. A result that agrees with the state resets the count.

/// What is believed about one (address, check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No probe has finished yet.
    Unknown,
    Up,
    Down,
}

/// The fall/rise machine of one (address, check).
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    state: State,
    /// Consecutive results that disagree with `state`.
    streak: u32,
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
        let (agrees, threshold, next) = match self.state {
            State::Unknown => {
                self.state = if passed { State::Up } else { State::Down };
                self.streak = 0;
                return Some(self.state);
            }
            State::Up => (passed, fall, State::Down),
            State::Down => (!passed, rise, State::Up),
        };
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak >= threshold {
            self.state = next;
            self.streak = 0;
            return Some(next);
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
        // A pass in between resets the count.
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
    fn fall_and_rise_of_one_flip_on_every_disagreeing_result() {
        let mut verdict = Verdict::new();
        verdict.observe(true, 1, 1);
        assert_eq!(verdict.observe(false, 1, 1), Some(State::Down));
        assert_eq!(verdict.observe(true, 1, 1), Some(State::Up));
    }
}
