//! What the pool knows of one server's health: the passive model every upstream shares
//! ([`PassiveHealth`]) and the active checks' verdict. Pure: every method is given the time.

use tokio::time::Instant;

use verge_node::failover::{EjectionPolicy, PassiveHealth};

/// What the pool knows of one server's health.
#[derive(Debug)]
pub(super) struct ServerHealth {
    /// The active checks' verdict; true until they say otherwise (and when they are off).
    pub(super) up: bool,
    probe_successes: u32,
    probe_failures: u32,
    /// What real requests said.
    pub(super) passive: PassiveHealth,
}

impl Default for ServerHealth {
    fn default() -> ServerHealth {
        ServerHealth {
            up: true,
            probe_successes: 0,
            probe_failures: 0,
            passive: PassiveHealth::default(),
        }
    }
}

impl ServerHealth {
    /// Whether the server may be chosen now: up, and not passively ejected (an ejection that
    /// has run out makes it eligible for a probe).
    pub(super) fn available(&self, now: Instant) -> bool {
        self.up && self.passive.eligible(now)
    }

    /// Claims an available server for one request: when its ejection has run out, this
    /// request is the probe, and the others pass it over until the probe ends.
    pub(super) fn claim(&mut self, now: Instant, policy: &EjectionPolicy) -> bool {
        self.passive.admit(now, policy)
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
