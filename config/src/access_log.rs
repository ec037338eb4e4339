//! `[access_log]`: one line per request, to a file or stdout, in JSON or the combined log
//! format, sampled (errors always logged), through a bounded queue. The raw table is read with
//! a role's file and validated here, under the `access_log.*` key paths.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::Collector;
use crate::field::count;

/// Defaults of `[access_log]`.
pub mod defaults {
    pub const FORMAT: &str = "json";
    pub const SAMPLE: f64 = 1.0;
    pub const BUFFER_LINES: u64 = 8192;
}

/// The `[access_log]` table as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: Option<String>,
    pub format: Option<String>,
    pub sample: Option<f64>,
    pub buffer_lines: Option<u64>,
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccessLogTarget {
    /// `path = "-"`: the process's standard output.
    Stdout,
    /// A file, opened for appending (created if missing); reopened on SIGUSR1.
    File(PathBuf),
}

impl std::fmt::Display for AccessLogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLogTarget::Stdout => f.write_str("-"),
            AccessLogTarget::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// The combined log format (NCSA), with Verge's fields appended as quoted `key=value`s.
    Combined,
}

impl AccessLogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogFormat::Json => "json",
            AccessLogFormat::Combined => "combined",
        }
    }
}

/// A validated `[access_log]` with a path: the node writes an access log.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub target: AccessLogTarget,
    pub format: AccessLogFormat,
    /// Share of requests logged, 0.0–1.0; error responses are logged whatever it is.
    pub sample: f64,
    /// Bound on lines queued for the writer; past it lines are dropped and counted.
    pub buffer_lines: usize,
}

// `sample` is checked to be a number in 0.0..=1.0, never NaN, so equality is total.
impl Eq for AccessLogConfig {}

/// Validates `[access_log]`; `Some(None)` when there is no table or it names no path.
pub(crate) fn validate_access_log(
    c: &mut Collector,
    raw: Option<RawAccessLog>,
) -> Option<Option<AccessLogConfig>> {
    let Some(raw) = raw else { return Some(None) };
    let format = match raw.format.as_deref().unwrap_or(defaults::FORMAT) {
        "json" => Some(AccessLogFormat::Json),
        "combined" => Some(AccessLogFormat::Combined),
        other => {
            c.push(
                "access_log.format",
                format!("unknown format {other:?}: expected \"json\" or \"combined\""),
            );
            None
        }
    };
    let sample = match raw.sample.unwrap_or(defaults::SAMPLE) {
        s if (0.0..=1.0).contains(&s) => Some(s),
        s => {
            c.push(
                "access_log.sample",
                format!("{s} is out of range 0.0..=1.0"),
            );
            None
        }
    };
    let buffer_lines = count(
        c,
        "access_log.buffer_lines",
        raw.buffer_lines,
        defaults::BUFFER_LINES,
        (1, 10_000_000),
    );
    let target = match raw.path.as_deref() {
        None => None,
        Some("") => {
            c.push(
                "access_log.path",
                "must not be empty (\"-\" is stdout; leave it out for no access log)",
            );
            return None;
        }
        Some("-") => Some(AccessLogTarget::Stdout),
        Some(path) => Some(AccessLogTarget::File(PathBuf::from(path))),
    };
    let (format, sample, buffer_lines) = (format?, sample?, buffer_lines?);
    Some(target.map(|target| AccessLogConfig {
        target,
        format,
        sample,
        buffer_lines: usize::try_from(buffer_lines).unwrap_or(usize::MAX),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EdgeConfig, ShieldConfig};

    const EDGE: &str = "[upstream]\norigin = \"http://127.0.0.1:8000\"\n";
    const SHIELD: &str = "[origin]\nservers = [\"http://127.0.0.1:8000\"]\n";

    #[test]
    fn no_table_or_no_path_means_no_access_log() {
        assert_eq!(EdgeConfig::from_toml(EDGE).unwrap().server.access_log, None);
        let no_path = format!("{EDGE}[access_log]\nformat = \"combined\"\n");
        assert_eq!(
            EdgeConfig::from_toml(&no_path).unwrap().server.access_log,
            None
        );
    }

    #[test]
    fn defaults_and_values_apply_in_every_role() {
        let table = "[access_log]\npath = \"/var/log/verge/access.log\"\n";
        let edge = EdgeConfig::from_toml(&format!("{EDGE}{table}")).unwrap();
        let shield = ShieldConfig::from_toml(&format!("{SHIELD}{table}")).unwrap();
        for log in [edge.server.access_log, shield.server.access_log] {
            assert_eq!(
                log,
                Some(AccessLogConfig {
                    target: AccessLogTarget::File("/var/log/verge/access.log".into()),
                    format: AccessLogFormat::Json,
                    sample: 1.0,
                    buffer_lines: 8192,
                })
            );
        }
        let stdout = "[access_log]\npath = \"-\"\nformat = \"combined\"\nsample = 0.25\n\
                      buffer_lines = 16\n";
        let log = EdgeConfig::from_toml(&format!("{EDGE}{stdout}"))
            .unwrap()
            .server
            .access_log
            .unwrap();
        assert_eq!(log.target, AccessLogTarget::Stdout);
        assert_eq!(log.format, AccessLogFormat::Combined);
        assert_eq!((log.sample, log.buffer_lines), (0.25, 16));
    }

    #[test]
    fn every_bad_value_is_named_by_its_key_path() {
        let bad = "[access_log]\npath = \"\"\nformat = \"xml\"\nsample = 1.5\nbuffer_lines = 0\n";
        for errs in [
            EdgeConfig::from_toml(&format!("{EDGE}{bad}")).unwrap_err(),
            ShieldConfig::from_toml(&format!("{SHIELD}{bad}")).unwrap_err(),
        ] {
            for path in [
                "access_log.path",
                "access_log.format",
                "access_log.sample",
                "access_log.buffer_lines",
            ] {
                assert!(errs.mentions(path), "{path} not reported in:\n{errs}");
            }
        }
        let unknown = format!("{EDGE}[access_log]\npath = \"-\"\nfile = \"x\"\n");
        let errs = EdgeConfig::from_toml(&unknown).unwrap_err();
        assert!(errs.mentions("access_log.file"), "{errs}");
    }

    #[test]
    fn the_request_id_is_trusted_by_default_on_shields_only() {
        assert!(!EdgeConfig::from_toml(EDGE).unwrap().server.trust_request_id);
        assert!(
            ShieldConfig::from_toml(SHIELD)
                .unwrap()
                .server
                .trust_request_id
        );
        let trusting = format!("{EDGE}[server]\ntrust_request_id = true\n");
        assert!(
            EdgeConfig::from_toml(&trusting)
                .unwrap()
                .server
                .trust_request_id
        );
        let distrusting = format!("{SHIELD}[server]\ntrust_request_id = false\n");
        assert!(
            !ShieldConfig::from_toml(&distrusting)
                .unwrap()
                .server
                .trust_request_id
        );
    }
}
