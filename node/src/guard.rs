//! What a request must pass before the cache looks at it, and the bound on what one client
//! address may ask of the upstream at once. Everything a request carries is chosen by whoever
//! sent it, who may want to poison the cache for everyone else:
//!
//! - a request with both `Content-Length` and `Transfer-Encoding` is refused: it is how request
//!   smuggling starts (the listener finds it, since hyper hides it);
//! - a request target with user info (`http://user@host/`) is refused: the key and the `Host`
//!   sent upstream could not agree;
//! - fields that ask a server to use another host, URL, scheme or method
//!   ([`OverrideHeaders::NAMES`]) are stripped (or refused, or kept, as configured): the key
//!   is the request's own host, path and method, so an origin that honoured one would answer
//!   another request than the one stored.
//!
//! `OPTIONS` and `TRACE` carry a hop count (`Max-Forwards`): at 0 the node is the final
//! recipient and answers `OPTIONS` itself (the tiers' latency probe); above it, it goes on one
//! lower (RFC 9110 §7.6.2).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::header::{HeaderValue, ALLOW, MAX_FORWARDS};
use http::{request, Method, Response, StatusCode};
use verge_config::OverrideHeaders;

use crate::body::ResponseBody;

use crate::error::RequestError;
use crate::server::{AmbiguousLength, AMBIGUOUS_LENGTH};

/// Refuses an ambiguous body length and a request target with user info, and strips (or refuses) the override fields.
pub(crate) fn check_request(
    parts: &mut request::Parts,
    overrides: OverrideHeaders,
) -> Result<(), RequestError> {
    if parts.extensions.get::<AmbiguousLength>().is_some() {
        return Err(RequestError::BadRequest(AMBIGUOUS_LENGTH));
    }
    if parts
        .uri
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Err(RequestError::BadRequest(
            "the request target has user info; it is not accepted",
        ));
    }
    match overrides {
        OverrideHeaders::Forward => {}
        OverrideHeaders::Strip => {
            for name in OverrideHeaders::NAMES {
                parts.headers.remove(name);
            }
        }
        OverrideHeaders::Refuse => {
            if let Some(name) = OverrideHeaders::NAMES
                .into_iter()
                .find(|name| parts.headers.contains_key(*name))
            {
                return Err(RequestError::OverrideHeader { name });
            }
        }
    }
    Ok(())
}

/// `OPTIONS` at `Max-Forwards: 0`: the answer, given here (200, `Allow`, no body); `TRACE`
/// there gets 405. Above 0,
/// `OPTIONS` and `TRACE` go on with the count one lower. A value that is not a number is left
/// alone for the upstream to judge.
pub(crate) fn final_recipient(parts: &mut request::Parts) -> Option<Response<ResponseBody>> {
    if parts.method != Method::OPTIONS && parts.method != Method::TRACE {
        return None;
    }
    let hops: u64 = parts
        .headers
        .get(MAX_FORWARDS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if hops > 0 {
        parts
            .headers
            .insert(MAX_FORWARDS, HeaderValue::from(hops - 1));
        return None;
    }
    let mut response = Response::new(ResponseBody::empty());
    // TRACE would echo the request back: a node never reflects what it was sent.
    *response.status_mut() = if parts.method == Method::OPTIONS {
        StatusCode::OK
    } else {
        StatusCode::METHOD_NOT_ALLOWED
    };
    response.headers_mut().insert(
        ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Some(response)
}

/// Requests waiting on the upstream, per client address, under a bound.
#[derive(Debug)]
pub(crate) struct AddressLimit {
    max: usize,
    waiting: Mutex<HashMap<IpAddr, usize>>,
}

impl AddressLimit {
    pub(crate) fn new(max: usize) -> Arc<AddressLimit> {
        Arc::new(AddressLimit {
            max,
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more request from `address`, held until the guard drops; 429 when the
    /// address already has the most it may.
    pub(crate) fn enter(self: &Arc<Self>, address: IpAddr) -> Result<AddressGuard, RequestError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let count = waiting.entry(address).or_insert(0);
        if *count >= self.max {
            return Err(RequestError::TooManyUpstreamRequests { limit: self.max });
        }
        *count += 1;
        Ok(AddressGuard {
            limit: Arc::clone(self),
            address,
        })
    }
}

/// One request's place under an [`AddressLimit`].
pub(crate) struct AddressGuard {
    limit: Arc<AddressLimit>,
    address: IpAddr,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let mut waiting = self.limit.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = waiting.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(request: Request<()>) -> request::Parts {
        request.into_parts().0
    }

    #[test]
    fn user_info_is_refused() {
        let mut userinfo = parts(Request::get("http://user@good.test/").body(()).unwrap());
        assert!(check_request(&mut userinfo, OverrideHeaders::Strip).is_err());
    }

    #[test]
    fn override_fields_are_stripped_refused_or_kept() {
        let request = || {
            let mut builder = Request::get("/");
            for name in OverrideHeaders::NAMES {
                builder = builder.header(name, "evil.test");
            }
            parts(builder.header("x-other", "kept").body(()).unwrap())
        };
        let mut stripped = request();
        check_request(&mut stripped, OverrideHeaders::Strip).unwrap();
        assert_eq!(stripped.headers.len(), 1, "{:?}", stripped.headers);
        assert!(matches!(
            check_request(&mut request(), OverrideHeaders::Refuse),
            Err(RequestError::OverrideHeader { .. })
        ));
        let mut kept = request();
        check_request(&mut kept, OverrideHeaders::Forward).unwrap();
        assert_eq!(kept.headers.len(), OverrideHeaders::NAMES.len() + 1);
    }

    #[test]
    fn one_address_is_bounded_and_others_are_not() {
        let limit = AddressLimit::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limit.enter(a).unwrap();
        let _second = limit.enter(a).unwrap();
        assert!(limit.enter(a).is_err());
        let _other = limit.enter(b).unwrap();
        drop(first);
        let _again = limit.enter(a).unwrap();
    }
}
