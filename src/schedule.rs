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
//! - A target is probed by one task, one probe at a time: a probe that is still running when the
//!   next is due delays it (the next starts as soon as it ends); probes never overlap or queue.
//! - Every probe is counted in `healthdns_probes_total{kind, result}`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::health::TargetId;
use crate::probe::{Check, Outcome};

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

/// Starts one probing task per target; each sends its outcomes to `sender` until `shutdown`.
pub fn spawn_probes<C: Check>(
    targets: Vec<(TargetId, Arc<C>, Duration)>,
    sender: mpsc::Sender<Probed>,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    for (target, checker, interval) in targets {
        let phase = interval.mul_f64(fastrand::f64());
        tasks.spawn(probe_loop(
            target,
            checker,
            interval,
            phase,
            sender.clone(),
            shutdown.clone(),
        ));
    }
}

async fn probe_loop<C: Check>(
    target: TargetId,
    checker: Arc<C>,
    interval: Duration,
    phase: Duration,
    sender: mpsc::Sender<Probed>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + phase, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = probe(&*checker) => outcome,
        };
        if sender.send(Probed { target, outcome }).await.is_err() {
            return;
        }
    }
}

/// One probe, counted.
async fn probe<C: Check>(checker: &C) -> Outcome {
    let outcome = checker.check().await;
    let result = if outcome.passed { "pass" } else { "fail" };
    metrics::counter!("healthdns_probes_total", "kind" => checker.kind(), "result" => result)
        .increment(1);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A checker that takes `duration` per probe and records when each probe started.
    struct Slow {
        duration: Duration,
        running: AtomicUsize,
        most_running: AtomicUsize,
        starts: Mutex<Vec<Instant>>,
    }

    impl Slow {
        fn new(duration: Duration) -> Arc<Self> {
            Arc::new(Self {
                duration,
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
            self.starts.lock().unwrap().push(Instant::now());
            let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_running.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(self.duration).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Outcome::pass(self.duration)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_probes_are_spread_within_the_interval() {
        let interval = Duration::from_secs(1);
        let checkers: Vec<Arc<Slow>> = (0..200).map(|_| Slow::new(Duration::ZERO)).collect();
        let (sender, mut receiver) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let start = Instant::now();
        let targets = checkers
            .iter()
            .enumerate()
            .map(|(index, checker)| (TargetId(index), Arc::clone(checker), interval))
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

    /// Probes one target every `interval` with probes that take `duration`; returns the start
    /// times of the first `probes` probes and the most that ever ran at once.
    async fn probe_one(
        interval: Duration,
        duration: Duration,
        probes: usize,
    ) -> (Vec<Instant>, usize) {
        let checker = Slow::new(duration);
        let (sender, mut receiver) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        spawn_probes(
            vec![(TargetId(0), Arc::clone(&checker), interval)],
            sender,
            shutdown.clone(),
            &mut tasks,
        );
        for _ in 0..probes {
            receiver.recv().await.unwrap();
        }
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        let starts = checker.starts.lock().unwrap().clone();
        (starts, checker.most_running.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_probe_delays_the_next_instead_of_overlapping() {
        let (starts, most_running) =
            probe_one(Duration::from_millis(100), Duration::from_millis(250), 6).await;
        assert_eq!(most_running, 1);
        for pair in starts.windows(2) {
            // The next probe starts as soon as the slow one ends, never earlier.
            assert_eq!(pair[1] - pair[0], Duration::from_millis(250));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_probe_runs_once_per_interval() {
        let interval = Duration::from_millis(100);
        let (starts, _) = probe_one(interval, Duration::from_millis(10), 5).await;
        assert!(starts.len() >= 5);
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], interval);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_round_probes_everything_concurrently() {
        let checkers: Vec<Arc<Slow>> = (0..50)
            .map(|_| Slow::new(Duration::from_millis(300)))
            .collect();
        let start = Instant::now();
        let outcomes = first_round(&checkers).await;
        assert_eq!(outcomes.len(), 50);
        assert!(outcomes.iter().all(|outcome| outcome.passed));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }
}
