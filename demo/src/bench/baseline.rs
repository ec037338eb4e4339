//! `--baseline`, and benching a demo started in-process: the same workload run as configured,
//! with geo steering off (every client sent to the first region's edges), with the shield
//! tier off (edges straight to the origin, in a demo started without shields), and with the
//! shields on one global ring (a demo started with `[tiers] topology = "global"`).

use std::time::Duration;

use tokio::sync::watch;
use verge_config::wire::PurgeSpec;
use verge_control::client::AdminClient;

use super::report::{Comparison, RunReport};
use super::run::{self, Route, RunSpec};
use super::workload::Workload;
use crate::cluster::Demo;
use crate::origin::ServiceTime;
use crate::regions::LatencyMatrix;
use crate::state::{DemoState, OriginTime};
use crate::topology::DemoOptions;
use verge_config::tiers::Topology;

/// How long a purge of everything between runs may take.
const FLUSH_LIMIT: Duration = Duration::from_secs(30);

/// The nodes of a state, in words.
pub fn describe(state: &DemoState) -> String {
    let count = |role: &str| state.nodes.iter().filter(|n| n.role == role).count();
    let origin = state
        .origin_time
        .as_ref()
        .map_or(ServiceTime::INSTANT, OriginTime::service_time);
    format!(
        "{} regions, {} edges, {} shields; origin {}",
        state.regions.len(),
        count("edge"),
        count("shield"),
        origin
    )
}

/// Empties every cache through control, so each run starts cold. Failing is not fatal: the
/// run after it starts warmer, and that is said.
pub async fn flush(state: &DemoState) -> Result<(), String> {
    let admin =
        AdminClient::new(&state.control.admin, &state.control.token).map_err(|e| e.to_string())?;
    let spec = PurgeSpec {
        all: true,
        ..PurgeSpec::default()
    };
    let accepted = admin.purge(&spec).await.map_err(|e| e.to_string())?;
    admin
        .wait(accepted.id, FLUSH_LIMIT)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The demo a state describes, as options for starting one like it in-process: its regions,
/// its edges per region, its latency matrix; shields as given.
pub fn options_like(state: &DemoState, shields: Vec<String>) -> Result<DemoOptions, String> {
    let names: Vec<String> = state.regions.iter().map(|r| r.id.clone()).collect();
    let mut options = DemoOptions::for_regions(&names)?;
    options.edges_per_region = names
        .iter()
        .map(|r| state.edges().filter(|e| &e.region == r).count())
        .max()
        .unwrap_or(1)
        .max(1);
    if !state.latency.is_empty() {
        let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1000.0);
        let local = state
            .latency
            .iter()
            .find(|p| p.from == p.to)
            .map_or(options.latency.local, |p| ms(p.one_way_ms));
        // A state without a site is from a demo whose shields were a region's latency from
        // the origin.
        let site = state
            .origin_site
            .as_ref()
            .map_or(local, |s| ms(s.one_way_ms));
        options.latency = LatencyMatrix {
            local,
            site,
            pairs: state
                .latency
                .iter()
                .filter(|p| p.from != p.to)
                .map(|p| (p.from.clone(), p.to.clone(), ms(p.one_way_ms)))
                .collect(),
        };
    }
    options.origin_time = state
        .origin_time
        .as_ref()
        .map_or(ServiceTime::INSTANT, OriginTime::service_time);
    options.shields = shields;
    Ok(options)
}

/// Starts a demo, unless `stop` comes first.
pub async fn start_demo(
    options: DemoOptions,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Demo>, String> {
    tokio::select! {
        started = Demo::start(options) => started
            .map(Some)
            .map_err(|e| format!("cannot start the in-process demo: {e}")),
        _ = stop.wait_for(|s| *s) => Ok(None),
    }
}

/// Flushes the caches, then runs.
async fn flushed_run(spec: RunSpec<'_>, stop: &watch::Receiver<bool>) -> Result<RunReport, String> {
    if let Err(e) = flush(spec.state).await {
        eprintln!(
            "verge bench: could not empty the caches before the {} run: {e}",
            spec.label
        );
    }
    run::run(spec, stop.clone()).await
}

/// Runs the comparison against `given` (a running demo's state), or against demos it starts
/// in-process when `None`. The shields-off run always needs a demo without shields, so it
/// starts one shaped like the target (its regions, edges per region and latency matrix).
/// A Ctrl-C ends the current run and skips the rest.
pub async fn baseline(
    given: Option<(&DemoState, String)>,
    own: &DemoOptions,
    workload: &Workload,
    progress: bool,
    stop: watch::Receiver<bool>,
) -> Result<Comparison, String> {
    let mut stop_rx = stop.clone();
    let spec = |state, label: &str, setup: String, route| RunSpec {
        state,
        workload,
        label: label.to_string(),
        setup,
        route,
        progress,
        faults: None,
    };
    let stopped = |rx: &watch::Receiver<bool>| *rx.borrow();

    // (a) and (b) against the given demo, or one started here.
    let mut own_demo: Option<Demo> = None;
    let (target, name) = match given {
        Some((state, name)) => (state.clone(), name),
        None => {
            let Some(demo) = start_demo(own.clone(), &mut stop_rx).await? else {
                return Err("interrupted before the first run".to_string());
            };
            let name = format!("in-process demo ({})", describe(&demo.state));
            let state = demo.state.clone();
            own_demo = Some(demo);
            (state, name)
        }
    };
    let first_two = async {
        let first_region = target
            .regions
            .first()
            .map(|r| r.id.clone())
            .ok_or("the state lists no region")?;
        run::check(&target, workload)?;
        let configured = flushed_run(
            spec(&target, "configured", name.clone(), Route::Steered),
            &stop,
        )
        .await?;
        if stopped(&stop) {
            return Ok((configured, None));
        }
        let setup = format!("{name}, every client sent to {first_region}'s edges");
        let geo_off = flushed_run(
            spec(&target, "geo-off", setup, Route::AllTo(first_region)),
            &stop,
        )
        .await?;
        Ok::<_, String>((configured, Some(geo_off)))
    }
    .await;
    if let Some(demo) = own_demo.take() {
        demo.shutdown().await;
    }
    let (configured, geo_off) = first_two?;

    // (c) in a demo without shields, (d) in one whose edges share one global ring over every
    // shield; without them, the comparison still has (a) and (b).
    let shaped = |options: Result<DemoOptions, String>, label: &'static str, words| {
        let stop = stop.clone();
        async move {
            if stopped(&stop) {
                return None;
            }
            let run = match options {
                Ok(options) => shaped_run(options, workload, progress, &stop, label, words).await,
                Err(e) => Err(e),
            };
            run.unwrap_or_else(|e| {
                eprintln!("verge bench: no {label} run: {e}");
                None
            })
        }
    };
    let shields_off = shaped(
        options_like(&target, Vec::new()),
        "shields-off",
        "without shields",
    )
    .await;
    let global = shaped(
        options_like(&target, shield_regions(&target)).map(|o| DemoOptions {
            topology: Topology::Global,
            ..o
        }),
        "global",
        "with one global shield ring",
    )
    .await;
    Ok(Comparison::new(configured, geo_off, shields_off).with_global(global))
}

/// The region of each shield of `state`, in its order.
fn shield_regions(state: &DemoState) -> Vec<String> {
    state
        .nodes
        .iter()
        .filter(|n| n.role == "shield")
        .map(|n| n.region.clone())
        .collect()
}

/// The workload on an in-process demo started with `options` (shaped like the target).
async fn shaped_run(
    options: DemoOptions,
    workload: &Workload,
    progress: bool,
    stop: &watch::Receiver<bool>,
    label: &str,
    words: &str,
) -> Result<Option<RunReport>, String> {
    let Some(demo) = start_demo(options, &mut stop.clone()).await? else {
        return Ok(None);
    };
    let spec = RunSpec {
        state: &demo.state,
        workload,
        label: label.to_string(),
        setup: format!("in-process demo {words} ({})", describe(&demo.state)),
        route: Route::Steered,
        progress,
        faults: None,
    };
    let result = flushed_run(spec, stop).await;
    demo.shutdown().await;
    result.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ControlEndpoints, PathLatency, RegionInfo, SiteLatency};

    fn state(origin_site: Option<SiteLatency>) -> DemoState {
        DemoState {
            hostname: "cdn.verge.test".into(),
            dns: String::new(),
            steering: String::new(),
            control: ControlEndpoints {
                api: String::new(),
                admin: String::new(),
                token: String::new(),
            },
            origin: String::new(),
            nodes: Vec::new(),
            regions: vec![RegionInfo {
                id: "us".into(),
                block: "127.1.0.0/16".into(),
                client_addr: "127.1.200.1".into(),
            }],
            samples: Vec::new(),
            latency: vec![PathLatency {
                from: "us".into(),
                to: "us".into(),
                one_way_ms: 2.0,
            }],
            origin_site,
            origin_time: None,
            ha: None,
        }
    }

    #[test]
    fn a_demo_like_a_state_keeps_its_latency_and_its_origins_site() {
        let site = SiteLatency {
            members: vec!["origin".into(), "shield-us-1".into()],
            one_way_ms: 0.5,
        };
        let like = options_like(&state(Some(site)), vec!["us".into()]).unwrap();
        assert_eq!(like.latency.local, Duration::from_millis(2));
        assert_eq!(like.latency.site, Duration::from_micros(500));
        // A state written before demos had a site: its shields were a region's latency away.
        let older = options_like(&state(None), vec!["us".into()]).unwrap();
        assert_eq!(older.latency.site, Duration::from_millis(2));
    }
}
