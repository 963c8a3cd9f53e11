//! The project's one jittered exponential backoff: a `Policy`, its pure seeded schedule, and the retry loop `run`.
//!
//! Used by the RouterOS REST client (control plane) and, later, by the node
//! plugin's NVMe connect. The loop takes its randomness and its clock from the
//! caller, so tests can check every delay without sleeping.
//!
//! Delay before retry `n` (n = 1 after the first failure):
//! `min(cap, initial · factor^(n-1)) · (1 + jitter · u)` with `u` uniform in
//! [-1, 1), then clamped to `cap` again, so a delay is never above `cap`.

use std::fmt;
use std::time::{Duration, Instant};

/// How hard to retry a transient failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Nominal delay after the first failure.
    pub initial: Duration,
    /// Growth of the nominal delay per retry (at least 1).
    pub factor: f64,
    /// No delay is ever longer than this.
    pub cap: Duration,
    /// Fraction of each delay that is randomised, in [0, 1): 0.1 means ±10%.
    pub jitter: f64,
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
    /// Overall budget: no sleep is started that would end after it.
    pub deadline: Duration,
}

impl Default for Policy {
    /// Control-plane defaults: 200 ms, 400 ms, 800 ms, 1.6 s between five
    /// attempts (±10%), all within 30 s. RouterOS itself gives up on a request
    /// after 60 s, and a CSI sidecar retries the whole call anyway.
    fn default() -> Self {
        Policy {
            initial: Duration::from_millis(200),
            factor: 2.0,
            cap: Duration::from_secs(5),
            jitter: 0.1,
            max_attempts: 5,
            deadline: Duration::from_secs(30),
        }
    }
}

/// A policy whose numbers cannot work.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// `validate` found a field out of range.
    ValidatePolicy {
        field: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ValidatePolicy { field, reason } => {
                write!(f, "invalid retry policy: {field} {reason}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl Policy {
    /// Checks the ranges the loop relies on (call it where a policy comes from flags).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, reason| Err(Error::ValidatePolicy { field, reason });
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return bad("factor", "must be a finite number of at least 1");
        }
        if !(self.jitter.is_finite() && (0.0..1.0).contains(&self.jitter)) {
            return bad("jitter", "must be a fraction in [0, 1)");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.cap < self.initial {
            return bad("cap", "must not be below the initial delay");
        }
        Ok(())
    }

    /// The nominal (unjittered) delay before retry `retry` (1-based), capped.
    pub fn nominal_delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(i32::MAX as u32) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        if !secs.is_finite() || secs >= self.cap.as_secs_f64() {
            self.cap
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The jittered delay before retry `retry` (1-based); never above `cap`.
    pub fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let nominal = self.nominal_delay(retry).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 0.999);
        let u = rng.f64() * 2.0 - 1.0;
        let secs = (nominal * (1.0 + jitter * u)).max(0.0);
        Duration::from_secs_f64(secs).min(self.cap)
    }

    /// The delays between all `max_attempts` attempts for a seed, ignoring the
    /// deadline: the same seed always gives the same schedule.
    pub fn schedule(&self, seed: u64) -> Vec<Duration> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (1..self.max_attempts)
            .map(|retry| self.delay(retry, &mut rng))
            .collect()
    }
}

/// Time as the loop sees it: production sleeps for real, tests only record.
pub trait Clock {
    /// Time since the loop started.
    fn elapsed(&self) -> Duration;
    /// Waits `d` before the next attempt.
    fn sleep(&mut self, d: Duration);
}

/// The real clock: `Instant` and `std::thread::sleep`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock whose `elapsed` counts from now.
    pub fn start() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// What the operation learns about the attempt it is making.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// What is left of the policy's deadline; an attempt may cap its own
    /// timeout with it.
    pub remaining: Duration,
}

/// Why the loop stopped without a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The classifier said the error is definite: retrying cannot help.
    Definite,
    /// `max_attempts` attempts failed.
    Attempts,
    /// The next sleep would have ended after the deadline.
    Deadline,
}

/// The last error, with how the loop got there.
#[derive(Debug)]
pub struct Failure<E> {
    pub error: E,
    pub attempts: u32,
    pub elapsed: Duration,
    pub gave_up: GaveUp,
}

/// Runs `op` until it succeeds, fails definitely, runs out of attempts, or
/// the next sleep would pass the deadline. `is_transient` decides which
/// errors are worth another attempt.
pub fn run<T, E>(
    policy: &Policy,
    rng: &mut fastrand::Rng,
    clock: &mut dyn Clock,
    is_transient: impl Fn(&E) -> bool,
    mut op: impl FnMut(Attempt) -> Result<T, E>,
) -> Result<T, Failure<E>> {
    let max_attempts = policy.max_attempts.max(1);
    let mut number = 1;
    loop {
        let remaining = policy.deadline.saturating_sub(clock.elapsed());
        let error = match op(Attempt { number, remaining }) {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let fail = |error, gave_up, clock: &dyn Clock| Failure {
            error,
            attempts: number,
            elapsed: clock.elapsed(),
            gave_up,
        };
        if !is_transient(&error) {
            return Err(fail(error, GaveUp::Definite, clock));
        }
        if number >= max_attempts {
            return Err(fail(error, GaveUp::Attempts, clock));
        }
        let delay = policy.delay(number, rng);
        if clock.elapsed().saturating_add(delay) > policy.deadline {
            return Err(fail(error, GaveUp::Deadline, clock));
        }
        log::debug!("attempt {number} failed with a transient error, retrying in {delay:?}");
        clock.sleep(delay);
        number += 1;
    }
}

/// `run` with a fresh random generator and the real clock.
pub fn run_blocking<T, E>(
    policy: &Policy,
    is_transient: impl Fn(&E) -> bool,
    op: impl FnMut(Attempt) -> Result<T, E>,
) -> Result<T, Failure<E>> {
    let mut rng = fastrand::Rng::new();
    let mut clock = SystemClock::start();
    run(policy, &mut rng, &mut clock, is_transient, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Records sleeps; `now` can also be advanced by the operation to model
    /// slow attempts.
    struct FakeClock {
        now: Rc<Cell<Duration>>,
        slept: Vec<Duration>,
    }

    impl FakeClock {
        fn new() -> Self {
            FakeClock {
                now: Rc::new(Cell::new(Duration::ZERO)),
                slept: Vec::new(),
            }
        }
    }

    impl Clock for FakeClock {
        fn elapsed(&self) -> Duration {
            self.now.get()
        }
        fn sleep(&mut self, d: Duration) {
            self.slept.push(d);
            self.now.set(self.now.get() + d);
        }
    }

    #[derive(Debug, PartialEq)]
    enum E {
        Transient,
        Definite,
    }

    fn transient(e: &E) -> bool {
        *e == E::Transient
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_policy_is_valid() {
        assert_eq!(Policy::default().validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_nonsense() {
        let p = Policy {
            factor: 0.5,
            ..Policy::default()
        };
        assert!(matches!(
            p.validate(),
            Err(Error::ValidatePolicy { field: "factor", .. })
        ));
        let p = Policy {
            jitter: 1.5,
            ..Policy::default()
        };
        assert!(p.validate().is_err());
        let p = Policy {
            max_attempts: 0,
            ..Policy::default()
        };
        assert!(p.validate().is_err());
        let p = Policy {
            cap: ms(1),
            ..Policy::default()
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn nominal_delays_grow_by_factor_and_stop_at_cap() {
        let p = Policy {
            initial: ms(100),
            factor: 3.0,
            cap: ms(1000),
            ..Policy::default()
        };
        assert_eq!(p.nominal_delay(1), ms(100));
        assert_eq!(p.nominal_delay(2), ms(300));
        assert_eq!(p.nominal_delay(3), ms(900));
        assert_eq!(p.nominal_delay(4), ms(1000));
        assert_eq!(p.nominal_delay(400), ms(1000));
    }

    #[test]
    fn every_delay_is_within_its_jitter_bounds_and_below_cap() {
        let p = Policy {
            initial: ms(200),
            factor: 2.0,
            cap: ms(1500),
            jitter: 0.25,
            max_attempts: 8,
            deadline: Duration::from_secs(60),
        };
        for seed in 0..500 {
            for (i, d) in p.schedule(seed).into_iter().enumerate() {
                let nominal = p.nominal_delay(i as u32 + 1).as_secs_f64();
                let low = nominal * 0.75 - 1e-9;
                let high = (nominal * 1.25).min(p.cap.as_secs_f64()) + 1e-9;
                let got = d.as_secs_f64();
                assert!(
                    got >= low && got <= high,
                    "seed {seed} retry {}: {got} not in [{low}, {high}]",
                    i + 1
                );
                assert!(d <= p.cap);
            }
        }
    }

    #[test]
    fn jitter_spreads_over_its_whole_range() {
        let p = Policy {
            initial: ms(1000),
            jitter: 0.1,
            ..Policy::default()
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let samples: Vec<f64> = (0..2000).map(|_| p.delay(1, &mut rng).as_secs_f64()).collect();
        let min = samples.iter().cloned().fold(f64::MAX, f64::min);
        let max = samples.iter().cloned().fold(f64::MIN, f64::max);
        assert!((0.9..0.91).contains(&min), "min {min}");
        assert!(max < 1.1 && max > 1.09, "max {max}");
    }

    #[test]
    fn no_jitter_gives_exact_delays() {
        let p = Policy {
            jitter: 0.0,
            ..Policy::default()
        };
        assert_eq!(p.schedule(1), vec![ms(200), ms(400), ms(800), ms(1600)]);
    }

    #[test]
    fn same_seed_same_schedule() {
        let p = Policy::default();
        assert_eq!(p.schedule(42), p.schedule(42));
        assert_ne!(p.schedule(42), p.schedule(43));
        assert_eq!(p.schedule(42).len(), 4);
    }

    #[test]
    fn run_sleeps_the_seeded_schedule_then_succeeds() {
        let p = Policy::default();
        let mut clock = FakeClock::new();
        let mut rng = fastrand::Rng::with_seed(9);
        let mut seen = Vec::new();
        let got = run(&p, &mut rng, &mut clock, transient, |a| {
            seen.push(a.number);
            if a.number < 3 {
                Err(E::Transient)
            } else {
                Ok("done")
            }
        });
        assert_eq!(got.unwrap(), "done");
        assert_eq!(seen, vec![1, 2, 3]);
        assert_eq!(clock.slept, p.schedule(9)[..2].to_vec());
    }

    #[test]
    fn definite_error_is_not_retried() {
        let mut clock = FakeClock::new();
        let mut calls = 0;
        let got: Result<(), _> = run(
            &Policy::default(),
            &mut fastrand::Rng::with_seed(1),
            &mut clock,
            transient,
            |_| {
                calls += 1;
                Err(E::Definite)
            },
        );
        let failure = got.unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(failure.attempts, 1);
        assert_eq!(failure.gave_up, GaveUp::Definite);
        assert_eq!(failure.error, E::Definite);
        assert!(clock.slept.is_empty());
    }

    #[test]
    fn stops_after_max_attempts() {
        let p = Policy {
            max_attempts: 3,
            ..Policy::default()
        };
        let mut clock = FakeClock::new();
        let got: Result<(), _> = run(
            &p,
            &mut fastrand::Rng::with_seed(1),
            &mut clock,
            transient,
            |_| Err(E::Transient),
        );
        let failure = got.unwrap_err();
        assert_eq!(failure.attempts, 3);
        assert_eq!(failure.gave_up, GaveUp::Attempts);
        assert_eq!(clock.slept.len(), 2);
    }

    #[test]
    fn never_sleeps_past_the_deadline() {
        let p = Policy {
            initial: ms(300),
            factor: 2.0,
            cap: Duration::from_secs(10),
            jitter: 0.1,
            max_attempts: 100,
            deadline: Duration::from_secs(2),
        };
        for seed in 0..50 {
            let mut clock = FakeClock::new();
            let now = clock.now.clone();
            let got: Result<(), _> = run(
                &p,
                &mut fastrand::Rng::with_seed(seed),
                &mut clock,
                transient,
                |a| {
                    // Each attempt takes 50 ms of (fake) time.
                    assert!(a.remaining <= p.deadline);
                    now.set(now.get() + ms(50));
                    Err(E::Transient)
                },
            );
            let failure = got.unwrap_err();
            assert_eq!(failure.gave_up, GaveUp::Deadline);
            assert!(
                failure.elapsed <= p.deadline,
                "seed {seed}: {:?}",
                failure.elapsed
            );
            // 300 + 600 + ~1200 ms of sleep cannot all fit into 2 s.
            assert!(clock.slept.len() <= 2, "seed {seed}: {:?}", clock.slept);
            assert!(failure.attempts >= 2);
        }
    }

    #[test]
    fn remaining_budget_shrinks_between_attempts() {
        let p = Policy {
            jitter: 0.0,
            ..Policy::default()
        };
        let mut clock = FakeClock::new();
        let mut remaining = Vec::new();
        let _ = run(
            &p,
            &mut fastrand::Rng::with_seed(1),
            &mut clock,
            transient,
            |a| -> Result<(), E> {
                remaining.push(a.remaining);
                Err(E::Transient)
            },
        );
        assert_eq!(remaining[0], p.deadline);
        assert_eq!(remaining[1], p.deadline - ms(200));
        assert_eq!(remaining[2], p.deadline - ms(600));
    }
}
