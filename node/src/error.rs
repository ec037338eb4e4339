//! The edge's request-path errors, and the one place they become HTTP statuses.

use std::time::Duration;

use http::StatusCode;

/// Who is at fault for a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Upstream,
    Internal,
}

/// A request-path error. Cloneable because a fill's failure is shared with its followers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("loop detected: this request already passed through {node}")]
    LoopDetected { node: String },
    #[error("only-if-cached: nothing usable is stored for this request")]
    NotCached,
    #[error("method {method} is not allowed here")]
    MethodNotAllowed { method: String },
    #[error("cannot connect to upstream {upstream}: {reason}")]
    UpstreamConnect { upstream: String, reason: String },
    #[error("upstream {upstream} did not answer within {}ms", after.as_millis())]
    UpstreamTimeout { upstream: String, after: Duration },
    #[error("upstream {upstream} is saturated: all {limit} connections busy")]
    UpstreamSaturated { upstream: String, limit: usize },
    #[error("no origin shield could answer and origin fallback is off")]
    NoShield,
    #[error("upstream {upstream} failed: {reason}")]
    UpstreamBroken { upstream: String, reason: String },
    /// Control took the upstream (a shield) out of the routing table while the request waited
    /// for its answer.
    #[error("upstream {upstream} was taken out of the routing table before it answered")]
    UpstreamWithdrawn { upstream: String },
    /// The client's request body could not be read: the client's fault, never the upstream's.
    #[error("{0}")]
    ClientBody(ClientBodyError),
    /// The client's address already has this many requests waiting on the upstream.
    #[error("too many requests: this client address already has {limit} requests waiting on the upstream")]
    TooManyUpstreamRequests { limit: usize },
    /// A request field that would make the origin answer another request than the one keyed.
    #[error("bad request: the {name} field is not accepted here")]
    OverrideHeader { name: &'static str },
}

/// Why a client's request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyError {
    /// Not valid framing: a bad chunk size, more data than announced, a broken connection
    /// mid-body.
    Malformed,
    /// No byte for the body timeout, or slower than the minimum rate.
    TooSlow,
    /// Larger than `server.max_request_body`.
    TooLarge { limit: u64 },
}

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientBodyError::Malformed => {
                f.write_str("bad request: the request body is malformed or incomplete")
            }
            ClientBodyError::TooSlow => {
                f.write_str("request timeout: the request body arrived too slowly")
            }
            ClientBodyError::TooLarge { limit } => write!(
                f,
                "payload too large: the request body is over the limit of {limit} bytes"
            ),
        }
    }
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::BadRequest(_) | RequestError::OverrideHeader { .. } => {
                StatusCode::BAD_REQUEST
            }
            RequestError::ClientBody(ClientBodyError::Malformed) => StatusCode::BAD_REQUEST,
            RequestError::ClientBody(ClientBodyError::TooSlow) => StatusCode::REQUEST_TIMEOUT,
            RequestError::ClientBody(ClientBodyError::TooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            RequestError::TooManyUpstreamRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::LoopDetected { .. } => StatusCode::LOOP_DETECTED,
            RequestError::UpstreamConnect { .. }
            | RequestError::UpstreamBroken { .. }
            | RequestError::UpstreamWithdrawn { .. } => StatusCode::BAD_GATEWAY,
            RequestError::UpstreamTimeout { .. } | RequestError::NotCached => {
                StatusCode::GATEWAY_TIMEOUT
            }
            RequestError::UpstreamSaturated { .. } | RequestError::NoShield => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            RequestError::BadRequest(_)
            | RequestError::MethodNotAllowed { .. }
            | RequestError::NotCached
            | RequestError::LoopDetected { .. }
            | RequestError::ClientBody(_)
            | RequestError::TooManyUpstreamRequests { .. }
            | RequestError::OverrideHeader { .. } => Fault::Client,
            RequestError::UpstreamConnect { .. }
            | RequestError::UpstreamTimeout { .. }
            | RequestError::UpstreamSaturated { .. }
            | RequestError::NoShield
            | RequestError::UpstreamBroken { .. }
            | RequestError::UpstreamWithdrawn { .. } => Fault::Upstream,
        }
    }

    /// Whether sending the same (idempotent) request again, elsewhere, may succeed.
    pub fn is_retryable(&self) -> bool {
        self.fault() == Fault::Upstream
    }

    /// What a client is told: the whole story for its own mistakes; for upstream failures, what
    /// kind of failure it was, without naming internal addresses (those go to the log).
    pub fn public_message(&self) -> String {
        match self {
            RequestError::UpstreamConnect { .. } => {
                "bad gateway: could not connect to the upstream".into()
            }
            RequestError::UpstreamTimeout { after, .. } => {
                format!(
                    "gateway timeout: the upstream did not answer within {}ms",
                    after.as_millis()
                )
            }
            RequestError::UpstreamSaturated { limit, .. } => {
                format!("service unavailable: all {limit} upstream connections are busy")
            }
            RequestError::UpstreamBroken { .. } => {
                "bad gateway: the upstream's response was broken or incomplete".into()
            }
            RequestError::UpstreamWithdrawn { .. } => {
                "bad gateway: the upstream was taken out of service before it answered".into()
            }
            other => other.to_string(),
        }
    }

    /// Short token for `Cache-Status` `detail` and for logs.
    pub fn detail(&self) -> &'static str {
        match self {
            RequestError::BadRequest(_) => "bad-request",
            RequestError::MethodNotAllowed { .. } => "method-not-allowed",
            RequestError::UpstreamConnect { .. } => "upstream-connect-error",
            RequestError::UpstreamTimeout { .. } => "upstream-timeout",
            RequestError::UpstreamBroken { .. } => "upstream-error",
            RequestError::UpstreamWithdrawn { .. } => "upstream-withdrawn",
            RequestError::NotCached => "only-if-cached",
            RequestError::LoopDetected { .. } => "loop-detected",
            RequestError::UpstreamSaturated { .. } => "upstream-saturated",
            RequestError::NoShield => "no-shield",
            RequestError::ClientBody(ClientBodyError::Malformed) => "bad-request-body",
            RequestError::ClientBody(ClientBodyError::TooSlow) => "request-body-timeout",
            RequestError::ClientBody(ClientBodyError::TooLarge { .. }) => "request-body-too-large",
            RequestError::TooManyUpstreamRequests { .. } => "too-many-upstream-requests",
            RequestError::OverrideHeader { .. } => "override-header",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_do_not_name_internal_addresses_to_clients() {
        let errors = [
            RequestError::UpstreamConnect {
                upstream: "http://10.1.2.3:8000".into(),
                reason: "refused".into(),
            },
            RequestError::UpstreamBroken {
                upstream: "http://10.1.2.3:8000".into(),
                reason: "reset".into(),
            },
            RequestError::UpstreamTimeout {
                upstream: "http://10.1.2.3:8000".into(),
                after: Duration::from_secs(1),
            },
            RequestError::UpstreamSaturated {
                upstream: "http://10.1.2.3:8000".into(),
                limit: 4,
            },
        ];
        for error in errors {
            assert!(
                error.to_string().contains("10.1.2.3"),
                "the log keeps the address"
            );
            assert!(
                !error.public_message().contains("10.1.2.3"),
                "{}",
                error.public_message()
            );
        }
        assert_eq!(
            RequestError::BadRequest("no Host").public_message(),
            "bad request: no Host"
        );
    }

    #[test]
    fn statuses_and_faults() {
        let up = || "o".to_string();
        let cases = [
            (RequestError::BadRequest("x"), 400, Fault::Client),
            (
                RequestError::ClientBody(ClientBodyError::Malformed),
                400,
                Fault::Client,
            ),
            (
                RequestError::ClientBody(ClientBodyError::TooSlow),
                408,
                Fault::Client,
            ),
            (
                RequestError::ClientBody(ClientBodyError::TooLarge { limit: 1 }),
                413,
                Fault::Client,
            ),
            (
                RequestError::TooManyUpstreamRequests { limit: 1 },
                429,
                Fault::Client,
            ),
            (
                RequestError::MethodNotAllowed {
                    method: "PURGE".into(),
                },
                405,
                Fault::Client,
            ),
            (
                RequestError::UpstreamConnect {
                    upstream: up(),
                    reason: "refused".into(),
                },
                502,
                Fault::Upstream,
            ),
            (
                RequestError::UpstreamBroken {
                    upstream: up(),
                    reason: "reset".into(),
                },
                502,
                Fault::Upstream,
            ),
            (
                RequestError::UpstreamTimeout {
                    upstream: up(),
                    after: Duration::from_secs(1),
                },
                504,
                Fault::Upstream,
            ),
        ];
        for (e, status, fault) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.fault(), fault, "{e}");
            assert_eq!(e.is_retryable(), fault == Fault::Upstream);
        }
    }
}
