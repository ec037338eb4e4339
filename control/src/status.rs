//! Control's status page, `GET /` on the admin listener: one self-contained HTML page (no
//! external assets) that reads the JSON API every few seconds — `/v1/nodes`, `/v1/routing`,
//! `/v1/purges` — and shows regions with their nodes' health, version, last heartbeat and
//! traffic, the routing table and shield ring, and recent purges with each node's progress.
//!
//! Who may see it: a request with the admin token (`Authorization: Bearer`), or a browser with
//! a session. `GET /?token=…` opens the session and redirects to `/`, so the token leaves the
//! address bar; without either the page is 401 with a small form asking for the token.

use std::time::Instant;

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use verge_serve::auth::constant_time_eq;
use verge_serve::reply;

use crate::service::Control;
use crate::session::Sessions;

/// The page itself; everything it shows it writes as text, never as markup.
pub const PAGE: &str = include_str!("status.html");

/// What the page may do: its own inline script and style, and requests to this listener.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Answers `GET /` (and `HEAD /`).
pub fn page<B>(control: &Control, token: &str, request: &Request<B>) -> Response<Bytes> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply::plain(StatusCode::METHOD_NOT_ALLOWED, "use GET on /");
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let now = Instant::now();
    let offered = request.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
    });
    if let Some(offered) = offered {
        if !constant_time_eq(offered.as_bytes(), token.as_bytes()) {
            return login(StatusCode::UNAUTHORIZED, "That token is wrong.");
        }
        return match control.sessions.open(token, now) {
            Ok(id) => {
                let mut response = html(StatusCode::SEE_OTHER, "");
                let headers = response.headers_mut();
                headers.insert(LOCATION, HeaderValue::from_static("/"));
                if let Ok(cookie) = HeaderValue::from_str(&Sessions::set_cookie(&id)) {
                    headers.insert(SET_COOKIE, cookie);
                }
                response
            }
            Err(error) => {
                tracing::error!(%error, "no randomness for a session id");
                reply::plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot open a session")
            }
        };
    }
    let bearer = crate::server::admin_token_ok(token, request.headers());
    if bearer || control.sessions.admits(request.headers(), token, now) {
        return html(StatusCode::OK, PAGE);
    }
    login(
        StatusCode::UNAUTHORIZED,
        "This page needs control's admin token.",
    )
}

/// The 401 page: why, and a form that sends the token as `GET /?token=…`.
fn login(status: StatusCode, why: &str) -> Response<Bytes> {
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Verge status: sign in</title>\
         </head><body><h1>Verge status</h1><p>{why}</p><form method=\"get\" action=\"/\">\
         <label>Admin token <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label> \
         <button type=\"submit\">Open</button></form></body></html>"
    );
    let mut response = html(status, &body);
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"verge-control\""),
    );
    response
}

fn html(status: StatusCode, body: &str) -> Response<Bytes> {
    let mut response = reply::text(status, "text/html; charset=utf-8", body.to_string());
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
