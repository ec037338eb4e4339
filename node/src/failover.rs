//! One upstream failover engine for every role: a role gives the candidates (the edge its
//! shields in ring order, the shield its origin servers in turn) and the engine makes the
//! attempts, with one passive-health model and one vocabulary for how an attempt ended.
//!
//! - [`Hop`]: what an upstream is told beside the request — the cache key that routes it and
//!   whether it may be sent again;
//! - [`Attempt`]: how one attempt ended, the `result` label of per-target request metrics;
//! - [`PassiveHealth`]: consecutive failures eject a target for a period that doubles with each
//!   consecutive ejection up to a bound; once it runs out, one request probes the target and
//!   its success puts the target back;
//! - [`Candidates`] and [`attempt`]: the attempt loop;
//! - [`RetryBudget`]: retries capped at a share of requests, so failing upstreams are not
//!   sent more than a bounded extra load.

use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{request, Request, Response, StatusCode};
use http_body_util::{Either, Empty};

use crate::error::RequestError;
pub use crate::upstream::Hop;
pub use budget::{RetryBudget, BUDGET_WINDOW_SECS, MIN_RETRIES_PER_SECOND};

mod budget;
use crate::upstream::{UpstreamBody, UpstreamResponseBody};

/// How one attempt at one target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Ok,
    /// The target answered 500, 502, 503 or 504: an answer, relayed as it is and not retried
    /// (another attempt would ask the origin again), but a mark against an origin server's
    /// health. A shield that relays its origin's 5xx has not failed.
    ErrorStatus,
    /// The target, a Verge tier, answered with an error it generated itself, having had no
    /// answer from its own upstream: the target failed, and another may be tried.
    Generated,
    ConnectError,
    Timeout,
    /// No connection slot to this target came free in time; the target was not asked.
    Saturated,
    /// The exchange broke after connecting (reset, malformed answer).
    Error,
    /// The target's host name has not resolved yet; nothing was sent.
    Unresolved,
    /// The client's request body failed (malformed, abandoned, too slow) while it streamed to
    /// the target: the client's fault, never counted against the target.
    ClientError,
    /// Control took the target out of the routing table while the attempt waited for its
    /// answer: another may be tried; not counted against the target, which is gone.
    Withdrawn,
}

impl Attempt {
    pub const ALL: [Attempt; 10] = [
        Attempt::Ok,
        Attempt::ErrorStatus,
        Attempt::Generated,
        Attempt::ConnectError,
        Attempt::Timeout,
        Attempt::Saturated,
        Attempt::Error,
        Attempt::Unresolved,
        Attempt::ClientError,
        Attempt::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Attempt::Ok => "ok",
            Attempt::ErrorStatus => "error_status",
            Attempt::Generated => "generated_error",
            Attempt::ConnectError => "connect_error",
            Attempt::Timeout => "timeout",
            Attempt::Saturated => "saturated",
            Attempt::Error => "error",
            Attempt::Unresolved => "unresolved",
            Attempt::ClientError => "client_error",
            Attempt::Withdrawn => "withdrawn",
        }
    }

    /// The outcome of an answer with this status from a target that generates no errors of its
    /// own (an origin server).
    pub fn of_status(status: StatusCode) -> Attempt {
        if is_failure(status) {
            Attempt::ErrorStatus
        } else {
            Attempt::Ok
        }
    }

    pub fn of_error(error: &RequestError) -> Attempt {
        match error {
            RequestError::UpstreamConnect { .. } => Attempt::ConnectError,
            RequestError::UpstreamTimeout { .. } => Attempt::Timeout,
            RequestError::UpstreamSaturated { .. } => Attempt::Saturated,
            RequestError::ClientBody(_) => Attempt::ClientError,
            RequestError::UpstreamWithdrawn { .. } => Attempt::Withdrawn,
            _ => Attempt::Error,
        }
    }

    /// Position in [`Attempt::ALL`], for per-result counters resolved once.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Error statuses that count against an origin server's health.
pub fn is_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// When passive failures eject a target, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Failures in a row that eject.
    pub failures: u32,
    /// The first ejection's length.
    pub base: Duration,
    /// Bound on the length, which doubles with each consecutive ejection.
    pub max: Duration,
}

impl EjectionPolicy {
    /// The length of the `nth` consecutive ejection (1-based): `base`, doubled each time, capped.
    pub fn period(&self, nth: u32) -> Duration {
        let doublings = nth.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// What passive health knows of one target. Pure: every method is given the time.
#[derive(Debug, Default, Clone)]
pub struct PassiveHealth {
    /// Failures of real requests in a row.
    failures: u32,
    /// Consecutive ejections, for the back-off; cleared by a success.
    ejections: u32,
    /// Out until then; past it, the next request probes the target.
    ejected_until: Option<Instant>,
    /// When the current ejection began: a success from a request sent before it says nothing
    /// about the target now.
    ejected_at: Option<Instant>,
}

impl PassiveHealth {
    /// Whether a request may go to the target now, without claiming anything.
    pub fn eligible(&self, now: Instant) -> bool {
        self.ejected_until.is_none_or(|until| now >= until)
    }

    /// Whether a request may go to the target now. An ejected target whose time is up admits
    /// exactly one request (the probe), and stays out for the others until that one ends.
    pub fn admit(&mut self, now: Instant, policy: &EjectionPolicy) -> bool {
        match self.ejected_until {
            None => true,
            Some(until) if now >= until => {
                self.ejected_until = Some(now + policy.period(self.ejections.max(1)));
                true
            }
            Some(_) => false,
        }
    }

    /// Whether the target is in service (not ejected).
    pub fn is_up(&self) -> bool {
        self.ejected_until.is_none()
    }

    /// Failures of real requests in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Consecutive ejections so far.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// A request sent at `sent` succeeded. It puts an ejected target back only if it was sent
    /// after the ejection (the probe, typically), not if it was already in flight; returns
    /// whether the target came back.
    pub fn succeeded(&mut self, sent: Instant) -> bool {
        if self.ejected_at.is_some_and(|at| sent < at) {
            return false;
        }
        let was_out = self.ejected_until.is_some() || self.ejections > 0;
        *self = PassiveHealth::default();
        was_out
    }

    /// Counts a failure; returns the ejection period when this failure ejects the target (or
    /// a failed probe sends it out again, for longer).
    pub fn failed(&mut self, now: Instant, policy: &EjectionPolicy) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if self.failures < policy.failures {
            return None;
        }
        let probing = self.ejected_until.is_some_and(|until| now < until);
        if probing
            && self
                .ejected_at
                .is_some_and(|at| now < at + policy.period(self.ejections))
        {
            // Already out and not the probe's own failure: nothing new.
            return None;
        }
        self.ejections = self.ejections.saturating_add(1);
        let period = policy.period(self.ejections);
        self.ejected_at = Some(now);
        self.ejected_until = Some(now + period);
        Some(period)
    }

    /// A probe that never reached the target does not count: the next request may probe.
    pub fn release_probe(&mut self, now: Instant) {
        if self.ejected_until.is_some() {
            self.ejected_until = Some(now);
        }
    }
}

/// The targets one request may go to, in order, as a role chooses them.
pub trait Candidates {
    type Target: Target;

    /// The next target to try, or `None` when no more may be tried. `retry` is set once an
    /// attempt has reached a target and failed, so the next one is a retry (a role with a
    /// retry budget refuses it here). `Err`: a candidate that cannot be sent to (nothing was
    /// sent, the body is kept), remembered as the request's error if nothing better comes.
    fn next(&mut self, retry: bool) -> Option<Result<Self::Target, RequestError>>;
}

/// One target of an attempt: it sends, and it hears how the attempt went.
pub trait Target {
    fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> impl std::future::Future<Output = Result<Response<UpstreamResponseBody>, RequestError>> + Send;

    /// What an answer from this target means; by default, what its status says
    /// ([`Attempt::of_status`]).
    fn judge(&self, response: &Response<UpstreamResponseBody>) -> Attempt {
        Attempt::of_status(response.status())
    }

    /// How the attempt sent at `sent` ended: for health and metrics.
    fn record(&self, attempt: Attempt, sent: Instant);
}

/// How the attempts of one request ended.
pub enum Failover {
    /// A target answered, whatever the status, unless it generated the error itself.
    Answered(Response<UpstreamResponseBody>),
    /// An error after which nothing may be tried again.
    Stopped(RequestError),
    /// Every candidate was tried (or none could be): the last answer or error, if any, and
    /// the request's body when it was never sent (for a last resort, like the origin).
    Exhausted {
        last: Option<Result<Response<UpstreamResponseBody>, RequestError>>,
        body: Option<UpstreamBody>,
    },
}

/// Sends the request to the candidates in turn until one answers. An answer ends it, whatever
/// its status: a 5xx relayed from the origin is the origin's answer, and asking again would
/// only ask the origin again. Failures where no answer came (connect errors, timeouts, broken
/// exchanges, an error a Verge tier generated) move on to the next candidate when the request
/// is replayable; a saturated target (not asked) moves on without counting against it.
pub async fn attempt<C: Candidates>(
    candidates: &mut C,
    hop: &Hop,
    parts: &request::Parts,
    body: UpstreamBody,
) -> Failover {
    let mut body = Some(body);
    let mut last = None;
    let mut failed_once = false;
    while let Some(candidate) = candidates.next(failed_once) {
        let target = match candidate {
            Ok(target) => target,
            Err(error) => {
                last.get_or_insert(Err(error));
                continue;
            }
        };
        let body = match body.take() {
            Some(body) => body,
            None if hop.replayable => Either::Left(Empty::<Bytes>::new()),
            None => break,
        };
        let sent = Instant::now();
        let result = target.send(Request::from_parts(parts.clone(), body)).await;
        let outcome = match &result {
            Ok(response) => target.judge(response),
            Err(error) => Attempt::of_error(error),
        };
        target.record(outcome, sent);
        match (outcome, result) {
            (Attempt::Generated, Ok(response)) => {
                tracing::debug!(status = %response.status(), "upstream tier had no answer");
                failed_once = true;
                last = Some(Ok(response));
            }
            (_, Ok(response)) => return Failover::Answered(response),
            // Our own connection bound: the target was not asked, so it is not at fault.
            (Attempt::Saturated, Err(error)) => last = Some(Err(error)),
            (_, Err(error)) => {
                if !error.is_retryable() || !hop.replayable {
                    return Failover::Stopped(error);
                }
                failed_once = true;
                last = Some(Err(error));
            }
        }
        if !hop.replayable {
            break;
        }
    }
    Failover::Exhausted { last, body }
}

#[cfg(test)]
mod tests;
