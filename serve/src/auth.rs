//! The admin APIs' bearer-token check: a request without credentials is refused with 401 and a
//! `WWW-Authenticate` challenge, one with wrong credentials with 403. Tokens are compared in
//! time that does not depend on where they differ.

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use http::StatusCode;

use crate::reply::Refusal;

/// How one API checks its bearer token and words its refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BearerAuth {
    /// Named in the 401's challenge: `WWW-Authenticate: Bearer realm="<realm>"`.
    pub realm: &'static str,
    /// Message of the 401 sent without credentials.
    pub missing: &'static str,
    /// Message of the 403 sent with wrong credentials.
    pub wrong: &'static str,
    pub reading: Reading,
}

/// How the `Authorization` header is read. The two APIs have always differed here, and clients
/// may rely on either, so each keeps its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// `Bearer <token>` exactly. Any other `Authorization` header counts as wrong credentials
    /// (403); only its absence as none (401). Control's admin API.
    Exact,
    /// `Bearer <token>` or `bearer <token>`, spaces around the token ignored. An
    /// `Authorization` header without a bearer token counts as no credentials (401). A node's
    /// admin API.
    Lenient,
}

/// What a request presented.
enum Presented<'h> {
    Nothing,
    /// An `Authorization` header that holds no bearer token, under [`Reading::Exact`].
    Other,
    Token(&'h str),
}

impl BearerAuth {
    /// Lets the request in if it presents `token`; otherwise the refusal to send.
    pub fn check(&self, token: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        match self.presented(headers) {
            Presented::Token(presented)
                if constant_time_eq(presented.as_bytes(), token.as_bytes()) =>
            {
                Ok(())
            }
            Presented::Token(_) | Presented::Other => {
                Err(Refusal::new(StatusCode::FORBIDDEN, self.wrong))
            }
            Presented::Nothing => Err(Refusal {
                challenge: self.challenge(),
                ..Refusal::new(StatusCode::UNAUTHORIZED, self.missing)
            }),
        }
    }

    fn presented<'h>(&self, headers: &'h HeaderMap) -> Presented<'h> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Presented::Nothing;
        };
        let value = value.to_str().ok();
        match self.reading {
            Reading::Exact => value
                .and_then(|v| v.strip_prefix("Bearer "))
                .map_or(Presented::Other, Presented::Token),
            Reading::Lenient => value
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map_or(Presented::Nothing, |token| Presented::Token(token.trim())),
        }
    }

    /// `Bearer realm="<realm>"`; `None` only if the realm cannot be a header value.
    fn challenge(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("Bearer realm=\"{}\"", self.realm)).ok()
    }
}

/// Equality of `a` and `b` in time that depends on their lengths only, not on where their bytes
/// differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use http::header::WWW_AUTHENTICATE;

    use super::*;

    const TOKEN: &str = "secret-token-0123456789";

    fn auth(reading: Reading) -> BearerAuth {
        BearerAuth {
            realm: "verge-test",
            missing: "no credentials",
            wrong: "wrong credentials",
            reading,
        }
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    /// The status and message of the refusal, or `None` when let in.
    fn outcome(auth: BearerAuth, authorization: Option<&str>) -> Option<(StatusCode, String)> {
        auth.check(TOKEN, &headers(authorization))
            .err()
            .map(|refusal| (refusal.status, refusal.message))
    }

    fn forbidden() -> Option<(StatusCode, String)> {
        Some((StatusCode::FORBIDDEN, "wrong credentials".to_string()))
    }

    fn unauthorized() -> Option<(StatusCode, String)> {
        Some((StatusCode::UNAUTHORIZED, "no credentials".to_string()))
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-123", b"secret-token-124"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn no_credentials_is_401_with_the_callers_realm() {
        for reading in [Reading::Exact, Reading::Lenient] {
            let refusal = auth(reading).check(TOKEN, &headers(None)).unwrap_err();
            assert_eq!(refusal.status, StatusCode::UNAUTHORIZED);
            assert_eq!(refusal.message, "no credentials");
            assert_eq!(
                refusal.challenge,
                Some(HeaderValue::from_static("Bearer realm=\"verge-test\""))
            );
        }
    }

    #[test]
    fn the_right_token_is_let_in_and_a_wrong_one_is_403_without_a_challenge() {
        for reading in [Reading::Exact, Reading::Lenient] {
            let auth = auth(reading);
            assert_eq!(outcome(auth, Some(&format!("Bearer {TOKEN}"))), None);
            let refusal = auth
                .check(TOKEN, &headers(Some(&format!("Bearer {TOKEN}x"))))
                .unwrap_err();
            assert_eq!(refusal.status, StatusCode::FORBIDDEN);
            assert_eq!(refusal.message, "wrong credentials");
            assert_eq!(refusal.challenge, None);
            assert_eq!(outcome(auth, Some("Bearer short")), forbidden());
        }
    }

    #[test]
    fn exact_reading_takes_only_bearer_and_counts_any_other_header_as_wrong() {
        let auth = auth(Reading::Exact);
        assert_eq!(outcome(auth, Some(&format!("bearer {TOKEN}"))), forbidden());
        assert_eq!(
            outcome(auth, Some(&format!("Bearer  {TOKEN}"))),
            forbidden()
        );
        assert_eq!(outcome(auth, Some(TOKEN)), forbidden());
        assert_eq!(outcome(auth, Some("Basic dXNlcjpwYXNz")), forbidden());
        // `Bearer ` with nothing after: the header value is trimmed to `Bearer`.
        assert_eq!(outcome(auth, Some("Bearer")), forbidden());
    }

    #[test]
    fn lenient_reading_takes_either_case_and_counts_other_headers_as_none() {
        let auth = auth(Reading::Lenient);
        assert_eq!(outcome(auth, Some(&format!("bearer {TOKEN}"))), None);
        assert_eq!(outcome(auth, Some(&format!("Bearer  {TOKEN}"))), None);
        assert_eq!(outcome(auth, Some(TOKEN)), unauthorized());
        assert_eq!(outcome(auth, Some("Basic dXNlcjpwYXNz")), unauthorized());
        assert_eq!(outcome(auth, Some("Bearer")), unauthorized());
        assert_eq!(
            outcome(auth, Some(&format!("BEARER {TOKEN}"))),
            unauthorized()
        );
    }

    #[test]
    fn a_refusal_of_missing_credentials_becomes_a_401_with_the_challenge() {
        let refusal = auth(Reading::Exact)
            .check(TOKEN, &headers(None))
            .unwrap_err();
        let response = refusal.into_response(crate::reply::plain);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.body(), "no credentials\n");
        assert_eq!(
            response.headers().get(WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer realm=\"verge-test\""))
        );
    }
}
