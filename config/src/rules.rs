//! Cache rules (`[[rules]]`): what an operator says about a site or a path that its origin's
//! headers do not — TTLs, bypass, the cache key, cookies, negative caching and response fields.
//! Edges and shields take the same table. The first rule that matches a request applies; a
//! request no rule matches is served exactly as without rules.
//!
//! Matching and the actions themselves are the cache's ([`verge_cache::rules`]); this module
//! reads and checks the table, naming the rule and key of every problem.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::error::Collector;

/// Most rules a file may hold.
pub const MAX_RULES: usize = 10_000;

/// A `[[rules]]` entry as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub request_header: Option<RawHeaderMatch>,
    pub bypass: Option<bool>,
    pub default_ttl: Option<String>,
    pub force_ttl: Option<String>,
    pub max_ttl: Option<String>,
    pub stale_while_revalidate: Option<String>,
    pub stale_if_error: Option<String>,
    pub cache_private: Option<bool>,
    pub strip_set_cookie: Option<bool>,
    pub ignore_cookies: Option<bool>,
    pub negative_ttl: Option<String>,
    pub error_ttl: Option<String>,
    pub query: Option<RawQueryRule>,
    pub key: Option<RawKeyRule>,
    pub response_headers: Option<RawResponseHeaders>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatch {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueryRule {
    pub drop: Option<Vec<String>>,
    pub keep: Option<Vec<String>>,
    pub sort: Option<bool>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyRule {
    pub headers: Option<Vec<String>>,
    pub cookies: Option<Vec<String>>,
    pub device: Option<bool>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponseHeaders {
    pub add: Option<std::collections::BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

/// The rules of a node, in the order they are tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Arc<Rule>>,
    /// Which rules each host can match.
    pub index: RuleIndex,
}

impl RuleSet {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `first`'s rules, then `then`'s: control's rules before a node's own.
    pub fn chain(first: &RuleSet, then: &RuleSet) -> RuleSet {
        let rules: Vec<Arc<Rule>> = first.rules.iter().chain(&then.rules).cloned().collect();
        RuleSet {
            index: RuleIndex::new(rules.iter().map(|rule| &**rule)),
            rules,
        }
    }

    /// Checks rules as they came from control (the `[[rules]]` of its file).
    pub fn from_raw(raw: Vec<RawRule>) -> Result<RuleSet, crate::ConfigErrors> {
        let mut c = Collector::default();
        let rules = validate_rules(&mut c, Some(raw));
        c.finish(rules)
    }
}

/// One rule: when it matches, and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name in `Cache-Status` and metrics: given, or `rule-N` (from 1) by position.
    pub name: String,
    pub host: Option<HostPattern>,
    pub path: Option<Pattern>,
    /// Upper-case methods; empty: any.
    pub methods: Vec<String>,
    pub request_header: Option<HeaderMatch>,
    pub actions: Actions,
}

/// A host to match: exactly, or any subdomain of a suffix (`*.example.com`). Lower-case,
/// without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `.example.com` for `*.example.com`: matches `a.example.com`, not `example.com`.
    Subdomains(String),
}

/// A path prefix, or a wildcard pattern (`*` any run of characters, `?` one) matched against
/// the whole path.
#[derive(Debug, Clone)]
pub enum Pattern {
    Prefix(String),
    Glob(Glob),
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Prefix(a), Pattern::Prefix(b)) => a == b,
            (Pattern::Glob(a), Pattern::Glob(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Pattern {}

/// A compiled wildcard pattern, compared by its text.
#[derive(Debug, Clone)]
pub struct Glob {
    pub text: String,
    matcher: WildMatch,
}

impl Glob {
    pub fn new(text: &str) -> Glob {
        Glob {
            text: text.to_string(),
            matcher: WildMatch::new(text),
        }
    }

    pub fn matches(&self, input: &str) -> bool {
        self.matcher.matches(input)
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.text == other.text
    }
}

impl Eq for Glob {}

/// A request field that must be present (with this value, when one is given; compared
/// without regard to case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lower-case.
    pub name: String,
    pub value: Option<String>,
}

/// What a matching rule does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    /// Never look in or store into the cache.
    pub bypass: bool,
    /// Freshness when the origin states none.
    pub default_ttl: Option<Duration>,
    /// Freshness whatever the origin states.
    pub force_ttl: Option<Duration>,
    /// Freshness at most this.
    pub max_ttl: Option<Duration>,
    /// Windows used when the origin gives none.
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    /// Store what the origin marked `private`.
    pub cache_private: bool,
    /// Remove `Set-Cookie` from responses, which makes them storable.
    pub strip_set_cookie: bool,
    /// Send no `Cookie` upstream (but the cookies named in the key).
    pub ignore_cookies: bool,
    /// Freshness of a 404 or 410 that states none.
    pub negative_ttl: Option<Duration>,
    /// Freshness of a 500, 502, 503 or 504 that states none.
    pub error_ttl: Option<Duration>,
    pub query: QueryRule,
    pub key: KeyRule,
    pub add_response_headers: Vec<(String, String)>,
    /// Lower-case names.
    pub remove_response_headers: Vec<String>,
}

/// How the query string is normalised, in the key and in the request sent upstream alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRule {
    /// Parameters removed (wildcards allowed: `utm_*`).
    pub drop: Vec<Glob>,
    /// When set, only these parameters are kept (wildcards allowed).
    pub keep: Option<Vec<Glob>>,
    /// Parameters sorted by name (stable for repeated names).
    pub sort: bool,
}

impl QueryRule {
    pub fn is_identity(&self) -> bool {
        self.drop.is_empty() && self.keep.is_none() && !self.sort
    }
}

/// What the key adds to the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRule {
    /// Lower-case request field names whose values join the key.
    pub headers: Vec<String>,
    /// Cookie names whose values join the key.
    pub cookies: Vec<String>,
    /// The client's device class (`mobile`, `tablet`, `desktop`, from `User-Agent`) joins the key.
    pub device: bool,
}

impl KeyRule {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.cookies.is_empty() && !self.device
    }
}

/// Checks the `[[rules]]` of a file. Each problem is named by the rule's position and key
/// (`rules[2].path`), and by its name when it has one.
pub(crate) fn validate_rules(c: &mut Collector, raw: Option<Vec<RawRule>>) -> Option<RuleSet> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_RULES {
        c.push(
            "rules",
            format!("{} rules; at most {MAX_RULES} are accepted", raw.len()),
        );
        return None;
    }
    let mut rules = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (index, raw) in raw.into_iter().enumerate() {
        match validate_rule(c, index, raw) {
            Some(rule) => rules.push(rule),
            None => ok = false,
        }
    }
    for (index, rule) in rules.iter().enumerate() {
        if let Some(earlier) = rules[..index].iter().position(|r| r.name == rule.name) {
            c.push(
                &format!("rules[{index}].name"),
                format!(
                    "{:?} is already the name of rules[{earlier}]; names must be unique",
                    rule.name
                ),
            );
            ok = false;
        }
        if let Some(earlier) = rules[..index].iter().position(|r| r.covers(rule)) {
            c.push(
                &format!("rules[{index}]"),
                format!(
                    "rule {:?} never applies: rules[{earlier}] ({:?}) matches every request it \
                     would (the first match wins)",
                    rule.name, rules[earlier].name
                ),
            );
            ok = false;
        }
    }
    ok.then(|| RuleSet {
        index: RuleIndex::new(rules.iter()),
        rules: rules.into_iter().map(Arc::new).collect(),
    })
}

impl Rule {
    /// Whether this rule matches every request `later` would (so `later` is dead): the same or
    /// no criterion in each of host, path, methods and request field.
    fn covers(&self, later: &Rule) -> bool {
        fn covers<T: PartialEq>(mine: &Option<T>, theirs: &Option<T>) -> bool {
            mine.is_none() || mine == theirs
        }
        covers(&self.host, &later.host)
            && covers(&self.path, &later.path)
            && covers(&self.request_header, &later.request_header)
            && (self.methods.is_empty()
                || (!later.methods.is_empty()
                    && later.methods.iter().all(|m| self.methods.contains(m))))
    }
}

fn validate_rule(c: &mut Collector, index: usize, mut raw: RawRule) -> Option<Rule> {
    let at = |key: &str| format!("rules[{index}].{key}");
    let before = c.len();
    let name = match raw.name.take() {
        Some(name) => {
            if name.is_empty()
                || name.len() > 64
                || !name.starts_with(|ch: char| ch.is_ascii_alphabetic())
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                c.push(
                    &at("name"),
                    format!(
                        "{name:?} is not a valid rule name: 1 to 64 letters, digits, '-', '_' \
                         or '.', starting with a letter"
                    ),
                );
            }
            name
        }
        None => format!("rule-{}", index + 1),
    };
    let host = raw
        .host
        .take()
        .and_then(|h| c.take(&at("host"), host_pattern(&h)));
    let path = raw
        .path
        .take()
        .and_then(|p| c.take(&at("path"), path_pattern(&p)));
    let methods = raw
        .methods
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| c.take(&at("methods"), method(&m)))
        .collect();
    let request_header = raw.request_header.take().and_then(|h| {
        let name = c.take(&at("request_header.name"), field_name(&h.name))?;
        Some(HeaderMatch {
            name,
            value: h.value,
        })
    });
    let actions = validate_actions(c, &at, raw);
    if c.len() > before {
        return None;
    }
    Some(Rule {
        name,
        host,
        path,
        methods,
        request_header,
        actions: actions?,
    })
}

fn host_pattern(text: &str) -> Result<HostPattern, String> {
    let lower = text.to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        });
    if !valid {
        return Err(format!(
            "{text:?} is not a host name: expected a name like \"www.example.com\" or \
             \"*.example.com\" (no port, no other wildcard)"
        ));
    }
    Ok(if suffix {
        HostPattern::Subdomains(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}

fn path_pattern(text: &str) -> Result<Pattern, String> {
    if !text.starts_with('/') && !text.starts_with('*') {
        return Err(format!(
            "{text:?} is not a path pattern: it must start with '/' (or '*')"
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|ch| ch.is_ascii_whitespace() || ch.is_ascii_control() || "[]{}\\#".contains(*ch))
    {
        return Err(format!(
            "{text:?} is not a valid path pattern: {bad:?} is not allowed (only '*' and '?' \
             are wildcards)"
        ));
    }
    if text.contains("**") {
        return Err(format!(
            "{text:?}: '**' is not a pattern here; '*' already matches any run of characters, \
             '/' included"
        ));
    }
    Ok(if text.contains(['*', '?']) {
        Pattern::Glob(Glob::new(text))
    } else {
        Pattern::Prefix(text.to_string())
    })
}

fn method(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.chars().all(|ch| ch.is_ascii_uppercase()) {
        return Err(format!(
            "{text:?} is not a method: expected upper-case letters, e.g. \"GET\""
        ));
    }
    Ok(text.to_string())
}

fn field_name(text: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(text.as_bytes())
        .map(|name| name.as_str().to_string())
        .map_err(|_| format!("{text:?} is not a valid header field name"))
}

mod actions;
mod index;
#[cfg(test)]
mod tests;

#[cfg(test)]
use actions::query_pattern;
use actions::validate_actions;

pub use index::RuleIndex;
