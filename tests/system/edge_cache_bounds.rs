//! Memory stays bounded: objects over `cache.max_object_bytes` stream through unstored, and the
//! cache as a whole holds at most `cache.max_bytes`.

// A panic is how a test fails: unwrapping is the point here.

use verge_testkit as support;

use support::scenario::origin_answering;
use support::{start_edge, FakeOrigin, HttpClient, Reply};
use tokio::task::JoinSet;

const MIB: usize = 1 << 20;

async fn assert_large_body_streams_and_is_not_stored(chunked: bool) {
    let origin = FakeOrigin::start().await;
    let body = support::patterned_body(MIB);
    let reply = Reply::ok(body.clone()).cache_control("max-age=600");
    origin.on("/big", if chunked { reply.chunked() } else { reply });
    let edge = start_edge(origin.addr(), &["cache.max_object_bytes = \"64KiB\""]).await;

    for n in 1..=2 {
        let response = edge.get("/big").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.body.len(), body.len(), "request {n}: body length");
        assert!(response.body == body, "request {n}: body bytes differ");
        let status = response.cache_status();
        assert!(status.contains("fwd=uri-miss"), "request {n}: {status}");
        assert!(status.contains("detail=too-large"), "request {n}: {status}");
        assert!(!status.contains("stored"), "request {n}: {status}");
        assert_eq!(
            origin.hits("/big"),
            n,
            "request {n}: an object over max_object_bytes is not stored"
        );
    }
    let metrics = edge.metrics().await;
    assert_eq!(metrics.value("verge_cache_objects", &[]), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_object_bytes_with_content_length_streams_unstored() {
    assert_large_body_streams_and_is_not_stored(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_object_bytes_streams_unstored() {
    assert_large_body_streams_and_is_not_stored(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_under_max_object_bytes_is_stored() {
    let origin = FakeOrigin::start().await;
    let body = support::patterned_body(40 * 1024);
    origin.on(
        "/medium",
        Reply::ok(body.clone())
            .cache_control("max-age=600")
            .chunked(),
    );
    let edge = start_edge(origin.addr(), &["cache.max_object_bytes = \"64KiB\""]).await;
    let miss = edge.get("/medium").await;
    miss.assert_cache_status_has("stored", "");
    let hit = edge.get("/medium").await;
    assert!(hit.body == body);
    assert_eq!(hit.header("content-length"), Some(body.len().to_string()));
    assert_eq!(origin.hits("/medium"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_bytes_stay_within_max_bytes_after_many_inserts() {
    let reply = Reply::ok(support::patterned_body(16 * 1024)).cache_control("max-age=600");
    let origin = origin_answering("/obj/", reply).await;
    let edge = start_edge(
        origin.addr(),
        &[
            "cache.max_bytes = \"1MiB\"",
            "cache.max_object_bytes = \"64KiB\"",
        ],
    )
    .await;
    let client = HttpClient::http1();

    let objects = 300;
    for batch in (0..objects).collect::<Vec<_>>().chunks(10) {
        let mut requests = JoinSet::new();
        for i in batch {
            let client = client.clone();
            let url = edge.url(&format!("/obj/{i}"));
            requests.spawn(async move { client.get(&url).await });
        }
        while let Some(response) = requests.join_next().await {
            let response = response.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(response.body.len(), 16 * 1024);
        }
    }
    assert_eq!(origin.total_hits(), objects);

    let metrics = edge.metrics().await;
    let bytes = metrics.value("verge_cache_bytes", &[]).unwrap();
    let held = metrics.value("verge_cache_objects", &[]).unwrap();
    assert_eq!(
        metrics.value("verge_cache_max_bytes", &[]),
        Some(MIB as f64)
    );
    assert!(
        bytes <= MIB as f64,
        "verge_cache_bytes = {bytes} is over max_bytes = {MIB}"
    );
    assert!(
        held < objects as f64,
        "verge_cache_objects = {held}: {objects} objects of 16 KiB cannot fit in 1 MiB"
    );
    assert!(held > 0.0, "the cache holds nothing at all");
}
