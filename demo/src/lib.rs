//! A whole Verge CDN on loopback, and the benchmark that measures it from the clients' side.
//!
//! - [`state`]: what a running demo started, as the JSON `--state FILE` writes;
//! - [`regions`]: the simulated regions (loopback address blocks) and the latency between them.

pub mod regions;
pub mod state;
