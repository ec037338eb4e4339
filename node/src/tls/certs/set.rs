//! Every certificate of a `[tls]` table, and which one a handshake gets.

use std::collections::HashMap;
use std::time::SystemTime;

use verge_config::{TlsServerConfig, UnknownSni};

use super::{covering_wildcard, load_certificate, normalize_name, LoadedCertificate, TlsError};

/// The configured certificates, loaded and checked, indexed by the names they cover.
///
/// Lookup by SNI: the certificate naming the host exactly, else one whose wildcard covers its
/// left-most label (`*.example.com` covers `www.example.com`, not `example.com` nor
/// `a.b.example.com`). When two certificates name the same host, the earlier in
/// `tls.certificates` wins.
#[derive(Debug)]
pub struct CertSet {
    certificates: Vec<LoadedCertificate>,
    /// Name (lower-case, `*.base` for wildcards) → index in `certificates`.
    by_name: HashMap<String, usize>,
    default: usize,
    unknown_sni: UnknownSni,
}

impl CertSet {
    /// Loads every certificate of `config`, checked against `now`. All problems are reported
    /// together, each with its `tls.certificates[i]` index and file.
    pub fn build(config: &TlsServerConfig, now: SystemTime) -> Result<CertSet, TlsError> {
        if config.certificates.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let mut certificates = Vec::with_capacity(config.certificates.len());
        let mut errors = Vec::new();
        for (index, files) in config.certificates.iter().enumerate() {
            match load_certificate(files, now) {
                Ok(cert) => certificates.push(cert),
                Err(error) => errors.push(TlsError::At {
                    index,
                    error: Box::new(error),
                }),
            }
        }
        if let Some(error) = TlsError::collect(errors) {
            return Err(error);
        }
        let mut by_name = HashMap::new();
        for (index, cert) in certificates.iter().enumerate() {
            for name in &cert.names {
                by_name.entry(name.clone()).or_insert(index);
            }
        }
        let mut set = CertSet {
            certificates,
            by_name,
            default: 0,
            unknown_sni: config.unknown_sni,
        };
        if let Some(name) = &config.default_certificate {
            set.default = set
                .find_index(name)
                .ok_or_else(|| TlsError::DefaultNotCovered { name: name.clone() })?;
        }
        Ok(set)
    }

    /// The certificate for a handshake: by SNI, the default without SNI (clients connecting
    /// to an IP address send none), and for an unknown name the default or `None` (refuse)
    /// as `tls.unknown_sni` says.
    pub fn lookup(&self, sni: Option<&str>) -> Option<&LoadedCertificate> {
        let Some(name) = sni else {
            return Some(self.default());
        };
        match self.find(name) {
            Some(cert) => Some(cert),
            None => match self.unknown_sni {
                UnknownSni::Default => Some(self.default()),
                UnknownSni::Refuse => None,
            },
        }
    }

    /// The certificate covering `name`, exactly or by wildcard; no fallback.
    pub fn find(&self, name: &str) -> Option<&LoadedCertificate> {
        self.find_index(name)
            .and_then(|index| self.certificates.get(index))
    }

    fn find_index(&self, name: &str) -> Option<usize> {
        let name = normalize_name(name);
        if let Some(&index) = self.by_name.get(&name) {
            return Some(index);
        }
        self.by_name.get(&covering_wildcard(&name)?).copied()
    }

    /// The certificate presented without SNI (or for unknown names, unless refused).
    pub fn default(&self) -> &LoadedCertificate {
        // `build` refuses an empty list and only sets `default` to an index it found.
        &self.certificates[self.default]
    }

    /// Every certificate, in configuration order.
    pub fn certificates(&self) -> &[LoadedCertificate] {
        &self.certificates
    }

    pub fn unknown_sni(&self) -> UnknownSni {
        self.unknown_sni
    }

    /// True when both sets would answer every handshake alike: same chains in the same
    /// order, same default, same policy for unknown names. (A key matches its certificate,
    /// so equal chains mean equal keys.)
    pub fn same_as(&self, other: &CertSet) -> bool {
        self.default == other.default
            && self.unknown_sni == other.unknown_sni
            && self.certificates.len() == other.certificates.len()
            && self
                .certificates
                .iter()
                .zip(&other.certificates)
                .all(|(a, b)| a.key.cert == b.key.cert)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{tls_config, Pki};
    use super::*;

    fn three(pki: &Pki) -> TlsServerConfig {
        tls_config(vec![
            pki.leaf("a", &["a.test", "www.a.test"]),
            pki.leaf("wild", &["*.wild.test"]),
            pki.leaf("b", &["b.test", "exact.wild.test"]),
        ])
    }

    fn label(cert: Option<&LoadedCertificate>) -> Option<&str> {
        cert.map(LoadedCertificate::label)
    }

    #[test]
    fn sni_picks_the_exact_name_then_a_wildcard_then_the_default() {
        let pki = Pki::new();
        let set = CertSet::build(&three(&pki), SystemTime::now()).unwrap();
        assert_eq!(label(set.lookup(Some("b.test"))), Some("b.test"));
        assert_eq!(label(set.lookup(Some("WWW.A.Test."))), Some("a.test"));
        assert_eq!(label(set.lookup(Some("x.wild.test"))), Some("*.wild.test"));
        // The exact name beats the wildcard.
        assert_eq!(label(set.lookup(Some("exact.wild.test"))), Some("b.test"));
        // A wildcard covers one label only.
        assert_eq!(label(set.find("wild.test")), None);
        assert_eq!(label(set.find("a.b.wild.test")), None);
        // Unknown names and no SNI (an IP connection) get the default: the first.
        assert_eq!(label(set.lookup(Some("other.test"))), Some("a.test"));
        assert_eq!(label(set.lookup(Some("a.b.wild.test"))), Some("a.test"));
        assert_eq!(label(set.lookup(None)), Some("a.test"));
    }

    #[test]
    fn unknown_sni_is_refused_when_so_configured_but_no_sni_still_gets_the_default() {
        let pki = Pki::new();
        let mut config = three(&pki);
        config.unknown_sni = UnknownSni::Refuse;
        let set = CertSet::build(&config, SystemTime::now()).unwrap();
        assert!(set.lookup(Some("other.test")).is_none());
        assert_eq!(label(set.lookup(Some("y.wild.test"))), Some("*.wild.test"));
        assert_eq!(label(set.lookup(None)), Some("a.test"));
    }

    #[test]
    fn the_default_certificate_is_the_one_covering_the_configured_name() {
        let pki = Pki::new();
        let mut config = three(&pki);
        config.default_certificate = Some("any.wild.test".into());
        let set = CertSet::build(&config, SystemTime::now()).unwrap();
        assert_eq!(set.default().label(), "*.wild.test");
        assert_eq!(label(set.lookup(Some("unknown.test"))), Some("*.wild.test"));

        config.default_certificate = Some("nowhere.test".into());
        let error = CertSet::build(&config, SystemTime::now()).unwrap_err();
        assert_eq!(
            error,
            TlsError::DefaultNotCovered {
                name: "nowhere.test".into()
            }
        );
    }

    #[test]
    fn every_bad_certificate_is_reported_with_its_index_and_file() {
        let pki = Pki::new();
        let good = pki.leaf("good", &["good.test"]);
        let expired = pki.leaf_valid("expired", &["old.test"], (2000, 1, 1), (2001, 1, 1));
        let mut missing = good.clone();
        missing.key = pki.path("missing.key");
        let config = tls_config(vec![good, expired, missing]);
        let error = CertSet::build(&config, SystemTime::now()).unwrap_err();
        let TlsError::Several(errors) = &error else {
            panic!("expected several errors, got {error:?}");
        };
        assert_eq!(errors.len(), 2);
        let message = error.to_string();
        assert!(message.contains("tls.certificates[1]: "), "{message}");
        assert!(message.contains("expired.pem"), "{message}");
        assert!(
            message.contains("tls.certificates[2]: cannot read"),
            "{message}"
        );
        assert!(message.contains("missing.key"), "{message}");
    }

    #[test]
    fn an_empty_certificate_list_is_refused() {
        let error = CertSet::build(&tls_config(vec![]), SystemTime::now()).unwrap_err();
        assert_eq!(error, TlsError::NoCertificates);
    }
}
