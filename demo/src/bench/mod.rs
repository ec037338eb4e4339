//! `verge bench`: what users of a CDN care about, measured from the clients' side — latency per
//! region, hit ratio, origin offload and purge propagation — against a running demo (its
//! `--state FILE`) or one the bench starts in-process.
//!
//! - [`workload`]: the command line's workload, checked whole before anything starts;
//! - [`fault`]: `--fault`, parts of the demo killed and restored at set times, checked whole;
//! - [`injector`]: applying those faults to the in-process demo during a run;
//! - [`timeline`]: per second and per phase (before, during, after the faults) figures;
//! - [`zipf`]: object popularity (a Zipf law) from a small seeded generator;
//! - [`steer`]: a region's edges through GeoDNS, HTTP steering, or the state's list;
//! - [`client`]: HTTP clients bound to a region's source address; `Cache-Status` read;
//! - [`histogram`]: latency percentiles in bounded memory;
//! - [`offload`]: the origin's request count (its own counter, else the nodes' metrics);
//! - [`run`]: one run: clients per region, warm-up, measured part, purges, Ctrl-C;
//! - [`report`]: results (JSON), the Markdown tables, the `--baseline` ratios;
//! - [`chart`]: the latency picture (SVG);
//! - [`baseline`]: `--baseline` (geo steering off, shield tier off) and in-process demos.

pub mod baseline;
pub mod chart;
pub mod client;
pub mod fault;
pub mod histogram;
pub mod injector;
pub mod offload;
pub mod report;
pub mod run;
pub mod steer;
pub mod timeline;
pub mod workload;
pub mod zipf;

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::watch;

pub use report::{Comparison, RunReport};
pub use run::{Route, RunSpec};
pub use workload::{Steering, Workload, WorkloadArgs};

use crate::state::DemoState;

/// The JSON results file in `--out`.
pub const RESULTS_FILE: &str = "results.json";
/// The latency picture in `--out`.
pub const CHART_FILE: &str = "latency.svg";
/// The per-second timeline picture in `--out`.
pub const TIMELINE_FILE: &str = "timeline.svg";

/// `verge bench` as the command line gives it.
#[derive(Debug, Clone)]
pub struct BenchCommand {
    /// A running demo's `--state FILE`; `None`: start a demo in-process.
    pub state: Option<PathBuf>,
    pub workload: WorkloadArgs,
    /// Where results.json and the SVG go.
    pub out: PathBuf,
    /// Also run with geo steering off and with the shield tier off, and report the ratios.
    pub baseline: bool,
    /// Progress bar on stderr (drawn only on a terminal).
    pub progress: bool,
    /// `--fault` values: parts of the in-process demo killed and restored during the run.
    pub faults: Vec<String>,
    /// The in-process demo's options (its tier topology and levels; unused with `state`).
    pub demo: crate::DemoOptions,
}

/// How a bench ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    /// Ctrl-C: what was measured until then is printed and written.
    Interrupted,
    /// Some region could not run or got nothing but errors (named in the output).
    Failed,
}

/// Reads a demo's state file.
pub fn read_state(path: &Path) -> Result<DemoState, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--state {}: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "--state {}: not a demo state file (verge demo --state FILE writes one): {e}",
            path.display()
        )
    })
}

/// Writes `results` as JSON and each `(file name, svg)` into `dir`; returns what was written.
pub fn write_results(
    dir: &Path,
    results: &impl Serialize,
    charts: &[(String, String)],
) -> Result<Vec<PathBuf>, String> {
    let fail = |path: &Path, e: std::io::Error| format!("cannot write {}: {e}", path.display());
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let mut written = Vec::new();
    let json = serde_json::to_string_pretty(results)
        .map_err(|e| format!("cannot encode the results: {e}"))?;
    let path = dir.join(RESULTS_FILE);
    std::fs::write(&path, json + "\n").map_err(|e| fail(&path, e))?;
    written.push(path);
    for (name, svg) in charts {
        let path = dir.join(name);
        std::fs::write(&path, svg).map_err(|e| fail(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

/// The chart of one run's regions.
pub fn run_chart(run: &RunReport) -> Result<String, String> {
    chart::latency_svg(
        &format!("verge bench: latency per region ({})", run.label),
        &chart::region_lines(run),
    )
}

/// Runs the workload once against `state` as configured (geo steering on).
pub async fn bench_state(
    state: &DemoState,
    workload: &Workload,
    setup: &str,
    progress: bool,
    stop: watch::Receiver<bool>,
) -> Result<RunReport, String> {
    run::run(
        RunSpec {
            state,
            workload,
            label: "configured".to_string(),
            setup: setup.to_string(),
            route: Route::Steered,
            progress,
            faults: None,
        },
        stop,
    )
    .await
}

/// Prints `report`'s table on stdout, writes its files, and says how it ended.
pub fn finish_run(report: &RunReport, out: &Path) -> Result<Outcome, String> {
    println!("{}", report::markdown(report));
    let chart = run_chart(report)?;
    let timeline = chart::timeline_svg(
        &format!("verge bench: per second ({})", report.label),
        report,
    )?;
    let written = write_results(
        out,
        report,
        &[
            (CHART_FILE.to_string(), chart),
            (TIMELINE_FILE.to_string(), timeline),
        ],
    )?;
    for path in written {
        eprintln!("wrote {}", path.display());
    }
    Ok(outcome(std::iter::once(report)))
}

fn outcome<'a>(runs: impl Iterator<Item = &'a RunReport>) -> Outcome {
    let mut result = Outcome::Complete;
    for run in runs {
        if !run.failed_regions().is_empty() || run.total.requests == 0 {
            return Outcome::Failed;
        }
        if run.interrupted {
            result = Outcome::Interrupted;
        }
    }
    result
}

/// Checks `--fault` against what the bench will run, before anything starts: only with the
/// in-process demo (default options), without `--baseline`; every spec against the demo's
/// parts and the measured `duration`. No faults: an empty plan.
pub fn fault_plan(
    faults: &[String],
    state: Option<&Path>,
    baseline: bool,
    duration: std::time::Duration,
) -> Result<fault::FaultPlan, String> {
    if faults.is_empty() {
        return Ok(fault::FaultPlan::default());
    }
    if state.is_some() {
        return Err("--fault needs the in-process demo: it cannot be used with --state".into());
    }
    if baseline {
        return Err("--fault cannot be used with --baseline".into());
    }
    let parts: Vec<String> = ["origin", "control"]
        .into_iter()
        .map(String::from)
        .chain(
            crate::topology::nodes(&crate::DemoOptions::default())
                .into_iter()
                .map(|n| n.id),
        )
        .collect();
    fault::plan(faults, &parts, duration)
}

/// `verge bench`: checks the workload and the target before anything starts, runs (once, or
/// three ways with `--baseline`), prints the tables on stdout and writes `--out`. Without a
/// state file it starts a demo in-process (default options) and stops it afterwards.
pub async fn command(cmd: BenchCommand, stop: watch::Receiver<bool>) -> Result<Outcome, String> {
    let workload = cmd.workload.validate().map_err(|e| e.to_string())?;
    let faults = fault_plan(
        &cmd.faults,
        cmd.state.as_deref(),
        cmd.baseline,
        workload.duration,
    )?;
    let given = match &cmd.state {
        Some(path) => {
            let state = read_state(path)?;
            run::check(&state, &workload)?;
            Some((state, format!("demo of {}", path.display())))
        }
        None => None,
    };
    // Fail on an unwritable --out now, not after the run.
    std::fs::create_dir_all(&cmd.out)
        .map_err(|e| format!("--out {}: cannot create: {e}", cmd.out.display()))?;

    if cmd.baseline {
        let target = given.as_ref().map(|(s, name)| (s, name.clone()));
        let comparison =
            baseline::baseline(target, &cmd.demo, &workload, cmd.progress, stop).await?;
        for run in comparison.runs() {
            println!("{}", report::markdown(run));
        }
        println!("{}", comparison.markdown());
        let mut charts = vec![(CHART_FILE.to_string(), run_chart(&comparison.configured)?)];
        for run in comparison.runs().skip(1) {
            charts.push((format!("latency-{}.svg", run.label), run_chart(run)?));
        }
        let runs: Vec<&RunReport> = comparison.runs().collect();
        charts.push((
            "latency-baseline.svg".to_string(),
            chart::latency_svg(
                "verge bench --baseline: latency of all requests per run",
                &chart::total_lines(&runs),
            )?,
        ));
        for path in write_results(&cmd.out, &comparison, &charts)? {
            eprintln!("wrote {}", path.display());
        }
        return Ok(outcome(comparison.runs()));
    }

    match given {
        Some((state, name)) => {
            let report = bench_state(&state, &workload, &name, cmd.progress, stop).await?;
            finish_run(&report, &cmd.out)
        }
        None => {
            let mut stop_rx = stop.clone();
            let Some(mut demo) = baseline::start_demo(cmd.demo.clone(), &mut stop_rx).await? else {
                return Ok(Outcome::Interrupted);
            };
            let name = format!("in-process demo ({})", baseline::describe(&demo.state));
            let state = demo.state.clone();
            let result = match run::check(&state, &workload) {
                Ok(()) if faults.is_empty() => {
                    bench_state(&state, &workload, &name, cmd.progress, stop).await
                }
                Ok(()) => {
                    let spec = RunSpec {
                        state: &state,
                        workload: &workload,
                        label: "configured".to_string(),
                        setup: name,
                        route: Route::Steered,
                        progress: cmd.progress,
                        faults: Some(injector::FaultRun {
                            plan: faults,
                            target: &mut demo,
                        }),
                    };
                    run::run(spec, stop).await
                }
                Err(e) => Err(e),
            };
            demo.shutdown().await;
            finish_run(&result?, &cmd.out)
        }
    }
}
