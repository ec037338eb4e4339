//! What does matching the cache rules cost per request, with 1, 100 and 1,000 rules, next to
//! the same request with no rules at all (the baseline, measured in the same run)?
//!
//! The rules are the realistic kind: each names a host (half exact, half `*.domain`) and a
//! path (half prefixes, half wildcard patterns). Two requests are measured: one that matches
//! the last rule and one that matches none. Sets of more than 8 rules are looked up through
//! their host index (only the rules a host can match are tried); rules that name no host are
//! always tried, in order. Also measured: the query normalisation and key extras a matching
//! rule then applies.
//!
//! Run with `cargo bench -p verge-cache --bench rules`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::{COOKIE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue};
use verge_cache::rules::{self, RequestView};
use verge_config::rules::RuleSet;
use verge_config::EdgeConfig;

fn rule_set(count: usize) -> RuleSet {
    let mut toml = String::from("[edge]\n[upstream]\norigin = \"http://127.0.0.1:9\"\n");
    for i in 0..count {
        let host = if i % 2 == 0 {
            format!("www{i}.example.com")
        } else {
            format!("*.site{i}.example.net")
        };
        let path = if i % 4 < 2 {
            format!("/section{i}/")
        } else {
            format!("/assets{i}/*.png")
        };
        toml.push_str(&format!(
            "[[rules]]\nhost = \"{host}\"\npath = \"{path}\"\ndefault_ttl = \"1h\"\n\
             query = {{ drop = [\"utm_*\", \"fbclid\"], sort = true }}\n\
             key = {{ cookies = [\"lang\"], device = true }}\n"
        ));
    }
    let config = EdgeConfig::from_toml(&toml).expect("benchmark rules are valid");
    (*config.cache.rules).clone()
}

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("www.example.org"));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko Firefox/120.0"),
    );
    headers.insert(COOKIE, HeaderValue::from_static("session=abc123; lang=fr"));
    headers
}

fn matching(c: &mut Criterion) {
    let headers = headers();
    let mut group = c.benchmark_group("rule_match");
    for count in [0usize, 1, 100, 1000] {
        let set = rule_set(count);
        // The last rule's host and path (or any, with no rules).
        let last = count.saturating_sub(1);
        let host = if last % 2 == 0 {
            format!("www{last}.example.com")
        } else {
            format!("img.site{last}.example.net")
        };
        let path = if last % 4 < 2 {
            format!("/section{last}/page")
        } else {
            format!("/assets{last}/logo.png")
        };
        group.bench_with_input(BenchmarkId::new("last_rule", count), &set, |b, set| {
            b.iter(|| {
                rules::find(
                    black_box(set),
                    RequestView {
                        host: black_box(&host),
                        path: black_box(&path),
                        method: "GET",
                        headers: &headers,
                    },
                )
            })
        });
        group.bench_with_input(BenchmarkId::new("no_match", count), &set, |b, set| {
            b.iter(|| {
                rules::find(
                    black_box(set),
                    RequestView {
                        host: black_box("www.example.org"),
                        path: black_box("/index.html"),
                        method: "GET",
                        headers: &headers,
                    },
                )
            })
        });
    }
    group.finish();
}

fn applying(c: &mut Criterion) {
    let headers = headers();
    let set = rule_set(1);
    let actions = &set.rules[0].actions;
    let mut group = c.benchmark_group("rule_apply");
    group.bench_function("normalise_query", |b| {
        b.iter(|| {
            rules::normalise_query(
                black_box("utm_source=news&b=2&fbclid=xyz&a=1&utm_medium=mail"),
                &actions.query,
            )
        })
    });
    group.bench_function("key_extras", |b| {
        b.iter(|| rules::key_extras(black_box(&actions.key), &headers))
    });
    group.finish();
}

criterion_group!(benches, matching, applying);
criterion_main!(benches);
