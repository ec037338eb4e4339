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
pub enum EdgeError {
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
}

impl EdgeError {
    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EdgeError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            EdgeError::LoopDetected { .. } => StatusCode::LOOP_DETECTED,
            EdgeError::UpstreamConnect { .. } | EdgeError::UpstreamBroken { .. } => {
                StatusCode::BAD_GATEWAY
            }
            EdgeError::UpstreamTimeout { .. } | EdgeError::NotCached => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::UpstreamSaturated { .. } | EdgeError::NoShield => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            EdgeError::BadRequest(_)
            | EdgeError::MethodNotAllowed { .. }
            | EdgeError::NotCached
            | EdgeError::LoopDetected { .. } => Fault::Client,
            EdgeError::UpstreamConnect { .. }
            | EdgeError::UpstreamTimeout { .. }
            | EdgeError::UpstreamSaturated { .. }
            | EdgeError::NoShield
            | EdgeError::UpstreamBroken { .. } => Fault::Upstream,
        }
    }

    /// Whether sending the same (idempotent) request again, elsewhere, may succeed.
    pub fn is_retryable(&self) -> bool {
        self.fault() == Fault::Upstream
    }

    /// Short token for `Cache-Status` `detail` and for logs.
    pub fn detail(&self) -> &'static str {
        match self {
            EdgeError::BadRequest(_) => "bad-request",
            EdgeError::MethodNotAllowed { .. } => "method-not-allowed",
            EdgeError::UpstreamConnect { .. } => "upstream-connect-error",
            EdgeError::UpstreamTimeout { .. } => "upstream-timeout",
            EdgeError::UpstreamBroken { .. } => "upstream-error",
            EdgeError::NotCached => "only-if-cached",
            EdgeError::LoopDetected { .. } => "loop-detected",
            EdgeError::UpstreamSaturated { .. } => "upstream-saturated",
            EdgeError::NoShield => "no-shield",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_faults() {
        let up = || "o".to_string();
        let cases = [
            (EdgeError::BadRequest("x"), 400, Fault::Client),
            (
                EdgeError::MethodNotAllowed {
                    method: "PURGE".into(),
                },
                405,
                Fault::Client,
            ),
            (
                EdgeError::UpstreamConnect {
                    upstream: up(),
                    reason: "refused".into(),
                },
                502,
                Fault::Upstream,
            ),
            (
                EdgeError::UpstreamBroken {
                    upstream: up(),
                    reason: "reset".into(),
                },
                502,
                Fault::Upstream,
            ),
            (
                EdgeError::UpstreamTimeout {
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
