//! TLS metrics of a node: handshakes, certificate expiry and certificate reloads.

use std::time::{Duration, SystemTime};

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use super::resolver::{CertReloadOutcome, CertResolver};
use crate::tls::der::unix_seconds;

/// How a TLS handshake ended; the `result` label of `verge_tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeResult {
    Ok,
    /// Not finished within `tls.handshake_timeout`.
    Timeout,
    /// Failed: a protocol error, an untrusted client certificate, a reset.
    Error,
    /// The client spoke plain HTTP to the HTTPS port.
    Plaintext,
    /// Refused because the SNI names no certificate (`tls.unknown_sni = "refuse"`).
    UnknownSni,
}

impl HandshakeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::Error => "error",
            HandshakeResult::Plaintext => "plaintext",
            HandshakeResult::UnknownSni => "unknown_sni",
        }
    }
}

/// The `version` label: `1.2`, `1.3`, or `none` before one was agreed.
pub fn version_label(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        _ => "none",
    }
}

const HANDSHAKE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The TLS metrics; cheap to clone (every clone updates the same series).
#[derive(Clone)]
pub struct TlsMetrics {
    handshakes: IntCounterVec,
    handshake_duration: Histogram,
    expiry: GaugeVec,
    not_after: GaugeVec,
    reloads: IntCounterVec,
}

impl std::fmt::Debug for TlsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMetrics").finish_non_exhaustive()
    }
}

impl TlsMetrics {
    pub fn register(registry: &Registry) -> Result<TlsMetrics, prometheus::Error> {
        let m = TlsMetrics {
            handshakes: IntCounterVec::new(
                Opts::new(
                    "verge_tls_handshakes_total",
                    "TLS handshakes on the HTTPS listeners, by result and negotiated version",
                ),
                &["result", "version"],
            )?,
            handshake_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "verge_tls_handshake_duration_seconds",
                    "Time from accepting a connection to a completed TLS handshake",
                )
                .buckets(HANDSHAKE_BUCKETS.to_vec()),
            )?,
            expiry: GaugeVec::new(
                Opts::new(
                    "verge_tls_certificate_expiry_seconds",
                    "Seconds until a served certificate's notAfter (negative once expired)",
                ),
                &["certificate"],
            )?,
            not_after: GaugeVec::new(
                Opts::new(
                    "verge_tls_certificate_not_after_timestamp_seconds",
                    "A served certificate's notAfter, as a Unix timestamp",
                ),
                &["certificate"],
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "verge_tls_certificate_reloads_total",
                    "Certificate reloads, by result (ok, failed, unchanged)",
                ),
                &["result"],
            )?,
        };
        verge_serve::register_metrics!(
            registry; m.handshakes, m.handshake_duration, m.expiry, m.not_after, m.reloads
        );
        Ok(m)
    }

    /// Counts one handshake. `elapsed` goes into the duration histogram for completed
    /// handshakes only, so timeouts and refusals do not skew it.
    ///
    /// Refusals for an unknown SNI are counted by the resolver itself
    /// ([`TlsMetrics::unknown_sni_refused`]); a listener should not count the failed
    /// handshake that follows again (see [`super::is_unknown_sni_refusal`]).
    pub fn record_handshake(
        &self,
        result: HandshakeResult,
        version: Option<rustls::ProtocolVersion>,
        elapsed: Duration,
    ) {
        self.handshakes
            .with_label_values(&[result.as_str(), version_label(version)])
            .inc();
        if result == HandshakeResult::Ok {
            self.handshake_duration.observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a handshake refused because its SNI names no certificate.
    pub fn unknown_sni_refused(&self) {
        self.handshakes
            .with_label_values(&[HandshakeResult::UnknownSni.as_str(), version_label(None)])
            .inc();
    }

    pub(crate) fn reload_ok(&self, outcome: CertReloadOutcome) {
        self.reloads.with_label_values(&[outcome.as_str()]).inc();
    }

    pub(crate) fn reload_failed(&self) {
        self.reloads.with_label_values(&["failed"]).inc();
    }

    /// Sets the per-certificate gauges from what `resolver` serves now, dropping the series
    /// of certificates no longer served. Label: the certificate's first name.
    pub fn refresh_expiry(&self, resolver: &CertResolver, now: SystemTime) {
        self.expiry.reset();
        self.not_after.reset();
        for cert in resolver.certificates() {
            let remaining = match cert.not_after.duration_since(now) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            self.expiry
                .with_label_values(&[cert.name.as_str()])
                .set(remaining);
            self.not_after
                .with_label_values(&[cert.name.as_str()])
                .set(unix_seconds(cert.not_after) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{tls_config, Pki};
    use super::*;

    fn gauge(registry: &Registry, name: &str, certificate: &str) -> Option<f64> {
        registry
            .gather()
            .iter()
            .find(|family| family.name() == name)?
            .get_metric()
            .iter()
            .find(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "certificate" && l.value() == certificate)
            })
            .map(|m| m.get_gauge().get_value())
    }

    #[test]
    fn expiry_gauges_follow_the_served_certificates() {
        let pki = Pki::new();
        let registry = Registry::new();
        let metrics = TlsMetrics::register(&registry).unwrap();
        let a = pki.leaf("a", &["a.test"]);
        let b = pki.leaf("b", &["b.test"]);
        let now = SystemTime::now();
        let resolver =
            CertResolver::new(&tls_config(vec![a.clone(), b]), metrics.clone(), now).unwrap();
        metrics.refresh_expiry(&resolver, now);
        let left = gauge(&registry, "verge_tls_certificate_expiry_seconds", "b.test").unwrap();
        // The test leaves are valid for a year from yesterday.
        assert!(
            (363.0 * 86_400.0..=365.0 * 86_400.0).contains(&left),
            "{left}"
        );
        let stamp = gauge(
            &registry,
            "verge_tls_certificate_not_after_timestamp_seconds",
            "a.test",
        )
        .unwrap();
        assert!(stamp > unix_seconds(now) as f64);

        resolver.reload(&tls_config(vec![a])).unwrap();
        metrics.refresh_expiry(&resolver, now);
        assert!(gauge(&registry, "verge_tls_certificate_expiry_seconds", "b.test").is_none());
        assert!(gauge(&registry, "verge_tls_certificate_expiry_seconds", "a.test").is_some());
    }

    #[test]
    fn handshakes_are_counted_by_result_and_version() {
        let registry = Registry::new();
        let metrics = TlsMetrics::register(&registry).unwrap();
        metrics.record_handshake(
            HandshakeResult::Ok,
            Some(rustls::ProtocolVersion::TLSv1_3),
            Duration::from_millis(3),
        );
        metrics.record_handshake(HandshakeResult::Timeout, None, Duration::from_secs(10));
        metrics.unknown_sni_refused();
        let count = |result: &str, version: &str| {
            metrics
                .handshakes
                .with_label_values(&[result, version])
                .get()
        };
        assert_eq!(count("ok", "1.3"), 1);
        assert_eq!(count("timeout", "none"), 1);
        assert_eq!(count("unknown_sni", "none"), 1);
        assert_eq!(metrics.handshake_duration.get_sample_count(), 1);
    }
}
