//! The edge role: a cache node (the [`verge_node`] runtime) whose upstream is the origin, or
//! a ring of origin shields in front of it.
//!
//! - [`ring`]: the consistent-hashing ring that picks the origin shield owning a cache key;
//! - [`shields`]: the edge's upstream over origin shields, with failover and ejection;
//! - [`role`]: the edge as the runtime sees it — settings, upstream, what a reload may change.
//!
//! [`EdgeNode`] is what `verge edge` runs.

pub mod ring;
mod role;
pub mod shields;

use verge_node::Node;

pub use role::EdgeRole;

/// An edge node: a cache node whose upstream is the origin or origin shields.
pub type EdgeNode = Node<EdgeRole>;
