//! Property tests of the configuration parsers, which read whatever an operator writes: any
//! text, TOML or not, is answered with a configuration or with errors and never a panic; and a
//! bad value of a size, duration, count or socket address is reported at its own key path (and,
//! when parsing found it, at its own line).

use proptest::prelude::*;

use crate::{detect_role, ConfigErrors, ControlConfig, EdgeConfig, Role, ShieldConfig};

/// Pieces of configuration files: headers, keys, values, and the characters TOML cares about.
fn toml_ish() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "[edge]\n",
        "[shield]\n",
        "[controller]\n",
        "[server]\n",
        "[cache]\n",
        "[upstream]\n",
        "[origin]\n",
        "[health]\n",
        "[geo]\n",
        "[geo.names.\"cdn.verge.test\"]\n",
        "[[shields.members]]\n",
        "[regions.us]\n",
        "[access_log]\n",
        "[tls]\n",
        "id = ",
        "listen = ",
        "origin = ",
        "servers = ",
        "max_bytes = ",
        "max_connections = ",
        "header_read_timeout = ",
        "data_dir = ",
        "token = ",
        "zone = ",
        "fallback = ",
        "\"edge-1\"",
        "\"http://127.0.0.1:8000\"",
        "\"127.0.0.1:0\"",
        "\"16KiB\"",
        "\"10s\"",
        "\"0123456789abcdef\"",
        "\"/tmp/verge\"",
        "[\"eu\", \"us\"]",
        "{ a = 1 }",
        "18446744073709551616",
        "-1",
        "1.5",
        "1e400",
        "true",
        "\n",
        " ",
        "=",
        "\"",
        "'''",
        "[",
        "]",
        ".",
        "#",
        "\\u00e9",
        "é",
        "\u{0}",
    ]);
    prop_oneof![
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat()),
        prop::collection::vec(any::<char>(), 0..64).prop_map(String::from_iter),
        prop::collection::vec(any::<u8>(), 0..128)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ]
}

/// Every error has something to say, and the list renders.
fn check_errors(errors: &ConfigErrors) -> Result<(), TestCaseError> {
    prop_assert!(!errors.errors.is_empty());
    for e in &errors.errors {
        prop_assert!(!e.message.is_empty(), "{:?}", e);
    }
    let _ = errors.to_string();
    Ok(())
}

/// What a key's value is written as.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Size,
    Duration,
    Count,
    Address,
}

/// A TOML basic string holding `text`.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Values of the wrong type for any of the kinds.
fn wrong_type() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        Just("[1, 2]".to_string()),
        Just("{ x = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
    ]
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..100u64, 0..100_000u64, any::<u64>()]
}

fn value(kind: Kind) -> BoxedStrategy<String> {
    let text = || "[ -~]{0,12}".prop_map(|t| quoted(&t));
    match kind {
        Kind::Size => prop_oneof![
            (
                number(),
                prop::sample::select(vec![
                    "", "B", "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", " MiB", "kib", "PiB",
                ]),
            )
                .prop_map(|(n, unit)| quoted(&format!("{n}{unit}"))),
            number().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            text(),
            wrong_type(),
        ]
        .boxed(),
        Kind::Duration => prop_oneof![
            (
                number(),
                prop::sample::select(vec!["ms", "s", "m", "h", "d", "", "sec", "us", " s"]),
            )
                .prop_map(|(n, unit)| quoted(&format!("{n}{unit}"))),
            number().prop_map(|n| n.to_string()),
            text(),
            wrong_type(),
        ]
        .boxed(),
        Kind::Count => prop_oneof![
            number().prop_map(|n| {
                // TOML integers are 64-bit signed.
                i64::try_from(n)
                    .map_or_else(|_| "9223372036854775807".to_string(), |n| n.to_string())
            }),
            any::<i64>().prop_map(|n| n.to_string()),
            number().prop_map(|n| quoted(&n.to_string())),
            wrong_type(),
        ]
        .boxed(),
        Kind::Address => prop_oneof![
            (any::<[u8; 4]>(), 0..70_000u32).prop_map(|(ip, port)| {
                quoted(&format!("{}.{}.{}.{}:{port}", ip[0], ip[1], ip[2], ip[3]))
            }),
            (any::<[u16; 8]>(), 0..70_000u32).prop_map(|(ip, port)| {
                let ip = std::net::Ipv6Addr::from(ip);
                quoted(&format!("[{ip}]:{port}"))
            }),
            Just(quoted("localhost:8080")),
            Just(quoted("127.0.0.1")),
            text(),
            number().prop_map(|n| n.min(i64::MAX as u64).to_string()),
            wrong_type(),
        ]
        .boxed(),
    }
}

/// A valid file of `role`, as tables of lines in order.
fn base(role: Role) -> Vec<(&'static str, Vec<String>)> {
    let lines = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    match role {
        Role::Edge => vec![
            ("edge", lines(&["id = \"edge-1\""])),
            ("upstream", lines(&["origin = \"http://127.0.0.1:8000\""])),
        ],
        Role::Shield => vec![
            ("shield", lines(&["id = \"shield-1\""])),
            ("origin", lines(&["servers = [\"http://127.0.0.1:8000\"]"])),
        ],
        Role::Control => vec![
            (
                "controller",
                lines(&[
                    "data_dir = \"/tmp/verge-control\"",
                    "token = \"0123456789abcdef\"",
                ]),
            ),
            (
                "geo",
                lines(&[
                    "zone = \"verge.test\"",
                    "http_listen = \"127.0.0.1:0\"",
                    "default_region = \"us\"",
                ]),
            ),
            ("geo.names.\"cdn.verge.test\"", Vec::new()),
        ],
    }
}

/// The keys whose values are generated, each checked alone in an otherwise valid file.
const KEYS: &[(Role, &str, &str, Kind)] = &[
    (Role::Edge, "server", "max_header_bytes", Kind::Size),
    (Role::Edge, "cache", "max_bytes", Kind::Size),
    (Role::Edge, "admin", "max_body_bytes", Kind::Size),
    (Role::Edge, "server", "header_read_timeout", Kind::Duration),
    (Role::Edge, "upstream", "connect_timeout", Kind::Duration),
    (Role::Edge, "server", "max_connections", Kind::Count),
    (Role::Edge, "cache", "max_ranges", Kind::Count),
    (Role::Edge, "server", "listen", Kind::Address),
    (Role::Shield, "cache", "max_bytes", Kind::Size),
    (Role::Shield, "cache", "stream_above_bytes", Kind::Size),
    (Role::Shield, "origin", "health_interval", Kind::Duration),
    (Role::Shield, "origin", "retries", Kind::Count),
    (Role::Shield, "server", "admin_listen", Kind::Address),
    (Role::Control, "purge", "max_body_bytes", Kind::Size),
    (Role::Control, "health", "probe_timeout", Kind::Duration),
    (Role::Control, "health", "settle", Kind::Duration),
    (Role::Control, "streams", "keepalive", Kind::Duration),
    (Role::Control, "geo", "ttl", Kind::Duration),
    (Role::Control, "purge", "log_retain", Kind::Count),
    (Role::Control, "streams", "max_nodes", Kind::Count),
    (
        Role::Control,
        "geo",
        "dns_max_concurrent_queries",
        Kind::Count,
    ),
    (Role::Control, "controller", "listen", Kind::Address),
    (Role::Control, "geo", "dns_listen", Kind::Address),
];

/// The file of `role` with `key = value` in `table`; and the line (from 1) of that key.
fn file_with(role: Role, table: &'static str, key: &str, value: &str) -> (String, usize) {
    let mut tables = base(role);
    let line = format!("{key} = {value}");
    match tables.iter_mut().find(|(name, _)| *name == table) {
        Some((_, lines)) => lines.push(line),
        None => tables.push((table, vec![line])),
    }
    let mut text = String::new();
    let mut key_line = 0;
    let mut at = 0;
    for (name, lines) in tables {
        text.push_str(&format!("[{name}]\n"));
        at += 1;
        for l in lines {
            at += 1;
            if name == table && l.starts_with(&format!("{key} = ")) {
                key_line = at;
            }
            text.push_str(&l);
            text.push('\n');
        }
    }
    (text, key_line)
}

fn parse(role: Role, text: &str) -> Result<(), ConfigErrors> {
    match role {
        Role::Edge => EdgeConfig::from_toml(text).map(drop),
        Role::Shield => ShieldConfig::from_toml(text).map(drop),
        Role::Control => ControlConfig::from_toml(text).map(drop),
    }
}

fn keyed_value() -> impl Strategy<Value = (usize, String)> {
    (0..KEYS.len()).prop_flat_map(|i| value(KEYS[i].3).prop_map(move |v| (i, v)))
}

#[test]
fn every_file_the_keys_are_checked_in_is_valid_without_them() {
    for (role, table, _, _) in KEYS {
        let (text, _) = file_with(*role, table, "# nothing", "here");
        assert_eq!(parse(*role, &text), Ok(()), "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_is_answered_by_every_role_without_panic(text in toml_ish()) {
        for result in [
            EdgeConfig::from_toml(&text).map(drop),
            ShieldConfig::from_toml(&text).map(drop),
            ControlConfig::from_toml(&text).map(drop),
            detect_role(&text).map(drop),
        ] {
            if let Err(errors) = result {
                check_errors(&errors)?;
            }
        }
    }

    #[test]
    fn a_bad_value_is_reported_at_its_key_path_and_line((i, value) in keyed_value()) {
        let (role, table, key, _) = KEYS[i];
        let (text, line) = file_with(role, table, key, &value);
        if let Err(errors) = parse(role, &text) {
            check_errors(&errors)?;
            let path = format!("{table}.{key}");
            for e in &errors.errors {
                // A value out of step with another key's (its default, say) is reported at
                // that key, naming this one.
                prop_assert!(
                    e.path == path || e.message.contains(&path),
                    "{} does not name {} in\n{}", e, path, text
                );
                prop_assert!(e.line.is_none() || e.line == Some(line), "{} in\n{}", e, text);
            }
        }
    }
}
