//! What a node is configured with, as the runtime reads it from a role's configuration: its
//! listeners, limits, admin access and control plane. Plain data; everything else in the
//! crate builds on it.

use verge_config::wire::NodeRole;
use verge_config::{
    AdminConfig, CacheConfig, NodeControlConfig, NodeId, NodeView, RegionId, ServerConfig,
    TlsServerConfig,
};

use crate::pipeline::Downstream;
use crate::server::ListenerLimits;

/// What every cache node is configured with, whatever its role.
pub struct NodeSettings<'a> {
    pub id: &'a NodeId,
    pub region: &'a RegionId,
    pub server: &'a ServerConfig,
    pub cache: &'a CacheConfig,
    pub admin: &'a AdminConfig,
    /// HTTPS listeners and certificates; `None`: clear text only.
    pub tls: Option<&'a TlsServerConfig>,
    /// This cache's name in `Cache-Status` (`verge-edge`, `verge-shield`).
    pub cache_name: &'static str,
    /// Whom the node answers: clients (the edge) or other Verge tiers (the shield).
    pub downstream: crate::pipeline::Downstream,
    /// The configured bound on upstream connections, for `verge_upstream_connections_max`.
    pub upstream_max_connections: usize,
    /// The control plane to register with, and as what; `None`: static configuration only.
    pub control: Option<NodeControl<'a>>,
}

impl<'a> NodeSettings<'a> {
    /// The settings of the node `node` configures. Its role names its cache in `Cache-Status`
    /// and says whom it answers: an edge answers clients, a shield the caches below it.
    pub fn new(node: NodeView<'a>) -> NodeSettings<'a> {
        let (cache_name, downstream) = match node.role {
            NodeRole::Edge => ("verge-edge", Downstream::Clients),
            NodeRole::Shield => ("verge-shield", Downstream::Caches),
        };
        NodeSettings {
            id: node.id,
            region: node.region,
            server: node.server,
            cache: node.cache,
            admin: node.admin,
            tls: node.tls,
            cache_name,
            downstream,
            upstream_max_connections: node.upstream.max_connections,
            control: node.control.map(|config| NodeControl {
                config,
                role: node.role,
                region: node.region,
            }),
        }
    }
}

/// How a node takes part in the control plane: the `[control]` table and what it registers as.
#[derive(Debug, Clone, Copy)]
pub struct NodeControl<'a> {
    pub config: &'a NodeControlConfig,
    pub role: NodeRole,
    pub region: &'a RegionId,
}

/// Who may change state through the admin API, and how much they may send.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminAccess {
    /// Bearer token for purges and reloads; `None` disables them.
    pub token: Option<String>,
    pub max_body_bytes: usize,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Client traffic in clear text (HTTP/1.1, h2c).
    Data,
    /// Client traffic over TLS (HTTP/1.1, h2 by ALPN).
    Tls,
    /// `/metrics`, `/healthz` and the admin API.
    Admin,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Data => "data",
            ListenerKind::Tls => "tls",
            ListenerKind::Admin => "admin",
        }
    }
}

/// The listener limits a server configuration asks for.
pub(crate) fn listener_limits(server: &ServerConfig) -> ListenerLimits {
    ListenerLimits {
        max_header_bytes: usize::try_from(server.max_header_bytes.bytes()).unwrap_or(usize::MAX),
        header_read_timeout: server.header_read_timeout,
        h2_max_concurrent_streams: server.h2_max_concurrent_streams,
        h2_max_pending_accept_reset_streams: server.h2_max_pending_accept_reset_streams,
        h2_max_local_error_reset_streams: server.h2_max_local_error_reset_streams,
        shutdown_grace: server.shutdown_grace,
        idle_timeout: server.idle_timeout,
    }
}

/// The admin listener's limits: the data plane's, with tighter timeouts, so that silent or
/// idle connections cannot hold its few slots (its answers are small and quick).
pub(crate) fn admin_listener_limits(data: &ListenerLimits) -> ListenerLimits {
    const ADMIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    const ADMIN_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    ListenerLimits {
        header_read_timeout: data.header_read_timeout.min(ADMIN_HEADER_TIMEOUT),
        idle_timeout: data.idle_timeout.min(ADMIN_IDLE_TIMEOUT),
        ..data.clone()
    }
}

/// Who may use the admin API, as configured.
pub(crate) fn admin_access(admin: &AdminConfig) -> AdminAccess {
    AdminAccess {
        token: admin.token.clone(),
        max_body_bytes: usize::try_from(admin.max_body_bytes.bytes()).unwrap_or(usize::MAX),
    }
}
