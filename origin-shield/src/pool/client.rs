//! How the pool reaches one server. A URL with an IP has one HTTP client. A URL with a host
//! name has one client per address the name resolves to now, used in turn; each request keeps
//! the URL's `host[:port]` as its `Host` unless it brings its own, as it would with the system
//! resolver. Clients of addresses that left the answer are dropped (idle connections close);
//! requests in flight keep theirs.
//!
//! Each address's client has the server's whole `max_connections`: the bound protects a
//! machine, and each address is one.
//!
//! An `https://` server is reached over TLS with the pool's one client configuration
//! (`[origin.tls]`). For a named server the connection goes to an address, but SNI and the
//! certificate check use the URL's host name (or `server_name`), and the port defaults to 443.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::header::{HeaderValue, HOST};
use http::uri::Scheme;
use http::{Request, Response};
use prometheus::{IntCounter, IntGauge};
use verge_config::{OriginUrl, UpstreamConfig};
use verge_node::tls::client::ClientConfig;
use verge_node::upstream::{OriginUpstream, UpstreamBody, UpstreamResponseBody};
use verge_node::RequestError;

use super::lock;
use crate::dns::ResolvedHost;

/// One server's way in: direct, or through its name's current addresses.
pub(super) enum ServerClient {
    Direct(Arc<OriginUpstream>),
    Named(Box<NamedClient>),
}

impl ServerClient {
    /// A client for `upstream.origin`, through `host` when the URL names a host; `tls` (shared
    /// by the pool) reaches an `https://` server.
    pub(super) fn new(
        mut upstream: UpstreamConfig,
        host: Option<ResolvedHost>,
        tls: Option<Arc<ClientConfig>>,
        in_use: &IntGauge,
        resends: &IntCounter,
    ) -> ServerClient {
        let Some(host) = host else {
            return ServerClient::Direct(Arc::new(
                OriginUpstream::with_tls(&upstream, tls, in_use.clone())
                    .counting_resends(resends.clone()),
            ));
        };
        let authority = &upstream.origin.authority;
        let host_header = HeaderValue::from_str(authority.as_str()).ok();
        let https = upstream.origin.scheme == Scheme::HTTPS;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        // Connections go to addresses; TLS still names (and verifies) the URL's host.
        if upstream.tls.server_name.is_none() {
            upstream.tls.server_name = Some(authority.host().to_string());
        }
        ServerClient::Named(Box::new(NamedClient {
            label: upstream.origin.to_string(),
            port,
            host,
            host_header,
            template: upstream,
            tls,
            in_use: in_use.clone(),
            resends: resends.clone(),
            cursor: AtomicUsize::new(0),
            clients: Mutex::new(AddressClients::default()),
        }))
    }

    /// Whether a request can be sent now: false while the server's name has never resolved.
    pub(super) fn is_usable(&self) -> bool {
        match self {
            ServerClient::Direct(_) => true,
            ServerClient::Named(named) => named.host.is_resolved(),
        }
    }

    /// Where the next request goes; an error (502) when the name has no address yet.
    pub(super) fn route(&self) -> Result<Route, RequestError> {
        match self {
            ServerClient::Direct(upstream) => Ok(Route {
                upstream: Arc::clone(upstream),
                host: None,
                label: None,
            }),
            ServerClient::Named(named) => named.route(),
        }
    }
}

/// A server whose URL names a host.
pub(super) struct NamedClient {
    /// The server's URL, naming it in errors.
    label: String,
    host: ResolvedHost,
    port: u16,
    /// The URL's `host[:port]`, sent as `Host` by requests without one.
    host_header: Option<HeaderValue>,
    /// The server's upstream settings; `origin` is replaced by each address, and
    /// `tls.server_name` is the URL's host unless configured.
    template: UpstreamConfig,
    tls: Option<Arc<ClientConfig>>,
    in_use: IntGauge,
    resends: IntCounter,
    /// Rotates over the addresses; wraps harmlessly.
    cursor: AtomicUsize,
    clients: Mutex<AddressClients>,
}

/// The clients of one address set.
#[derive(Default)]
struct AddressClients {
    /// The set these clients were built for; a different `Arc` means the set changed.
    built_for: Option<Arc<[IpAddr]>>,
    by_address: Vec<(IpAddr, Arc<OriginUpstream>)>,
}

impl NamedClient {
    fn route(&self) -> Result<Route, RequestError> {
        let addresses = self
            .host
            .addresses()
            .map_err(|error| RequestError::UpstreamConnect {
                upstream: self.label.clone(),
                reason: format!("cannot resolve {}: {error}", self.host.name()),
            })?;
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut clients = lock(&self.clients);
        if !clients
            .built_for
            .as_ref()
            .is_some_and(|built| Arc::ptr_eq(built, &addresses))
        {
            let by_address = addresses
                .iter()
                .map(|&ip| {
                    let kept = clients.by_address.iter().find(|(known, _)| *known == ip);
                    let client = match kept {
                        Some((_, client)) => Arc::clone(client),
                        None => Arc::new(self.client_for(ip)),
                    };
                    (ip, client)
                })
                .collect();
            *clients = AddressClients {
                built_for: Some(Arc::clone(&addresses)),
                by_address,
            };
        }
        let (ip, upstream) = clients
            .by_address
            .get(turn % clients.by_address.len().max(1))
            .cloned()
            .ok_or_else(|| RequestError::UpstreamConnect {
                upstream: self.label.clone(),
                reason: format!("{} has no address", self.host.name()),
            })?;
        drop(clients);
        Ok(Route {
            upstream,
            host: self.host_header.clone(),
            label: Some(format!(
                "{} ({})",
                self.label,
                SocketAddr::new(ip, self.port)
            )),
        })
    }

    fn client_for(&self, ip: IpAddr) -> OriginUpstream {
        let origin = OriginUrl {
            scheme: self.template.origin.scheme.clone(),
            authority: SocketAddr::new(ip, self.port)
                .to_string()
                .parse()
                .unwrap_or_else(|_| self.template.origin.authority.clone()),
        };
        let config = UpstreamConfig {
            origin,
            ..self.template.clone()
        };
        OriginUpstream::with_tls(&config, self.tls.clone(), self.in_use.clone())
            .counting_resends(self.resends.clone())
    }
}

/// One attempt's way to a server: the client to use and what the request needs for it.
pub(super) struct Route {
    upstream: Arc<OriginUpstream>,
    /// `Host` for requests without one, when the client connects to an address of a name.
    host: Option<HeaderValue>,
    /// Names the server and the address in errors, for a named server.
    label: Option<String>,
}

impl Route {
    pub(super) async fn send(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        if let Some(host) = &self.host {
            request.headers_mut().entry(HOST).or_insert(host.clone());
        }
        let result = self.upstream.request(request).await;
        match &self.label {
            Some(label) => result.map_err(|error| renamed(error, label.clone())),
            None => result,
        }
    }
}

/// The same error naming `upstream` instead of the address's own client.
fn renamed(error: RequestError, name: String) -> RequestError {
    match error {
        RequestError::UpstreamConnect { reason, .. } => RequestError::UpstreamConnect {
            upstream: name,
            reason,
        },
        RequestError::UpstreamTimeout { after, .. } => RequestError::UpstreamTimeout {
            upstream: name,
            after,
        },
        RequestError::UpstreamSaturated { limit, .. } => RequestError::UpstreamSaturated {
            upstream: name,
            limit,
        },
        RequestError::UpstreamBroken { reason, .. } => RequestError::UpstreamBroken {
            upstream: name,
            reason,
        },
        other => other,
    }
}
