//! The process around a running role, the same for every role (control included): the async
//! runtime, the signals that stop it, the triggers that reload its configuration, and SIGUSR1,
//! which reopens a cache node's access log.
//!
//! [`serve`] runs a cache node of any [`Role`] until Ctrl-C or SIGTERM; roles that are not
//! cache nodes (control) use [`runtime`] and [`until_stopped`] directly.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use verge_cache::SystemClock;
use verge_config::{ConfigSource, FileWatch, ReloadError, ReloadReport};

use crate::access_log::AccessLog;
use crate::node::Node;
use crate::reload::Role;

/// How often a configuration file is checked for changes.
const CONFIG_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A future that completes when the process is asked to stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts the runtime, binds a node of role `R` from `config` (read from `source`) and serves
/// until Ctrl-C or SIGTERM, reloading on SIGHUP and file changes meanwhile. `name` is the
/// subcommand (`edge`, `shield`) and `upstream` says where misses go, for the log.
pub fn serve<R: Role>(
    name: &str,
    worker_threads: usize,
    config: &R::Config,
    source: ConfigSource,
    upstream: String,
) -> ExitCode {
    let runtime = match runtime(name, worker_threads) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let node = match Node::<R>::bind(config, source, Arc::new(SystemClock)).await {
            Ok(node) => node,
            Err(e) => {
                eprintln!("verge {name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            role = name,
            listen = %node.data_addr(),
            admin = %node.admin_addr(),
            tls = ?node.tls_addrs(),
            upstream,
            "serving"
        );
        let reloader = node.reloader();
        let file = reloader.watched_file();
        let reopen = tokio::spawn(reopen_on_sigusr1(node.access_log()));
        until_stopped(move || reloader.reload(), file, |stop| node.run(stop)).await;
        reopen.abort();
        tracing::info!(role = name, "stopped");
        ExitCode::SUCCESS
    })
}

/// Runs `serve` until Ctrl-C or SIGTERM completes the [`Shutdown`] it is given, reloading with
/// `reload` on SIGHUP and whenever `file` changes meanwhile.
pub async fn until_stopped<F, S, Fut>(reload: F, file: Option<PathBuf>, serve: S)
where
    F: Fn() -> Result<ReloadReport, ReloadError> + Send + Sync + 'static,
    S: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = ()>,
{
    let triggers = tokio::spawn(reload_triggers(reload, file));
    serve(Box::pin(shutdown_signal())).await;
    triggers.abort();
}

/// [`build_runtime`], or the exit code after saying why it could not start.
pub fn runtime(name: &str, worker_threads: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    build_runtime(worker_threads).map_err(|e| {
        eprintln!("verge {name}: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// One thread per core unless configured (0 means that); one thread uses the single-threaded
/// scheduler, which costs less per request than the work-stealing one.
pub fn build_runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build()
}

/// Reloads on SIGHUP and whenever `file` changes; runs until aborted. Each reload runs off the
/// async workers (it reads files) and logs its own outcome.
pub async fn reload_triggers<F>(reload: F, file: Option<PathBuf>)
where
    F: Fn() -> Result<ReloadReport, ReloadError> + Send + Sync + 'static,
{
    let reload = Arc::new(reload);
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut watch = file.map(FileWatch::new);
    let mut tick = tokio::time::interval(CONFIG_WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hangups.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let why = tokio::select! {
            () = hangup => "SIGHUP",
            _ = tick.tick() => {
                // A configuration file is small: reading it here costs less than a hop to
                // the blocking pool.
                if !watch.as_mut().is_some_and(FileWatch::changed) {
                    continue;
                }
                "configuration file changed"
            }
        };
        tracing::info!(trigger = why, "reloading configuration");
        let reload = Arc::clone(&reload);
        // The outcome is logged by the reloader.
        let _ = tokio::task::spawn_blocking(move || reload()).await;
    }
}

/// Reopens the access log's file on every SIGUSR1 (after log rotation renamed it); runs until
/// aborted.
pub async fn reopen_on_sigusr1(access_log: Arc<AccessLog>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut signals) = signal(SignalKind::user_defined1()) else {
            return;
        };
        while signals.recv().await.is_some() {
            tracing::info!("SIGUSR1: reopening the access log");
            access_log.reopen();
        }
    }
    #[cfg(not(unix))]
    {
        let _ = access_log;
        std::future::pending::<()>().await;
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
