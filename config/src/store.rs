//! Where control keeps its state (`[store]` in control's file): its own fsynced purge log in
//! `controller.data_dir` (the default, one control), or an etcd cluster that several control
//! replicas share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Collector;
use crate::field::bounded_duration;

/// Most etcd endpoints.
pub const MAX_ENDPOINTS: usize = 16;

/// `[store]`: the embedded log when `etcd` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreConfig {
    pub etcd: Option<EtcdConfig>,
}

/// A control replica's connection to etcd and its part in the replica set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members (`http://host:2379`), tried in turn.
    pub endpoints: Vec<String>,
    /// Every key control writes starts with this (several Verge fleets may share a cluster).
    pub prefix: String,
    /// The replica's name, unique among the replicas: shown as the leader and in the replicas'
    /// reports.
    pub replica: String,
    /// etcd user and password (`etcdctl user add`), when the cluster has auth enabled.
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Longest wait for one etcd request; past it the request counts as failed (a purge is
    /// then refused with 503).
    pub timeout: Duration,
    /// Time to live of the replica's lease: its leadership and its nodes' registrations vanish
    /// this long after it stops renewing.
    pub lease_ttl: Duration,
    /// How much of etcd's history the leader keeps: it compacts to the revision it saw this
    /// long ago. A replica whose watch broke for longer reads everything again.
    pub history: Duration,
    /// How long a starting replica waits for etcd to answer (retrying, with back-off) before it
    /// gives up: replicas started beside their cluster, or before it, come up once it does.
    /// An answer that refuses (a wrong password, say) ends the start at once.
    pub start_wait: Duration,
    /// TLS towards `https://` endpoints (`[store.tls]`): the CA etcd's certificate must chain
    /// to (else the system store) and the client certificate etcd may ask for.
    pub tls: crate::tls::ClientTlsConfig,
}

pub mod defaults {
    pub const PREFIX: &str = "/verge";
    pub const TIMEOUT: &str = "2s";
    pub const LEASE_TTL: &str = "3s";
    pub const HISTORY: &str = "1m";
    pub const START_WAIT: &str = "1m";
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub etcd: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub replica: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub timeout: Option<String>,
    pub lease_ttl: Option<String>,
    pub history: Option<String>,
    pub start_wait: Option<String>,
    pub tls: Option<crate::tls::RawClientTls>,
}

/// Checks one etcd endpoint: an absolute `http://` URL with a host and nothing after it.
pub fn check_endpoint(url: &str) -> Result<String, String> {
    let trimmed = url.trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("{url:?} has no host"));
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(format!("{url:?} must not have a path or query"));
    }
    Ok(trimmed.to_string())
}

/// A replica name from the environment: the host name and the process id, so that replicas
/// on one host differ too.
fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "control".to_string());
    let name: String = format!("{host}-{}", std::process::id())
        .chars()
        .map(|ch| if valid_name_char(ch) { ch } else { '-' })
        .take(64)
        .collect();
    name
}

fn valid_name_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')
}

pub(crate) fn validate_store(c: &mut Collector, raw: Option<RawStore>) -> Option<StoreConfig> {
    let raw = raw.unwrap_or_default();
    let Some(urls) = raw.etcd else {
        for (key, set) in [
            ("store.prefix", raw.prefix.is_some()),
            ("store.replica", raw.replica.is_some()),
            ("store.username", raw.username.is_some()),
            ("store.password", raw.password.is_some()),
            ("store.password_file", raw.password_file.is_some()),
            ("store.tls", raw.tls.is_some()),
        ] {
            if set {
                c.push(key, "only used with store.etcd");
            }
        }
        return Some(StoreConfig { etcd: None });
    };
    let before = c.len();
    let endpoints = etcd_endpoints(c, "store.etcd", &urls);
    let prefix = raw.prefix.unwrap_or_else(|| defaults::PREFIX.to_string());
    if !prefix.starts_with('/')
        || prefix.len() < 2
        || prefix.len() > 128
        || prefix.ends_with('/')
        || prefix
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.push(
            "store.prefix",
            format!("{prefix:?} must start with '/', not end with one, and be 2 to 128 printable characters"),
        );
    }
    let replica = raw.replica.unwrap_or_else(default_replica);
    if replica.is_empty() || replica.len() > 64 || !replica.chars().all(valid_name_char) {
        c.push(
            "store.replica",
            format!("{replica:?} must be 1 to 64 letters, digits, '-', '_' or '.'"),
        );
    }
    let password = match (&raw.password, &raw.password_file) {
        (Some(_), Some(_)) => {
            c.push("store.password", "give password or password_file, not both");
            None
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(file)) => password_from_file(c, Path::new(file)),
        (None, None) => None,
    };
    if raw.username.is_some() != (raw.password.is_some() || raw.password_file.is_some()) {
        c.push(
            "store.username",
            "give username and password (or password_file) together",
        );
    }
    let ms = Duration::from_millis;
    let timeout = bounded_duration(
        c,
        "store.timeout",
        raw.timeout.as_deref(),
        defaults::TIMEOUT,
        (ms(100), Duration::from_secs(60)),
    );
    let lease_ttl = bounded_duration(
        c,
        "store.lease_ttl",
        raw.lease_ttl.as_deref(),
        defaults::LEASE_TTL,
        (Duration::from_secs(2), Duration::from_secs(60)),
    );
    if lease_ttl.is_some_and(|t| t.subsec_nanos() != 0) {
        c.push(
            "store.lease_ttl",
            "must be whole seconds (etcd leases count seconds)",
        );
    }
    let history = bounded_duration(
        c,
        "store.history",
        raw.history.as_deref(),
        defaults::HISTORY,
        (Duration::from_secs(1), Duration::from_secs(24 * 3600)),
    );
    let start_wait = bounded_duration(
        c,
        "store.start_wait",
        raw.start_wait.as_deref(),
        defaults::START_WAIT,
        (Duration::ZERO, Duration::from_secs(3600)),
    );
    let tls = crate::tls::validate_client_tls(c, raw.tls, "store.tls");
    if c.len() > before {
        return None;
    }
    Some(StoreConfig {
        etcd: Some(EtcdConfig {
            endpoints: endpoints?,
            prefix,
            replica,
            username: raw.username,
            password,
            password_file: raw.password_file.map(PathBuf::from),
            timeout: timeout?,
            lease_ttl: lease_ttl?,
            history: history?,
            start_wait: start_wait?,
            tls: tls?,
        }),
    })
}

/// The endpoints of `--etcd URL,URL` or `store.etcd`, checked; errors under `path`.
pub(crate) fn etcd_endpoints(
    c: &mut Collector,
    path: &str,
    urls: &[String],
) -> Option<Vec<String>> {
    if urls.is_empty() || urls.len() > MAX_ENDPOINTS {
        c.push(path, format!("give 1 to {MAX_ENDPOINTS} etcd client URLs"));
        return None;
    }
    let mut out = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        match check_endpoint(url) {
            Ok(url) => out.push(url),
            Err(e) => c.push(&format!("{path}[{i}]"), e),
        }
    }
    (out.len() == urls.len()).then_some(out)
}

fn password_from_file(c: &mut Collector, file: &Path) -> Option<String> {
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Ok(_) => {
            c.push(
                "store.password_file",
                format!("{} is empty", file.display()),
            );
            None
        }
        Err(e) => {
            c.push(
                "store.password_file",
                format!("cannot read {}: {e}", file.display()),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawStore) -> Result<StoreConfig, Vec<String>> {
        let mut c = Collector::default();
        let value = validate_store(&mut c, Some(raw));
        c.finish(value)
            .map_err(|e| e.to_string().lines().map(str::to_string).collect())
    }

    #[test]
    fn without_etcd_the_store_is_embedded_and_etcd_keys_are_refused() {
        assert_eq!(check(RawStore::default()).unwrap(), StoreConfig::default());
        let errors = check(RawStore {
            prefix: Some("/x".into()),
            ..RawStore::default()
        })
        .unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("store.prefix")),
            "{errors:?}"
        );
    }

    #[test]
    fn etcd_settings_are_checked_and_every_error_named() {
        let ok = check(RawStore {
            etcd: Some(vec![
                "http://127.0.0.1:2379/".into(),
                "http://10.0.0.2:2379".into(),
            ]),
            replica: Some("ctl-a".into()),
            ..RawStore::default()
        })
        .unwrap();
        let etcd = ok.etcd.unwrap();
        assert_eq!(
            etcd.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(
            (etcd.prefix.as_str(), etcd.replica.as_str()),
            ("/verge", "ctl-a")
        );
        assert_eq!(etcd.lease_ttl, Duration::from_secs(3));
        assert_eq!(etcd.start_wait, Duration::from_secs(60));

        let errors = check(RawStore {
            etcd: Some(vec!["ftp://x".into(), "https://h:1/path".into()]),
            prefix: Some("verge".into()),
            replica: Some("a b".into()),
            username: Some("root".into()),
            lease_ttl: Some("1500ms".into()),
            start_wait: Some("2h".into()),
            ..RawStore::default()
        })
        .unwrap_err();
        let text = errors.join("\n");
        for key in [
            "store.etcd[0]",
            "store.etcd[1]",
            "store.prefix",
            "store.replica",
            "store.username",
            "store.lease_ttl",
            "store.start_wait",
        ] {
            assert!(text.contains(key), "{key} not named in {text}");
        }
        assert!(check(RawStore {
            etcd: Some(Vec::new()),
            ..RawStore::default()
        })
        .is_err());
    }
}
