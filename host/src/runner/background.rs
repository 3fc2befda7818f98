//! Running a rebuild at low CPU priority: a thread of its own at nice 10
//! with a single-threaded async runtime, so its subscription decoding, Wasm
//! and commits (blocking threads inherit the nice value) give way to the
//! serving version's queries when the CPU is short. Linux keeps a nice value
//! per thread; raising it needs no privilege.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

/// Queries being answered now, so that a rebuild gives way to them: the
/// nice value orders the host's own threads, but not the event store's or
/// the client's, which a rebuild's reads keep busy at normal priority.
#[derive(Debug, Default)]
pub(crate) struct Queries {
    in_flight: AtomicUsize,
}

/// A query being answered; counted until dropped.
#[derive(Debug)]
pub(crate) struct Answering<'a>(&'a Queries);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A counted query waiting (for its projection to reach `at_least`), not
/// being answered: uncounted until dropped.
#[derive(Debug)]
pub(crate) struct Waiting<'a>(&'a Queries);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
    }
}

impl Queries {
    /// Leaves a query uncounted while it waits. Only for a query that holds
    /// an [`Answering`] guard.
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        Waiting(self)
    }

    /// Counts a query until the guard drops.
    pub(crate) fn answering(&self) -> Answering<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Answering(self)
    }

    /// How long a rebuild's lane pauses after a batch whose reading and
    /// applying took `took`: twice as long (at most `MAX_PAUSE`) while
    /// queries are being answered, so a rebuild takes at most about a third
    /// of the time queries could use; not at all otherwise.
    pub(super) fn pause_after(&self, took: Duration) -> Duration {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return Duration::ZERO;
        }
        (took * PAUSE_RATIO).min(MAX_PAUSE)
    }
}

/// A rebuild's pause, as a multiple of its work, while queries are answered.
/// Half of the work a rebuild causes is not its own lane's (the store's
/// reads and the client's decoding at normal priority, the read-ahead that
/// goes on during a pause), so pausing only as long as the lane worked
/// still left queries less than 80 % of their rate.
const PAUSE_RATIO: u32 = 2;

/// The longest pause a rebuild makes for queries after one batch.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// The nice value of a rebuild's threads.
const BACKGROUND_NICE: libc::c_int = 10;

/// Runs `work` on a new thread at low priority; the handle ends when it does.
pub(super) fn spawn_at_low_priority(
    projection: &str,
    work: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (handle, task) = std::sync::mpsc::channel();
    let projection = projection.to_owned();
    std::thread::Builder::new().name("rebuild".into()).spawn(move || {
        if !lower_this_threads_priority(BACKGROUND_NICE) {
            tracing::warn!(%projection, "cannot lower the rebuild's CPU priority; it competes with queries");
        }
        let (finished, ended) = oneshot::channel::<()>();
        let joined = runtime.spawn(async move {
            let _finished = finished;
            work.await;
        });
        if handle.send(joined).is_ok() {
            let _ = runtime.block_on(ended);
        }
    })?;
    task.recv().map_err(|_| std::io::Error::other("the rebuild thread ended at start"))
}

/// Sets the calling thread's nice value (Linux: per thread; threads it starts inherit it).
#[allow(unsafe_code)]
fn lower_this_threads_priority(nice: libc::c_int) -> bool {
    // SAFETY: plain system calls with no pointers; `gettid` names the calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_pauses_only_while_queries_are_answered() {
        let queries = Queries::default();
        assert_eq!(queries.pause_after(Duration::from_millis(30)), Duration::ZERO);
        let answering = queries.answering();
        assert_eq!(queries.pause_after(Duration::from_millis(30)), Duration::from_millis(60));
        assert_eq!(queries.pause_after(Duration::from_secs(3)), MAX_PAUSE);
        drop(answering);
        assert_eq!(queries.pause_after(Duration::from_millis(30)), Duration::ZERO);
    }

    #[test]
    fn a_query_waiting_for_its_projection_is_not_given_way_to() {
        let queries = Queries::default();
        let (first, second) = (queries.answering(), queries.answering());
        let waiting = queries.waiting();
        assert_eq!(queries.pause_after(Duration::from_millis(30)), Duration::from_millis(60), "one still answered");
        let also_waiting = queries.waiting();
        assert_eq!(queries.pause_after(Duration::from_millis(30)), Duration::ZERO, "both only wait");
        drop((waiting, also_waiting));
        assert_eq!(queries.pause_after(Duration::from_millis(30)), Duration::from_millis(60), "answered again");
        drop((first, second));
        assert_eq!(queries.pause_after(Duration::from_millis(30)), Duration::ZERO);
    }

    #[test]
    fn a_rebuild_thread_runs_at_the_background_nice_value() {
        let nice = std::thread::spawn(|| {
            assert!(lower_this_threads_priority(BACKGROUND_NICE), "setpriority failed");
            #[allow(unsafe_code)]
            // SAFETY: a plain system call about the calling thread.
            unsafe {
                libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
            }
        })
        .join()
        .expect("thread");
        assert_eq!(nice, BACKGROUND_NICE);
    }
}
