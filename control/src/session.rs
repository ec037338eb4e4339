//! Browser sessions for control's status page. `GET /?token=…` with the admin token opens one:
//! a random id in an `HttpOnly`, `SameSite=Strict` cookie, and a redirect to `/`, so the token
//! does not stay in the address bar or the history. A session reads only — the page and the
//! JSON it reads (`GET`); purges and reloads still need the token itself. Sessions are bounded in
//! number and lifetime, and one opened under a token ends when the token changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::COOKIE;
use http::HeaderMap;
use verge_serve::auth::constant_time_eq;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "verge_session";

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most sessions open at once; opening one more ends the oldest.
pub const MAX_SESSIONS: usize = 1024;

struct Session {
    expires: Instant,
    /// The admin token the session was opened with.
    token: String,
}

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session under `token` (already checked); returns its id.
    pub fn open(&self, token: &str, now: Instant) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut open = self.lock();
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                open.remove(&oldest);
            }
        }
        open.insert(
            id.clone(),
            Session {
                expires: now + SESSION_TTL,
                token: token.to_string(),
            },
        );
        Ok(id)
    }

    /// Whether the request's cookie names a live session opened under `token`.
    pub fn admits(&self, headers: &HeaderMap, token: &str, now: Instant) -> bool {
        let Some(id) = cookie(headers, COOKIE_NAME) else {
            return false;
        };
        let open = self.lock();
        open.get(id).is_some_and(|s| {
            s.expires > now && constant_time_eq(s.token.as_bytes(), token.as_bytes())
        })
    }

    /// The `Set-Cookie` value for session `id`.
    pub fn set_cookie(id: &str) -> String {
        format!(
            "{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_TTL.as_secs()
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The value of cookie `name` in the request's `Cookie` fields.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_session_admits_its_cookie_until_it_expires_or_the_token_changes() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let id = sessions.open("token-a", now).unwrap();
        assert_eq!(id.len(), 64);
        let headers = with_cookie(&format!("theme=dark; {COOKIE_NAME}={id}"));
        assert!(sessions.admits(&headers, "token-a", now));
        assert!(!sessions.admits(&headers, "token-b", now), "a new token");
        assert!(!sessions.admits(&headers, "token-a", now + SESSION_TTL));
        assert!(!sessions.admits(
            &with_cookie(&format!("{COOKIE_NAME}=x{id}")),
            "token-a",
            now
        ));
        assert!(!sessions.admits(&HeaderMap::new(), "token-a", now));
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_goes_first() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.open("t", start).unwrap();
        for i in 1..MAX_SESSIONS as u64 {
            sessions
                .open("t", start + Duration::from_millis(i))
                .unwrap();
        }
        let at = start + Duration::from_secs(1);
        assert!(sessions.admits(&with_cookie(&format!("{COOKIE_NAME}={first}")), "t", at));
        sessions.open("t", at).unwrap();
        assert!(!sessions.admits(&with_cookie(&format!("{COOKIE_NAME}={first}")), "t", at));
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let value = Sessions::set_cookie("abc");
        assert!(value.starts_with("verge_session=abc;"), "{value}");
        assert!(value.contains("HttpOnly") && value.contains("SameSite=Strict"));
    }
}
