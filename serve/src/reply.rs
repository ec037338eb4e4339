//! Replies with a buffered body: text, a plain message, JSON, and refusals. Each is a
//! `Response<Bytes>`; a server wraps the bytes in its own body type with `Response::map`.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use serde::Serialize;

/// Content type of [`plain`] replies.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// Content type of [`json`] and [`json_line`] replies.
pub const APPLICATION_JSON: &str = "application/json";

/// `body` sent as `content_type` (left out if it is not a valid header value).
pub fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

/// `message` and a newline, as UTF-8 text: what a node's admin API answers for people and
/// scripts.
pub fn plain(status: StatusCode, message: &str) -> Response<Bytes> {
    text(status, TEXT_PLAIN, format!("{message}\n"))
}

/// `value` as indented JSON, as control's APIs answer.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Bytes> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    text(status, APPLICATION_JSON, body)
}

/// `value` as one line of compact JSON ending in a newline, as a node's admin API answers.
pub fn json_line<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Bytes> {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    text(status, APPLICATION_JSON, body)
}

/// Why a request was refused: the status, a message for the client and, when credentials are
/// wanted, the `WWW-Authenticate` challenge. Each API words the body in its own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `WWW-Authenticate`.
    pub challenge: Option<HeaderValue>,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            challenge: None,
        }
    }

    /// The refusal as a response: `render` builds it from the status and the message in the
    /// API's format, then the challenge, if any, is added.
    pub fn into_response<B>(
        self,
        render: impl FnOnce(StatusCode, &str) -> Response<B>,
    ) -> Response<B> {
        let mut response = render(self.status, &self.message);
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type<B>(response: &Response<B>) -> Option<&str> {
        response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }

    #[test]
    fn a_plain_reply_is_the_message_and_a_newline_as_utf8_text() {
        let response = plain(StatusCode::NOT_FOUND, "no such thing");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(content_type(&response), Some("text/plain; charset=utf-8"));
        assert_eq!(response.body(), "no such thing\n");
    }

    #[test]
    fn json_replies_are_indented_or_one_line_with_a_newline() {
        let value = serde_json::json!({"purged": 3});
        let pretty = json(StatusCode::ACCEPTED, &value);
        assert_eq!(pretty.status(), StatusCode::ACCEPTED);
        assert_eq!(content_type(&pretty), Some("application/json"));
        assert_eq!(pretty.body(), "{\n  \"purged\": 3\n}");
        let line = json_line(StatusCode::OK, &value);
        assert_eq!(content_type(&line), Some("application/json"));
        assert_eq!(line.body(), "{\"purged\":3}\n");
    }

    #[test]
    fn a_content_type_that_is_no_header_value_is_left_out() {
        let response = text(StatusCode::OK, "text/plain; version=0.0.4", "x");
        assert_eq!(content_type(&response), Some("text/plain; version=0.0.4"));
        let response = text(StatusCode::OK, "bad\nvalue", "x");
        assert_eq!(content_type(&response), None);
        assert_eq!(response.body(), "x");
    }

    #[test]
    fn a_refusal_is_rendered_by_the_caller_and_carries_its_challenge() {
        let refusal = Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "too big");
        let response = refusal.into_response(plain);
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.body(), "too big\n");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());

        let refusal = Refusal {
            challenge: Some(HeaderValue::from_static("Bearer realm=\"r\"")),
            ..Refusal::new(StatusCode::UNAUTHORIZED, "who are you")
        };
        let response = refusal.into_response(|status, message| {
            json(status, &serde_json::json!({ "error": message }))
        });
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.body(), "{\n  \"error\": \"who are you\"\n}");
        assert_eq!(
            response.headers().get(WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer realm=\"r\""))
        );
    }
}
