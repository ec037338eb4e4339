//! The configuration file as written: serde structs with `deny_unknown_fields`, every field
//! optional (defaults are applied during validation), sizes and durations still as text; and
//! reading a text into them, where every structural problem (TOML syntax, a value of the wrong
//! type, an unknown or missing key) is reported by key path and line, like the problems
//! validation finds later.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_path_to_error::Segment;

pub use crate::access_log::RawAccessLog;
use crate::compression::RawCompression;
use crate::error::{ConfigError, ConfigErrors};
use crate::rules::RawRule;
use crate::tls::{RawClientTls, RawTls};
pub use crate::units::RawSize;

/// Reads a configuration file; the file's path is named in a read error.
pub(crate) fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single("", format!("cannot read {}: {e}", path.display())))
}

/// Parses a configuration text into its raw structs.
pub(crate) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ConfigErrors> {
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| {
        // The text is not TOML, so no key path is known yet: the line tells which.
        let line = e.span().map(|span| line_at(text, span.start));
        let path = line.map_or_else(String::new, |line| key_path_at_line(text, line));
        located(path, line, e.message())
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let mut path = key_path(e.path());
        let e = e.into_inner();
        // serde names a missing key in its message only, at the path of its table.
        if let Some(key) = quoted_after(e.message(), "missing field `") {
            path = join(&path, key);
        }
        let line = e.span().map(|span| line_at(text, span.start));
        located(path, line, e.message())
    })
}

fn located(path: String, line: Option<usize>, message: &str) -> ConfigErrors {
    ConfigErrors {
        errors: vec![ConfigError {
            path,
            line,
            message: in_toml_terms(message),
        }],
    }
}

/// The 1-based line of byte `offset`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A dotted key path as validation writes it: `shields.members[1].url`, with keys that are
/// not bare TOML keys quoted (`geo.names."cdn.example.com"`).
fn key_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => out = join(&out, key),
            Segment::Enum { variant } => out = join(&out, variant),
            Segment::Unknown => out = join(&out, "?"),
        }
    }
    out
}

fn join(table: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if table.is_empty() {
        key
    } else {
        format!("{table}.{key}")
    }
}

/// For text that does not parse: the table header in effect at `line` and the key that line
/// assigns, read from the lines themselves (`[server]` then `listen = "...` gives
/// `server.listen`); the header itself when the line is one.
fn key_path_at_line(text: &str, line: usize) -> String {
    let header = |content: &str| {
        let name = content.trim_start_matches('[');
        let end = name.find([']', '#']).unwrap_or(name.len());
        name[..end].trim().to_string()
    };
    let mut table = String::new();
    for content in text.lines().take(line.saturating_sub(1)) {
        let content = content.trim_start();
        if content.starts_with('[') {
            table = header(content);
        }
    }
    let content = text
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or("")
        .trim_start();
    if content.starts_with('[') {
        return header(content);
    }
    match content.split_once('=') {
        Some((key, _)) if !content.starts_with('#') && !key.trim().is_empty() => {
            let key = key.trim();
            if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            }
        }
        _ => table,
    }
}

/// The text between `prefix` and the next backquote of `message`.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.find('`').map(|end| &rest[..end])
}

/// serde's messages in the words of a TOML file (arrays and tables, not sequences, maps and
/// structs), on one line.
fn in_toml_terms(message: &str) -> String {
    let mut message = message.replace('\n', "; ");
    for (serde, toml) in [
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
    ] {
        message = message.replace(serde, toml);
    }
    // `expected struct RawServer`: a table, whatever the struct is called.
    if let Some(at) = message.find("expected struct ") {
        let name_end = message[at + "expected struct ".len()..]
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .map_or(message.len(), |end| at + "expected struct ".len() + end);
        message.replace_range(at..name_end, "expected a table");
    }
    message
}

/// The `[control]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeControl {
    pub url: Option<String>,
    pub weight: Option<u64>,
    pub heartbeat_interval: Option<String>,
    pub reconnect_min: Option<String>,
    pub reconnect_max: Option<String>,
    pub probe_spare_every: Option<String>,
    pub probe_origin_every: Option<String>,
    pub advertise_url: Option<String>,
    pub source_address: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub urls: Option<Vec<String>>,
    pub tls: Option<crate::tls::RawClientTls>,
}

/// An edge's file. Its `[access_log]` table is kept with `[server]` (see
/// [`RawServer::access_log`]), where the node tables every role shares are validated.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "EdgeFileText")]
pub struct RawEdgeFile {
    pub edge: Option<RawNode>,
    pub server: Option<RawServer>,
    pub cache: Option<RawCache>,
    pub upstream: Option<RawUpstream>,
    pub admin: Option<RawAdmin>,
    pub shields: Option<RawShields>,
    pub control: Option<RawNodeControl>,
    pub tls: Option<RawTls>,
}

/// An edge's file exactly as written, every top-level table apart.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeFileText {
    edge: Option<RawNode>,
    server: Option<RawServer>,
    cache: Option<RawCache>,
    upstream: Option<RawUpstream>,
    admin: Option<RawAdmin>,
    shields: Option<RawShields>,
    control: Option<RawNodeControl>,
    tls: Option<RawTls>,
    access_log: Option<RawAccessLog>,
    rules: Option<Vec<RawRule>>,
    compression: Option<RawCompression>,
}

impl From<EdgeFileText> for RawEdgeFile {
    fn from(text: EdgeFileText) -> RawEdgeFile {
        RawEdgeFile {
            edge: text.edge,
            server: with_access_log(text.server, text.access_log),
            cache: with_compression(with_rules(text.cache, text.rules), text.compression),
            upstream: text.upstream,
            admin: text.admin,
            shields: text.shields,
            control: text.control,
            tls: text.tls,
        }
    }
}

/// `[cache]` with the file's `[[rules]]` attached.
fn with_rules(cache: Option<RawCache>, rules: Option<Vec<RawRule>>) -> Option<RawCache> {
    match (cache, rules) {
        (cache, None) => cache,
        (cache, Some(rules)) => Some(RawCache {
            rules: Some(rules),
            ..cache.unwrap_or_default()
        }),
    }
}

/// `[cache]` with an edge file's `[compression]` attached.
fn with_compression(cache: Option<RawCache>, table: Option<RawCompression>) -> Option<RawCache> {
    match (cache, table) {
        (cache, None) => cache,
        (cache, Some(table)) => Some(RawCache {
            compression: Some(table),
            ..cache.unwrap_or_default()
        }),
    }
}

/// `[server]` with the file's `[access_log]` table attached.
fn with_access_log(server: Option<RawServer>, log: Option<RawAccessLog>) -> Option<RawServer> {
    match (server, log) {
        (server, None) => server,
        (server, Some(log)) => Some(RawServer {
            access_log: Some(log),
            ..server.unwrap_or_default()
        }),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShields {
    pub origin_fallback: Option<bool>,
    pub failures_to_eject: Option<u64>,
    pub eject_for: Option<String>,
    pub retry_budget_percent: Option<u64>,
    pub bounded_load_percent: Option<u64>,
    pub topology: Option<String>,
    pub origin_region: Option<String>,
    #[serde(default)]
    pub members: Vec<RawShieldMember>,
    pub tls: Option<RawClientTls>,
}

/// How a node uses the shields above it, as written: a shield's `[parents]` table, and the
/// same keys of an edge's `[shields]` (taken from [`RawShields`] for validation).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpperTier {
    pub failures_to_eject: Option<u64>,
    pub eject_for: Option<String>,
    pub retry_budget_percent: Option<u64>,
    pub bounded_load_percent: Option<u64>,
    pub tls: Option<RawClientTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShieldMember {
    pub id: Option<String>,
    pub url: Option<String>,
    pub weight: Option<u64>,
    pub region: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token: Option<String>,
    pub max_body_bytes: Option<RawSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub id: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub max_connections: Option<u64>,
    pub max_header_bytes: Option<RawSize>,
    pub header_read_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub h2_max_concurrent_streams: Option<u64>,
    pub h2_max_pending_accept_reset_streams: Option<u64>,
    pub h2_max_local_error_reset_streams: Option<u64>,
    pub worker_threads: Option<u64>,
    pub upgrade_socket: Option<String>,
    pub trust_request_id: Option<bool>,
    pub idle_timeout: Option<String>,
    pub max_connections_per_address: Option<u64>,
    pub max_upstream_requests_per_address: Option<u64>,
    pub override_headers: Option<String>,
    pub request_body_buffer: Option<RawSize>,
    pub request_body_buffer_total: Option<RawSize>,
    pub max_request_body: Option<RawSize>,
    pub request_body_timeout: Option<String>,
    pub request_body_min_rate: Option<RawSize>,
    pub send_timeout: Option<String>,
    /// The file's top-level `[access_log]` table, attached here when the file is read so that
    /// it is validated with the node tables every role shares; never read from `[server]`.
    #[serde(skip)]
    pub access_log: Option<RawAccessLog>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_bytes: Option<RawSize>,
    pub max_object_bytes: Option<RawSize>,
    pub stream_above_bytes: Option<RawSize>,
    pub hit_for_miss_ttl: Option<String>,
    pub hit_for_miss_max_keys: Option<u64>,
    pub max_ranges: Option<u64>,
    /// The file's `[[rules]]`, kept with the cache they tune.
    #[serde(skip)]
    pub rules: Option<Vec<RawRule>>,
    /// An edge file's `[compression]`, kept with the cache whose objects it compresses.
    #[serde(skip)]
    pub compression: Option<RawCompression>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub origin: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub max_idle_per_host: Option<u64>,
    pub max_connections: Option<u64>,
    pub idle_timeout: Option<String>,
    pub source_address: Option<String>,
    pub tls: Option<RawClientTls>,
}

/// A shield's file. Its `[access_log]` table is kept with `[server]`, as an edge's.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "ShieldFileText")]
pub struct RawShieldFile {
    pub shield: Option<RawNode>,
    pub server: Option<RawServer>,
    pub cache: Option<RawCache>,
    pub admin: Option<RawAdmin>,
    pub origin: Option<RawOriginPool>,
    pub resolver: Option<RawResolver>,
    pub parents: Option<RawUpperTier>,
    pub control: Option<RawNodeControl>,
    pub tls: Option<RawTls>,
}

/// A shield's file exactly as written, every top-level table apart.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShieldFileText {
    shield: Option<RawNode>,
    server: Option<RawServer>,
    cache: Option<RawCache>,
    admin: Option<RawAdmin>,
    origin: Option<RawOriginPool>,
    resolver: Option<RawResolver>,
    parents: Option<RawUpperTier>,
    control: Option<RawNodeControl>,
    tls: Option<RawTls>,
    access_log: Option<RawAccessLog>,
    rules: Option<Vec<RawRule>>,
}

impl From<ShieldFileText> for RawShieldFile {
    fn from(text: ShieldFileText) -> RawShieldFile {
        RawShieldFile {
            shield: text.shield,
            server: with_access_log(text.server, text.access_log),
            cache: with_rules(text.cache, text.rules),
            admin: text.admin,
            origin: text.origin,
            resolver: text.resolver,
            parents: text.parents,
            control: text.control,
            tls: text.tls,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOriginPool {
    #[serde(default)]
    pub servers: Vec<String>,
    pub source_address: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub max_idle_per_host: Option<u64>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<u64>,
    pub health_path: Option<String>,
    pub health_interval: Option<String>,
    pub healthy_after: Option<u64>,
    pub unhealthy_after: Option<u64>,
    pub eject_for: Option<String>,
    pub max_eject_for: Option<String>,
    pub retries: Option<u64>,
    pub retry_budget_percent: Option<u64>,
    pub tls: Option<RawClientTls>,
}

/// How the shield resolves the host names of its origin servers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    pub nameservers: Option<Vec<String>>,
    pub min_ttl: Option<String>,
    pub max_ttl: Option<String>,
    pub negative_retry: Option<String>,
    pub timeout: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{detect_role, ControlConfig, EdgeConfig, ShieldConfig};

    const EDGE: &str = "[edge]\nid = \"e\"\n[upstream]\norigin = \"http://127.0.0.1:8000\"\n";

    /// The one error of `errors`, which must be a parse error.
    fn only(errors: ConfigErrors) -> ConfigError {
        assert_eq!(errors.errors.len(), 1, "{errors}");
        errors.errors[0].clone()
    }

    #[test]
    fn a_negative_integer_names_its_key_and_line() {
        let text = format!("{EDGE}[server]\nmax_connections = -1\n");
        let error = only(EdgeConfig::from_toml(&text).unwrap_err());
        assert_eq!(error.path, "server.max_connections");
        assert_eq!(error.line, Some(6));
        assert_eq!(
            error.to_string(),
            "server.max_connections (line 6): invalid value: integer `-1`, \
             expected a non-negative integer"
        );
    }

    #[test]
    fn a_negative_size_names_its_key_and_line() {
        let text = format!("{EDGE}[cache]\nmax_bytes = -5\n");
        let error = only(EdgeConfig::from_toml(&text).unwrap_err());
        assert_eq!(
            (error.path.as_str(), error.line),
            ("cache.max_bytes", Some(6))
        );
        assert!(
            error
                .message
                .contains("a size like \"16KiB\" or a number of bytes"),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_type_names_its_key_and_line() {
        let text = format!("{EDGE}[server]\nlisten = 8080\n");
        let error = only(EdgeConfig::from_toml(&text).unwrap_err());
        assert_eq!(
            error.to_string(),
            "server.listen (line 6): invalid type: integer `8080`, expected a string"
        );
        let table = only(EdgeConfig::from_toml(&format!("server = 1\n{EDGE}")).unwrap_err());
        assert_eq!(
            table.to_string(),
            "server (line 1): invalid type: integer `1`, expected a table"
        );
        let list = "[origin]\nservers = [\"http://a:1\", 2]\n";
        let element = only(ShieldConfig::from_toml(list).unwrap_err());
        assert_eq!(
            (element.path.as_str(), element.line),
            ("origin.servers[1]", Some(2))
        );
    }

    #[test]
    fn an_unknown_field_is_named_with_its_table_and_line() {
        let text = format!("{EDGE}[server]\nlisten = \"127.0.0.1:8080\"\nlisten_typo = \"x\"\n");
        let error = only(EdgeConfig::from_toml(&text).unwrap_err());
        assert_eq!(error.path, "server.listen_typo");
        assert_eq!(error.line, Some(7));
        assert!(
            error.to_string().starts_with(
                "server.listen_typo (line 7): unknown field `listen_typo`, expected one of `listen`"
            ),
            "{error}"
        );
        let member = "[upstream]\norigin = \"http://o:1\"\n[[shields.members]]\nid = \"a\"\n\
                      [[shields.members]]\nid = \"b\"\nwieght = 2\n";
        let error = only(EdgeConfig::from_toml(member).unwrap_err());
        assert_eq!(
            (error.path.as_str(), error.line),
            ("shields.members[1].wieght", Some(7))
        );
        let top = only(EdgeConfig::from_toml(&format!("{EDGE}[upstreams]\n")).unwrap_err());
        assert_eq!((top.path.as_str(), top.line), ("upstreams", Some(5)));
    }

    #[test]
    fn a_key_that_needs_quotes_is_quoted_in_the_path() {
        let text = "[controller]\ndata_dir = \"/d\"\ntoken = \"0123456789abcdef\"\n\
                    [geo]\nzone = \"verge.test\"\n[geo.names.\"cdn.verge.test\"]\nmax_answers = \"two\"\n";
        let error = only(ControlConfig::from_toml(text).unwrap_err());
        assert_eq!(error.path, "geo.names.\"cdn.verge.test\".max_answers");
        assert_eq!(error.line, Some(7));
    }

    #[test]
    fn a_missing_field_is_named_at_its_table() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Item {
            name: String,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct File {
            items: Vec<Item>,
        }
        let text = "[[items]]\nname = \"a\"\n[[items]]\n";
        let errors = parse::<File>(text).unwrap_err();
        let error = only(errors);
        assert_eq!(
            (error.path.as_str(), error.line),
            ("items[1].name", Some(3))
        );
        assert_eq!(
            error.to_string(),
            "items[1].name (line 3): missing field `name`"
        );
    }

    #[test]
    fn a_syntax_error_names_its_key_and_line() {
        let text = format!("{EDGE}[server]\nlisten = \"127.0.0.1:8080\n");
        let error = only(EdgeConfig::from_toml(&text).unwrap_err());
        assert_eq!(
            (error.path.as_str(), error.line),
            ("server.listen", Some(6))
        );
        assert!(
            error.to_string().starts_with("server.listen (line 6): "),
            "{error}"
        );
        let twice = format!("{EDGE}[cache]\nmax_bytes = 1\nmax_bytes = 2\n");
        let error = only(EdgeConfig::from_toml(&twice).unwrap_err());
        assert_eq!(error.to_string(), "cache.max_bytes (line 7): duplicate key");
        let header = only(EdgeConfig::from_toml(&format!("{EDGE}[server\n")).unwrap_err());
        assert_eq!((header.path.as_str(), header.line), ("server", Some(5)));
    }

    #[test]
    fn telling_the_role_reports_syntax_errors_by_line() {
        let error = only(detect_role("[edge]\nid = \n").unwrap_err());
        assert_eq!((error.path.as_str(), error.line), ("edge.id", Some(2)));
    }
}
