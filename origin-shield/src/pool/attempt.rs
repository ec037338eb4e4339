//! One request's attempts at a pool's servers: which servers, in which order, and what each
//! attempt tells the server's health and metrics.

use std::sync::Arc;

use tokio::time::Instant;

use http::{Request, Response};
use verge_node::access_log::AnsweredBy;
use verge_node::failover::{Attempt, Candidates, Target};
use verge_node::upstream::{UpstreamBody, UpstreamResponseBody};
use verge_node::RequestError;

use super::client;
use super::{OriginPool, Server};

/// The servers one request may go to: round robin over the available ones (all of them in
/// panic mode), each at most once, retries within the budget.
pub(super) struct PoolCandidates<'a> {
    pub(super) pool: &'a OriginPool,
    pub(super) tried: Vec<bool>,
    pub(super) retries_made: u32,
}

impl<'a> Candidates for PoolCandidates<'a> {
    type Target = ServerAttempt<'a>;

    fn next(&mut self, retry: bool) -> Option<Result<ServerAttempt<'a>, RequestError>> {
        let pool = self.pool;
        let now = Instant::now();
        let candidates = pool.candidates(&self.tried, now);
        if candidates.is_empty() {
            return None;
        }
        if retry {
            if !pool.may_retry(self.retries_made) {
                return None;
            }
            self.retries_made += 1;
        }
        let index = pool.pick(&candidates)?;
        self.tried[index] = true;
        let server = &pool.servers[index];
        {
            // An available server whose ejection ran out is claimed for this one request (the
            // probe); in panic mode an ejected server is tried without a claim.
            let mut health = server.health();
            if health.passive.eligible(now) {
                health.claim(now, &pool.ejection);
            }
        }
        Some(match server.client.route() {
            Ok(route) => Ok(ServerAttempt {
                pool,
                server,
                route,
            }),
            // Not resolved (panic mode): nothing is sent, the body is still ours, and a real
            // answer from another server is worth more than this error.
            Err(error) => {
                server.count(Attempt::Unresolved);
                server.health().passive.release_probe(now);
                Err(error)
            }
        })
    }
}

/// One attempt at one server, by one of its routes.
pub(super) struct ServerAttempt<'a> {
    pub(super) pool: &'a OriginPool,
    server: &'a Server,
    route: client::Route,
}

impl Target for ServerAttempt<'_> {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        let mut response = self.route.send(request).await?;
        response
            .extensions_mut()
            .insert(AnsweredBy(Arc::from(self.server.label.as_str())));
        Ok(response)
    }

    fn record(&self, attempt: Attempt, sent: Instant) {
        let server = self.server;
        server.latency.observe(sent.elapsed().as_secs_f64());
        server.count(attempt);
        if matches!(attempt, Attempt::Ok | Attempt::ErrorStatus) {
            server.rtt.record_request(sent.elapsed());
        }
        match attempt {
            Attempt::Ok => self.pool.succeeded(server, sent),
            // Our own connection bound: the server was not asked, so it is not at fault.
            // Nor is the client's body failing on the way. (Origin servers are never
            // withdrawn by a routing table.)
            Attempt::Saturated
            | Attempt::Unresolved
            | Attempt::ClientError
            | Attempt::Withdrawn => {
                server.health().passive.release_probe(Instant::now());
            }
            Attempt::ErrorStatus
            | Attempt::Generated
            | Attempt::ConnectError
            | Attempt::Timeout
            | Attempt::Error => {
                self.pool.failed(server, attempt);
            }
        }
    }
}
