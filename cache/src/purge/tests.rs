//! Tests of the purge module.

use super::*;
use http::HeaderValue;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

fn key(url: &str) -> CacheKey {
    let (scheme, rest) = url.split_once("://").unwrap();
    let at = rest.find('/').unwrap_or(rest.len());
    CacheKey::from_parts(scheme, &rest[..at], &rest[at..])
}

fn tags(names: &[&str]) -> Vec<Arc<str>> {
    names.iter().map(|&name| Arc::from(name)).collect()
}

fn texts(keys: Vec<CacheKey>) -> Vec<String> {
    let mut texts: Vec<String> = keys.iter().map(|key| key.as_str().to_owned()).collect();
    texts.sort();
    texts
}

/// Every recorded tag links its key, every link is recorded, no tag is left without keys.
fn assert_consistent(index: &PurgeIndex) {
    let mut recorded = BTreeSet::new();
    for (at, shard) in index.keys.iter().enumerate() {
        for (key, Recorded { tags, .. }) in read(shard).iter() {
            assert_eq!(index.shard_of(key.as_str()), at, "{}", key.as_str());
            assert!(tags.windows(2).all(|pair| pair[0] < pair[1]), "{tags:?}");
            for tag in tags.iter() {
                recorded.insert((tag.to_string(), key.as_str().to_owned()));
            }
        }
    }
    let mut linked = BTreeSet::new();
    for (at, shard) in index.tags.iter().enumerate() {
        for (tag, keys) in read(shard).iter() {
            assert_eq!(index.shard_of(tag), at, "{tag}");
            assert!(!keys.is_empty(), "{tag:?} is held with no keys");
            for key in keys {
                linked.insert((tag.to_string(), key.as_str().to_owned()));
            }
        }
    }
    assert_eq!(recorded, linked);
}

#[test]
fn keys_for_tags_is_the_deduplicated_union() {
    let index = PurgeIndex::new();
    index.insert(&key("http://a.test/1"), &tags(&["red", "round"]));
    index.insert(&key("http://a.test/2"), &tags(&["red"]));
    index.insert(&key("http://b.test/3"), &tags(&["blue", "round"]));
    index.insert(&key("http://b.test/4"), &[]);

    assert_eq!(
        texts(index.keys_for_tags(&["red"])),
        ["http://a.test/1", "http://a.test/2"]
    );
    assert_eq!(
        texts(index.keys_for_tags(&["red", "round", "red", "missing"])),
        ["http://a.test/1", "http://a.test/2", "http://b.test/3"]
    );
    assert!(index.keys_for_tags(&["missing"]).is_empty());
    assert!(index.keys_for_tags::<&str>(&[]).is_empty());
    assert_eq!(index.key_count(), 4);
    assert_eq!(index.tag_count(), 3);
    assert_consistent(&index);
}

#[test]
fn insert_is_idempotent_and_duplicate_tags_count_once() {
    let index = PurgeIndex::new();
    let a = key("http://a.test/1");
    for _ in 0..3 {
        index.insert(&a, &tags(&["red", "red", "round"]));
    }
    assert_eq!(index.key_count(), 1);
    assert_eq!(index.tag_count(), 2);
    assert_eq!(texts(index.keys_for_tags(&["red"])), ["http://a.test/1"]);
    assert_consistent(&index);
}

#[test]
fn a_late_removal_of_an_older_generation_keeps_the_newer_entry() {
    let index = PurgeIndex::new();
    let a = key("http://a.test/1");
    index.insert_generation(&a, 1, &tags(&["old"]));
    index.insert_generation(&a, 2, &tags(&["new"]));
    index.remove_generation(&a, 1);
    assert_eq!(index.keys_for_tags(&["new"]), vec![a.clone()]);
    assert!(index.keys_for_tags(&["old"]).is_empty());
    index.remove_generation(&a, 2);
    assert_eq!(index.key_count(), 0);
    assert_eq!(index.tag_count(), 0);
}

#[test]
fn inserting_a_key_again_replaces_its_tags() {
    let index = PurgeIndex::new();
    // Two copies of one key, as two requests would make them.
    index.insert(&key("http://a.test/1"), &tags(&["old", "kept"]));
    index.insert(&key("http://a.test/1"), &tags(&["kept", "new"]));
    assert!(index.keys_for_tags(&["old"]).is_empty());
    assert_eq!(
        texts(index.keys_for_tags(&["kept", "new"])),
        ["http://a.test/1"]
    );
    assert_eq!(index.tag_count(), 2);
    assert_consistent(&index);
}

#[test]
fn remove_forgets_the_key_frees_tags_left_without_keys_and_ignores_unknown_keys() {
    let index = PurgeIndex::new();
    let a = key("http://a.test/1");
    let b = key("http://a.test/2");
    index.insert(&a, &tags(&["only-a", "shared"]));
    index.insert(&b, &tags(&["shared"]));

    index.remove(&a, &tags(&["only-a", "shared"]));
    index.remove(&a, &tags(&["only-a", "shared"])); // now unknown: ignored
    assert_eq!(index.key_count(), 1);
    assert_eq!(index.tag_count(), 1);
    assert!(index.keys_for_tags(&["only-a"]).is_empty());
    assert_eq!(texts(index.keys_for_tags(&["shared"])), ["http://a.test/2"]);
    assert!(index.keys_with_prefix("http://a.test/1").is_empty());

    // Stale tags from the caller do not matter: the recorded ones are unlinked.
    index.remove(&b, &tags(&["something-else"]));
    assert_eq!((index.key_count(), index.tag_count()), (0, 0));
    assert_consistent(&index);
}

#[test]
fn big_tags_shrink_back_when_their_keys_leave() {
    let index = PurgeIndex::new();
    let keys: Vec<CacheKey> = (0..5000)
        .map(|n| key(&format!("http://a.test/{n}")))
        .collect();
    for (n, k) in keys.iter().enumerate() {
        index.insert(k, &tags(&["all", &format!("own-{n}")]));
    }
    for k in &keys[1..] {
        index.remove(k, &[]);
    }
    let all_capacity = |index: &PurgeIndex| {
        index
            .tags
            .iter()
            .map(|shard| read(shard).get("all").map_or(0, HashSet::capacity))
            .sum::<usize>()
    };
    assert!(all_capacity(&index) <= 32, "{}", all_capacity(&index));
    let map_capacity: usize = index.tags.iter().map(|s| read(s).capacity()).sum();
    assert!(map_capacity < 64 * 64, "{map_capacity}");
    assert_eq!(index.tag_count(), 2);
    assert_consistent(&index);
}

#[test]
fn prefix_lookup_matches_by_text_and_nothing_else() {
    let index = PurgeIndex::new();
    for url in [
        "http://a.test/",
        "http://a.test/img/1",
        "http://a.test/img/2",
        "http://a.test/img2/3",
        "http://a.test/x?img/",
        "http://a.test.evil/img/1",
        "http://a.tes/img/1",
        "https://a.test/img/1",
        "http://b.test/img/1",
    ] {
        index.insert(&key(url), &[]);
    }
    // Matches are all on `http://a.test`: other hosts and schemes never match its prefixes.
    let cases: [(&str, &[&str]); 6] = [
        ("http://a.test/img/", &["/img/1", "/img/2"]),
        ("http://a.test/img/1", &["/img/1"]), // a whole key
        ("http://a.test/img", &["/img/1", "/img/2", "/img2/3"]),
        (
            "http://a.test/",
            &["/", "/img/1", "/img/2", "/img2/3", "/x?img/"],
        ),
        ("http://a.test/video/", &[]),
        ("http://z.test/", &[]),
    ];
    for (prefix, paths) in cases {
        let want: Vec<String> = paths.iter().map(|p| format!("http://a.test{p}")).collect();
        assert_eq!(texts(index.keys_with_prefix(prefix)), want, "{prefix}");
    }
    assert_eq!(index.keys_with_prefix("").len(), 9);
}

#[test]
fn prefix_lookup_finds_every_key_beyond_one_chunk() {
    let index = PurgeIndex::new();
    let wanted = PREFIX_CHUNK * SHARDS + 7;
    for n in 0..wanted {
        index.insert(&key(&format!("http://big.test/{n:06}")), &[]);
    }
    index.insert(&key("http://big.test0/x"), &[]);
    index.insert(&key("http://bif.test/x"), &[]);
    let found = index.keys_with_prefix("http://big.test/");
    assert_eq!(found.len(), wanted);
    assert_eq!(found.iter().collect::<HashSet<_>>().len(), wanted);
}

#[test]
fn clear_forgets_everything() {
    let index = PurgeIndex::new();
    index.insert(&key("http://a.test/1"), &tags(&["red"]));
    index.clear();
    assert_eq!((index.key_count(), index.tag_count()), (0, 0));
    assert!(index.keys_with_prefix("").is_empty());
    assert!(index.keys_for_tags(&["red"]).is_empty());
}

#[test]
fn surrogate_keys_are_split_deduplicated_and_bounded() {
    let long = "x".repeat(MAX_TAG_BYTES);
    let too_long = "y".repeat(MAX_TAG_BYTES + 1);
    let with_long = format!("surrogate-key: {too_long} a {long}");
    // Header lines as `name: value`.
    let cases: [(&[&str], &[&str]); 9] = [
        (&[], &[]),
        (&["surrogate-key: a b  c"], &["a", "b", "c"]),
        (&["surrogate-key: a,b, c ,,d"], &["a", "b", "c", "d"]),
        (&["cache-tag: a\tb "], &["a", "b"]),
        (&["surrogate-key: a b", "cache-tag: b,c"], &["a", "b", "c"]),
        (&["surrogate-key: a", "surrogate-key: a b"], &["a", "b"]),
        (&["surrogate-key: Aa aA aa"], &["Aa", "aA", "aa"]),
        (&["surrogate-key:  , "], &[]),
        (&[&with_long], &["a", &long]),
    ];
    for (lines, want) in cases {
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(": ").unwrap();
            let name: HeaderName = name.parse().unwrap();
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        let got = surrogate_keys(&headers);
        let got: Vec<&str> = got.iter().map(|tag| tag.as_ref()).collect();
        assert_eq!(got, want, "{lines:?}");
    }
}

#[test]
fn surrogate_keys_keep_at_most_the_first_max_per_response() {
    let mut headers = HeaderMap::new();
    let first: Vec<String> = (0..200).map(|n| format!("t{n}")).collect();
    let second: Vec<String> = (200..400).map(|n| format!("t{n}")).collect();
    headers.append(
        "surrogate-key",
        HeaderValue::from_str(&first.join(" ")).unwrap(),
    );
    headers.append(
        "cache-tag",
        HeaderValue::from_str(&second.join(",")).unwrap(),
    );
    let got = surrogate_keys(&headers);
    assert_eq!(got.len(), MAX_TAGS_PER_RESPONSE);
    assert_eq!(got[0].as_ref(), "t0");
    assert_eq!(got[MAX_TAGS_PER_RESPONSE - 1].as_ref(), "t255");
}

#[test]
fn surrogate_keys_skip_lines_that_are_not_utf8() {
    let mut headers = HeaderMap::new();
    headers.append(
        "surrogate-key",
        HeaderValue::from_bytes(b"bad\xff tag").unwrap(),
    );
    headers.append(
        "surrogate-key",
        HeaderValue::from_bytes("caf\u{e9} ok".as_bytes()).unwrap(),
    );
    let got = surrogate_keys(&headers);
    let got: Vec<&str> = got.iter().map(|tag| tag.as_ref()).collect();
    assert_eq!(got, ["caf\u{e9}", "ok"]);
}

#[test]
fn concurrent_writers_and_readers_leave_the_expected_state() {
    const OWNERS: usize = 4;
    const KEYS: usize = 400;
    const HOT_KEYS: usize = 4;
    let index = PurgeIndex::new();
    let owned = |owner: usize, n: usize| key(&format!("http://owner{owner}.test/{n}"));
    let hot = |n: usize| key(&format!("http://hot.test/{n}"));
    let done = AtomicBool::new(false);

    std::thread::scope(|scope| {
        let index = &index;
        let done = &done;
        let mut writers = Vec::new();
        for owner in 0..OWNERS {
            writers.push(scope.spawn(move || {
                let own = format!("owner-{owner}");
                for n in 0..KEYS {
                    let class = format!("mod-{}", n % 10);
                    index.insert(&owned(owner, n), &tags(&["all", &class, &own]));
                }
                // This thread alone touches its keys, so lookups must see all of them.
                assert_eq!(index.keys_for_tags(&[&own]).len(), KEYS);
                let host = format!("http://owner{owner}.test/");
                assert_eq!(index.keys_with_prefix(&host).len(), KEYS);
                for n in (0..KEYS).step_by(2) {
                    index.remove(&owned(owner, n), &[]);
                }
                for n in (1..KEYS).step_by(4) {
                    let class = format!("mod-{}", n % 10);
                    index.insert(&owned(owner, n), &tags(&[&class, "replaced"]));
                }
            }));
        }
        // Two threads fight over the same keys, replacing their tags and removing them; each
        // ends by storing every hot key with `hot` and a tag of its own.
        for churner in 0..2 {
            writers.push(scope.spawn(move || {
                for round in 0..2000 {
                    for n in 0..HOT_KEYS {
                        let tag = format!("hot-{}", (n + round + churner) % 5);
                        if (n + round) % 3 == churner {
                            index.remove(&hot(n), &[]);
                        } else {
                            index.insert(&hot(n), &tags(&[&tag, "hot"]));
                        }
                    }
                }
                let last = format!("last-{churner}");
                for n in 0..HOT_KEYS {
                    index.insert(&hot(n), &tags(&["hot", &last]));
                }
            }));
        }
        let reader = scope.spawn(move || {
            let wanted = ["all", "hot", "hot-0", "hot-1", "mod-3", "replaced"];
            while !done.load(AtomicOrdering::Relaxed) {
                let found = index.keys_for_tags(&wanted);
                // Only a key removed and stored again during the lookup may come twice.
                let settled: Vec<&CacheKey> = found
                    .iter()
                    .filter(|key| !key.as_str().starts_with("http://hot.test/"))
                    .collect();
                let distinct: HashSet<&CacheKey> = settled.iter().copied().collect();
                assert_eq!(distinct.len(), settled.len(), "duplicates in {settled:?}");
                for key in index.keys_with_prefix("http://hot.test/") {
                    assert!(key.as_str().starts_with("http://hot.test/"), "{key:?}");
                }
            }
        });
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, AtomicOrdering::Relaxed);
        reader.join().unwrap();
    });

    assert_consistent(&index);
    assert_eq!(index.keys_for_tags(&["hot"]).len(), HOT_KEYS);
    assert_eq!(index.keys_for_tags(&["last-0", "last-1"]).len(), HOT_KEYS);
    for n in 0..HOT_KEYS {
        index.remove(&hot(n), &[]);
    }
    assert_consistent(&index);
    assert_eq!(index.key_count(), OWNERS * KEYS / 2);
    // all, mod-0..mod-9 (odd n only: mod-1, 3, 5, 7, 9), owner-0..3, replaced.
    assert_eq!(index.tag_count(), 1 + 5 + OWNERS + 1);
    assert!(index.keys_for_tags(&["hot", "hot-0"]).is_empty());
    for owner in 0..OWNERS {
        let replaced: BTreeSet<CacheKey> = (1..KEYS).step_by(4).map(|n| owned(owner, n)).collect();
        let untouched: BTreeSet<CacheKey> = (3..KEYS).step_by(4).map(|n| owned(owner, n)).collect();
        let own = format!("owner-{owner}");
        assert_eq!(
            index
                .keys_for_tags(&[&own])
                .into_iter()
                .collect::<BTreeSet<_>>(),
            untouched
        );
        let host = format!("http://owner{owner}.test/");
        let all_odd: BTreeSet<CacheKey> = replaced.union(&untouched).cloned().collect();
        assert_eq!(
            index
                .keys_with_prefix(&host)
                .into_iter()
                .collect::<BTreeSet<_>>(),
            all_odd
        );
    }
    assert_eq!(index.keys_for_tags(&["all"]).len(), OWNERS * KEYS / 4);
    assert_eq!(index.keys_for_tags(&["replaced"]).len(), OWNERS * KEYS / 4);
    assert_eq!(
        index.keys_for_tags(&["all", "replaced"]).len(),
        OWNERS * KEYS / 2
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn header_lines() -> impl Strategy<Value = Vec<(bool, Vec<u8>)>> {
        let soup = prop::collection::vec(
            prop_oneof![
                Just(" "),
                Just("\t"),
                Just(","),
                Just("a"),
                Just("B"),
                Just("é"),
                Just("tag-1")
            ],
            0..20,
        )
        .prop_map(|pieces| pieces.concat().into_bytes());
        let line = prop_oneof![soup, prop::collection::vec(any::<u8>(), 0..300)];
        prop::collection::vec((any::<bool>(), line), 0..4)
    }

    proptest! {
        #[test]
        fn surrogate_keys_of_any_header_are_distinct_bounded_tags(lines in header_lines()) {
            let mut headers = HeaderMap::new();
            for (cache_tag, line) in &lines {
                let name = if *cache_tag { "cache-tag" } else { "surrogate-key" };
                if let Ok(value) = HeaderValue::from_bytes(line) {
                    headers.append(name, value);
                }
            }
            let got = surrogate_keys(&headers);
            prop_assert!(got.len() <= MAX_TAGS_PER_RESPONSE);
            let distinct: BTreeSet<&str> = got.iter().map(|tag| tag.as_ref()).collect();
            prop_assert_eq!(distinct.len(), got.len());
            for tag in &got {
                prop_assert!(!tag.is_empty() && tag.len() <= MAX_TAG_BYTES);
                prop_assert!(!tag.contains([' ', '\t', ',']), "{:?}", tag);
            }
        }

        #[test]
        fn rendered_surrogate_keys_parse_back(
            tags in prop::collection::btree_set("[!-+\\--~]{1,16}", 0..40),
            separators in prop::collection::vec(
                prop::sample::select(vec![" ", ",", "\t", ", ", " ,  "]),
                40,
            ),
        ) {
            let tags: Vec<&String> = tags.iter().collect();
            let mut line = String::new();
            for (tag, separator) in tags.iter().zip(&separators) {
                line.push_str(tag);
                line.push_str(separator);
            }
            let mut headers = HeaderMap::new();
            headers.insert("surrogate-key", HeaderValue::from_str(&line).unwrap());
            let got = surrogate_keys(&headers);
            let got: Vec<&str> = got.iter().map(|tag| tag.as_ref()).collect();
            let want: Vec<&str> = tags.iter().map(|tag| tag.as_str()).collect();
            prop_assert_eq!(got, want);
        }
    }
}
