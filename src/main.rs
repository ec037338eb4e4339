//! `verge`: one binary, a subcommand per role. This file only parses the command line and
//! starts a role; the roles live in their crates.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use verge_cache::SystemClock;
use verge_config::control::defaults as control_defaults;
use verge_config::edge::defaults;
use verge_config::wire::PurgeSpec;
use verge_config::{
    detect_role, ConfigErrors, ControlConfig, ControlQuickStart, EdgeConfig, EdgeQuickStart, Role,
    ShieldConfig, ShieldQuickStart,
};
use verge_config::{ConfigSource, FileWatch, ReloadError, ReloadReport};
use verge_control::client::AdminClient;
use verge_control::ControlNode;
use verge_demo::bench::{BenchCommand, Outcome, WorkloadArgs};
use verge_edge::EdgeNode;
use verge_node::{Reload, StartError};
use verge_origin_shield::ShieldNode;

/// Quick-start listeners of a shield: beside an edge's defaults, not on them.
const SHIELD_LISTEN: &str = "127.0.0.1:8081";
const SHIELD_ADMIN_LISTEN: &str = "127.0.0.1:9081";

/// Exit code for an invalid configuration.
const EXIT_INVALID_CONFIG: u8 = 2;
/// Exit code of a bench stopped by Ctrl-C (after reporting what it measured).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(name = "verge", version, about = "Verge edge CDN")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an edge node: a caching reverse proxy in front of an origin.
    Edge(EdgeArgs),
    /// Run an origin shield: a mid-tier cache in front of a pool of origin servers.
    Shield(ShieldArgs),
    /// Run the control plane: node registry, health, routing tables, durable purge log.
    Control(ControlArgs),
    /// Purge through the control plane and wait until every live node has applied it.
    Purge(PurgeArgs),
    /// Reload a running node's configuration (edge, shield or control) through its admin API:
    /// the new file is validated whole and applied, or refused with every problem.
    Reload(ReloadArgs),
    /// Run a whole CDN on loopback in this process: a sample origin, control, shields and
    /// edges in simulated regions with latency between them. Ctrl-C stops it.
    Demo(DemoArgs),
    /// Measure a CDN from its clients' side: latency per region, hit ratio, origin offload,
    /// purge propagation. Against a running demo (--state FILE) or one started in-process.
    Bench(BenchArgs),
    /// Validate a configuration file; print every problem and exit 2 if there are any.
    CheckConfig {
        /// The file to check; its role is told by its top-level table ([edge], [shield] or
        /// [controller]).
        file: PathBuf,
    },
}

#[derive(Args)]
struct ControlArgs {
    /// Configuration file (see config/examples/control.toml).
    #[arg(long, conflicts_with_all = ["listen", "admin_listen", "token_file", "data_dir"])]
    config: Option<PathBuf>,
    /// Quick start: the nodes' listener (register, heartbeat, event streams).
    #[arg(long, requires = "token_file")]
    listen: Option<String>,
    /// Quick start: the operators' listener (purges, nodes, routing, metrics).
    #[arg(long, requires = "token_file")]
    admin_listen: Option<String>,
    /// Quick start: file holding the admin API's bearer token (16+ characters).
    #[arg(long, requires = "data_dir")]
    token_file: Option<String>,
    /// Quick start: directory of the durable purge log.
    #[arg(long, requires = "token_file")]
    data_dir: Option<String>,
}

#[derive(Args)]
struct ReloadArgs {
    /// Base URL of the node's admin listener, e.g. http://127.0.0.1:9080.
    #[arg(long)]
    admin: String,
    /// The admin API's bearer token (or set VERGE_TOKEN).
    #[arg(long, env = "VERGE_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Args)]
struct DemoArgs {
    /// Regions to simulate (from us, eu, ap), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "us,eu,ap")]
    regions: Vec<String>,
    /// Edges in each region.
    #[arg(long, default_value_t = 2)]
    edges_per_region: usize,
    /// Write every endpoint as JSON to this file once the demo is ready (removed when it
    /// stops).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Write the nodes' logs to this file (default: no logs).
    #[arg(long)]
    log: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// A running demo's state file (`verge demo --state FILE`); without it, a demo is started
    /// in this process for the bench and stopped after it.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Distinct objects asked for, from the target's sample paths [default: all of them].
    #[arg(long)]
    objects: Option<usize>,
    /// Zipf popularity exponent: 0 is uniform, about 1 is typical of web traffic.
    #[arg(long, default_value_t = WorkloadArgs::default().zipf)]
    zipf: f64,
    /// Clients per region, each with one request in flight.
    #[arg(long, default_value_t = WorkloadArgs::default().concurrency)]
    concurrency: usize,
    /// Requests per second per region [default: as fast as the clients go].
    #[arg(long)]
    rate: Option<f64>,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value_t = WorkloadArgs::default().duration)]
    duration: String,
    /// Traffic before measuring starts (fills the caches; not counted).
    #[arg(long, default_value_t = WorkloadArgs::default().warmup)]
    warmup: String,
    /// Share of operations that are purges through control (0 to 0.5).
    #[arg(long, default_value_t = WorkloadArgs::default().purge_share)]
    purge_share: f64,
    /// How clients find their edge: dns (GeoDNS), http (302 steering) or none.
    #[arg(long, default_value_t = WorkloadArgs::default().steering)]
    steering: String,
    /// Bound on one request.
    #[arg(long, default_value_t = WorkloadArgs::default().timeout)]
    timeout: String,
    /// Seed of the object popularity order and the clients' choices.
    #[arg(long, default_value_t = WorkloadArgs::default().seed)]
    seed: u64,
    /// Directory for results.json and the latency SVG.
    #[arg(long, default_value = "verge-bench")]
    out: PathBuf,
    /// Also run with geo steering off and with the shield tier off (in a demo started without
    /// shields), and report what each buys.
    #[arg(long)]
    baseline: bool,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args)]
struct PurgeArgs {
    /// Base URL of control's admin listener, e.g. http://127.0.0.1:7071.
    #[arg(long)]
    control: String,
    /// The admin API's bearer token (or set VERGE_TOKEN).
    #[arg(long, env = "VERGE_TOKEN", hide_env_values = true)]
    token: String,
    /// An absolute URL to purge (every variant); repeatable.
    #[arg(long = "url")]
    urls: Vec<String>,
    /// An absolute URL prefix to purge; repeatable.
    #[arg(long = "prefix")]
    prefixes: Vec<String>,
    /// A surrogate key (Surrogate-Key / Cache-Tag) to purge; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Purge everything.
    #[arg(long)]
    all: bool,
    /// Mark stale (revalidate before use) instead of removing.
    #[arg(long)]
    soft: bool,
    /// How long to wait for every live node to apply it.
    #[arg(long, default_value = "30s")]
    timeout: String,
}

#[derive(Args)]
struct ShieldArgs {
    /// Configuration file (see config/examples/shield.toml).
    #[arg(long, conflicts_with_all = ["listen", "admin_listen", "origin", "control", "node_id", "region"])]
    config: Option<PathBuf>,
    /// Quick start: listener edges connect to.
    #[arg(long, requires = "origin")]
    listen: Option<String>,
    /// Quick start: admin listener address (/metrics, /healthz).
    #[arg(long, requires = "origin")]
    admin_listen: Option<String>,
    /// Quick start: an origin server URL; repeat for a pool.
    #[arg(long)]
    origin: Vec<String>,
    #[command(flatten)]
    node: NodeArgs,
}

/// Quick start: who the node is to the control plane, and where that is.
#[derive(Args)]
struct NodeArgs {
    /// Quick start: base URL of control's node listener, e.g. http://127.0.0.1:7000.
    #[arg(long)]
    control: Option<String>,
    /// Quick start: this node's id, unique in the deployment.
    #[arg(long)]
    node_id: Option<String>,
    /// Quick start: the region this node serves.
    #[arg(long)]
    region: Option<String>,
}

#[derive(Args)]
struct EdgeArgs {
    /// Configuration file (see config/examples/edge.toml).
    #[arg(long, conflicts_with_all = ["listen", "admin_listen", "origin", "admin_token", "shield", "control", "node_id", "region", "tls_listen", "tls_cert", "tls_key", "upgrade_socket"])]
    config: Option<PathBuf>,
    /// Quick start: client listener address.
    #[arg(long, requires = "origin")]
    listen: Option<String>,
    /// Quick start: admin listener address (/metrics, /healthz).
    #[arg(long, requires = "origin")]
    admin_listen: Option<String>,
    /// Quick start: origin URL, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    origin: Option<String>,
    /// Quick start: bearer token enabling POST /v1/purge on the admin listener (16+ characters).
    #[arg(long, requires = "origin")]
    admin_token: Option<String>,
    /// Quick start: an origin shield URL to send misses to; repeat for several.
    #[arg(long, requires = "origin")]
    shield: Vec<String>,
    /// Quick start: an HTTPS listener address; repeatable. Needs --tls-cert and --tls-key.
    #[arg(long, requires_all = ["origin", "tls_cert", "tls_key"])]
    tls_listen: Vec<String>,
    /// Quick start: a PEM certificate chain; repeat with --tls-key, one pair per certificate
    /// (SNI picks among them; the first is the default).
    #[arg(long, requires_all = ["origin", "tls_key", "tls_listen"])]
    tls_cert: Vec<String>,
    /// Quick start: the PEM private key of the --tls-cert in the same position.
    #[arg(long, requires_all = ["origin", "tls_cert", "tls_listen"])]
    tls_key: Vec<String>,
    /// Quick start: a Unix socket where this process hands its listening sockets to a newer
    /// one started with the same flag (zero-downtime upgrade).
    #[arg(long, requires = "origin")]
    upgrade_socket: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
}

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
        Command::Reload(args) => run_reload(args),
        Command::Demo(args) => run_demo(args),
        Command::Bench(args) => run_bench(args),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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

/// `verge reload`: exit 0 when applied (or nothing changed), 1 when refused, 2 when the node
/// cannot be asked.
fn run_reload(args: ReloadArgs) -> ExitCode {
    let client = match AdminClient::new(&args.admin, &args.token) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("verge reload: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let runtime = match runtime_for("reload", 1) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(client.reload()) {
        Ok(Ok(report)) if report.changed.is_empty() => {
            println!("configuration version {}: nothing changed", report.version);
            ExitCode::SUCCESS
        }
        Ok(Ok(report)) => {
            println!(
                "configuration version {}: applied {}",
                report.version,
                report.changed.join(", ")
            );
            ExitCode::SUCCESS
        }
        Ok(Err(refusal)) => {
            eprintln!(
                "verge reload: refused ({}); the running configuration stays:",
                refusal.error
            );
            for error in &refusal.errors {
                eprintln!("  - {error}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("verge reload: {e}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
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
                tls_listen: &args.tls_listen,
                tls_certificates: &tls_certificates,
                upgrade_socket: args.upgrade_socket.as_deref(),
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
    let from = match &args.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::CommandLine,
    };
    serve("edge", config.server.worker_threads, upstream, || async {
        EdgeNode::bind(&config, from, Arc::new(SystemClock)).await
    })
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
    let from = match &args.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::CommandLine,
    };
    serve(
        "shield",
        config.server.worker_threads,
        servers.join(", "),
        || async { ShieldNode::bind(&config, from, Arc::new(SystemClock)).await },
    )
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
            }),
        ),
        (None, None) => {
            eprintln!("verge control: give --config FILE, or --token-file FILE --data-dir DIR (with optional --listen and --admin-listen)");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(errors) => return report_invalid(&source, &errors),
    };
    let runtime = match runtime_for("control", 0) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let from = match &args.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::CommandLine,
    };
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
        let triggers = tokio::spawn(reload_triggers(move || reloader.reload(), file));
        node.run(shutdown_signal()).await;
        triggers.abort();
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
    if let Err(e) = spec.validate() {
        eprintln!("verge purge: {e}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let timeout = match verge_config::parse_duration(&args.timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("verge purge: --timeout: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let client = match AdminClient::new(&args.control, &args.token) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("verge purge: --control: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let runtime = match runtime_for("purge", 1) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let accepted = match client.purge(&spec).await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("verge purge: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("purge {} accepted (seq {})", accepted.id, accepted.seq);
        let (status, complete) = match client.wait(accepted.id, timeout).await {
            Ok(status) => (status, true),
            Err(e) => {
                eprintln!("verge purge: {e}");
                match client.status(accepted.id).await {
                    Ok(status) => (status, false),
                    Err(_) => return ExitCode::FAILURE,
                }
            }
        };
        println!("{:<24} {:<7} {:<8} applied after", "node", "role", "state");
        for node in &status.nodes {
            let after = node
                .applied_after_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"));
            println!(
                "{:<24} {:<7} {:<8} {after}",
                node.id.as_str(),
                node.role.to_string(),
                node.state
            );
        }
        match (complete, status.completed_after_us) {
            (true, Some(us)) => {
                println!(
                    "complete on every live node after {:.1} ms",
                    us as f64 / 1000.0
                );
                ExitCode::SUCCESS
            }
            (true, None) => {
                println!("complete on every live node");
                ExitCode::SUCCESS
            }
            (false, _) => ExitCode::FAILURE,
        }
    })
}

fn run_demo(args: DemoArgs) -> ExitCode {
    let options = verge_demo::DemoOptions::for_regions(&args.regions).map(|options| {
        verge_demo::DemoOptions {
            edges_per_region: args.edges_per_region,
            ..options
        }
    });
    let options = match options.and_then(|o| o.validate().map(|()| o)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("verge demo: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    if let Some(path) = &args.log {
        match std::fs::File::create(path) {
            Ok(file) => tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "info,hickory_server=warn",
                ))
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .init(),
            Err(e) => {
                eprintln!("verge demo: --log {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match runtime_for("demo", 0) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let nodes = options.regions.len() * options.edges_per_region;
        println!(
            "Starting a Verge CDN on loopback: a sample origin, control, {} shield(s) and {nodes} edge(s) in {}…\n",
            options.shields.len(),
            args.regions.join(", ")
        );
        let demo = tokio::select! {
            started = verge_demo::Demo::start(options) => match started {
                Ok(demo) => demo,
                Err(e) => {
                    eprintln!("verge demo: {e}");
                    return ExitCode::FAILURE;
                }
            },
            () = shutdown_signal() => return ExitCode::SUCCESS,
        };
        if let Some(path) = &args.state {
            if let Err(e) = demo.state.write_to(path) {
                eprintln!("verge demo: --state {}: {e}", path.display());
                demo.shutdown().await;
                return ExitCode::FAILURE;
            }
        }
        let verge = match (std::env::current_exe(), std::env::current_dir()) {
            (Ok(exe), Ok(cwd)) => verge_demo::report::command_name(&exe, &cwd),
            _ => "verge".to_string(),
        };
        println!(
            "{}",
            verge_demo::report::summary(&demo.state, args.state.as_deref(), &verge)
        );
        shutdown_signal().await;
        println!("Stopping…");
        demo.shutdown().await;
        if let Some(path) = &args.state {
            let _ = std::fs::remove_file(path);
        }
        println!("Stopped.");
        ExitCode::SUCCESS
    })
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
    if let Err(errors) = workload.validate() {
        eprintln!("verge bench: {errors}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let command = BenchCommand {
        state: args.state,
        workload,
        out: args.out,
        baseline: args.baseline,
        progress: !args.no_progress,
    };
    let runtime = match runtime_for("bench", 0) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        // Ctrl-C ends the run; what was measured is still printed and written.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("verge bench: stopping; reporting what was measured so far");
            let _ = stop_tx.send(true);
            std::future::pending::<()>().await;
        });
        match verge_demo::bench::command(command, stop).await {
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

/// What `serve` needs of a role's node.
trait RoleNode {
    fn data_addr(&self) -> SocketAddr;
    fn admin_addr(&self) -> SocketAddr;
    fn reloader(&self) -> Arc<dyn Reload>;
    fn run(self, shutdown: impl Future<Output = ()> + Send) -> impl Future<Output = ()>;
}

impl RoleNode for EdgeNode {
    fn data_addr(&self) -> SocketAddr {
        EdgeNode::data_addr(self)
    }
    fn admin_addr(&self) -> SocketAddr {
        EdgeNode::admin_addr(self)
    }
    fn reloader(&self) -> Arc<dyn Reload> {
        EdgeNode::reloader(self)
    }
    fn run(self, shutdown: impl Future<Output = ()> + Send) -> impl Future<Output = ()> {
        EdgeNode::run(self, shutdown)
    }
}

impl RoleNode for ShieldNode {
    fn data_addr(&self) -> SocketAddr {
        ShieldNode::data_addr(self)
    }
    fn admin_addr(&self) -> SocketAddr {
        ShieldNode::admin_addr(self)
    }
    fn reloader(&self) -> Arc<dyn Reload> {
        ShieldNode::reloader(self)
    }
    fn run(self, shutdown: impl Future<Output = ()> + Send) -> impl Future<Output = ()> {
        ShieldNode::run(self, shutdown)
    }
}

/// Starts the runtime, binds the role's node and serves until Ctrl-C or SIGTERM.
fn serve<N, B, F>(role: &str, worker_threads: usize, upstream: String, bind: B) -> ExitCode
where
    N: RoleNode,
    B: FnOnce() -> F,
    F: Future<Output = Result<N, StartError>>,
{
    let runtime = match runtime_for(role, worker_threads) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let node = match bind().await {
            Ok(node) => node,
            Err(e) => {
                eprintln!("verge {role}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            role,
            listen = %node.data_addr(),
            admin = %node.admin_addr(),
            upstream,
            "serving"
        );
        let reloader = node.reloader();
        let file = reloader.watched_file();
        let triggers = tokio::spawn(reload_triggers(move || reloader.reload(), file));
        node.run(shutdown_signal()).await;
        triggers.abort();
        tracing::info!(role, "stopped");
        ExitCode::SUCCESS
    })
}

/// One thread per core unless configured (0 means that); one thread uses the single-threaded
/// scheduler, which costs less per request than the work-stealing one.
/// [`build_runtime`], or the exit code after saying why it could not start.
fn runtime_for(role: &str, worker_threads: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    build_runtime(worker_threads).map_err(|e| {
        eprintln!("verge {role}: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn build_runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
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

/// How often a configuration file is checked for changes.
const CONFIG_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Reloads on SIGHUP and whenever `file` changes; runs until aborted. Each reload runs off the
/// async workers (it reads files) and logs its own outcome.
async fn reload_triggers<F>(reload: F, file: Option<PathBuf>)
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

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
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
