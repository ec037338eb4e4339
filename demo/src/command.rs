//! `verge demo` and `verge bench` as the command line runs them: start, print, wait for
//! Ctrl-C, stop — with the exit code each ends with.

use std::path::PathBuf;
use std::process::ExitCode;

use verge_node::process::{runtime, shutdown_signal};

use crate::bench::{BenchCommand, Outcome};
use crate::failover::{self, Failover};
use crate::replica_plan::{ETCD_MEMBERS, REPLICAS};
use crate::{Demo, DemoOptions};

/// Exit code of a bench stopped by Ctrl-C (after reporting what it measured).
const EXIT_INTERRUPTED: u8 = 130;

/// What `verge demo` was asked for.
pub struct DemoCommand {
    pub options: DemoOptions,
    /// Region names as given, for the banner.
    pub regions: Vec<String>,
    /// Where the endpoints are written as JSON once ready (removed on stop).
    pub state: Option<PathBuf>,
}

/// Runs a demo until Ctrl-C, SIGTERM or SIGHUP, printing its endpoints once it is ready.
pub fn demo(command: DemoCommand) -> ExitCode {
    let DemoCommand {
        options,
        regions,
        state,
    } = command;
    let runtime = match runtime("demo", 0) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let nodes = options.regions.len() * options.edges_per_region;
        let control = match options.ha {
            None => "control".to_string(),
            Some(_) => format!(
                "{ETCD_MEMBERS} etcd members, {REPLICAS} control replicas (processes)"
            ),
        };
        println!(
            "Starting a Verge CDN on loopback: a sample origin, {control}, {} shield(s) and {nodes} edge(s) in {}…\n",
            options.shields.len(),
            regions.join(", ")
        );
        let demo = tokio::select! {
            started = Demo::start(options) => match started {
                Ok(demo) => demo,
                Err(e) => {
                    eprintln!("verge demo: {e}");
                    return ExitCode::FAILURE;
                }
            },
            () = stop_signal() => return ExitCode::SUCCESS,
        };
        if let Some(path) = &state {
            if let Err(e) = demo.state.write_to(path) {
                eprintln!("verge demo: --state {}: {e}", path.display());
                demo.shutdown().await;
                return ExitCode::FAILURE;
            }
        }
        let verge = match (std::env::current_exe(), std::env::current_dir()) {
            (Ok(exe), Ok(cwd)) => crate::report::command_name(&exe, &cwd),
            _ => "verge".to_string(),
        };
        println!(
            "{}",
            crate::report::summary(&demo.state, state.as_deref(), &verge)
        );
        if let Some(replicas) = demo.replicas() {
            let failover = Failover::observe(replicas).await;
            println!("{}", failover::summary(&failover, &demo.state, &verge));
        }
        stop_signal().await;
        println!("Stopping…");
        demo.shutdown().await;
        if let Some(path) = &state {
            let _ = std::fs::remove_file(path);
        }
        println!("Stopped.");
        ExitCode::SUCCESS
    })
}

/// Completes on Ctrl-C, SIGTERM or SIGHUP: a demo whose terminal closes stops as if it were
/// interrupted, rather than dying without killing its child processes (with `--ha`, the
/// replicas, which take SIGHUP as a reload, would outlive it).
async fn stop_signal() {
    #[cfg(unix)]
    let hangup = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let hangup = std::future::pending::<()>();
    tokio::select! {
        () = shutdown_signal() => {}
        () = hangup => {}
    }
}

/// Runs a bench; Ctrl-C ends it early, and what was measured is still printed and written.
pub fn bench(command: BenchCommand) -> ExitCode {
    let runtime = match runtime("bench", 0) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("verge bench: stopping; reporting what was measured so far");
            let _ = stop_tx.send(true);
            std::future::pending::<()>().await;
        });
        match crate::bench::command(command, stop).await {
            Ok(Outcome::Complete) => ExitCode::SUCCESS,
            Ok(Outcome::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
            Ok(Outcome::Failed) => {
                eprintln!("verge bench: some regions could not be measured (see above)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("verge bench: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
