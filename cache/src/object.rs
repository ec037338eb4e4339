//! A stored response and the questions the request path asks of it.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::policy::{self, vary_names, CacheControl, RequestDirectives, Reuse};

/// Fixed per-entry cost added to the weigher, for the bookkeeping around headers and body.
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// The request header values a stored response was selected by (`Vary`), normalised by
/// [`normalised_value`]: two requests whose values differ only where the header's meaning does
/// not (spacing, and for some headers case and member order) select the same response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VaryKey(Vec<(String, Option<String>)>);

impl VaryKey {
    /// The values of `request` for the header names the response varies on.
    pub fn new(response_headers: &HeaderMap, request: &HeaderMap) -> VaryKey {
        VaryKey(
            vary_names(response_headers)
                .map(|name| {
                    let value = normalised_value(request, &name);
                    (name, value)
                })
                .collect(),
        )
    }

    /// True when `request` would select the same response.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.0
            .iter()
            .all(|(name, value)| normalised_value(request, name).as_deref() == value.as_deref())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How the values of a request header are compared for `Vary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// As sent: the lines joined with `", "`, surrounding whitespace trimmed.
    Exact,
    /// A list (RFC 9110 §5.6.1) whose member order carries no meaning, the members being weighted
    /// by `q` instead: compared as the sorted members, each without the optional whitespace
    /// around its `;`s, empty members skipped, and lower-cased when the header's values are
    /// case-insensitive.
    Members { case_insensitive: bool },
}

impl Comparison {
    /// The proactive-negotiation headers of RFC 9110 §12.5 are such lists; every other header
    /// (`Cookie`, `User-Agent`, extension headers) is compared as sent.
    fn of(name: &str) -> Comparison {
        match name {
            "accept-encoding" | "accept-language" | "accept-charset" => Comparison::Members {
                case_insensitive: true,
            },
            // Media-type parameters may be case-sensitive.
            "accept" => Comparison::Members {
                case_insensitive: false,
            },
            _ => Comparison::Exact,
        }
    }
}

/// The value of `name` (lower-cased) in `headers`, normalised for `Vary`; `None` when absent.
fn normalised_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let lines: Vec<_> = lines
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    Some(normalise(
        Comparison::of(name),
        lines.iter().map(|line| line.as_ref()),
    ))
}

/// Normalises the lines of one header for comparison; idempotent, so a normalised value given
/// back as one line is unchanged.
fn normalise<'a>(comparison: Comparison, lines: impl Iterator<Item = &'a str>) -> String {
    match comparison {
        Comparison::Exact => lines
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(", ")
            .trim()
            .to_string(),
        Comparison::Members { case_insensitive } => {
            // The lines are one list (RFC 9110 §5.3), and a quoted string may span them.
            let value = lines.collect::<Vec<_>>().join(", ");
            let Some(members) = split_outside_quotes(&value, ',') else {
                // A quoted string that never ends: no member structure to trust.
                return value.trim().to_string();
            };
            let mut members: Vec<String> = members
                .into_iter()
                .filter_map(|member| {
                    // Each member ends outside quotes, so this split always succeeds.
                    let parts = split_outside_quotes(member, ';')?;
                    let member = parts
                        .into_iter()
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(";");
                    match member.as_str() {
                        "" => None,
                        _ if case_insensitive => Some(member.to_ascii_lowercase()),
                        _ => Some(member),
                    }
                })
                .collect();
            members.sort_unstable();
            members.join(", ")
        }
    }
}

/// `text` split at each `separator` that is not inside a quoted string; `None` when a quoted
/// string is not closed.
fn split_outside_quotes(text: &str, separator: char) -> Option<Vec<&str>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            _ if c == separator && !in_quotes => {
                pieces.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if in_quotes {
        return None;
    }
    pieces.push(&text[start..]);
    Some(pieces)
}

/// A complete response held in the cache.
#[derive(Debug, Clone)]
pub struct CachedObject {
    pub status: StatusCode,
    /// End-to-end headers as they will be sent (hop-by-hop and `Age` removed).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the response head arrived (RFC 9111 `response_time`).
    pub response_time: SystemTime,
    /// Age the response already had when it arrived (RFC 9111 §4.2.3).
    pub corrected_initial_age: Duration,
    pub freshness_lifetime: Duration,
    pub vary: VaryKey,
    /// The directives Verge obeys for this response (CDN-Cache-Control, Surrogate-Control or
    /// Cache-Control), kept for reuse decisions.
    pub cc: CacheControl,
    /// Surrogate keys (`Surrogate-Key`, `Cache-Tag`) for purging by tag.
    pub surrogate_keys: Vec<std::sync::Arc<str>>,
}

impl CachedObject {
    /// `current_age` of RFC 9111 §4.2.3 at `now`.
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let resident = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.corrected_initial_age + resident
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.freshness_lifetime > self.current_age(now)
    }

    /// How this object may answer a request at `now`.
    pub fn reuse(&self, request: &RequestDirectives, now: SystemTime) -> Reuse {
        policy::reuse(
            &self.cc,
            self.freshness_lifetime,
            self.current_age(now),
            request,
        )
    }

    /// Whether this object may stand in for a failed upstream at `now`.
    pub fn may_serve_on_error(&self, request: &RequestDirectives, now: SystemTime) -> bool {
        policy::may_serve_stale_on_error(
            &self.cc,
            self.freshness_lifetime,
            self.current_age(now),
            request,
        )
    }

    /// A copy that is stale from `now` on (a soft purge): it must be revalidated before use,
    /// but stale-if-error and stale-while-revalidate windows still apply.
    pub fn expired_at(&self, now: SystemTime) -> CachedObject {
        CachedObject {
            freshness_lifetime: self.freshness_lifetime.min(self.current_age(now)),
            ..self.clone()
        }
    }

    /// Seconds of freshness left at `now`; negative once stale (the `ttl` of `Cache-Status`).
    pub fn ttl_seconds(&self, now: SystemTime) -> i64 {
        let life = i64::try_from(self.freshness_lifetime.as_secs()).unwrap_or(i64::MAX);
        let age = i64::try_from(self.current_age(now).as_secs()).unwrap_or(i64::MAX);
        life.saturating_sub(age)
    }

    /// Bytes this entry costs the cache: body, headers and a fixed overhead.
    pub fn weight_bytes(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + ENTRY_OVERHEAD_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn object(lifetime: u64, initial_age: u64, at: SystemTime) -> CachedObject {
        CachedObject {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"hello"),
            response_time: at,
            corrected_initial_age: Duration::from_secs(initial_age),
            freshness_lifetime: Duration::from_secs(lifetime),
            vary: VaryKey::default(),
            cc: CacheControl::default(),
            surrogate_keys: Vec::new(),
        }
    }

    #[test]
    fn freshness_runs_out_with_resident_time_plus_initial_age() {
        let t0 = SystemTime::now();
        let o = object(60, 10, t0);
        assert!(o.is_fresh(t0 + Duration::from_secs(49)));
        assert_eq!(o.ttl_seconds(t0 + Duration::from_secs(49)), 1);
        assert!(!o.is_fresh(t0 + Duration::from_secs(50)));
        assert_eq!(o.ttl_seconds(t0 + Duration::from_secs(55)), -5);
        assert_eq!(
            o.current_age(t0 + Duration::from_secs(5)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn a_soft_purged_copy_is_stale_from_then_on() {
        let t0 = SystemTime::now();
        let o = object(60, 0, t0);
        let later = t0 + Duration::from_secs(10);
        let purged = o.expired_at(later);
        assert!(o.is_fresh(later));
        assert!(!purged.is_fresh(later));
        assert_eq!(purged.ttl_seconds(later), 0);
        assert_eq!(purged.body, o.body);
    }

    #[test]
    fn vary_key_matches_normalised_values_only() {
        let mut resp = HeaderMap::new();
        resp.insert("vary", HeaderValue::from_static("Accept-Encoding, X-Lang"));
        let mut req = HeaderMap::new();
        req.insert("accept-encoding", HeaderValue::from_static("gzip"));
        let key = VaryKey::new(&resp, &req);
        let mut same = HeaderMap::new();
        same.insert("accept-encoding", HeaderValue::from_static("  gzip "));
        assert!(key.matches(&same));
        let mut other = HeaderMap::new();
        other.insert("accept-encoding", HeaderValue::from_static("br"));
        assert!(!key.matches(&other));
        let mut extra = same.clone();
        extra.insert("x-lang", HeaderValue::from_static("fr"));
        assert!(
            !key.matches(&extra),
            "a header absent when stored must be absent when reused"
        );
    }

    fn key_varying_on(name: &'static str, lines: &[&str]) -> VaryKey {
        let mut resp = HeaderMap::new();
        resp.insert("vary", HeaderValue::from_static(name));
        VaryKey::new(&resp, &request_with(name, lines))
    }

    fn request_with(name: &'static str, lines: &[&str]) -> HeaderMap {
        let mut request = HeaderMap::new();
        for line in lines {
            request.append(name, HeaderValue::from_str(line).unwrap());
        }
        request
    }

    #[test]
    fn accept_language_matches_whatever_the_case_spacing_and_order() {
        let key = key_varying_on("accept-language", &["en-US, fr;q=0.5"]);
        for same in [
            &["fr;q=0.5,en-us"][..],
            &["EN-us ,  FR ; Q=0.5"],
            &["fr;q=0.5", "en-US"],
            &[",en-US,, fr;q=0.5,"],
        ] {
            assert!(
                key.matches(&request_with("accept-language", same)),
                "{same:?}"
            );
        }
        for other in [
            &["en-US"][..],
            &["en-US, fr;q=0.6"],
            &["en-GB, fr;q=0.5"],
            &["en-US, fr;q=0.5, de"],
            &[],
        ] {
            assert!(
                !key.matches(&request_with("accept-language", other)),
                "{other:?}"
            );
        }
    }

    #[test]
    fn negotiation_headers_compare_as_unordered_lists() {
        let key = key_varying_on("accept-encoding", &["gzip, br"]);
        assert!(key.matches(&request_with("accept-encoding", &["BR,GZIP"])));
        assert!(!key.matches(&request_with("accept-encoding", &["gzip"])));
        // Media-type parameters may be case-sensitive: Accept keeps its case.
        let key = key_varying_on("accept", &["text/html;level=1, application/json;q=0.9"]);
        assert!(key.matches(&request_with(
            "accept",
            &["application/json ; q=0.9", "text/html ;level=1"]
        )));
        assert!(!key.matches(&request_with(
            "accept",
            &["text/html;level=A, application/json;q=0.9"]
        )));
        let key = key_varying_on("accept", &["text/plain;x=\"a, b\""]);
        assert!(!key.matches(&request_with("accept", &["b\", text/plain;x=\"a"])));
        assert!(key.matches(&request_with("accept", &[" text/plain; x=\"a, b\" "])));
    }

    #[test]
    fn other_headers_compare_as_sent() {
        let key = key_varying_on("user-agent", &["Mozilla/5.0 (X11, Linux)"]);
        assert!(key.matches(&request_with("user-agent", &[" Mozilla/5.0 (X11, Linux) "])));
        assert!(!key.matches(&request_with("user-agent", &["mozilla/5.0 (X11, Linux)"])));
        assert!(!key.matches(&request_with("user-agent", &["Mozilla/5.0 (Linux, X11)"])));
        let key = key_varying_on("x-flags", &["a", "b"]);
        assert!(key.matches(&request_with("x-flags", &["a, b"])));
        assert!(!key.matches(&request_with("x-flags", &["b, a"])));
    }

    #[test]
    fn weight_counts_body_and_headers() {
        let mut o = object(1, 0, SystemTime::now());
        let base = o.weight_bytes();
        o.headers.insert("x-a", HeaderValue::from_static("12345"));
        assert_eq!(o.weight_bytes(), base + 3 + 5 + 32);
        assert!(base >= 5);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use super::request_with;
        use http::HeaderValue;

        /// Text made of what list normalisation treats specially: separators, quotes, escapes,
        /// whitespace (Unicode's too), case and non-ASCII.
        fn list_soup() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just(","),
                Just(";"),
                Just("\""),
                Just("\\"),
                Just(" "),
                Just("\t"),
                Just("\u{3000}"),
                Just("en-US"),
                Just("Fr"),
                Just("q=0.5"),
                Just("é"),
                Just("*"),
            ];
            prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
        }

        fn lines() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec(prop_oneof![list_soup(), "\\PC{0,24}"], 0..4)
        }

        fn comparison() -> impl Strategy<Value = Comparison> {
            prop::sample::select(vec![
                Comparison::Exact,
                Comparison::Members {
                    case_insensitive: true,
                },
                Comparison::Members {
                    case_insensitive: false,
                },
            ])
        }

        /// One `Accept-Language` member: a language range and maybe a weight.
        fn language() -> impl Strategy<Value = String> {
            (
                "\\*|[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8}){0,2}",
                prop::option::of("0(\\.[0-9]{0,3})?|1(\\.0{0,3})?"),
            )
                .prop_map(|(range, q)| match q {
                    Some(q) => format!("{range};q={q}"),
                    None => range,
                })
        }

        proptest! {
            #[test]
            fn a_request_always_matches_the_key_it_made(
                name in prop::sample::select(vec![
                    "accept-language", "accept-encoding", "accept", "user-agent", "x-anything",
                ]),
                lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
                soup in lines(),
            ) {
                let mut response = HeaderMap::new();
                response.insert("vary", HeaderValue::from_static(name));
                let mut request = HeaderMap::new();
                let bytes = lines.iter().map(Vec::as_slice).chain(soup.iter().map(String::as_bytes));
                for line in bytes {
                    if let Ok(value) = HeaderValue::from_bytes(line) {
                        request.append(name, value);
                    }
                }
                let key = VaryKey::new(&response, &request);
                prop_assert!(key.matches(&request));
            }

            #[test]
            fn normalisation_is_idempotent(comparison in comparison(), lines in lines()) {
                let once = normalise(comparison, lines.iter().map(String::as_str));
                let twice = normalise(comparison, std::iter::once(once.as_str()));
                prop_assert_eq!(once, twice);
            }

            #[test]
            fn accept_language_ignores_member_order_case_and_spacing(
                (members, order, styles, split) in prop::collection::vec(language(), 1..6)
                    .prop_flat_map(|members| {
                        let n = members.len();
                        (
                            Just(members),
                            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                            prop::collection::vec((any::<bool>(), 0..4usize), n),
                            0..n,
                        )
                    }),
            ) {
                let key = super::key_varying_on("accept-language", &[&members.join(", ")]);
                let spaces = ["", " ", "\t", "  "];
                let restyled: Vec<String> = order
                    .iter()
                    .zip(&styles)
                    .map(|(&i, &(upper, space))| {
                        let member = if upper {
                            members[i].to_ascii_uppercase()
                        } else {
                            members[i].to_ascii_lowercase()
                        };
                        let ows = spaces[space];
                        format!("{ows}{}{ows}", member.replace(';', &format!("{ows};{ows}")))
                    })
                    .collect();
                // The members on two lines, split at `split`.
                let (first, second) = restyled.split_at(split);
                let lines: Vec<String> = [first, second]
                    .iter()
                    .filter(|part| !part.is_empty())
                    .map(|part| part.join(","))
                    .collect();
                let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                prop_assert!(key.matches(&request_with("accept-language", &lines)), "{:?}", lines);
            }
        }
    }
}
