//! The supervisor: one owner for every long-running task.
//!
//! Why this exists: no task may die unnoticed (in pdns#10636 the health thread died and
//! nobody knew). Every task of a running server is started here, by name. If one ends before
//! shutdown, by returning or by panicking, the failure is logged with the task's name and
//! cause, every other task is stopped, and `wait` returns the error, so the process exits
//! non-zero and systemd or Docker restarts it. Tasks started later (the probes a reload adds)
//! come with a retire token: once it is cancelled, their end is expected.

use std::collections::HashMap;
use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

/// Why a running server stopped before it was asked to; restart it (systemd and Docker do).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the {task} task stopped unexpectedly: {cause}")]
    TaskFailed { task: String, cause: String },
}

/// A task to start under the supervisor while it runs (see [`Spawner`]).
struct Job {
    name: String,
    /// Cancelled when the task is asked to stop before shutdown (a probe a reload removed):
    /// then its end is expected.
    retire: CancellationToken,
    task: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Starts tasks under a running supervisor (the reloader starts new probes with it).
#[derive(Clone)]
pub struct Spawner(mpsc::UnboundedSender<Job>);

impl Spawner {
    /// Runs `task` under the supervisor until shutdown, or until `retire` is cancelled.
    pub fn spawn(
        &self,
        name: String,
        retire: CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let _ = self.0.send(Job {
            name,
            retire,
            task: Box::pin(task),
        });
    }
}

/// Owns a set of tasks that must all run until shutdown.
pub struct Supervisor {
    tasks: JoinSet<()>,
    /// Each task's name, and the token that retires it early, if it has one.
    names: HashMap<Id, (String, Option<CancellationToken>)>,
    shutdown: CancellationToken,
    jobs: mpsc::UnboundedReceiver<Job>,
    spawner: Spawner,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken) -> Self {
        let (sender, jobs) = mpsc::unbounded_channel();
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
            jobs,
            spawner: Spawner(sender),
        }
    }

    /// Runs `task`, which must not end before shutdown.
    pub fn spawn(&mut self, name: String, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), (name, None));
    }

    /// A handle that starts more tasks while `wait` runs.
    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Waits for every task to end after shutdown. A task that ends before it (and before
    /// its retire token, if it has one) stops all the others and is returned as the error; a
    /// panic wins over a task that merely returned (a consumer returns when the producer it
    /// reads from has panicked), and a panic is never expected.
    pub async fn wait(mut self) -> Result<(), RunError> {
        let mut failures: Vec<(bool, RunError)> = Vec::new();
        loop {
            let ended = tokio::select! {
                ended = self.tasks.join_next_with_id() => match ended {
                    Some(ended) => ended,
                    None => break,
                },
                Some(job) = self.jobs.recv() => {
                    if !self.shutdown.is_cancelled() {
                        let handle = self.tasks.spawn(job.task);
                        self.names.insert(handle.id(), (job.name, Some(job.retire)));
                    }
                    continue;
                }
            };
            let (id, panicked, cause) = match ended {
                Ok((id, ())) => (id, false, "it returned".to_string()),
                Err(error) if error.is_panic() => {
                    let id = error.id();
                    let cause = crate::fault::panic_message(&*error.into_panic());
                    (id, true, format!("panicked: {cause}"))
                }
                Err(error) => (error.id(), false, "it was cancelled".to_string()),
            };
            let (task, retire) = self.names.remove(&id).unwrap_or_default();
            let retired = retire.is_some_and(|token| token.is_cancelled());
            if (self.shutdown.is_cancelled() && failures.is_empty() || retired) && !panicked {
                continue;
            }
            if failures.is_empty() {
                // Stop everything else at once; the cause is chosen when all have ended.
                self.shutdown.cancel();
            }
            failures.push((panicked, RunError::TaskFailed { task, cause }));
        }
        let index = failures
            .iter()
            .position(|(panicked, _)| *panicked)
            .unwrap_or(0);
        if failures.is_empty() {
            return Ok(());
        }
        let (_, failure) = failures.swap_remove(index);
        let RunError::TaskFailed { task, cause } = &failure;
        tracing::error!(%task, %cause, "a task stopped unexpectedly; stopping the server");
        metrics::counter!("healthdns_task_failures_total").increment(1);
        Err(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_dies_stops_the_others_and_is_reported() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let token = shutdown.clone();
        supervisor.spawn("waiter".into(), async move { token.cancelled().await });
        supervisor.spawn("broken".into(), async { panic!("boom") });
        // A consumer of the broken task returns first: the panic is still the cause.
        supervisor.spawn("consumer".into(), async {});
        let error = supervisor.wait().await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the broken task stopped unexpectedly: panicked: boom"
        );
        assert!(shutdown.is_cancelled());

        // A task started later, then retired: its end is expected; one that ends unasked
        // is not.
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let spawner = supervisor.spawner();
        let retire = CancellationToken::new();
        let token = retire.clone();
        spawner.spawn("retired".into(), retire.clone(), async move {
            token.cancelled().await
        });
        let token = shutdown.clone();
        supervisor.spawn("waiter".into(), async move { token.cancelled().await });
        spawner.spawn("late quitter".into(), CancellationToken::new(), async {
            tokio::task::yield_now().await
        });
        retire.cancel();
        let error = supervisor.wait().await.unwrap_err();
        assert!(error.to_string().contains("late quitter task stopped"));

        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        supervisor.spawn("quitter".into(), async {});
        let error = supervisor.wait().await.unwrap_err();
        assert!(error
            .to_string()
            .contains("quitter task stopped unexpectedly: it returned"));
    }

    #[tokio::test]
    async fn tasks_that_end_after_shutdown_are_fine() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        for index in 0..3 {
            let token = shutdown.clone();
            supervisor.spawn(
                format!("task {index}"),
                async move { token.cancelled().await },
            );
        }
        shutdown.cancel();
        assert!(supervisor.wait().await.is_ok());
    }
}
