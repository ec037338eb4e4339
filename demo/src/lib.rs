//! A whole Verge CDN on loopback, and the benchmark that measures it from the clients' side.
//!
//! - [`state`]: what a running demo started, as the JSON `--state FILE` writes;
//! - [`regions`]: the simulated regions (loopback address blocks) and the latency between them;
//! - [`delay`]: the delay link, a TCP relay that adds the latency between regions;
//! - [`origin`]: the sample origin, objects of mixed sizes and cache headers;
//! - [`topology`]: which nodes a demo runs, where, with what configuration;
//! - [`cluster`]: the running demo ([`Demo`]), started and stopped as one; parts killed and
//!   restored;
//! - [`control`]: the demo's control plane: one control in-process, or replicas on etcd;
//! - [`replica_plan`]: where an HA demo's replicas and etcd members listen;
//! - [`replicas`]: `verge demo --ha`: control replicas as child processes sharing etcd;
//! - [`etcd`]: the HA demo's etcd cluster, members started from the `etcd` binary;
//! - [`failover`]: what `verge demo --ha` prints: the replicas, the leader, the drill;
//! - [`readiness`]: when a started demo counts as ready (a pure rule over control's views);
//! - [`report`]: what `verge demo` prints (status table, Prometheus scrape config, commands);
//! - [`bench`]: `verge bench`, the client-side benchmark (latency, hit ratio, offload, purges);
//! - [`command`]: `verge demo` and `verge bench` as the command line runs them.

pub mod bench;
pub mod cluster;
pub mod command;
pub mod control;
pub mod delay;
pub mod etcd;
pub mod failover;
pub mod origin;
pub mod orphans;
pub mod readiness;
pub mod regions;
pub mod replica_plan;
pub mod replicas;
pub mod report;
pub mod state;
pub mod topology;

pub use cluster::{Demo, DemoError};
pub use topology::{DemoOptions, HaOptions};
