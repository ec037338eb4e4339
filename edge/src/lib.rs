//! The edge role: a cache node (the [`verge_node`] runtime) whose upstream is the origin, or
//! a ring of origin shields in front of it.
//!
//! - [`ring`], [`shields`]: the consistent-hashing ring and the upstream over origin shields,
//!   with failover and ejection (from the node runtime, which a shield's upper tier shares);
//! - [`role`]: the edge as the runtime sees it — settings, upstream ([`EdgeUpstream`]), what a
//!   reload may change.
//!
//! [`EdgeNode`] is what `verge edge` runs.

mod role;

pub use verge_node::{ring, shields};

use verge_node::Node;

pub use role::{EdgeRole, EdgeUpstream};

/// An edge node: a cache node whose upstream is the origin or origin shields.
pub type EdgeNode = Node<EdgeRole>;
