//! `verge`: one binary, a subcommand per role. This file parses the command line ([`cli`])
//! and hands each subcommand to the crate that runs it; the process around a role (runtime,
//! signals, reload triggers) is `verge_node::process`, the same for every role.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use verge_config::control::defaults as control_defaults;
use verge_config::edge::defaults;
use verge_config::wire::PurgeSpec;
use verge_config::{
    detect_role, ConfigErrors, ConfigFile, ConfigSource, ControlConfig, ControlQuickStart,
    EdgeConfig, EdgeQuickStart, Role, ShieldConfig, ShieldQuickStart,
};
use verge_control::ControlNode;
use verge_demo::bench::{BenchCommand, WorkloadArgs};
use verge_demo::command::DemoCommand;
use verge_edge::EdgeRole;
use verge_node::process;
use verge_origin_shield::ShieldRole;

use cli::{
    BenchArgs, Cli, Command, ControlArgs, DemoArgs, EdgeArgs, PurgeArgs, ShapeArgs, ShieldArgs,
};

/// Quick-start listeners of a shield: beside an edge's defaults, not on them.
const SHIELD_LISTEN: &str = "127.0.0.1:8081";
const SHIELD_ADMIN_LISTEN: &str = "127.0.0.1:9081";

/// Exit code for an invalid configuration or command line.
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo logs to its own file or not at all: its screen is the status table.
    if !matches!(cli.command, Command::Demo(_) | Command::Bench(_)) {
        init_logging();
    }
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Edge(args) => run_edge(args),
        Command::Shield(args) => run_shield(args),
        Command::Control(args) => run_control(args),
        Command::Purge(args) => run_purge(args),
        Command::Status(args) => block_on(
            "status",
            verge_control::commands::status(&args.control, &args.token),
        ),
        Command::Reload(args) => block_on(
            "reload",
            verge_control::commands::reload(&args.admin, &args.token),
        ),
        Command::Demo(args) => run_demo(args),
        Command::Bench(args) => run_bench(args),
    }
}

/// Runs one admin-API command on a one-thread runtime.
fn block_on(name: &str, command: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match process::runtime(name, 1) {
        Ok(runtime) => runtime.block_on(command),
        Err(code) => code,
    }
}

/// Where a reload reads the configuration again: the file given, else nothing but the files
/// the command line named.
fn source_of(config: &Option<PathBuf>) -> ConfigSource {
    match config {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::CommandLine,
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    // Colours only on a terminal: a log file, a pipe or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
fn report_invalid(source: &str, errors: &ConfigErrors) -> ExitCode {
    eprintln!("{source}: {errors}");
    ExitCode::from(EXIT_INVALID_CONFIG)
}
fn check_config(file: &PathBuf) -> ExitCode {
    let shown = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            return report_invalid(
                &shown,
                &ConfigErrors::single("", format!("cannot read file: {e}")),
            )
        }
    };
    let result = detect_role(&text).and_then(|role| match role {
        Role::Edge => EdgeConfig::from_toml(&text).map(|_| role),
        Role::Shield => ShieldConfig::from_toml(&text).map(|_| role),
        Role::Control => ControlConfig::from_toml(&text).map(|_| role),
    });
    match result {
        Ok(role) => {
            println!("{shown}: valid {} configuration", role.as_str());
            ExitCode::SUCCESS
        }
        Err(errors) => report_invalid(&shown, &errors),
    }
}
fn run_edge(args: EdgeArgs) -> ExitCode {
    if args.tls_cert.len() != args.tls_key.len() {
        eprintln!(
            "verge edge: {} --tls-cert but {} --tls-key: give them in pairs, one key per certificate",
            args.tls_cert.len(),
            args.tls_key.len()
        );
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let tls_certificates: Vec<(String, String)> = args
        .tls_cert
        .iter()
        .cloned()
        .zip(args.tls_key.iter().cloned())
        .collect();
    let (source, config) = match (&args.config, &args.origin) {
        (Some(path), _) => (path.display().to_string(), EdgeConfig::from_file(path)),
        (None, Some(origin)) => (
            "command line".to_string(),
            EdgeConfig::quick_start(&EdgeQuickStart {
                listen: args.listen.as_deref().unwrap_or(defaults::LISTEN),
                admin_listen: args
                    .admin_listen
                    .as_deref()
                    .unwrap_or(defaults::ADMIN_LISTEN),
                origin,
                admin_token: args.admin_token.as_deref(),
                shields: &args.shield,
                node_id: args.node.node_id.as_deref(),
                region: args.node.region.as_deref(),
                control: args.node.control.as_deref(),
                control_token_file: args.node.control_token_file.as_deref(),
                tls_listen: &args.tls_listen,
                tls_certificates: &tls_certificates,
                upgrade_socket: args.upgrade_socket.as_deref(),
                access_log: args.node.access_log.as_deref(),
            }),
        ),
        (None, None) => {
            eprintln!("verge edge: give --config FILE, or --origin URL (with optional --listen and --admin-listen)");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(errors) => return report_invalid(&source, &errors),
    };
    let upstream = config.upstream.origin.to_string();
    let threads = config.server.worker_threads;
    process::serve::<EdgeRole>("edge", threads, &config, source_of(&args.config), upstream)
}
fn run_shield(args: ShieldArgs) -> ExitCode {
    let (source, config) = match &args.config {
        Some(path) => (path.display().to_string(), ShieldConfig::from_file(path)),
        None if !args.origin.is_empty() => (
            "command line".to_string(),
            ShieldConfig::quick_start(&ShieldQuickStart {
                listen: args.listen.as_deref().unwrap_or(SHIELD_LISTEN),
                admin_listen: args.admin_listen.as_deref().unwrap_or(SHIELD_ADMIN_LISTEN),
                origins: &args.origin,
                node_id: args.node.node_id.as_deref(),
                region: args.node.region.as_deref(),
                control: args.node.control.as_deref(),
                control_token_file: args.node.control_token_file.as_deref(),
                access_log: args.node.access_log.as_deref(),
            }),
        ),
        None => {
            eprintln!("verge shield: give --config FILE, or --origin URL (repeatable, with optional --listen and --admin-listen)");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(errors) => return report_invalid(&source, &errors),
    };
    let servers: Vec<String> = config
        .origin
        .servers
        .iter()
        .map(ToString::to_string)
        .collect();
    let threads = config.server.worker_threads;
    let from = source_of(&args.config);
    process::serve::<ShieldRole>("shield", threads, &config, from, servers.join(", "))
}
fn run_control(args: ControlArgs) -> ExitCode {
    let (source, config) = match (&args.config, &args.token_file) {
        (Some(path), _) => (path.display().to_string(), ControlConfig::from_file(path)),
        (None, Some(token_file)) => (
            "command line".to_string(),
            ControlConfig::quick_start(&ControlQuickStart {
                listen: args.listen.as_deref().unwrap_or(control_defaults::LISTEN),
                admin_listen: args
                    .admin_listen
                    .as_deref()
                    .unwrap_or(control_defaults::ADMIN_LISTEN),
                token_file,
                data_dir: args.data_dir.as_deref().unwrap_or(""),
                node_token_file: args.node_token_file.as_deref(),
                etcd: args.etcd.as_deref(),
            }),
        ),
        (None, None) => {
            eprintln!("verge control: give --config FILE, or --token-file FILE with --data-dir DIR or --etcd URL,URL… (and optional --listen and --admin-listen)");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(errors) => return report_invalid(&source, &errors),
    };
    let runtime = match process::runtime("control", 0) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let from = source_of(&args.config);
    runtime.block_on(async {
        let data_dir = config.data_dir.display().to_string();
        let node = match ControlNode::bind_with_source(config, from).await {
            Ok(node) => node,
            Err(e) => {
                eprintln!("verge control: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shown =
            |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_string(), |a| a.to_string());
        tracing::info!(
            nodes = %node.node_addr,
            admin = %node.admin_addr,
            dns = shown(node.dns_addr),
            steering = shown(node.steering_addr),
            data_dir,
            "control serving"
        );
        let reloader = node.reloader();
        let file = reloader.source().path().map(std::path::Path::to_path_buf);
        process::until_stopped(move || reloader.reload(), file, |stop| node.run(stop)).await;
        tracing::info!("control stopped");
        ExitCode::SUCCESS
    })
}
fn run_purge(args: PurgeArgs) -> ExitCode {
    let spec = PurgeSpec {
        urls: args.urls,
        prefixes: args.prefixes,
        tags: args.tags,
        all: args.all,
        soft: args.soft,
    };
    let command = verge_control::commands::purge(&args.control, &args.token, &spec, &args.timeout);
    block_on("purge", command)
}

/// `options` with the tiers and origin the command line asks for; a bad topology name or
/// origin time is refused.
fn shaped(
    options: verge_demo::DemoOptions,
    shape: &ShapeArgs,
) -> Result<verge_demo::DemoOptions, String> {
    let topology = shape
        .topology
        .parse()
        .map_err(|e| format!("--topology: {e}"));
    let origin_time = match &shape.origin_time {
        Some(text) => text
            .parse()
            .map_err(|e| format!("--origin-time {text:?}: {e}")),
        None => Ok(options.origin_time),
    };
    let (topology, origin_time) = match (topology, origin_time) {
        (Ok(topology), Ok(origin_time)) => (topology, origin_time),
        (topology, origin_time) => {
            let problems: Vec<String> = [topology.err(), origin_time.err()]
                .into_iter()
                .flatten()
                .collect();
            return Err(problems.join("\n  "));
        }
    };
    let options = verge_demo::DemoOptions {
        topology,
        tier_levels: shape.tier_levels,
        origin_time,
        ..options
    };
    options.validate()?;
    Ok(options)
}

fn run_demo(args: DemoArgs) -> ExitCode {
    let options = verge_demo::DemoOptions::for_regions(&args.regions)
        .map(|options| verge_demo::DemoOptions {
            edges_per_region: args.edges_per_region,
            ..options
        })
        .and_then(|options| shaped(options, &args.shape));
    let options = match options.and_then(|o| o.validate().map(|()| o)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("verge demo: invalid flags:\n  {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let options = if args.ha {
        // Before anything starts: the replicas are this binary, etcd comes from PATH.
        let Some(etcd) = verge_demo::etcd::find() else {
            eprintln!("verge demo --ha: {}", verge_demo::etcd::MISSING);
            return ExitCode::from(EXIT_INVALID_CONFIG);
        };
        let verge = match std::env::current_exe() {
            Ok(verge) => verge,
            Err(e) => {
                eprintln!(
                    "verge demo --ha: cannot tell where this binary is, to run the replicas: {e}"
                );
                return ExitCode::FAILURE;
            }
        };
        verge_demo::DemoOptions {
            ha: Some(verge_demo::HaOptions { verge, etcd }),
            ..options
        }
    } else {
        options
    };
    if let Some(path) = &args.log {
        if let Err(e) = log_to_file(path) {
            eprintln!("verge demo: --log {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    verge_demo::command::demo(DemoCommand {
        options,
        regions: args.regions,
        state: args.state,
    })
}

/// Sends the in-process nodes' logs to `path`, created or emptied: `info` and up, or what
/// `RUST_LOG` says.
fn log_to_file(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn")),
        )
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .init();
    Ok(())
}

fn run_bench(args: BenchArgs) -> ExitCode {
    let workload = WorkloadArgs {
        objects: args.objects,
        zipf: args.zipf,
        concurrency: args.concurrency,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        purge_share: args.purge_share,
        steering: args.steering,
        timeout: args.timeout,
        seed: args.seed,
    };
    // Every problem with the flags, listed at once before anything starts.
    let mut problems = Vec::new();
    let checked = workload.validate().map_err(|e| problems.extend(e.0)).ok();
    // Against a bad --duration (reported above), faults are checked against the longest one.
    let duration = checked
        .as_ref()
        .map_or(verge_demo::bench::workload::MAX_DURATION, |w| w.duration);
    let state = args.state.as_deref();
    if let Err(error) = verge_demo::bench::fault_plan(&args.faults, state, args.baseline, duration)
    {
        problems.push(error);
    }
    if args.state.is_some() && args.shape.origin_time.is_some() {
        problems.push(
            "--origin-time shapes the in-process demo; a running demo's origin is the one it \
             was started with (verge demo --origin-time)"
                .to_string(),
        );
    }
    let demo = shaped(verge_demo::DemoOptions::default(), &args.shape)
        .map_err(|error| problems.push(error))
        .ok();
    let Some(demo) = demo.filter(|_| problems.is_empty()) else {
        eprintln!("verge bench: invalid flags:\n  {}", problems.join("\n  "));
        return ExitCode::from(EXIT_INVALID_CONFIG);
    };
    if let Some(path) = &args.log {
        if let Err(e) = log_to_file(path) {
            eprintln!("verge bench: --log {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let command = BenchCommand {
        state: args.state,
        workload,
        out: args.out,
        baseline: args.baseline,
        progress: !args.no_progress,
        faults: args.faults,
        demo,
    };
    verge_demo::command::bench(command)
}
