//! The origin shield: a mid-tier cache node. It runs the same node runtime and cache pipeline as
//! an edge (`verge_node`), with a pool of origin servers as its upstream, so the misses of every
//! edge collapse into one origin fetch per object.
//!
//! - [`pool`]: the origin pool — healthy servers only, retries within a budget, health checks;
//! - [`dns`]: the origin servers' host names, resolved and refreshed as their TTLs say;
//! - [`tier`]: the pool, or the upper shields in front of it when control's plan has two levels;
//! - [`node`]: [`ShieldNode`], what `verge shield` runs.

pub mod dns;
pub mod node;
pub mod pool;
pub mod tier;

pub use node::{ShieldNode, ShieldRole};
