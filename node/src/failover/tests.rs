//! Passive health as pure state over given times; the attempt loop is tested through the
//! roles' upstreams (edge shields, shield origin pools) over real sockets.

use super::*;

const POLICY: EjectionPolicy = EjectionPolicy {
    failures: 2,
    base: Duration::from_secs(10),
    max: Duration::from_secs(30),
};

/// A target's health after the two failures at `t0` that make [`POLICY`] eject it.
fn ejected_at(t0: Instant) -> PassiveHealth {
    let mut health = PassiveHealth::default();
    health.failed(t0, &POLICY);
    health.failed(t0, &POLICY);
    health
}

/// A target ejected at a time `t0` that admitted a probe `after` seconds later: its health and
/// the probe's time.
fn probe_admitted_after(after: u64) -> (PassiveHealth, Instant) {
    let t0 = Instant::now();
    let mut health = ejected_at(t0);
    let probe = t0 + Duration::from_secs(after);
    assert!(health.admit(probe, &POLICY));
    (health, probe)
}

#[test]
fn ejection_periods_double_up_to_the_bound() {
    assert_eq!(POLICY.period(1), Duration::from_secs(10));
    assert_eq!(POLICY.period(2), Duration::from_secs(20));
    assert_eq!(POLICY.period(3), Duration::from_secs(30));
    assert_eq!(POLICY.period(40), Duration::from_secs(30));
}

#[test]
fn failures_in_a_row_eject_and_one_probe_is_admitted_after_the_period() {
    let t0 = Instant::now();
    let mut health = PassiveHealth::default();
    assert_eq!(health.failed(t0, &POLICY), None);
    assert!(health.admit(t0, &POLICY));
    assert_eq!(health.failed(t0, &POLICY), Some(Duration::from_secs(10)));
    assert!(!health.is_up());
    assert!(!health.admit(t0 + Duration::from_secs(9), &POLICY));
    assert!(!health.eligible(t0 + Duration::from_secs(9)));
    let later = t0 + Duration::from_secs(10);
    assert!(health.eligible(later));
    assert!(health.admit(later, &POLICY), "the probe");
    assert!(!health.admit(later, &POLICY), "only one probe at a time");
    assert!(health.succeeded(later));
    assert!(health.is_up());
    assert!(health.admit(later, &POLICY));
}

#[test]
fn a_failed_probe_ejects_again_for_longer() {
    let (mut health, probe) = probe_admitted_after(11);
    assert_eq!(health.failed(probe, &POLICY), Some(Duration::from_secs(20)));
    assert!(!health.admit(probe + Duration::from_secs(19), &POLICY));
    assert!(health.admit(probe + Duration::from_secs(20), &POLICY));
}

#[test]
fn failures_during_an_ejection_do_not_lengthen_or_recount_it() {
    let t0 = Instant::now();
    let mut health = ejected_at(t0);
    assert_eq!(health.failed(t0 + Duration::from_secs(1), &POLICY), None);
    assert_eq!(health.ejections(), 1);
    assert!(health.admit(t0 + Duration::from_secs(10), &POLICY));
}

#[test]
fn a_success_sent_before_the_ejection_does_not_end_it() {
    let sent_before = Instant::now();
    let t1 = sent_before + Duration::from_millis(5);
    let mut health = ejected_at(t1);
    assert!(!health.succeeded(sent_before));
    assert!(!health.is_up());
    assert!(health.succeeded(t1));
    assert!(health.is_up());
}

#[test]
fn a_probe_that_never_reached_the_target_frees_the_probe_slot() {
    let (mut health, probe) = probe_admitted_after(10);
    health.release_probe(probe);
    assert!(health.admit(probe, &POLICY));
}

#[test]
fn attempts_have_one_label_each() {
    let labels: Vec<&str> = Attempt::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(
        labels,
        [
            "ok",
            "error_status",
            "generated_error",
            "connect_error",
            "timeout",
            "saturated",
            "error",
            "unresolved",
            "client_error",
            "withdrawn"
        ]
    );
    for (i, attempt) in Attempt::ALL.iter().enumerate() {
        assert_eq!(attempt.index(), i);
    }
    assert!(is_failure(StatusCode::BAD_GATEWAY));
    assert!(!is_failure(StatusCode::NOT_FOUND));
    assert!(!is_failure(StatusCode::NOT_IMPLEMENTED));
}
