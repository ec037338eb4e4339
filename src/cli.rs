//! The command line: every subcommand and its flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use verge_demo::bench::WorkloadArgs;

#[derive(Parser)]
#[command(name = "verge", version, about = "Verge edge CDN")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run an edge node: a caching reverse proxy in front of an origin.
    Edge(EdgeArgs),
    /// Run an origin shield: a mid-tier cache in front of a pool of origin servers.
    Shield(ShieldArgs),
    /// Run the control plane: node registry, health, routing tables, durable purge log.
    Control(ControlArgs),
    /// Purge through the control plane and wait until every live node has applied it.
    Purge(PurgeArgs),
    /// The fleet at a glance from control's admin API: regions and nodes (health, version, last
    /// heartbeat, traffic), the routing table and recent purges. Exits 1 when a node is down.
    Status(StatusArgs),
    /// Reload a running node's configuration (edge, shield or control) through its admin API:
    /// the new file is validated whole and applied, or refused with every problem.
    Reload(ReloadArgs),
    /// Run a whole CDN on loopback in this process: a sample origin, control, shields and
    /// edges in simulated regions with latency between them (--ha: control replicas on etcd).
    /// Ctrl-C stops it.
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
pub struct ControlArgs {
    /// Configuration file (see config/examples/control.toml).
    #[arg(long, conflicts_with_all = ["listen", "admin_listen", "token_file", "data_dir", "node_token_file", "etcd"])]
    pub config: Option<PathBuf>,
    /// Quick start: the nodes' listener (register, heartbeat, event streams).
    #[arg(long, requires = "token_file")]
    pub listen: Option<String>,
    /// Quick start: the operators' listener (purges, nodes, routing, metrics).
    #[arg(long, requires = "token_file")]
    pub admin_listen: Option<String>,
    /// Quick start: file holding the admin API's bearer token (16+ characters).
    #[arg(long)]
    pub token_file: Option<String>,
    /// Quick start: directory of the durable purge log.
    #[arg(long, requires = "token_file", conflicts_with = "etcd")]
    pub data_dir: Option<String>,
    /// Quick start: keep purges, registrations and routing tables in this etcd cluster (client
    /// URLs, comma-separated), shared with the other control replicas, instead of a data
    /// directory.
    #[arg(long, requires = "token_file", value_delimiter = ',')]
    pub etcd: Option<Vec<String>>,
    /// Quick start: file holding the token every node must present (16+ characters, not the
    /// admin token); without it the node listener is open to whoever reaches it.
    #[arg(long, requires = "token_file")]
    pub node_token_file: Option<String>,
}

#[derive(Args)]
pub struct ReloadArgs {
    /// Base URL of the node's admin listener, e.g. http://127.0.0.1:9080.
    #[arg(long)]
    pub admin: String,
    /// The admin API's bearer token (or set VERGE_TOKEN).
    #[arg(long, env = "VERGE_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Regions to simulate (from us, eu, ap), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "us,eu,ap")]
    pub regions: Vec<String>,
    /// Edges in each region.
    #[arg(long, default_value_t = 2)]
    pub edges_per_region: usize,
    /// Write every endpoint as JSON to this file once the demo is ready (removed when it
    /// stops).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Write the nodes' logs to this file (default: no logs).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Control as 3 replicas on a 3-member etcd cluster (needs `etcd` on PATH: Debian's
    /// etcd-server), each replica a process of its own: kill the leader with `kill -9` and
    /// watch purges still reach every node.
    #[arg(long)]
    pub ha: bool,
    #[command(flatten)]
    pub shape: ShapeArgs,
}

/// How an in-process demo is shaped: its shield tiers (control's `[tiers]`) and its origin.
#[derive(Args)]
pub struct ShapeArgs {
    /// Which shields each region's edges use: global, regional, origin-near or auto.
    #[arg(long, default_value = "auto")]
    pub topology: String,
    /// 2: regional shields send their misses on to the shields near the origin (with regional
    /// or auto).
    #[arg(long, default_value_t = 1)]
    pub tier_levels: u8,
    /// How long the sample origin takes to answer each fetch: MEDIAN/P99 (log-normal, e.g.
    /// 2ms/20ms), one TIME for always that long, or 0 for at once [default: 2ms/20ms].
    #[arg(long)]
    pub origin_time: Option<String>,
}

#[derive(Args)]
pub struct BenchArgs {
    /// A running demo's state file (`verge demo --state FILE`); without it, a demo is started
    /// in this process for the bench and stopped after it.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Distinct objects asked for, from the target's sample paths [default: all of them].
    #[arg(long)]
    pub objects: Option<usize>,
    /// Zipf popularity exponent: 0 is uniform, about 1 is typical of web traffic.
    #[arg(long, default_value_t = WorkloadArgs::default().zipf)]
    pub zipf: f64,
    /// Clients per region, each with one request in flight.
    #[arg(long, default_value_t = WorkloadArgs::default().concurrency)]
    pub concurrency: usize,
    /// Requests per second per region [default: as fast as the clients go].
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value_t = WorkloadArgs::default().duration)]
    pub duration: String,
    /// Traffic before measuring starts (fills the caches; not counted).
    #[arg(long, default_value_t = WorkloadArgs::default().warmup)]
    pub warmup: String,
    /// Share of operations that are purges through control (0 to 0.5).
    #[arg(long, default_value_t = WorkloadArgs::default().purge_share)]
    pub purge_share: f64,
    /// How clients find their edge: dns (GeoDNS), http (302 steering) or none.
    #[arg(long, default_value_t = WorkloadArgs::default().steering)]
    pub steering: String,
    /// Bound on one request.
    #[arg(long, default_value_t = WorkloadArgs::default().timeout)]
    pub timeout: String,
    /// Seed of the object popularity order and the clients' choices.
    #[arg(long, default_value_t = WorkloadArgs::default().seed)]
    pub seed: u64,
    /// Directory for results.json and the latency SVG.
    #[arg(long, default_value = "verge-bench")]
    pub out: PathBuf,
    /// Also run with geo steering off and with the shield tier off (in a demo started without
    /// shields), and report what each buys.
    #[arg(long)]
    pub baseline: bool,
    /// Kill and restore parts of the in-process demo during the measured part: a comma-separated
    /// list of kill:PART@TIME and restore:PART@TIME (PART: a node id such as shield-us-1 or
    /// us-1, control, origin; TIME from the start of the measured part, such as 3s or 500ms).
    /// Repeatable. Example: --fault kill:shield-us-1@3s,restore:shield-us-1@8s
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
    /// The in-process demo's tiers and origin (with --baseline, the tiers of the configured
    /// run; a running demo's are its control's [tiers] and its own origin).
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Write the in-process demos' logs to this file (default: no logs).
    #[arg(long)]
    pub log: Option<PathBuf>,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Base URL of control's admin listener, e.g. http://127.0.0.1:7071.
    #[arg(long)]
    pub control: String,
    /// The admin API's bearer token (or set VERGE_TOKEN).
    #[arg(long, env = "VERGE_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Args)]
pub struct PurgeArgs {
    /// Base URL of control's admin listener, e.g. http://127.0.0.1:7071.
    #[arg(long)]
    pub control: String,
    /// The admin API's bearer token (or set VERGE_TOKEN).
    #[arg(long, env = "VERGE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// An absolute URL to purge (every variant); repeatable.
    #[arg(long = "url")]
    pub urls: Vec<String>,
    /// An absolute URL prefix to purge; repeatable.
    #[arg(long = "prefix")]
    pub prefixes: Vec<String>,
    /// A surrogate key (Surrogate-Key / Cache-Tag) to purge; repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Purge everything.
    #[arg(long)]
    pub all: bool,
    /// Mark stale (revalidate before use) instead of removing.
    #[arg(long)]
    pub soft: bool,
    /// How long to wait for every live node to apply it.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

#[derive(Args)]
pub struct ShieldArgs {
    /// Configuration file (see config/examples/shield.toml).
    #[arg(long, conflicts_with_all = ["listen", "admin_listen", "origin", "control", "node_id", "region", "access_log"])]
    pub config: Option<PathBuf>,
    /// Quick start: listener edges connect to.
    #[arg(long, requires = "origin")]
    pub listen: Option<String>,
    /// Quick start: admin listener address (/metrics, /healthz).
    #[arg(long, requires = "origin")]
    pub admin_listen: Option<String>,
    /// Quick start: an origin server URL; repeat for a pool.
    #[arg(long)]
    pub origin: Vec<String>,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Quick start: who the node is to the control plane, and where that is.
#[derive(Args)]
pub struct NodeArgs {
    /// Quick start: base URL of control's node listener, e.g. http://127.0.0.1:7000.
    #[arg(long)]
    pub control: Option<String>,
    /// Quick start: a file holding the token control's node listener asks for.
    #[arg(long, requires = "control")]
    pub control_token_file: Option<String>,
    /// Quick start: this node's id, unique in the deployment.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Quick start: the region this node serves.
    #[arg(long)]
    pub region: Option<String>,
    /// Quick start: write an access log (JSON, one line per request) to this file; `-` for
    /// stdout. SIGUSR1 reopens the file.
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,
}

#[derive(Args)]
pub struct EdgeArgs {
    /// Configuration file (see config/examples/edge.toml).
    #[arg(long, conflicts_with_all = ["listen", "admin_listen", "origin", "admin_token", "shield", "control", "node_id", "region", "tls_listen", "tls_cert", "tls_key", "upgrade_socket", "access_log"])]
    pub config: Option<PathBuf>,
    /// Quick start: client listener address.
    #[arg(long, requires = "origin")]
    pub listen: Option<String>,
    /// Quick start: admin listener address (/metrics, /healthz).
    #[arg(long, requires = "origin")]
    pub admin_listen: Option<String>,
    /// Quick start: origin URL, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    pub origin: Option<String>,
    /// Quick start: bearer token enabling POST /v1/purge on the admin listener (16+ characters).
    #[arg(long, requires = "origin")]
    pub admin_token: Option<String>,
    /// Quick start: an origin shield URL to send misses to; repeat for several.
    #[arg(long, requires = "origin")]
    pub shield: Vec<String>,
    /// Quick start: an HTTPS listener address; repeatable. Needs --tls-cert and --tls-key.
    #[arg(long, requires_all = ["origin", "tls_cert", "tls_key"])]
    pub tls_listen: Vec<String>,
    /// Quick start: a PEM certificate chain; repeat with --tls-key, one pair per certificate
    /// (SNI picks among them; the first is the default).
    #[arg(long, requires_all = ["origin", "tls_key", "tls_listen"])]
    pub tls_cert: Vec<String>,
    /// Quick start: the PEM private key of the --tls-cert in the same position.
    #[arg(long, requires_all = ["origin", "tls_cert", "tls_listen"])]
    pub tls_key: Vec<String>,
    /// Quick start: a Unix socket where this process hands its listening sockets to a newer
    /// one started with the same flag (zero-downtime upgrade).
    #[arg(long, requires = "origin")]
    pub upgrade_socket: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
}
