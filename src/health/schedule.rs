//! When to probe: one task per target, each on its own interval.
//!
//! Why this exists: probes must run on time, spread out, and never pile up, and none of that
//! belongs in a checker (how to probe) or in the publisher (what to answer).
//!
//! Documented rules:
//! - Cold start: `first_round` probes every target once, all at the same time, before any
//!   answer is served; it takes as long as the slowest probe, at most the largest timeout.
//! - Afterwards each target's first probe comes at a random phase within its interval, so
//!   10,000 targets on a 1 s interval send about 10 probes per millisecond, not 10,000 at once.
//! - A probe starts every interval. Probes of one target overlap only when the timeout is
//!   longer than the interval, and never more than ceil(timeout / interval) at once; a probe
//!   due beyond that starts when one ends, and ticks missed meanwhile are not made up, so
//!   probes never pile up. With timeout <= interval, one probe at a time. Ticks stay on
//!   their grid (phase + k × interval): a late one does not delay the next.
//! - Outcomes are applied in start order: a probe overtaken by a later one is dropped.
//! - Every probe's time goes into the `healthdns_probe_seconds{kind, result}` histogram (the
//!   publisher counts them by pool and address in `healthdns_probes_total`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::health::probe::{Check, Outcome};
use crate::health::TargetId;

/// One finished probe.
#[derive(Debug, Clone)]
pub struct Probed {
    pub target: TargetId,
    pub outcome: Outcome,
}

/// Probes every target once, concurrently; outcomes in the order of `checkers`.
pub async fn first_round<C: Check>(checkers: &[Arc<C>]) -> Vec<Outcome> {
    let mut tasks = JoinSet::new();
    for (index, checker) in checkers.iter().enumerate() {
        let checker = Arc::clone(checker);
        tasks.spawn(async move { (index, probe(&*checker).await) });
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; checkers.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, outcome)) => outcomes[index] = Some(outcome),
            Err(error) => tracing::error!(%error, "a probe task failed"),
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| Outcome::fail(Duration::ZERO, "probe task failed"))
        })
        .collect()
}

/// When one target is probed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    /// A probe ends by then (the checker enforces it); it bounds how many can be in flight.
    pub timeout: Duration,
}

impl Timing {
    /// The most probes of one target in flight at once: ceil(timeout / interval), at least 1.
    pub fn max_in_flight(&self) -> usize {
        let interval = self.interval.as_nanos().max(1);
        self.timeout.as_nanos().div_ceil(interval).max(1) as usize
    }
}

/// Starts one probing task per target; each sends its outcomes to `sender` until `shutdown`.
pub fn spawn_probes<C: Check>(
    targets: Vec<(TargetId, Arc<C>, Timing)>,
    sender: mpsc::Sender<Probed>,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    for (target, checker, timing) in targets {
        tasks.spawn(probe_loop(
            target,
            checker,
            timing,
            sender.clone(),
            shutdown.clone(),
        ));
    }
}

/// Probes one target every interval, from a random phase, until `shutdown`.
pub async fn probe_loop<C: Check>(
    target: TargetId,
    checker: Arc<C>,
    timing: Timing,
    sender: mpsc::Sender<Probed>,
    shutdown: CancellationToken,
) {
    let phase = timing.interval.mul_f64(fastrand::f64());
    probe_loop_from(target, checker, timing, phase, sender, shutdown).await
}

async fn probe_loop_from<C: Check>(
    target: TargetId,
    checker: Arc<C>,
    timing: Timing,
    phase: Duration,
    sender: mpsc::Sender<Probed>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + phase, timing.interval);
    // Ticks missed while the task was busy are not made up in a burst, and a tick that comes
    // late (a loaded machine) does not shift the ones after it: the schedule keeps its grid,
    // so a CPU-starved process still probes every interval on average (bench/overload.sh).
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let limit = timing.max_in_flight();
    let mut in_flight: JoinSet<(u64, Outcome)> = JoinSet::new();
    let mut started: u64 = 0;
    let mut delivered: u64 = 0;
    // A probe came due while `limit` were in flight: it starts when one ends.
    let mut due = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => due = true,
            Some(finished) = in_flight.join_next() => {
                let (sequence, outcome) = match finished {
                    Ok(finished) => finished,
                    // A checker that panics is a bug: the supervisor reports it.
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    Err(_) => continue,
                };
                // A probe overtaken by a later one is stale: its result is dropped.
                if sequence > delivered {
                    delivered = sequence;
                    if sender.send(Probed { target, outcome }).await.is_err() {
                        return;
                    }
                }
            }
        }
        if due && in_flight.len() < limit {
            due = false;
            started += 1;
            let sequence = started;
            let checker = Arc::clone(&checker);
            in_flight.spawn(async move { (sequence, probe(&*checker).await) });
        }
    }
}

/// One probe, counted.
async fn probe<C: Check>(checker: &C) -> Outcome {
    let outcome = checker.check().await;
    let result = if outcome.passed { "pass" } else { "fail" };
    metrics::histogram!("healthdns_probe_seconds", "kind" => checker.kind(), "result" => result)
        .record(outcome.latency.as_secs_f64());
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A checker whose n-th probe takes `durations[n]` (the last one repeats); it records when
    /// each probe started and how many ran at once. A probe's latency is its start index.
    struct Slow {
        durations: Vec<Duration>,
        running: AtomicUsize,
        most_running: AtomicUsize,
        starts: Mutex<Vec<Instant>>,
    }

    impl Slow {
        fn new(durations: &[Duration]) -> Arc<Self> {
            Arc::new(Self {
                durations: durations.to_vec(),
                running: AtomicUsize::new(0),
                most_running: AtomicUsize::new(0),
                starts: Mutex::new(Vec::new()),
            })
        }
    }

    impl Check for Slow {
        fn kind(&self) -> &'static str {
            "test"
        }

        async fn check(&self) -> Outcome {
            let index = {
                let mut starts = self.starts.lock().unwrap();
                starts.push(Instant::now());
                starts.len() - 1
            };
            let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_running.fetch_max(running, Ordering::SeqCst);
            let duration = self.durations[index.min(self.durations.len() - 1)];
            tokio::time::sleep(duration).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Outcome::pass(Duration::from_millis(index as u64))
        }
    }

    fn timing(interval: Duration, timeout: Duration) -> Timing {
        Timing { interval, timeout }
    }

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[tokio::test(start_paused = true)]
    async fn first_probes_are_spread_within_the_interval() {
        let interval = Duration::from_secs(1);
        let checkers: Vec<Arc<Slow>> = (0..200).map(|_| Slow::new(&[Duration::ZERO])).collect();
        let (sender, mut receiver) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let start = Instant::now();
        let targets = checkers
            .iter()
            .enumerate()
            .map(|(index, checker)| {
                (
                    TargetId(index),
                    Arc::clone(checker),
                    timing(interval, interval),
                )
            })
            .collect();
        spawn_probes(targets, sender, shutdown.clone(), &mut tasks);
        for _ in 0..200 {
            receiver.recv().await.unwrap();
        }
        let mut firsts: Vec<Duration> = checkers
            .iter()
            .map(|checker| checker.starts.lock().unwrap()[0] - start)
            .collect();
        firsts.sort();
        // The timer wheel has millisecond steps, so a phase just under the interval may round up.
        assert!(firsts.iter().all(|first| *first <= interval));
        // Spread out: no tenth of the interval holds more than a third of the first probes.
        for tenth in 0..10 {
            let low = interval * tenth / 10;
            let high = interval * (tenth + 1) / 10;
            let count = firsts
                .iter()
                .filter(|first| **first >= low && **first < high)
                .count();
            assert!(count < 67, "{count} first probes in tenth {tenth}");
        }
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
    }

    /// Probes one target with `checker`; returns the start times of the probes whose outcomes
    /// were among the first `outcomes` delivered, the delivered start indexes, and the most
    /// probes that ever ran at once.
    async fn probe_one(
        checker: Arc<Slow>,
        timing: Timing,
        outcomes: usize,
    ) -> (Vec<Instant>, Vec<u64>, usize) {
        let (sender, mut receiver) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        spawn_probes(
            vec![(TargetId(0), Arc::clone(&checker), timing)],
            sender,
            shutdown.clone(),
            &mut tasks,
        );
        let mut delivered = Vec::new();
        for _ in 0..outcomes {
            let probed = receiver.recv().await.unwrap();
            delivered.push(probed.outcome.latency.as_millis() as u64);
        }
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        let starts = checker.starts.lock().unwrap().clone();
        (
            starts,
            delivered,
            checker.most_running.load(Ordering::SeqCst),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_probe_runs_once_per_interval() {
        let (starts, delivered, most) =
            probe_one(Slow::new(&[ms(10)]), timing(ms(100), ms(100)), 5).await;
        assert_eq!(delivered, [0, 1, 2, 3, 4]);
        assert_eq!(most, 1);
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], ms(100));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn with_timeout_within_the_interval_a_late_probe_delays_the_next() {
        // The checker overruns (150 ms) a 100 ms interval: probes never overlap, and the next
        // starts as soon as the late one ends rather than a whole interval later.
        let (starts, delivered, most) =
            probe_one(Slow::new(&[ms(150)]), timing(ms(100), ms(100)), 5).await;
        assert_eq!(most, 1);
        assert_eq!(delivered, [0, 1, 2, 3, 4]);
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], ms(150));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_longer_than_the_interval_overlaps_boundedly() {
        // Every probe hangs for its whole 250 ms timeout: one starts every 100 ms, at most
        // ceil(250 / 100) = 3 at once, and none queue up.
        let (starts, delivered, most) =
            probe_one(Slow::new(&[ms(250)]), timing(ms(100), ms(250)), 6).await;
        assert_eq!(most, 3);
        assert_eq!(delivered, [0, 1, 2, 3, 4, 5]);
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], ms(100));
        }
        let (_, _, most) = probe_one(Slow::new(&[ms(400)]), timing(ms(100), ms(250)), 6).await;
        assert_eq!(
            most, 3,
            "a checker overrunning its timeout still has only 3 in flight"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_overtaken_by_a_later_one_is_dropped() {
        // Probe 0 takes 250 ms; probe 1 (started 100 ms later) ends first, so probe 0's stale
        // result must not be applied after it.
        let (_, delivered, _) =
            probe_one(Slow::new(&[ms(250), ms(10)]), timing(ms(100), ms(250)), 3).await;
        assert_eq!(delivered, [1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_round_probes_everything_concurrently() {
        let checkers: Vec<Arc<Slow>> = (0..50)
            .map(|_| Slow::new(&[Duration::from_millis(300)]))
            .collect();
        let start = Instant::now();
        let outcomes = first_round(&checkers).await;
        assert_eq!(outcomes.len(), 50);
        assert!(outcomes.iter().all(|outcome| outcome.passed));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }
}
