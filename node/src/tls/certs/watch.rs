//! Reloads the certificates when their files change, so renewed certificates are served
//! without a restart or an explicit reload.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use verge_config::{FileWatch, TlsServerConfig};

use super::{CertReloadOutcome, CertResolver, TlsMetrics};

/// Polls the certificate and key files of the current `[tls]` table every `interval` and
/// reloads `resolver` when any of their contents changed (compared by hash: two writes can
/// share a modification time). Each tick also refreshes the expiry gauges. Returns `None`
/// when `interval` is zero (the node's `tls.watch_interval = "0s"`: reload only on demand).
/// The task ends when `shutdown` turns true or its sender is dropped.
///
/// `config` is the node's handle on its current `[tls]` table. To apply a new table the
/// node first calls [`CertResolver::reload`] with it (so that its reload answer carries any
/// certificate error), then stores it in `config` when that succeeded. From the next tick on
/// the watcher watches the new table's files: a file it already watched keeps its last
/// fingerprint, so a change that happened in between still triggers a reload; a new file
/// is watched from its current contents. A failed reload is retried when a file changes
/// again, not on every tick.
pub fn spawn_watcher(
    resolver: Arc<CertResolver>,
    config: Arc<ArcSwap<TlsServerConfig>>,
    interval: Duration,
    metrics: TlsMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if interval.is_zero() {
        return None;
    }
    let mut files = WatchedFiles::new(config.load_full());
    Some(tokio::spawn(async move {
        loop {
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
            let current = config.load_full();
            let resolver = Arc::clone(&resolver);
            let metrics = metrics.clone();
            // Reading files and parsing keys blocks; keep it off the runtime's workers.
            let tick = tokio::task::spawn_blocking(move || {
                files.tick(&resolver, current);
                metrics.refresh_expiry(&resolver, SystemTime::now());
                files
            });
            files = match tick.await {
                Ok(files) => files,
                Err(error) => {
                    tracing::error!(%error, "certificate watcher stopped");
                    return;
                }
            };
        }
    }))
}

/// The files of one `[tls]` table and what they held at the last poll.
struct WatchedFiles {
    config: Arc<TlsServerConfig>,
    files: HashMap<PathBuf, FileWatch>,
}

impl WatchedFiles {
    fn new(config: Arc<TlsServerConfig>) -> WatchedFiles {
        let mut watched = WatchedFiles {
            config,
            files: HashMap::new(),
        };
        watched.track_config_files();
        watched
    }

    /// Watches every file of `self.config`, keeping the fingerprints of files already watched.
    fn track_config_files(&mut self) {
        let mut previous = std::mem::take(&mut self.files);
        for cert in &self.config.certificates {
            for path in [&cert.cert, &cert.key] {
                if !self.files.contains_key(path) {
                    let watch = previous
                        .remove(path)
                        .unwrap_or_else(|| FileWatch::new(path.clone()));
                    self.files.insert(path.clone(), watch);
                }
            }
        }
    }

    fn tick(&mut self, resolver: &CertResolver, current: Arc<TlsServerConfig>) {
        if !Arc::ptr_eq(&self.config, &current) {
            self.config = current;
            self.track_config_files();
        }
        let mut changed = false;
        for watch in self.files.values_mut() {
            // Every file is polled, so each fingerprint is up to date after the tick.
            changed |= watch.changed();
        }
        if !changed {
            return;
        }
        match resolver.reload(&self.config) {
            Ok(CertReloadOutcome::Reloaded) => {
                tracing::info!(
                    certificates = self.config.certificates.len(),
                    "certificate files changed; serving the new certificates"
                );
            }
            Ok(CertReloadOutcome::Unchanged) => {}
            Err(error) => {
                tracing::warn!(
                    %error,
                    "certificate files changed but cannot be served; keeping the current ones"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::testing::{counter, has_series, tls_config, Pki};
    use super::*;
    use prometheus::Registry;
    use verge_config::CertificateFiles;

    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A resolver serving `leaf` and a watcher polling its files every 20 ms.
    struct Watched {
        config: Arc<ArcSwap<TlsServerConfig>>,
        registry: Registry,
        resolver: Arc<CertResolver>,
        stop: watch::Sender<bool>,
        task: Option<JoinHandle<()>>,
    }

    fn watched(leaf: &CertificateFiles) -> Watched {
        let config = Arc::new(ArcSwap::from_pointee(tls_config(vec![leaf.clone()])));
        let registry = Registry::new();
        let metrics = TlsMetrics::register(&registry).unwrap();
        let resolver = Arc::new(
            CertResolver::new(&config.load(), metrics.clone(), SystemTime::now()).unwrap(),
        );
        let (stop, shutdown) = watch::channel(false);
        let task = spawn_watcher(
            Arc::clone(&resolver),
            Arc::clone(&config),
            Duration::from_millis(20),
            metrics,
            shutdown,
        );
        Watched {
            config,
            registry,
            resolver,
            stop,
            task,
        }
    }

    fn covers(resolver: &CertResolver, name: &str) -> bool {
        resolver.current().find(name).is_some()
    }

    #[tokio::test]
    async fn a_rewritten_certificate_is_served_after_the_next_poll() {
        let pki = Pki::new();
        let a = pki.leaf("a", &["a.test"]);
        let Watched {
            registry,
            resolver,
            stop,
            task,
            ..
        } = watched(&a);

        // The renewed certificate, written over the old files.
        let renewed = pki.leaf("renewed", &["a.test", "new.test"]);
        std::fs::write(&a.key, std::fs::read(&renewed.key).unwrap()).unwrap();
        std::fs::write(&a.cert, std::fs::read(&renewed.cert).unwrap()).unwrap();
        wait_for("the renewed certificate", || covers(&resolver, "new.test")).await;

        // A broken write is not served; the renewed certificate stays.
        std::fs::write(&a.cert, "garbage").unwrap();
        wait_for("a failed reload", || {
            counter(&registry, "verge_tls_certificate_reloads_total", "failed") >= 1.0
        })
        .await;
        assert!(covers(&resolver, "new.test"));

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task.unwrap())
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn files_of_a_swapped_config_are_watched_from_then_on() {
        let pki = Pki::new();
        let a = pki.leaf("a", &["a.test"]);
        let Watched {
            config,
            registry,
            resolver,
            stop: _stop,
            task: _task,
        } = watched(&a);

        // The node applies a new [tls] table: reload, then store.
        let b = pki.leaf("b", &["b.test"]);
        let next = tls_config(vec![a, b.clone()]);
        resolver.reload(&next).unwrap();
        config.store(Arc::new(next));
        // The expiry gauges follow the new set on the next tick.
        wait_for("the new certificate's gauge", || {
            has_series(&registry, "verge_tls_certificate_expiry_seconds", "b.test")
        })
        .await;

        // A rewrite of the newly listed files is picked up.
        let renewed = pki.leaf("renewed", &["b.test", "c.test"]);
        std::fs::write(&b.key, std::fs::read(&renewed.key).unwrap()).unwrap();
        std::fs::write(&b.cert, std::fs::read(&renewed.cert).unwrap()).unwrap();
        wait_for("the rewritten file", || covers(&resolver, "c.test")).await;
    }

    #[tokio::test]
    async fn a_zero_interval_starts_no_watcher() {
        let pki = Pki::new();
        let config = Arc::new(ArcSwap::from_pointee(tls_config(vec![
            pki.leaf("a", &["a.test"])
        ])));
        let metrics = TlsMetrics::register(&Registry::new()).unwrap();
        let resolver = Arc::new(
            CertResolver::new(&config.load(), metrics.clone(), SystemTime::now()).unwrap(),
        );
        let (_stop, shutdown) = watch::channel(false);
        assert!(spawn_watcher(resolver, config, Duration::ZERO, metrics, shutdown).is_none());
    }
}
