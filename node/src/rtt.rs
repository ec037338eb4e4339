//! Round-trip times to an upstream: the least of the recent samples (probes and real
//! requests), which filters out the time the upstream spent working on a request. Reported in
//! heartbeats; control builds its latency matrix from them.
//!
//! A probe is `OPTIONS /` with `Max-Forwards: 0`: a Verge node answers it itself (never
//! forwarding it, RFC 9110 §7.6.2), and any origin answers it somehow, so its round trip is the
//! network's plus next to nothing. A probe that may have opened a connection is followed by a
//! second one over it: a new connection's handshakes are no part of the round trip.
//!
//! A real request to a shield counts only when the shield answered from its cache: a miss
//! there adds the shield's own fetch, and a cold shield (all misses) would look as far away as
//! its origin. An upstream that real requests measured within [`QUIET`] is not probed; one
//! only measured (a shield outside the edge's ring) is probed every
//! [`ProbeCadence::spare_every`] (`control.probe_spare_every`), so that a fleet's probes stay
//! few.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use http::header::{HeaderValue, MAX_FORWARDS};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Either, Empty, Limited};
use tokio::time::Instant;

use crate::error::RequestError;
use crate::upstream::{UpstreamBody, UpstreamResponseBody};

/// Samples kept per upstream: a window of this many, oldest out first.
const WINDOW: usize = 8;

/// An upstream without a real request for this long is probed.
pub const QUIET: Duration = Duration::from_secs(1);

/// How often upstreams that get no real requests are probed (the node's `[control]`
/// `probe_spare_every` and `probe_origin_every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeCadence {
    /// An upstream the node does not send traffic to: a shield outside its ring.
    pub spare_every: Duration,
    /// The origin an edge falls back to: every edge of a fleet probes it, so the origin sees
    /// one probe (at most two requests) per edge per this.
    pub origin_every: Duration,
}

impl From<&verge_config::NodeControlConfig> for ProbeCadence {
    fn from(config: &verge_config::NodeControlConfig) -> ProbeCadence {
        ProbeCadence {
            spare_every: config.probe_spare_every,
            origin_every: config.probe_origin_every,
        }
    }
}

/// The most of a probe's answer read (to put its connection back in the pool); an answer
/// with more leaves its connection to be closed.
pub const PROBE_BODY_MAX: usize = 16 * 1024;

/// The recent samples of one upstream.
#[derive(Debug, Default)]
pub struct RttWindow {
    samples: Mutex<([Duration; WINDOW], usize)>,
    /// When a real request last gave a sample, and when any sample came.
    last: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl RttWindow {
    /// Adds one sample, displacing the oldest once the window is full.
    pub fn record(&self, rtt: Duration) {
        let mut guard = self
            .samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (samples, count) = &mut *guard;
        samples[*count % WINDOW] = rtt;
        *count = count.wrapping_add(1);
        drop(guard);
        self.last().1 = Some(Instant::now());
    }

    /// A sample from a real request's round trip (to its response head).
    pub fn record_request(&self, rtt: Duration) {
        self.record(rtt);
        self.last().0 = Some(Instant::now());
    }

    fn last(&self) -> std::sync::MutexGuard<'_, (Option<Instant>, Option<Instant>)> {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether to probe now: no real request gave a sample within [`QUIET`], and no sample at
    /// all came within `every`.
    pub fn wants_probe(&self, every: Duration) -> bool {
        let (request, any) = *self.last();
        let older = |at: Option<Instant>, than: Duration| at.is_none_or(|at| at.elapsed() >= than);
        older(request, QUIET) && older(any, every)
    }

    /// The least recent sample in milliseconds; `None` before the first.
    pub fn rtt_ms(&self) -> Option<f64> {
        let guard = self
            .samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (samples, count) = &*guard;
        samples[..(*count).min(WINDOW)]
            .iter()
            .min()
            .map(|d| d.as_secs_f64() * 1000.0)
    }
}

/// Measures a round trip into `window` with a probe (`send` sends [`probe_request`]), and a
/// second one right after when the first may have had to open a connection: no sample yet, or
/// one well above the least so far. A new connection's TCP and TLS handshakes are round trips
/// of their own, which would make a rarely probed upstream look two or three times as far as
/// it is; the second probe goes over the connection the first left open. Both are recorded;
/// the window keeps the least. An upstream probed over a warm connection gets one request.
pub async fn probe<F, Fut>(window: &RttWindow, send: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Response<UpstreamResponseBody>, RequestError>>,
{
    for _ in 0..2 {
        let least = window.rtt_ms();
        let sent = Instant::now();
        let Ok(response) = send().await else {
            return;
        };
        let took = sent.elapsed();
        window.record(took);
        // Read to the end (bounded), so that the connection goes back to the pool.
        if Limited::new(response.into_body(), PROBE_BODY_MAX)
            .collect()
            .await
            .is_err()
        {
            return;
        }
        let near_least = least.is_some_and(|least| took.as_secs_f64() * 1000.0 <= least * 1.5);
        if near_least {
            return;
        }
    }
}

/// The probe request: `OPTIONS /` with `Max-Forwards: 0`, no body (the client names the
/// server in `Host`).
pub fn probe_request() -> Request<UpstreamBody> {
    let mut request = Request::new(Either::Left(Empty::new()));
    *request.method_mut() = Method::OPTIONS;
    *request.uri_mut() = http::Uri::from_static("/");
    request
        .headers_mut()
        .insert(MAX_FORWARDS, HeaderValue::from_static("0"));
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_of_the_last_samples_is_the_round_trip() {
        let w = RttWindow::default();
        assert_eq!(w.rtt_ms(), None);
        let ms = Duration::from_millis;
        w.record(ms(30));
        w.record(ms(10));
        w.record(ms(50));
        assert_eq!(w.rtt_ms(), Some(10.0));
        // Once WINDOW newer samples came, the old minimum is gone: a path that got slower shows.
        for _ in 0..WINDOW {
            w.record(ms(80));
        }
        assert_eq!(w.rtt_ms(), Some(80.0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_real_requests_reach_is_not_probed() {
        let w = RttWindow::default();
        assert!(w.wants_probe(QUIET));
        w.record(Duration::from_millis(5));
        assert!(!w.wants_probe(QUIET), "just probed");
        tokio::time::advance(QUIET).await;
        assert!(w.wants_probe(QUIET));
        w.record_request(Duration::from_millis(7));
        assert!(!w.wants_probe(QUIET), "real traffic measures it");
        tokio::time::advance(QUIET).await;
        assert!(w.wants_probe(QUIET));
        // A spare upstream: probed once per its cadence.
        let every = Duration::from_secs(10);
        w.record(Duration::from_millis(5));
        tokio::time::advance(QUIET).await;
        assert!(!w.wants_probe(every));
        tokio::time::advance(every).await;
        assert!(w.wants_probe(every));
    }
}
