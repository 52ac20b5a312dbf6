//! The one writer of the answer snapshot.
//!
//! Why this exists: probes finish on many tasks, but answers must change in one place, in
//! order, without ever making a query wait. The publisher owns the health table and the
//! `ArcSwap`: it takes batches of probe outcomes, updates verdicts, recomputes the answers of
//! the pools whose verdicts changed, and, only when some name's answer changed, lays the new
//! answers over the zones holding those names (their static parts are shared, not rebuilt)
//! and swaps the new snapshot in. Queries keep reading the old
//! snapshot until the swap, and the next query reads the new one.
//!
//! Serials are coalesced: a swap changes zone serials, so two swaps are at least
//! `min_serial_interval` apart (default 1 s, edgemanage's `dnschange_maxfreq`). The first
//! change after a quiet interval is swapped in at once; changes that follow within the
//! interval wait for its end and go out together, so a flapping backend cannot make
//! secondaries transfer continuously. Each swap is also sent on a watch channel to the tasks
//! that write snapshot files and send NOTIFY; sending never waits.
//!
//! It logs every verdict transition (address, pools, check, reason) and every answer change,
//! with the time from the verdict change to the swap. In a dry run it logs what it would
//! answer but keeps serving every configured address.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::schedule::Probed;
use crate::health::verdict::State;
use crate::health::{Answers, Health, NameAnswer};
use crate::zone::snapshot::Snapshot;

/// The most outcomes applied in one batch before answers are recomputed.
const MAX_BATCH: usize = 4096;

/// What one batch changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Published {
    /// Names whose answer changed, with the new answer.
    pub changed: Vec<(Name, NameAnswer)>,
    /// From the first verdict change of the batch to the swap (None if nothing was swapped).
    pub swap_time: Option<Duration>,
}

/// Owns the health table and the snapshot swap.
pub struct Publisher {
    health: Health,
    /// What the pools answer now (in a dry run: what they would answer).
    answers: Answers,
    snapshots: Arc<ArcSwap<Snapshot>>,
    /// Every swapped-in snapshot, for the snapshot writer and the notifier.
    versions: watch::Sender<Arc<Snapshot>>,
    dry_run: bool,
    min_serial_interval: Duration,
    /// Names whose new answer is not swapped in yet, and when the first of them changed.
    pending: BTreeSet<Name>,
    pending_since: Option<Instant>,
    last_swap: Option<Instant>,
}

impl Publisher {
    /// `answers` must be what the current snapshot serves (or, in a dry run, would serve).
    pub fn new(
        health: Health,
        answers: Answers,
        snapshots: Arc<ArcSwap<Snapshot>>,
        dry_run: bool,
        min_serial_interval: Duration,
    ) -> Self {
        let (versions, _) = watch::channel(snapshots.load_full());
        Self {
            health,
            answers,
            snapshots,
            versions,
            dry_run,
            min_serial_interval,
            pending: BTreeSet::new(),
            pending_since: None,
            last_swap: None,
        }
    }

    /// A receiver of every snapshot swapped in (starting with the current one).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.versions.subscribe()
    }

    /// When the pending changes may be swapped in, if there are any.
    fn due(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        Some(
            self.last_swap
                .map_or_else(Instant::now, |last| last + self.min_serial_interval),
        )
    }

    /// Applies outcomes until `shutdown`.
    pub async fn run(mut self, mut outcomes: mpsc::Receiver<Probed>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(64);
        loop {
            let due = self.due();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.swap_if_due();
                }
                received = outcomes.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    self.apply(&batch);
                    batch.clear();
                }
            }
        }
    }

    /// Applies a batch of outcomes; swaps a new snapshot in if an answer changed.
    pub fn apply(&mut self, batch: &[Probed]) -> Published {
        let mut started: Option<Instant> = None;
        let mut pools: BTreeSet<usize> = BTreeSet::new();
        for probed in batch {
            let Some(state) = self.health.observe(probed.target, &probed.outcome) else {
                continue;
            };
            started.get_or_insert_with(Instant::now);
            let up = state == State::Up;
            metrics::counter!("healthdns_transitions_total", "to" => if up { "up" } else { "down" })
                .increment(1);
            self.health
                .log_transition(probed.target, &probed.outcome, state, false);
            pools.extend(self.health.pools_using(probed.target));
        }
        let Some(started) = started else {
            return Published::default();
        };
        let mut changed = Vec::new();
        for pool in pools {
            for (name, answer) in self.health.pool_answers(pool) {
                if self.answers.get(&name) != Some(&answer) {
                    changed.push((name, answer));
                }
            }
        }
        if changed.is_empty() {
            return Published::default();
        }
        for (name, answer) in &changed {
            let addresses = answer.address_texts();
            if self.dry_run {
                tracing::info!(%name, ?addresses, servfail = answer.servfail, "dry run: would answer (serving every configured address)");
            } else {
                tracing::info!(%name, ?addresses, servfail = answer.servfail, "answer changed");
                self.pending.insert(name.clone());
                self.pending_since.get_or_insert(started);
            }
            self.answers.insert(name.clone(), answer.clone());
        }
        Published {
            changed,
            swap_time: self.swap_if_due(),
        }
    }

    /// Swaps the pending answers in if the last swap is `min_serial_interval` ago; returns the
    /// time from the first pending change to the swap.
    pub fn swap_if_due(&mut self) -> Option<Duration> {
        if self.due()? > Instant::now() {
            return None;
        }
        let names: Vec<&Name> = self.pending.iter().collect();
        let next = Arc::new(self.snapshots.load().with_answers(&names, &self.answers));
        self.snapshots.store(next.clone());
        self.versions.send_replace(next);
        let now = Instant::now();
        let swap_time = now - self.pending_since.take().unwrap_or(now);
        self.last_swap = Some(now);
        metrics::histogram!("healthdns_publish_seconds").record(swap_time.as_secs_f64());
        tracing::info!(
            swap_us = swap_time.as_micros() as u64,
            names = names.len(),
            "new answers swapped in"
        );
        self.pending.clear();
        Some(swap_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::probe::Outcome;
    use crate::health::TargetId;
    use crate::zone::zonefile::parse_zone;
    use hickory_proto::rr::RecordType;
    use std::path::Path;

    const CONFIG: &str = r#"
[[zone]]
origin = "example.test"
file = "x"
[[pool]]
name = "web"
names = ["www.example.test"]
addresses = ["10.0.0.1", "10.0.0.2"]
[[pool.check]]
kind = "icmp"
fall = 2
rise = 2
"#;

    const ZONE: &str =
        "$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.53\n";

    fn probed(target: usize, passed: bool) -> Probed {
        Probed {
            target: TargetId(target),
            outcome: if passed {
                Outcome::pass(Duration::from_millis(1))
            } else {
                Outcome::fail(Duration::from_millis(1), "test")
            },
        }
    }

    fn publisher(dry_run: bool) -> (Publisher, Arc<ArcSwap<Snapshot>>) {
        publisher_with(dry_run, Duration::ZERO)
    }

    fn publisher_with(
        dry_run: bool,
        min_serial_interval: Duration,
    ) -> (Publisher, Arc<ArcSwap<Snapshot>>) {
        let config = Config::parse(CONFIG, Path::new("c.toml")).unwrap();
        let origin = Name::from_ascii("example.test.").unwrap();
        let zones = vec![parse_zone(ZONE, Path::new("z"), &origin).unwrap()];
        let mut health = Health::new(&config.pools);
        health.observe(TargetId(0), &probed(0, true).outcome);
        health.observe(TargetId(1), &probed(1, true).outcome);
        let answers = health.answers();
        let snapshots = Arc::new(ArcSwap::from_pointee(Snapshot::build(&zones, &answers)));
        let publisher = Publisher::new(
            health,
            answers,
            snapshots.clone(),
            dry_run,
            min_serial_interval,
        );
        (publisher, snapshots)
    }

    fn served(snapshots: &ArcSwap<Snapshot>) -> usize {
        let snapshot = snapshots.load();
        let name = Name::from_ascii("www.example.test.").unwrap();
        let question = crate::dns::answer::Question {
            name: &name,
            record_type: RecordType::A,
        };
        let count = crate::dns::answer::resolve(&snapshot, question, 0)
            .answer
            .len();
        count
    }

    #[test]
    fn swaps_only_when_an_answer_changes() {
        let (mut publisher, snapshots) = publisher(false);
        assert_eq!(served(&snapshots), 2);
        // One failure is below fall: nothing changes, nothing is swapped.
        let before = snapshots.load_full();
        assert_eq!(publisher.apply(&[probed(0, false)]), Published::default());
        assert!(Arc::ptr_eq(&before, &snapshots.load_full()));
        // The second failure in one batch with a pass of the other: one swap.
        let published = publisher.apply(&[probed(0, false), probed(1, true)]);
        assert_eq!(published.changed.len(), 1);
        assert!(published.swap_time.is_some());
        assert_eq!(served(&snapshots), 1);
        // Back after rise = 2.
        assert!(publisher.apply(&[probed(0, true)]).changed.is_empty());
        assert_eq!(publisher.apply(&[probed(0, true)]).changed.len(), 1);
        assert_eq!(served(&snapshots), 2);
    }

    fn serial(snapshots: &ArcSwap<Snapshot>) -> u32 {
        let origin = Name::from_ascii("example.test.").unwrap();
        let key = crate::zone::snapshot::name_key(&origin);
        snapshots.load().zone(&key).unwrap().serial()
    }

    #[tokio::test(start_paused = true)]
    async fn changes_within_the_interval_go_out_together_under_one_serial() {
        let (mut publisher, snapshots) = publisher_with(false, Duration::from_secs(1));
        let versions = publisher.subscribe();
        assert_eq!(serial(&snapshots), 1);
        // The first change after a quiet time is swapped in at once, with the next serial.
        let published = publisher.apply(&[probed(0, false), probed(0, false)]);
        assert!(published.swap_time.is_some());
        assert_eq!((served(&snapshots), serial(&snapshots)), (1, 2));
        assert_eq!(
            versions
                .borrow()
                .zone(&crate::zone::snapshot::name_key(
                    &Name::from_ascii("example.test.").unwrap()
                ))
                .unwrap()
                .serial(),
            2
        );
        // A second change within the interval waits for its end.
        let published = publisher.apply(&[probed(1, false), probed(1, false)]);
        assert_eq!((published.changed.len(), published.swap_time), (1, None));
        assert_eq!(publisher.swap_if_due(), None);
        assert_eq!((served(&snapshots), serial(&snapshots)), (1, 2));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(publisher.swap_if_due(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        // Both down: serve_all answers both addresses again; one swap, one serial.
        assert!(publisher.swap_if_due().is_some());
        assert_eq!((served(&snapshots), serial(&snapshots)), (2, 3));

        // A change and its reversal within the interval: swapped, but no new serial.
        publisher.apply(&[probed(0, true), probed(0, true)]);
        publisher.apply(&[probed(0, false), probed(0, false)]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(publisher.swap_if_due().is_some());
        assert_eq!((served(&snapshots), serial(&snapshots)), (2, 3));
    }

    #[test]
    fn a_dry_run_computes_but_never_swaps() {
        let (mut publisher, snapshots) = publisher(true);
        let before = snapshots.load_full();
        let published = publisher.apply(&[probed(0, false), probed(0, false)]);
        assert_eq!(published.changed.len(), 1);
        assert_eq!(published.swap_time, None);
        assert!(Arc::ptr_eq(&before, &snapshots.load_full()));
    }
}
