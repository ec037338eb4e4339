//! What does the cache engine cost per request on a hit, next to the cheapest thing that could
//! stand in for each step?
//!
//! Each group pairs one engine step with a baseline measured in the same run, so results read as
//! ratios rather than absolute times:
//!
//! - `cache_key`: [`CacheKey::for_request`] for a typical request (Host header, path, query)
//!   against cloning the same URL text as a `String`;
//! - `store_hit`: [`CacheStore::lookup`] of a present key among 10,000 stored 1 KiB objects,
//!   without `Vary` and with `Vary: Accept-Encoding` (the usual static asset), against
//!   `HashMap::get` over the same keys;
//! - `policy`: [`CacheControl::from_headers`] and [`policy::storability`] for a typical cacheable
//!   response against merely finding the `Cache-Control` line and splitting it on commas.
//!
//! Run with `cargo bench -p verge-cache --bench engine`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{ACCEPT, ACCEPT_ENCODING, CACHE_CONTROL, HOST, USER_AGENT, VARY};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use verge_cache::{policy, CacheControl, CacheKey, CacheStore, CachedObject, Lookup, VaryKey};

/// Objects in the store for the hit benchmark.
const STORED_OBJECTS: usize = 10_000;
/// Body size of each stored object.
const BODY_BYTES: usize = 1024;
/// Room for every object with its headers, keys and per-entry overhead, so nothing is evicted.
const STORE_MAX_BYTES: u64 = 64 << 20;
const STORE_MAX_OBJECT_BYTES: usize = 1 << 20;

const CACHE_CONTROL_LINE: &str = "public, max-age=3600, s-maxage=600, stale-while-revalidate=30";

/// Headers of a typical browser request for a static asset.
fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("www.example.com"));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    headers.insert(
        ACCEPT_ENCODING,
        HeaderValue::from_static("gzip, deflate, br"),
    );
    headers
}

/// Headers of a typical cacheable origin response.
fn response_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/javascript"),
    );
    headers.insert("content-length", HeaderValue::from_static("1024"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL_LINE));
    headers.insert(
        "date",
        HeaderValue::from_static("Tue, 15 Jul 2025 10:00:00 GMT"),
    );
    headers.insert(
        "last-modified",
        HeaderValue::from_static("Mon, 14 Jul 2025 08:30:00 GMT"),
    );
    headers.insert("etag", HeaderValue::from_static("\"5f3c-1a2b3c4d\""));
    headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    headers
}

/// A stored response to `request`; `with_vary` keeps its `Vary: Accept-Encoding`, so that a
/// lookup must compare the request's `Accept-Encoding` with the stored one.
fn cached_object(body: &Bytes, request: &HeaderMap, with_vary: bool) -> Arc<CachedObject> {
    let mut headers = response_headers();
    if !with_vary {
        headers.remove(VARY);
    }
    let vary = VaryKey::new(&headers, request);
    Arc::new(CachedObject {
        status: StatusCode::OK,
        headers,
        body: body.clone(),
        response_time: SystemTime::now(),
        corrected_initial_age: Duration::ZERO,
        freshness_lifetime: Duration::from_secs(3600),
        vary,
        cc: CacheControl::default(),
        surrogate_keys: Vec::new(),
    })
}

/// The keys of the stored objects, in a scrambled order so that successive lookups do not walk
/// memory in insertion order.
fn stored_keys() -> Vec<CacheKey> {
    // 7919 is prime and coprime with 10,000, so this visits every index once.
    (0..STORED_OBJECTS)
        .map(|i| (i * 7919) % STORED_OBJECTS)
        .map(|i| CacheKey::from_parts("http", "www.example.com", &format!("/obj/{i}")))
        .collect()
}

fn cache_key(c: &mut Criterion) {
    let uri: Uri = "/assets/app.js?v=1234&lang=en"
        .parse()
        .expect("a valid origin-form target");
    let headers = request_headers();
    let url_text = String::from("http://www.example.com/assets/app.js?v=1234&lang=en");

    let mut group = c.benchmark_group("cache_key");
    group.bench_function("baseline_string_clone", |b| {
        b.iter(|| black_box(&url_text).clone())
    });
    group.bench_function("for_request", |b| {
        b.iter(|| CacheKey::for_request("http", black_box(&uri), black_box(&headers)))
    });
    group.finish();
}

/// A store holding one object per key, every one of them found by `request`.
fn filled_store(keys: &[CacheKey], request: &HeaderMap, with_vary: bool) -> CacheStore {
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    let store = CacheStore::new(STORE_MAX_BYTES, STORE_MAX_OBJECT_BYTES);
    for key in keys {
        let object = cached_object(&body, request, with_vary);
        assert!(
            store.insert(key.clone(), object),
            "1 KiB is under the object bound"
        );
    }
    store.sync();
    for key in keys {
        assert!(
            matches!(store.lookup(key, request), Lookup::Found(_)),
            "{key} was not found; raise STORE_MAX_BYTES"
        );
    }
    store
}

fn store_hit(c: &mut Criterion) {
    let keys = stored_keys();
    let request = request_headers();
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    let map: HashMap<CacheKey, Arc<CachedObject>> = keys
        .iter()
        .map(|key| (key.clone(), cached_object(&body, &request, false)))
        .collect();
    let plain = filled_store(&keys, &request, false);
    let varied = filled_store(&keys, &request, true);

    let mut group = c.benchmark_group("store_hit");
    group.bench_function("baseline_hashmap_get", |b| {
        let mut next = keys.iter().cycle();
        b.iter(|| {
            let key = next.next().expect("cycle over a non-empty list never ends");
            map.get(black_box(key)).map(Arc::clone)
        })
    });
    group.bench_function("store_lookup", |b| {
        let mut next = keys.iter().cycle();
        b.iter(|| {
            let key = next.next().expect("cycle over a non-empty list never ends");
            plain.lookup(black_box(key), black_box(&request))
        })
    });
    group.bench_function("store_lookup_vary_accept_encoding", |b| {
        let mut next = keys.iter().cycle();
        b.iter(|| {
            let key = next.next().expect("cycle over a non-empty list never ends");
            varied.lookup(black_box(key), black_box(&request))
        })
    });
    group.finish();
}

fn cache_policy(c: &mut Criterion) {
    let request = request_headers();
    let response = response_headers();
    let cc = CacheControl::from_headers(&response);
    let directives = policy::RequestDirectives::from_headers(&request);
    let response_time = SystemTime::now();
    assert_eq!(
        policy::storability(
            &Method::GET,
            &request,
            &directives,
            StatusCode::OK,
            &response,
            &cc,
            response_time
        ),
        Ok(Duration::from_secs(600)),
        "the typical response is storable for its s-maxage"
    );

    let mut group = c.benchmark_group("policy");
    group.bench_function("baseline_split_cache_control", |b| {
        b.iter(|| {
            black_box(&response)
                .get(CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .map(|line| {
                    line.split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .count()
                })
        })
    });
    group.bench_function("cache_control_from_headers", |b| {
        b.iter(|| CacheControl::from_headers(black_box(&response)))
    });
    group.bench_function("storability", |b| {
        b.iter(|| {
            policy::storability(
                &Method::GET,
                black_box(&request),
                black_box(&directives),
                StatusCode::OK,
                black_box(&response),
                black_box(&cc),
                response_time,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, cache_key, store_hit, cache_policy);
criterion_main!(benches);
