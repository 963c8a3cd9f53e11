//! Parked worker threads for the calls that may block: a thread is started
//! only when every existing one is busy (never more than the bound), takes
//! queued calls one after another, and ends after waiting idle a while.
//!
//! Starting a fresh thread per call costs a clone, a stack mapping and its
//! teardown on every call; a parked thread costs one wake-up.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// One unit of work; it completes its own call.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Stack of a worker. Handlers are shallow (no recursion; protobuf decoding
/// happens before the hand-off), so a quarter of the default keeps the
/// virtual footprint of many parallel calls small.
const WORKER_STACK_BYTES: usize = 512 * 1024;

/// A bounded, self-shrinking set of worker threads; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    max_threads: usize,
    idle_exit: Duration,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Workers alive (busy or parked).
    threads: usize,
    /// Workers parked in `wait`, ready to take a job.
    parked: usize,
}

impl Pool {
    /// At most `max_threads` workers; each ends after `idle_exit` without work.
    pub fn new(max_threads: usize, idle_exit: Duration) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                max_threads: max_threads.max(1),
                idle_exit,
            }),
        }
    }

    /// Queues `job` and makes sure a worker will take it: a parked one, or a
    /// new one while fewer than the bound are alive (else the next worker to
    /// finish takes it). Fails only when no worker is alive and none can be
    /// started; the job is then dropped.
    pub fn run(&self, job: Job) -> io::Result<()> {
        let mut st = lock(&self.inner.state);
        st.jobs.push_back(job);
        if st.jobs.len() <= st.parked {
            drop(st);
            self.inner.wake.notify_one();
            return Ok(());
        }
        if st.threads >= self.inner.max_threads {
            // Every worker is busy; the first one free takes the job.
            return Ok(());
        }
        st.threads += 1;
        drop(st);
        let inner = Arc::clone(&self.inner);
        let started = thread::Builder::new()
            .name("csi-worker".into())
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || work(&inner));
        match started {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut st = lock(&self.inner.state);
                st.threads -= 1;
                if st.threads == 0 {
                    // Nobody will ever take the queue: give the jobs back
                    // (dropping them fails their calls, see `dispatch`).
                    let orphans: Vec<Job> = st.jobs.drain(..).collect();
                    drop(st);
                    drop(orphans);
                    return Err(e);
                }
                // A live worker takes it when it is done.
                Ok(())
            }
        }
    }

    /// Workers alive now (busy or parked).
    #[cfg(test)]
    fn threads(&self) -> usize {
        lock(&self.inner.state).threads
    }

    #[cfg(test)]
    fn parked(&self) -> usize {
        lock(&self.inner.state).parked
    }
}

/// A worker: takes jobs until it has waited `idle_exit` for none.
fn work(inner: &Inner) {
    let mut st = lock(&inner.state);
    loop {
        if let Some(job) = st.jobs.pop_front() {
            drop(st);
            // A panicking job is caught inside it (see `dispatch`); if one
            // ever escapes, this thread ends and its count with it.
            let _alive = Alive(inner);
            job();
            std::mem::forget(_alive);
            st = lock(&inner.state);
            continue;
        }
        st.parked += 1;
        let (next, timeout) = match inner.wake.wait_timeout(st, inner.idle_exit) {
            Ok(pair) => pair,
            Err(poisoned) => poisoned.into_inner(),
        };
        st = next;
        st.parked -= 1;
        if timeout.timed_out() && st.jobs.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}

/// Uncounts a worker whose job unwound past it.
struct Alive<'a>(&'a Inner);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).threads -= 1;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn threads_grow_to_the_load_never_past_the_bound_and_idle_ones_exit() {
        let pool = Pool::new(4, Duration::from_millis(200));
        assert_eq!(pool.threads(), 0, "no thread before the first job");
        // One job at a time reuses one thread.
        for _ in 0..5 {
            let (tx, rx) = mpsc::channel();
            pool.run(Box::new(move || tx.send(()).unwrap())).unwrap();
            rx.recv().unwrap();
            wait_for("the worker to park", || pool.parked() == 1);
        }
        assert_eq!(pool.threads(), 1, "sequential jobs share a parked thread");
        // Six blocked jobs: four threads, never more; the rest queue.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (started_tx, started_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..6 {
            let (gate, started_tx, done_tx) = (Arc::clone(&gate), started_tx.clone(), done_tx.clone());
            pool.run(Box::new(move || {
                started_tx.send(i).unwrap();
                let mut open = gate.0.lock().unwrap();
                while !*open {
                    open = gate.1.wait(open).unwrap();
                }
                done_tx.send(i).unwrap();
            }))
            .unwrap();
        }
        for _ in 0..4 {
            started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        }
        assert_eq!(pool.threads(), 4);
        assert!(
            started_rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "a fifth job ran while four were blocked on a bound of four"
        );
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        for _ in 0..6 {
            done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        }
        assert!(pool.threads() <= 4);
        // Idle workers end.
        wait_for("idle workers to exit", || pool.threads() == 0);
        // And the pool starts again after that.
        let (tx, rx) = mpsc::channel();
        pool.run(Box::new(move || tx.send(()).unwrap())).unwrap();
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }
}
