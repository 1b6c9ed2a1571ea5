//! Keeping background event work (relays, consumers) alive exactly as long as a service.

use std::sync::Arc;

use axum::{Extension, Router};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Background tasks that stop when this is dropped. Keep it for the service's lifetime, most
/// simply by [`Running::attach`]ing it to the service's router.
#[derive(Debug, Default)]
pub struct Running {
    tasks: Vec<JoinHandle<()>>,
    wakers: Vec<Arc<Notify>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Running {
    pub(crate) fn new(tasks: Vec<JoinHandle<()>>, wakers: Vec<Arc<Notify>>) -> Self {
        Self { tasks, wakers }
    }

    /// Both sets of tasks in one guard.
    pub fn merge(mut self, mut other: Running) -> Running {
        self.tasks.append(&mut other.tasks);
        self.wakers.append(&mut other.wakers);
        self
    }

    /// Makes `router` own this guard: the tasks run while the router (or any clone a server
    /// holds) exists. Call it last, after every route is merged, so all of them carry it.
    pub fn attach(self, router: Router) -> Router {
        router.layer(Extension(Arc::new(self)))
    }

    /// Wakes the relays now instead of at their next poll (call after committing an event when
    /// latency matters; without it the poll interval bounds the delay).
    pub fn wake(&self) {
        for waker in &self.wakers {
            waker.notify_one();
        }
    }

    /// A handle that wakes the relays, for code that does not own the guard.
    pub fn waker(&self) -> Waker {
        Waker(self.wakers.clone())
    }
}

/// Wakes the relays of a [`Running`] guard. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Waker(Vec<Arc<Notify>>);

impl Waker {
    pub fn wake(&self) {
        for waker in &self.0 {
            waker.notify_one();
        }
    }
}
