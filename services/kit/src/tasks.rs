//! A service's background tasks: held by its [`Service`](crate::Service), stopped when it is.
//!
//! Every task a service starts (a sweeper, a resumer, an event relay) goes into its [`Tasks`],
//! which aborts them all when dropped. [`server::run`](crate::server::run) stops them after
//! the last request has been answered, so no task outlives the service or works on while it
//! drains; in tests, dropping the server stops them.

use std::fmt::Display;
use std::future::Future;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::task::AbortOnDropHandle;

/// Background tasks, aborted when this is dropped (or [`stop`](Tasks::stop)ped).
#[derive(Debug, Default)]
pub struct Tasks {
    handles: Vec<AbortOnDropHandle<()>>,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it ends or these tasks are stopped.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.handles
            .push(AbortOnDropHandle::new(tokio::spawn(task)));
    }

    /// Runs `work` at every tick of `ticks` (`tokio::time::interval(every)` for a first run at
    /// once, `interval_at` for a later one). A tick missed while `work` was still running is
    /// not made up for: the next run is a whole period after the late one. A failure is logged
    /// with the task's `name`, and the next tick tries again.
    pub fn spawn_every<F, Fut, E>(&mut self, mut ticks: Interval, name: &'static str, mut work: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.spawn(async move {
            loop {
                ticks.tick().await;
                if let Err(error) = work().await {
                    // `#` prints an anyhow error's causes too; other errors ignore it.
                    tracing::warn!(task = name, error = %format!("{error:#}"), "{name} failed; the next tick tries again");
                }
            }
        });
    }

    /// Takes over `other`'s tasks.
    pub fn extend(&mut self, other: Tasks) {
        self.handles.extend(other.handles);
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Aborts every task and waits until each has ended, so nothing of theirs runs afterwards.
    pub async fn stop(self) {
        for handle in &self.handles {
            handle.abort();
        }
        for handle in self.handles {
            // An aborted task ends with a cancellation error; one that panicked, with its panic.
            let _ = handle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    /// A task that counts its runs every 10 ms, and the count.
    fn counting(tasks: &mut Tasks) -> Arc<AtomicU32> {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        tasks.spawn_every(
            tokio::time::interval(Duration::from_millis(10)),
            "counting",
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Ok::<_, String>(()))
            },
        );
        runs
    }

    #[tokio::test]
    async fn spawn_every_runs_at_once_and_again_after_failures() {
        let mut tasks = Tasks::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        tasks.spawn_every(
            tokio::time::interval(Duration::from_millis(5)),
            "always failing",
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Err("no"))
            },
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(runs.load(Ordering::SeqCst) >= 3, "a failure stops nothing");
        assert_eq!(tasks.len(), 1);
    }

    #[tokio::test]
    async fn dropped_or_stopped_tasks_run_no_more() {
        for stop in [false, true] {
            let mut tasks = Tasks::new();
            let runs = counting(&mut tasks);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(runs.load(Ordering::SeqCst) > 0, "the task ran");
            if stop {
                tasks.stop().await;
            } else {
                drop(tasks);
                // Aborting takes effect at the task's next await; give it one.
                tokio::task::yield_now().await;
            }
            let after = runs.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(runs.load(Ordering::SeqCst), after, "stopped (stop: {stop})");
        }
    }
}
