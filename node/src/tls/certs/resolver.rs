//! What rustls asks for a certificate during each handshake: the current [`CertSet`],
//! replaced whole on reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use verge_config::TlsServerConfig;

use super::{CertSet, TlsError, TlsMetrics};

/// What a successful reload did; the `result` label of `verge_tls_certificate_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertReloadOutcome {
    /// A new set is in place for the next handshakes.
    Reloaded,
    /// The files hold what is already served; nothing was swapped.
    Unchanged,
}

impl CertReloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CertReloadOutcome::Reloaded => "ok",
            CertReloadOutcome::Unchanged => "unchanged",
        }
    }
}

/// A served certificate as metrics and the admin API show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// Its first name.
    pub name: String,
    pub path: PathBuf,
    pub not_after: SystemTime,
}

/// Chooses the certificate of each handshake from the current [`CertSet`].
///
/// The handshake path only loads an `Arc` (no lock). A reload builds the new set aside and
/// swaps it in one step; established connections keep what they negotiated, as rustls asks
/// the resolver during handshakes only.
pub struct CertResolver {
    set: ArcSwap<CertSet>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.set.load();
        let labels: Vec<&str> = set.certificates().iter().map(|c| c.label()).collect();
        f.debug_struct("CertResolver")
            .field("certificates", &labels)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Loads the certificates of `config`, checked against `now`.
    pub fn new(
        config: &TlsServerConfig,
        metrics: TlsMetrics,
        now: SystemTime,
    ) -> Result<CertResolver, TlsError> {
        Ok(CertResolver {
            set: ArcSwap::from_pointee(CertSet::build(config, now)?),
            metrics,
        })
    }

    /// The set serving now.
    pub fn current(&self) -> Arc<CertSet> {
        self.set.load_full()
    }

    /// Loads the certificates `config` names and serves them from the next handshake on.
    /// On any error the current set stays and the error is returned; nothing is logged here.
    pub fn reload(&self, config: &TlsServerConfig) -> Result<CertReloadOutcome, TlsError> {
        self.reload_at(config, SystemTime::now())
    }

    /// [`CertResolver::reload`], with validity checked against `now`.
    pub fn reload_at(
        &self,
        config: &TlsServerConfig,
        now: SystemTime,
    ) -> Result<CertReloadOutcome, TlsError> {
        let next = match CertSet::build(config, now) {
            Ok(next) => next,
            Err(error) => {
                self.metrics.reload_failed();
                return Err(error);
            }
        };
        Ok(self.install(next))
    }

    /// Serves `next`, built and checked beforehand with [`CertSet::build`], from the next
    /// handshake on: the commit step of a reload prepared aside.
    pub fn install(&self, next: CertSet) -> CertReloadOutcome {
        let outcome = if next.same_as(&self.set.load()) {
            CertReloadOutcome::Unchanged
        } else {
            self.set.store(Arc::new(next));
            CertReloadOutcome::Reloaded
        };
        self.metrics.reload_ok(outcome);
        outcome
    }

    /// Every served certificate: first name, file, notAfter.
    pub fn certificates(&self) -> Vec<CertificateSummary> {
        self.set
            .load()
            .certificates()
            .iter()
            .map(|cert| CertificateSummary {
                name: cert.label().to_string(),
                path: cert.cert_path.clone(),
                not_after: cert.not_after,
            })
            .collect()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        match set.lookup(client_hello.server_name()) {
            Some(cert) => Some(Arc::clone(&cert.key)),
            None => {
                self.metrics.unknown_sni_refused();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{counter, tls_config, Pki};
    use super::*;
    use prometheus::Registry;
    use verge_config::CertificateFiles;

    fn resolver(config: &TlsServerConfig) -> (CertResolver, Registry) {
        let registry = Registry::new();
        let metrics = TlsMetrics::register(&registry).unwrap();
        let resolver = CertResolver::new(config, metrics, SystemTime::now()).unwrap();
        (resolver, registry)
    }

    fn served_for(resolver: &CertResolver, name: &str) -> Option<String> {
        resolver
            .current()
            .lookup(Some(name))
            .map(|c| c.label().to_string())
    }

    #[test]
    fn a_reload_with_a_bad_file_keeps_the_old_certificates() {
        let pki = Pki::new();
        let a = pki.leaf("a", &["a.test"]);
        let (resolver, registry) = resolver(&tls_config(vec![a.clone()]));
        let before = resolver.current();

        let garbage = pki.write_file("broken.pem", "not a certificate");
        let bad = tls_config(vec![
            a.clone(),
            CertificateFiles {
                cert: garbage,
                key: a.key.clone(),
            },
        ]);
        let error = resolver.reload(&bad).unwrap_err();
        assert!(error.to_string().contains("broken.pem"), "{error}");
        assert!(Arc::ptr_eq(&before, &resolver.current()));
        assert_eq!(served_for(&resolver, "a.test").as_deref(), Some("a.test"));
        assert_eq!(
            counter(&registry, "verge_tls_certificate_reloads_total", "failed"),
            1.0
        );

        // A certificate rewritten with garbage in place is refused the same way.
        std::fs::write(&a.cert, "garbage").unwrap();
        assert!(resolver.reload(&tls_config(vec![a])).is_err());
        assert!(Arc::ptr_eq(&before, &resolver.current()));
        assert_eq!(
            counter(&registry, "verge_tls_certificate_reloads_total", "failed"),
            2.0
        );
    }

    #[test]
    fn a_reload_with_good_files_swaps_the_set() {
        let pki = Pki::new();
        let a = pki.leaf("a", &["a.test"]);
        let (resolver, registry) = resolver(&tls_config(vec![a.clone()]));
        assert_eq!(
            resolver.reload(&tls_config(vec![a.clone()])).unwrap(),
            CertReloadOutcome::Unchanged
        );
        assert_eq!(
            counter(
                &registry,
                "verge_tls_certificate_reloads_total",
                "unchanged"
            ),
            1.0
        );

        let b = pki.leaf("b", &["b.test"]);
        let config = tls_config(vec![a, b.clone()]);
        assert_eq!(
            resolver.reload(&config).unwrap(),
            CertReloadOutcome::Reloaded
        );
        assert_eq!(served_for(&resolver, "b.test").as_deref(), Some("b.test"));
        assert_eq!(
            counter(&registry, "verge_tls_certificate_reloads_total", "ok"),
            1.0
        );
        let summaries = resolver.certificates();
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[1].name, "b.test");
        assert_eq!(summaries[1].path, b.cert);
    }
}
