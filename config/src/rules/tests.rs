use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::{ConfigErrors, EdgeConfig, ShieldConfig};

fn edge(rules: &str) -> Result<EdgeConfig, ConfigErrors> {
    EdgeConfig::from_toml(&format!(
        "[edge]\n[upstream]\norigin = \"http://127.0.0.1:9\"\n{rules}"
    ))
}

fn errors(rules: &str) -> ConfigErrors {
    edge(rules).expect_err("the rules should be refused")
}

#[test]
fn a_rule_with_every_action_is_read() {
    let config = edge(
        r#"
[[rules]]
name = "static"
host = "*.Example.com"
path = "/assets/*.png"
methods = ["GET", "HEAD"]
request_header = { name = "X-Tier", value = "gold" }
default_ttl = "1h"
max_ttl = "1d"
stale_while_revalidate = "30s"
stale_if_error = "5m"
cache_private = true
strip_set_cookie = true
ignore_cookies = true
negative_ttl = "10s"
error_ttl = "2s"
query = { drop = ["utm_*", "fbclid"], sort = true }
key = { headers = ["X-Device"], cookies = ["lang"], device = true }
response_headers = { add = { "X-Served-By" = "verge" }, remove = ["Server"] }

[[rules]]
path = "/api/"
bypass = true
"#,
    )
    .unwrap();
    let rules = &config.cache.rules.rules;
    assert_eq!(rules.len(), 2);
    let rule = &rules[0];
    assert_eq!(rule.name, "static");
    assert_eq!(
        rule.host,
        Some(HostPattern::Subdomains(".example.com".into()))
    );
    assert_eq!(rule.path, Some(Pattern::Glob(Glob::new("/assets/*.png"))));
    assert_eq!(rule.methods, ["GET", "HEAD"]);
    assert_eq!(
        rule.request_header,
        Some(HeaderMatch {
            name: "x-tier".into(),
            value: Some("gold".into())
        })
    );
    let a = &rule.actions;
    assert_eq!(a.default_ttl, Some(Duration::from_secs(3600)));
    assert_eq!(a.max_ttl, Some(Duration::from_secs(86400)));
    assert_eq!(a.stale_while_revalidate, Some(Duration::from_secs(30)));
    assert_eq!(a.stale_if_error, Some(Duration::from_secs(300)));
    assert!(a.cache_private && a.strip_set_cookie && a.ignore_cookies && !a.bypass);
    assert_eq!(a.negative_ttl, Some(Duration::from_secs(10)));
    assert_eq!(a.error_ttl, Some(Duration::from_secs(2)));
    assert_eq!(a.query.drop, [Glob::new("utm_*"), Glob::new("fbclid")]);
    assert!(a.query.sort && a.query.keep.is_none());
    assert_eq!(a.key.headers, ["x-device"]);
    assert_eq!(a.key.cookies, ["lang"]);
    assert!(a.key.device);
    assert_eq!(
        a.add_response_headers,
        [("x-served-by".to_string(), "verge".to_string())]
    );
    assert_eq!(a.remove_response_headers, ["server"]);
    assert_eq!(rules[1].name, "rule-2");
    assert_eq!(rules[1].path, Some(Pattern::Prefix("/api/".into())));
    assert!(rules[1].actions.bypass);
}

#[test]
fn a_shield_takes_the_same_rules() {
    let config = ShieldConfig::from_toml(
        "[shield]\n[origin]\nservers = [\"http://127.0.0.1:9\"]\n\
         [[rules]]\npath = \"/\"\ndefault_ttl = \"1m\"\n",
    )
    .unwrap();
    assert_eq!(config.cache.rules.rules.len(), 1);
}

#[test]
fn no_rules_is_an_empty_set() {
    assert!(edge("").unwrap().cache.rules.is_empty());
}

#[test]
fn each_bad_value_is_named_by_rule_and_key() {
    let cases = [
        (
            "path = \"assets/*\"",
            "rules[0].path",
            "must start with '/'",
        ),
        ("path = \"/a/[ab]\"", "rules[0].path", "not allowed"),
        ("path = \"/a/**\"", "rules[0].path", "'**'"),
        ("host = \"a.*.com\"", "rules[0].host", "not a host name"),
        ("host = \"a.com:80\"", "rules[0].host", "no port"),
        ("methods = [\"get\"]", "rules[0].methods", "upper-case"),
        ("default_ttl = \"soon\"", "rules[0].default_ttl", ""),
        (
            "request_header = { name = \"bad name\" }",
            "rules[0].request_header.name",
            "field name",
        ),
        (
            "query = { drop = [\"a=b\"] }",
            "rules[0].query.drop",
            "parameter name",
        ),
        (
            "key = { cookies = [\"a;b\"] }",
            "rules[0].key.cookies",
            "cookie name",
        ),
        (
            "response_headers = { add = { \"x-a\" = 1 } }",
            "rules[0].response_headers.add.x-a",
            "expected a string",
        ),
        (
            "name = \"9lives\"",
            "rules[0].name",
            "starting with a letter",
        ),
    ];
    for (line, path, message) in cases {
        let errors = errors(&format!("[[rules]]\n{line}\n"));
        assert!(
            errors
                .errors
                .iter()
                .any(|e| e.path == path && e.message.contains(message)),
            "{line}: {errors}"
        );
    }
}

#[test]
fn conflicting_actions_are_refused() {
    let cases = [
        (
            "bypass = true\ndefault_ttl = \"1m\"",
            "rules[0].bypass",
            "default_ttl",
        ),
        (
            "bypass = true\nquery = { sort = true }",
            "rules[0].bypass",
            "query and key",
        ),
        (
            "default_ttl = \"1m\"\nforce_ttl = \"2m\"",
            "rules[0].force_ttl",
            "default_ttl",
        ),
        (
            "force_ttl = \"2h\"\nmax_ttl = \"1h\"",
            "rules[0].force_ttl",
            "max_ttl",
        ),
        (
            "query = { drop = [\"a\"], keep = [\"b\"] }",
            "rules[0].query.keep",
            "query.drop",
        ),
    ];
    for (lines, path, message) in cases {
        let errors = errors(&format!("[[rules]]\npath = \"/\"\n{lines}\n"));
        assert!(
            errors
                .errors
                .iter()
                .any(|e| e.path == path && e.message.contains(message)),
            "{lines}: {errors}"
        );
    }
}

#[test]
fn a_rule_that_can_never_apply_or_repeats_a_name_is_refused() {
    let errors = errors(
        "[[rules]]\npath = \"/a/\"\n\
         [[rules]]\npath = \"/a/\"\nmethods = [\"GET\"]\n\
         [[rules]]\nname = \"x\"\npath = \"/b/\"\n\
         [[rules]]\nname = \"x\"\npath = \"/c/\"\n",
    );
    assert!(errors.mentions("rules[1]"), "{errors}");
    assert!(errors.mentions("rules[3].name"), "{errors}");
    assert!(!errors.mentions("rules[2]"), "{errors}");
    // A narrower rule first, a broader one after: both can apply.
    edge("[[rules]]\npath = \"/a/\"\nmethods = [\"GET\"]\n[[rules]]\npath = \"/a/\"\n").unwrap();
}

#[test]
fn an_unknown_action_is_refused_with_its_line() {
    let errors = errors("[[rules]]\npath = \"/\"\nttl_forever = true\n");
    let error = &errors.errors[0];
    assert!(error.message.contains("ttl_forever"), "{errors}");
    assert!(error.line.is_some(), "{errors}");
}

proptest! {
    #[test]
    fn any_path_pattern_is_accepted_or_refused_without_panic(text in "\\PC{0,40}") {
        let _ = path_pattern(&text);
        let _ = host_pattern(&text);
        let _ = query_pattern(&text);
    }
}
