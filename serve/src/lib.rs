//! What Verge's HTTP servers and clients share, for the cache nodes and the control plane
//! alike. It links nothing of Verge's but its configuration types, so control can use it
//! without linking node code.
//!
//! - [`auth`]: the admin bearer-token check, compared in constant time;
//! - [`reply`]: text, plain-message and JSON replies, and [`Refusal`], a refused request;
//! - [`tls_client`]: TLS towards `https://` upstreams (a node's shields and origins, control's
//!   etcd, a node's control);
//! - [`tls_server`]: TLS, mutual when asked, on control's node listener;
//! - [`register_metrics!`]: a server's metrics registered on the registry its `/metrics` renders.
//!
//! The accept loops stay with their servers: a node's (`verge_node::server`) waits for room
//! under a resizable connection bound, speaks HTTP/1.1 and HTTP/2 (optionally behind TLS) and
//! drains connections on shutdown; control's one loop (`verge_control::accept`, for its APIs and
//! HTTP steering) refuses connections beyond its bound, speaks HTTP/1.1 only and closes its
//! long-lived event streams at once on shutdown.

pub mod auth;
pub mod reply;
pub mod tls_client;
pub mod tls_server;

pub use auth::{BearerAuth, Reading};
pub use reply::Refusal;

/// Registers each metric on `registry` (a clone: a prometheus metric is a handle to shared
/// values), returning the first error from the enclosing function:
/// `register_metrics!(registry; m.requests, m.duration)`. It names nothing of prometheus, so
/// this crate need not link it.
#[macro_export]
macro_rules! register_metrics {
    ($registry:expr; $($metric:expr),+ $(,)?) => {
        $($registry.register(Box::new($metric.clone()))?;)+
    };
}
