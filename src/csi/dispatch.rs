//! Calls from the gRPC glue to their handlers: the bound on calls in
//! flight, the hand-off to pooled worker threads (the cheap calls answered
//! on the spot), the reply and its one log line, and the thread that holds
//! sent replies until gRPC confirms them.
//!
//! grpcio runs handlers on its completion-queue threads, and kubelet sends all
//! its calls over one connection, which lands on one queue: a handler that
//! blocks there (an `nvme connect`, a slow RDS) would stall every other call.
//! So the generated glue hands each call to [`Dispatcher::dispatch`], which
//! queues it for a worker thread (parked ones are reused, see `pool`) and
//! returns; the worker completes the sink. Calls that can never block
//! (Probe, capabilities, info) are answered on the spot instead: a thread
//! hop would cost more than the call.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use grpcio::{RpcContext, RpcStatus, UnarySink};
use log::{debug, warn};

use super::codec::{oversized_field, Bounded, Decoded, NotDecoded};
use super::pool::Pool;
use super::reply::reply;
use super::status;
use crate::echo::echo;

/// The longest string (or bytes) field any request may carry. Nothing real
/// comes close: ids are tens of bytes and paths are bounded by PATH_MAX
/// (4096 with its NUL). A larger value is refused at the edge with
/// INVALID_ARGUMENT naming the field, before any handler sees it.
pub const MAX_FIELD_BYTES: usize = 4096;

/// Stack of the reply thread (the workers' is set in `pool`): a quarter of
/// the default, as it only polls futures.
const CALL_STACK_BYTES: usize = 512 * 1024;

/// What a handler knows about its call besides the request.
pub struct CallInfo {
    pub(super) method: &'static str,
    pub(super) volume_id: String,
    deadline: grpcio::Deadline,
}

impl CallInfo {
    /// The CSI method name, e.g. `CreateVolume`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The volume (or name) the request is about; empty when it names none.
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// True once the client's deadline has passed. The worker is not
    /// interrupted by gRPC, so long work checks this where it can stop early.
    pub fn expired(&self) -> bool {
        self.deadline.exceeded()
    }
}

/// Hands calls to worker threads; cheap to clone (shared state).
#[derive(Clone)]
pub struct Dispatcher {
    state: Arc<DispatchState>,
    replies: Replies,
    pool: Pool,
}

/// Calls that can never block: answered on the completion-queue thread
/// itself (see `dispatch`). Each answers from static data or settings;
/// Probe reads the controller's RDS health (kept up to date by its own
/// thread, never checked inside Probe) and, on a node, stats two local
/// paths (sysfs's nvme_tcp module, the nvme binary): no network, no child
/// process, no lock held across either. A method added here must keep to
/// that. ControllerGetCapabilities is not one: the snapshot capabilities
/// depend on the pool's filesystem, read from the RDS when not known yet.
const INLINE_METHODS: &[&str] = &[
    "Probe",
    "GetPluginInfo",
    "GetPluginCapabilities",
    "NodeGetCapabilities",
    "NodeGetInfo",
];

/// How long a pool worker waits for a next call before its thread ends:
/// a burst is served by warm threads, and an idle driver goes back to no
/// workers (idle RSS stays where it was).
const WORKER_IDLE: Duration = Duration::from_secs(10);

fn panicked(method: &str, volume_id: &str) -> RpcStatus {
    status::internal(format!(
        "{method} for {} failed unexpectedly (a bug: the handler panicked; see the log)",
        echo(volume_id)
    ))
}

/// A reply gRPC has yet to confirm, counted until then for the drain.
struct Pending {
    sent: grpcio::UnarySinkResult,
    _guard: InFlight,
    method: &'static str,
    since: Instant,
}

/// One thread that holds every sent reply until gRPC confirms it, so that
/// workers can end as soon as they have answered: a worker waiting there
/// itself would keep its thread (and stack) alive for nothing, doubling
/// the threads of a burst.
#[derive(Clone)]
struct Replies {
    queue: mpsc::Sender<Pending>,
    thread: Option<thread::Thread>,
}

impl Replies {
    fn start() -> Replies {
        let (queue, rx) = mpsc::channel::<Pending>();
        let thread = thread::Builder::new()
            .name("grpc-replies".into())
            .stack_size(CALL_STACK_BYTES)
            .spawn(move || hold_replies(rx))
            .map(|h| h.thread().clone())
            .map_err(|e| warn!("cannot start the reply thread ({e}); replies are confirmed by their workers"))
            .ok();
        Replies { queue, thread }
    }

    fn hold(&self, p: Pending) {
        match &self.thread {
            Some(t) => {
                if let Err(mpsc::SendError(p)) = self.queue.send(p) {
                    wait_reply(p);
                } else {
                    t.unpark();
                }
            }
            None => wait_reply(p),
        }
    }
}

/// The reply thread: polls every held reply, sleeping until one of them
/// (or a new one) wakes it.
fn hold_replies(rx: mpsc::Receiver<Pending>) {
    use std::future::Future;
    use std::task::{Context, Poll};
    let waker = thread_waker();
    let mut cx = Context::from_waker(&waker);
    let mut held: Vec<Pending> = Vec::new();
    loop {
        if held.is_empty() {
            match rx.recv() {
                Ok(p) => held.push(p),
                Err(_) => return,
            }
        }
        held.extend(rx.try_iter());
        held.retain_mut(|p| match std::pin::Pin::new(&mut p.sent).poll(&mut cx) {
            Poll::Ready(Ok(())) => false,
            Poll::Ready(Err(e)) => {
                debug!("rpc {}: the reply was not delivered: {e}", p.method);
                false
            }
            Poll::Pending if p.since.elapsed() > REPLY_WAIT => {
                debug!(
                    "rpc {}: gRPC did not confirm the reply within {REPLY_WAIT:?}",
                    p.method
                );
                false
            }
            Poll::Pending => true,
        });
        if !held.is_empty() {
            thread::park_timeout(Duration::from_millis(500));
        }
    }
}

/// Waits for one reply on this thread (when the reply thread is missing).
fn wait_reply(p: Pending) {
    if let Some(Err(e)) = block_on(p.sent, REPLY_WAIT) {
        debug!("rpc {}: the reply was not delivered: {e}", p.method);
    }
}

struct DispatchState {
    max_in_flight: usize,
    counts: Mutex<Counts>,
    idle: Condvar,
    draining: AtomicBool,
}

/// What the dispatcher has in hand.
#[derive(Default)]
struct Counts {
    /// Calls admitted and not yet answered: queued or running. These are
    /// what `--max-in-flight` bounds.
    calls: usize,
    /// Answers handed to gRPC that it has yet to confirm. Not bounded by
    /// `--max-in-flight`: a client that has its answer sends its next
    /// call before the confirmation of the last one comes back, and
    /// counting those would refuse a steady load of at most half the
    /// limit. The drain waits for them too.
    replies: usize,
}

impl Counts {
    fn total(&self) -> usize {
        self.calls + self.replies
    }
}

/// Counts one call in flight (or, once answered, its unconfirmed reply)
/// for as long as it lives.
struct InFlight {
    state: Arc<DispatchState>,
    answered: bool,
}

impl InFlight {
    /// The call is answered: it leaves the calls and waits with the
    /// replies, in one step, so the drain never sees it in neither.
    fn answered(mut self) -> InFlight {
        let mut c = lock(&self.state.counts);
        c.calls -= 1;
        c.replies += 1;
        drop(c);
        self.answered = true;
        self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut c = lock(&self.state.counts);
        if self.answered {
            c.replies -= 1;
        } else {
            c.calls -= 1;
        }
        if c.total() == 0 {
            self.state.idle.notify_all();
        }
    }
}

impl Dispatcher {
    /// `max_in_flight` bounds the calls running at once; Probe is exempt so
    /// that a busy driver is not mistaken for a dead one and restarted.
    pub fn new(max_in_flight: usize) -> Self {
        Dispatcher {
            state: Arc::new(DispatchState {
                max_in_flight,
                counts: Mutex::new(Counts::default()),
                idle: Condvar::new(),
                draining: AtomicBool::new(false),
            }),
            replies: Replies::start(),
            // Every call a worker runs is counted in flight until it has
            // answered, which ends its job, so at most `max_in_flight` jobs
            // exist at once: with as many threads, a call never waits for a
            // thread behind a blocked one.
            pool: Pool::new(max_in_flight.max(1), WORKER_IDLE),
        }
    }

    /// Runs `work` on a worker thread (or, for the [`INLINE_METHODS`], right
    /// here) and completes `sink` with its result. Returns at once: a
    /// request that did not decode or carries an oversized field answers
    /// INVALID_ARGUMENT, a full dispatcher RESOURCE_EXHAUSTED, a draining one
    /// UNAVAILABLE, without running `work`.
    /// `volume_of` names the volume (or name) the request is about.
    pub fn dispatch<Req, Resp, F>(
        &self,
        ctx: RpcContext,
        sink: UnarySink<Resp>,
        method: &'static str,
        request: Decoded<Req>,
        volume_of: fn(&Req) -> String,
        work: F,
    ) where
        Req: Bounded + Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(&CallInfo, Req) -> Result<Resp, RpcStatus> + Send + 'static,
    {
        let started = Instant::now();
        let (volume_id, request) = match request {
            Ok(req) => {
                let volume_id = volume_of(&req);
                match oversized_field(&req, MAX_FIELD_BYTES) {
                    None => (volume_id, Ok(req)),
                    Some((field, bytes)) => {
                        let why = format!(
                            "{field} is {bytes} bytes, over the limit of {MAX_FIELD_BYTES} bytes for a request field"
                        );
                        // The CSI spec answers a starting_token the plugin
                        // did not hand out (and it hands out none this
                        // long) with ABORTED, not INVALID_ARGUMENT.
                        let refusal = if field == "starting_token" {
                            status::aborted(why)
                        } else {
                            status::invalid_argument(why)
                        };
                        (volume_id, Err(refusal))
                    }
                }
            }
            Err(NotDecoded(why)) => (
                String::new(),
                Err(status::invalid_argument(format!(
                    "the request is not a valid {method} request message: {why}"
                ))),
            ),
        };
        let call = CallInfo {
            method,
            volume_id,
            deadline: ctx.deadline(),
        };
        let admitted = request.and_then(|req| self.admit(method).map(|guard| (req, guard)));
        let (req, guard) = match admitted {
            Ok(pair) => pair,
            Err(refusal) => {
                // On the completion-queue thread: let it drive the reply
                // instead of waiting for it here (which would deadlock).
                let sent = reply(&call, started, sink, Err(refusal));
                ctx.spawn(async move {
                    let _ = sent.await;
                });
                return;
            }
        };
        if INLINE_METHODS.contains(&method) {
            // Never blocks (static answers, or state read under a lock held
            // for nanoseconds): answered here, on the completion-queue
            // thread, with no thread hop. The work is done once the reply is
            // queued, so the call leaves the in-flight count then (see
            // `Counts::replies`); its reply is counted until confirmed.
            let result = panic::catch_unwind(AssertUnwindSafe(|| work(&call, req)))
                .unwrap_or_else(|_| Err(panicked(method, &call.volume_id)));
            // Answered before the reply goes out: the client may call
            // again the moment it has it.
            let unconfirmed = guard.answered();
            let sent = reply(&call, started, sink, result);
            ctx.spawn(async move {
                let _ = sent.await;
                drop(unconfirmed);
            });
            return;
        }
        // The closure owns the sink until it can answer; if no worker can
        // take it, the sink comes back through this slot to be failed.
        let slot = Arc::new(Mutex::new(Some(sink)));
        let replies = self.replies.clone();
        let worker_slot = Arc::clone(&slot);
        let spawned = self.pool.run(Box::new(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(|| work(&call, req)))
                .unwrap_or_else(|_| Err(panicked(method, &call.volume_id)));
            if let Some(sink) = lock(&worker_slot).take() {
                // Answered before the reply goes out: the client may call
                // again the moment it has it.
                let unconfirmed = guard.answered();
                let sent = reply(&call, started, sink, result);
                // The call must be held until gRPC has sent the reply
                // (see `reply`); the reply thread does that, so this
                // thread and its stack go away now.
                replies.hold(Pending {
                    sent,
                    _guard: unconfirmed,
                    method,
                    since: Instant::now(),
                });
            }
        }));
        if let Err(err) = spawned {
            // The closure (and the in-flight guard) was dropped with the job.
            if let Some(sink) = lock(&slot).take() {
                let refusal = status::resource_exhausted(format!(
                    "cannot start a thread for {method}: {err}; retry later"
                ));
                warn!("rpc {method}: cannot start a worker thread: {err}");
                let sent = sink.fail(refusal);
                ctx.spawn(async move {
                    let _ = sent.await;
                });
            }
        }
    }

    fn admit(&self, method: &'static str) -> Result<InFlight, RpcStatus> {
        if self.state.draining.load(Ordering::SeqCst) {
            return Err(status::unavailable(format!(
                "{method} refused: the driver is shutting down"
            )));
        }
        let mut c = lock(&self.state.counts);
        if method != "Probe" && c.calls >= self.state.max_in_flight {
            return Err(status::resource_exhausted(format!(
                "{method} refused: {} calls already in flight (limit {}, --max-in-flight); retry later",
                c.calls, self.state.max_in_flight
            )));
        }
        c.calls += 1;
        Ok(InFlight {
            state: Arc::clone(&self.state),
            answered: false,
        })
    }

    /// Number of calls queued or running now (not those answered and
    /// waiting for gRPC to confirm the reply).
    pub fn in_flight(&self) -> usize {
        lock(&self.state.counts).calls
    }

    /// Refuses new calls from now on and waits up to `grace` for the running
    /// ones to finish and their replies to go out. Returns how many calls
    /// and unconfirmed replies were still there at the end.
    pub fn drain(&self, grace: Duration) -> usize {
        self.state.draining.store(true, Ordering::SeqCst);
        let end = Instant::now() + grace;
        let mut c = lock(&self.state.counts);
        while c.total() > 0 {
            let now = Instant::now();
            if now >= end {
                break;
            }
            c = match self.state.idle.wait_timeout(c, end - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        c.total()
    }
}

/// How long a worker waits for gRPC to confirm its reply was sent.
const REPLY_WAIT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler is caught before it can poison these counters;
    // recover the data rather than cascade if it ever happens.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A waker that unparks the current thread: the whole executor the few
/// grpcio futures here need.
pub(super) fn thread_waker() -> std::task::Waker {
    struct Unparker(thread::Thread);
    impl std::task::Wake for Unparker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    std::task::Waker::from(Arc::new(Unparker(thread::current())))
}

/// Polls a future to completion on this thread, giving up (`None`) after
/// `limit`. grpcio reports a sent reply and a finished shutdown as futures;
/// no executor is worth pulling in for these waits.
pub(super) fn block_on<F: std::future::Future + Unpin>(mut fut: F, limit: Duration) -> Option<F::Output> {
    let waker = thread_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let end = Instant::now() + limit;
    loop {
        if let std::task::Poll::Ready(out) = std::pin::Pin::new(&mut fut).poll(&mut cx) {
            return Some(out);
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        thread::park_timeout(end - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grpcio::RpcStatusCode;

    #[test]
    fn drain_returns_at_once_when_idle_and_counts_running_calls() {
        let d = Dispatcher::new(2);
        assert_eq!(d.drain(Duration::from_secs(5)), 0);
        let d = Dispatcher::new(2);
        let held = d.admit("CreateVolume").unwrap();
        let t = Instant::now();
        assert_eq!(d.drain(Duration::from_millis(50)), 1);
        assert!(t.elapsed() >= Duration::from_millis(50));
        drop(held);
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn an_answered_call_leaves_the_limit_but_the_drain_waits_for_its_reply() {
        let d = Dispatcher::new(1);
        let call = d.admit("CreateVolume").unwrap();
        assert!(d.admit("DeleteVolume").is_err());
        // Answered, its reply not yet confirmed: the next call gets in.
        let reply = call.answered();
        assert_eq!(d.in_flight(), 0);
        let next = d.admit("DeleteVolume").unwrap();
        drop(next);
        // The drain still counts the unconfirmed reply.
        assert_eq!(d.drain(Duration::from_millis(50)), 1);
        drop(reply);
        assert_eq!(d.drain(Duration::ZERO), 0);
    }

    #[test]
    fn admission_is_bounded_except_for_probe_and_refused_while_draining() {
        let d = Dispatcher::new(1);
        let first = d.admit("CreateVolume").unwrap();
        let refused = d.admit("DeleteVolume").err().expect("refused");
        assert_eq!(refused.code(), RpcStatusCode::RESOURCE_EXHAUSTED);
        assert!(refused.message().contains("limit 1"), "{}", refused.message());
        let probe = d.admit("Probe").unwrap();
        drop((first, probe));
        assert!(d.admit("DeleteVolume").is_ok());
        d.drain(Duration::ZERO);
        assert_eq!(
            d.admit("Probe").err().expect("refused").code(),
            RpcStatusCode::UNAVAILABLE
        );
    }
}
