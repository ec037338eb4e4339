//! What the pool knows of one server's health: passive ejection with back-off and the active
//! checks' verdict. Pure: every method is given the time.

use std::time::{Duration, Instant};

/// When passive failures eject a server, and for how long.
#[derive(Debug, Clone, Copy)]
pub(super) struct EjectionPolicy {
    pub(super) failures: u32,
    pub(super) base: Duration,
    pub(super) max: Duration,
}

impl EjectionPolicy {
    /// The length of the `nth` consecutive ejection (1-based): `base`, doubled each time, capped.
    pub(super) fn period(&self, nth: u32) -> Duration {
        let doublings = nth.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// What the pool knows of one server's health. Pure: every method is given the time.
#[derive(Debug)]
pub(super) struct ServerHealth {
    /// The active checks' verdict; true until they say otherwise (and when they are off).
    pub(super) up: bool,
    probe_successes: u32,
    probe_failures: u32,
    /// Passive: failures of real requests in a row.
    pub(super) failures: u32,
    /// Consecutive ejections, for the back-off; cleared by a success.
    pub(super) ejections: u32,
    /// Passively out of the pool until then.
    ejected_until: Option<Instant>,
}

impl Default for ServerHealth {
    fn default() -> ServerHealth {
        ServerHealth {
            up: true,
            probe_successes: 0,
            probe_failures: 0,
            failures: 0,
            ejections: 0,
            ejected_until: None,
        }
    }
}

impl ServerHealth {
    /// Whether the server may be chosen now. An ejection that has run out is cleared here, but
    /// the failure count stays, so the next failure ejects the server again, for longer.
    pub(super) fn available(&mut self, now: Instant) -> bool {
        if self.ejected_until.is_some_and(|until| now >= until) {
            self.ejected_until = None;
        }
        self.up && self.ejected_until.is_none()
    }

    pub(super) fn request_succeeded(&mut self) {
        self.failures = 0;
        self.ejections = 0;
        self.ejected_until = None;
    }

    /// Counts a failed request; returns the ejection period when this failure ejects the server.
    pub(super) fn request_failed(
        &mut self,
        now: Instant,
        policy: &EjectionPolicy,
    ) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        let already_out = self.ejected_until.is_some_and(|until| now < until);
        if self.failures < policy.failures || already_out {
            return None;
        }
        self.ejections = self.ejections.saturating_add(1);
        let period = policy.period(self.ejections);
        self.ejected_until = Some(now + period);
        Some(period)
    }

    /// Counts a probe; returns the new verdict when this probe changes it.
    pub(super) fn probed(
        &mut self,
        success: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<bool> {
        if success {
            self.probe_failures = 0;
            self.probe_successes = self.probe_successes.saturating_add(1);
            if !self.up && self.probe_successes >= healthy_after {
                self.up = true;
                return Some(true);
            }
        } else {
            self.probe_successes = 0;
            self.probe_failures = self.probe_failures.saturating_add(1);
            if self.up && self.probe_failures >= unhealthy_after {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}
