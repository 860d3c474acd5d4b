//! Group commit: concurrent writers share one transaction (and one fsync).
//!
//! Each caller queues its job and waits. Whoever finds no batch being written
//! becomes the leader: it takes every queued job, writes them together and
//! hands each waiter its own result. Jobs queued meanwhile form the next
//! batch. A caller returns only once its job is committed, so durability per
//! call is unchanged; only the fsyncs are shared.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard};

/// A queue of jobs written in batches.
#[derive(Debug)]
pub(crate) struct GroupCommit<J, R> {
    state: Mutex<State<J, R>>,
    finished: Condvar,
}

#[derive(Debug)]
struct State<J, R> {
    next: u64,
    queue: Vec<(u64, J)>,
    results: HashMap<u64, R>,
    /// Tickets whose batch's writer panicked: they get no result.
    lost: HashSet<u64>,
    writing: bool,
}

impl<J, R> GroupCommit<J, R> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                next: 0,
                queue: Vec::new(),
                results: HashMap::new(),
                lost: HashSet::new(),
                writing: false,
            }),
            finished: Condvar::new(),
        }
    }

    /// Queues `job` and returns its result once its batch is written, or
    /// `None` if the writer of its batch panicked (nothing of it was
    /// committed then). `write` gets a whole batch and must return one
    /// result per ticket.
    pub(crate) fn submit(
        &self,
        job: J,
        write: impl Fn(Vec<(u64, J)>) -> Vec<(u64, R)>,
    ) -> Option<R> {
        let mut state = self.lock();
        let ticket = state.next;
        state.next += 1;
        state.queue.push((ticket, job));
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return Some(result);
            }
            if state.lost.remove(&ticket) {
                return None;
            }
            if state.writing {
                state = self.finished.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.writing = true;
            let batch = std::mem::take(&mut state.queue);
            drop(state);
            // If `write` panics, the guard marks the batch lost and hands
            // leadership on, so no waiter is left behind a dead leader.
            let mut leader = Leader {
                group: self,
                batch: batch.iter().map(|(t, _)| *t).collect(),
            };
            let results = write(batch);
            self.lock().results.extend(results);
            leader.batch.clear();
            drop(leader);
            state = self.lock();
        }
    }

    /// Ends a leader's turn: no batch is being written any more, and the
    /// `lost` tickets (a panicked batch) will get no result.
    fn end_turn(&self, lost: &[u64]) {
        let mut state = self.lock();
        state.writing = false;
        state.lost.extend(lost);
        drop(state);
        self.finished.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State<J, R>> {
        // Every update to the state is a whole step; a panicking writer
        // leaves at worst its own batch's waiters without results.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks the end of a leader's turn when dropped, on success or panic;
/// `batch` still holds the tickets if their results were never delivered.
struct Leader<'g, J, R> {
    group: &'g GroupCommit<J, R>,
    batch: Vec<u64>,
}

impl<J, R> Drop for Leader<'_, J, R> {
    fn drop(&mut self) {
        self.group.end_turn(&self.batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_job_gets_its_own_result_and_batches_form_under_contention() {
        let group = Arc::new(GroupCommit::<usize, usize>::new());
        let batches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (group, batches) = (Arc::clone(&group), Arc::clone(&batches));
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let job = t * 1000 + i;
                        let got = group.submit(job, |batch| {
                            batches.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            batch.into_iter().map(|(k, j)| (k, j * 2)).collect()
                        });
                        assert_eq!(got, Some(job * 2));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert!(
            batches.load(Ordering::Relaxed) < 400,
            "some jobs shared a batch"
        );
    }

    #[test]
    fn a_panicking_writer_does_not_block_later_jobs() {
        let group = GroupCommit::<usize, usize>::new();
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.submit(1, |_| panic!("disk on fire"))
        }));
        assert!(crashed.is_err());
        let next = group.submit(2, |b| b.into_iter().map(|(k, j)| (k, j + 1)).collect());
        assert_eq!(next, Some(3));
    }
}
