//! The pure parts (TTL clamping, the address bound, IP literals) and the refresh tasks against a
//! scripted lookup, with tokio's clock paused so TTLs pass without waiting.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use verge_testkit::Metrics;

fn settings() -> ResolverConfig {
    verge_testkit::pool::resolver_config()
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[test]
fn the_ttl_in_use_is_clamped_to_min_and_max() {
    let s = settings();
    assert_eq!(ttl_in_use(Duration::ZERO, &s), Duration::from_secs(1));
    assert_eq!(
        ttl_in_use(Duration::from_secs(30), &s),
        Duration::from_secs(30)
    );
    assert_eq!(
        ttl_in_use(Duration::from_secs(86_400), &s),
        Duration::from_secs(300)
    );
}

#[test]
fn kept_addresses_are_distinct_sorted_and_bounded() {
    assert_eq!(
        kept_addresses(vec![ip(3), ip(1), ip(3)]),
        vec![ip(1), ip(3)]
    );
    let many: Vec<IpAddr> = (1..=40).rev().map(ip).collect();
    let kept = kept_addresses(many);
    assert_eq!(kept.len(), MAX_ADDRESSES_PER_HOST);
    assert_eq!(
        kept.first(),
        Some(&ip(1)),
        "the lowest are kept, so the set is stable"
    );
}

#[test]
fn ip_literals_need_no_dns() {
    let name = |a: &str| host_name(&a.parse().unwrap()).map(str::to_string);
    assert_eq!(name("127.0.0.1:8000"), None);
    assert_eq!(name("[::1]:8000"), None);
    assert_eq!(name("origin.example:8000"), Some("origin.example".into()));
    assert_eq!(name("localhost"), Some("localhost".into()));
}

/// Answers with whatever the test last set; counts lookups.
struct ScriptedLookup {
    answer: Mutex<Option<Result<Answer, DnsError>>>,
    calls: AtomicUsize,
}

impl ScriptedLookup {
    fn new(answer: Result<Answer, DnsError>) -> Arc<ScriptedLookup> {
        Arc::new(ScriptedLookup {
            answer: Mutex::new(Some(answer)),
            calls: AtomicUsize::new(0),
        })
    }

    /// `None`: lookups hang until the timeout.
    fn set(&self, answer: Option<Result<Answer, DnsError>>) {
        *self.answer.lock().unwrap() = answer;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl NameLookup for ScriptedLookup {
    fn lookup<'a>(&'a self, _host: &'a str) -> LookupFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().unwrap().clone();
        Box::pin(async move {
            match answer {
                Some(answer) => answer,
                None => std::future::pending().await,
            }
        })
    }
}

fn answer(last: u8, ttl_secs: u64) -> Result<Answer, DnsError> {
    Ok(Answer {
        addresses: vec![ip(last)],
        ttl: Duration::from_secs(ttl_secs),
    })
}

struct Started {
    /// Holds the refresh task.
    _resolver: HostResolver,
    host: ResolvedHost,
    registry: Registry,
}

async fn start(lookup: &Arc<ScriptedLookup>) -> Started {
    let registry = Registry::new();
    let metrics = DnsMetrics::register(&registry).unwrap();
    let names = ["origin.test".to_string()];
    let resolver = HostResolver::start(&names, lookup.clone(), &settings(), &metrics).unwrap();
    resolver.first_lookups().await;
    let host = resolver.host("origin.test").unwrap();
    Started {
        _resolver: resolver,
        host,
        registry,
    }
}

/// Lets the refresh task run what is due.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Moves the paused clock on and lets the refresh task run.
async fn advance(secs_millis: u64) {
    tokio::time::advance(Duration::from_millis(secs_millis)).await;
    settle().await;
}

fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    Metrics::of(registry).value_or_zero(name, labels)
}

#[tokio::test(start_paused = true)]
async fn a_name_is_looked_up_again_when_its_ttl_runs_out() {
    let lookup = ScriptedLookup::new(answer(2, 30));
    let s = start(&lookup).await;
    assert_eq!(&*s.host.addresses().unwrap(), &[ip(2)]);
    assert_eq!(lookup.calls(), 1);
    lookup.set(Some(answer(3, 30)));
    advance(29_900).await;
    assert_eq!(lookup.calls(), 1, "the answer is still fresh");
    assert_eq!(&*s.host.addresses().unwrap(), &[ip(2)]);
    advance(200).await;
    assert_eq!(lookup.calls(), 2);
    assert_eq!(&*s.host.addresses().unwrap(), &[ip(3)]);
    let host = [("host", "origin.test")];
    assert_eq!(metric(&s.registry, "verge_dns_ttl_seconds", &host), 30.0);
    assert_eq!(metric(&s.registry, "verge_dns_addresses", &host), 1.0);
    let ok = [("host", "origin.test"), ("result", "ok")];
    assert_eq!(metric(&s.registry, "verge_dns_resolutions_total", &ok), 2.0);
}

#[tokio::test(start_paused = true)]
async fn a_zero_ttl_waits_min_ttl_and_a_day_long_one_max_ttl() {
    let lookup = ScriptedLookup::new(answer(2, 0));
    let s = start(&lookup).await;
    let host = [("host", "origin.test")];
    assert_eq!(metric(&s.registry, "verge_dns_ttl_seconds", &host), 1.0);
    lookup.set(Some(answer(2, 86_400)));
    advance(1_000).await;
    assert_eq!(lookup.calls(), 2);
    assert_eq!(metric(&s.registry, "verge_dns_ttl_seconds", &host), 300.0);
    advance(299_000).await;
    assert_eq!(lookup.calls(), 2);
    advance(1_000).await;
    assert_eq!(lookup.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_last_good_addresses_and_retries_after_negative_retry() {
    let lookup = ScriptedLookup::new(answer(2, 10));
    let s = start(&lookup).await;
    let unchanged = s.host.addresses().unwrap();
    lookup.set(Some(Err(DnsError::Failed("SERVFAIL".into()))));
    advance(10_000).await;
    assert_eq!(lookup.calls(), 2);
    let kept = s.host.addresses().unwrap();
    assert!(
        Arc::ptr_eq(&kept, &unchanged),
        "the last good set is kept as is"
    );
    let error = [("host", "origin.test"), ("result", "error")];
    assert_eq!(
        metric(&s.registry, "verge_dns_resolutions_total", &error),
        1.0
    );
    assert_eq!(
        metric(
            &s.registry,
            "verge_dns_addresses",
            &[("host", "origin.test")]
        ),
        1.0
    );

    lookup.set(Some(answer(4, 10)));
    advance(4_900).await;
    assert_eq!(lookup.calls(), 2, "retried only after negative_retry");
    advance(200).await;
    assert_eq!(lookup.calls(), 3);
    assert_eq!(&*s.host.addresses().unwrap(), &[ip(4)]);
}

#[tokio::test(start_paused = true)]
async fn a_name_that_never_resolved_has_no_addresses_and_says_why() {
    let lookup = ScriptedLookup::new(Err(DnsError::NoSuchHost));
    let s = start(&lookup).await;
    assert!(!s.host.is_resolved());
    assert_eq!(s.host.addresses().unwrap_err(), DnsError::NoSuchHost);
    lookup.set(Some(answer(2, 10)));
    advance(5_000).await;
    assert!(s.host.is_resolved());
}

#[tokio::test(start_paused = true)]
async fn a_lookup_that_does_not_answer_times_out() {
    let lookup = ScriptedLookup::new(answer(2, 0));
    lookup.set(None);
    let s = start(&lookup).await;
    assert_eq!(
        s.host.addresses().unwrap_err(),
        DnsError::Timeout(Duration::from_secs(2))
    );
}

#[tokio::test(start_paused = true)]
async fn one_task_per_name_and_they_stop_with_the_resolver() {
    let lookup = ScriptedLookup::new(answer(2, 1));
    let registry = Registry::new();
    let metrics = DnsMetrics::register(&registry).unwrap();
    let names = [
        "a.test".to_string(),
        "b.test".to_string(),
        "a.test".to_string(),
    ];
    let resolver = HostResolver::start(&names, lookup.clone(), &settings(), &metrics).unwrap();
    resolver.first_lookups().await;
    assert_eq!(lookup.calls(), 2);
    assert!(resolver.host("c.test").is_none());
    drop(resolver);
    settle().await;
    assert_eq!(
        Arc::strong_count(&lookup),
        1,
        "the tasks let go of the lookup"
    );
    advance(5_000).await;
    assert_eq!(lookup.calls(), 2);
}

/// What the shield takes from DNS answers and origin URLs holds for any input: there is no DNS
/// wire parsing here (hickory parses the messages), so the inputs are the answers' addresses and
/// TTLs and the authorities of origin URLs.
mod properties {
    use std::net::Ipv6Addr;

    use proptest::prelude::*;

    use super::*;

    /// Addresses drawn from a small set, so answers repeat some, and from anywhere.
    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..8).prop_map(ip),
            (0u16..8).prop_map(|n| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n))),
            any::<IpAddr>(),
        ]
    }

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..600).prop_map(Duration::from_secs),
            (0..=u64::from(u32::MAX)).prop_map(Duration::from_secs),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    proptest! {
        #[test]
        fn kept_addresses_are_sorted_distinct_bounded_and_order_free(
            (addresses, shuffled) in prop::collection::vec(address(), 0..40)
                .prop_flat_map(|a| (Just(a.clone()), Just(a).prop_shuffle())),
        ) {
            let kept = kept_addresses(addresses.clone());
            prop_assert!(kept.len() <= MAX_ADDRESSES_PER_HOST);
            prop_assert!(kept.windows(2).all(|pair| pair[0] < pair[1]));
            prop_assert!(kept.iter().all(|a| addresses.contains(a)));
            let mut distinct = addresses.clone();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(kept.len(), distinct.len().min(MAX_ADDRESSES_PER_HOST));
            prop_assert_eq!(kept_addresses(shuffled), kept);
        }

        #[test]
        fn the_ttl_in_use_stays_within_the_configured_bounds(
            ttl in duration(),
            min_ttl in duration(),
            max_ttl in duration(),
        ) {
            let s = ResolverConfig { min_ttl, max_ttl, ..settings() };
            let used = ttl_in_use(ttl, &s);
            prop_assert!(used >= min_ttl && used <= max_ttl.max(min_ttl));
            if ttl >= min_ttl && ttl <= max_ttl {
                prop_assert_eq!(used, ttl);
            }
        }

        #[test]
        fn ip_literals_have_no_host_name_and_names_keep_theirs(
            address in any::<IpAddr>(),
            name in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}",
            port in prop::option::of(any::<u16>()),
        ) {
            let port = port.map_or(String::new(), |p| format!(":{p}"));
            let literal = match address {
                IpAddr::V4(v4) => format!("{v4}{port}"),
                IpAddr::V6(v6) => format!("[{v6}]{port}"),
            };
            let literal: http::uri::Authority = literal.parse().unwrap();
            prop_assert_eq!(host_name(&literal), None);
            let named: http::uri::Authority = format!("{name}{port}").parse().unwrap();
            prop_assert_eq!(host_name(&named), Some(name.as_str()));
        }

        #[test]
        fn any_authority_is_classified_without_panic(text in "\\PC{0,40}") {
            if let Ok(authority) = text.parse::<http::uri::Authority>() {
                if let Some(name) = host_name(&authority) {
                    prop_assert!(name.trim_matches(['[', ']']).parse::<IpAddr>().is_err());
                }
            }
        }
    }

    proptest! {
        // Each case runs a resolver on its own runtime.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_answer_is_used_as_its_kept_addresses(
            addresses in prop::collection::vec(address(), 0..40),
            ttl in duration(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let kept = kept_addresses(addresses.clone());
            let got = runtime.block_on(async {
                let lookup = ScriptedLookup::new(Ok(Answer { addresses, ttl }));
                let s = start(&lookup).await;
                // Past any TTL in use: the name is asked again and still resolves.
                advance(settings().max_ttl.as_millis() as u64 + 1_000).await;
                prop_assert_eq!(lookup.calls(), 2);
                Ok(s.host.addresses())
            })?;
            if kept.is_empty() {
                prop_assert_eq!(got, Err(DnsError::NoAddresses));
            } else {
                prop_assert_eq!(got.as_deref(), Ok(kept.as_slice()));
            }
        }
    }
}
