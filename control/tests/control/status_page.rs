//! Control's status page and the JSON it reads: who may open it (token, session cookie), what
//! the session may do, the page itself, and the purges list.

use crate::support;

use http::{Method, StatusCode};
use serde_json::json;
use support::{registration, request, start_control, TOKEN};
use tempfile::TempDir;
use verge_control::status::PAGE;

/// Opens a session with the token in the query, as a browser following `/?token=…` does;
/// returns the `Cookie` value to send back.
async fn open_session(control: &support::TestControl) -> String {
    let path = format!("/?token={TOKEN}");
    let redirect = request(control.admin_addr, Method::GET, &path, &[], "").await;
    assert_eq!(
        redirect.status,
        StatusCode::SEE_OTHER,
        "{}",
        redirect.text()
    );
    assert_eq!(
        redirect.header("location"),
        Some("/"),
        "the token leaves the address bar"
    );
    let cookie = redirect.header("set-cookie").unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    cookie.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_the_token_and_a_session_opened_with_it_reads_but_does_not_write() {
    let dir = TempDir::new().unwrap();
    let control = start_control(dir.path(), "").await;
    let admin = control.admin_addr;

    let anonymous = request(admin, Method::GET, "/", &[], "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous.text().contains("<form"),
        "a way to give the token"
    );
    assert!(
        !anonymous.text().contains("/v1/nodes"),
        "not the page itself"
    );
    let wrong = request(admin, Method::GET, "/?token=nope", &[], "").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.header("set-cookie").is_none());
    let forged = [("cookie", "verge_session=0123456789abcdef")];
    assert_eq!(
        request(admin, Method::GET, "/", &forged, "").await.status,
        StatusCode::UNAUTHORIZED
    );

    let cookie = open_session(&control).await;
    let with_cookie = [("cookie", cookie.as_str())];
    let page = request(admin, Method::GET, "/", &with_cookie, "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.text(), PAGE);
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    for path in ["/v1/nodes", "/v1/routing", "/v1/purges"] {
        let read = request(admin, Method::GET, path, &with_cookie, "").await;
        assert_eq!(read.status, StatusCode::OK, "{path}: {}", read.text());
    }
    // The session only reads: writing takes the token itself.
    let purge = request(
        admin,
        Method::POST,
        "/v1/purge",
        &with_cookie,
        r#"{"all":true}"#,
    )
    .await;
    assert_eq!(purge.status, StatusCode::UNAUTHORIZED, "{}", purge.text());
    let reload = request(admin, Method::POST, "/v1/reload", &with_cookie, "").await;
    assert_eq!(reload.status, StatusCode::UNAUTHORIZED);

    // Scripts and curl use the token as for the API.
    let bearer = format!("Bearer {TOKEN}");
    let page = request(admin, Method::GET, "/", &[("authorization", &bearer)], "").await;
    assert_eq!(page.status, StatusCode::OK);
    let post = request(admin, Method::POST, "/", &[("authorization", &bearer)], "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn the_page_is_self_contained_and_writes_what_nodes_report_as_text() {
    // No external assets: nothing is loaded from anywhere but this listener.
    for external in ["src=\"http", "href=\"http", "src=\"//", "@import", "<link"] {
        assert!(!PAGE.contains(external), "{external}");
    }
    // Node ids, regions and versions are text, never markup.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!PAGE.contains(sink), "{sink}");
    }
    for endpoint in ["/v1/nodes", "/v1/routing", "/v1/purges"] {
        assert!(PAGE.contains(endpoint), "{endpoint}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_what_a_node_reports_stays_data() {
    let dir = TempDir::new().unwrap();
    let control = start_control(dir.path(), "").await;
    // Ids and regions are names: markup there is refused at registration.
    let mut bad_id = registration("e1", "edge", "http://127.0.0.1:9");
    bad_id["id"] = json!("<script>alert(1)</script>");
    assert_eq!(
        control.post_register(&bad_id).await.status,
        StatusCode::BAD_REQUEST
    );
    let mut bad_region = registration("e1", "edge", "http://127.0.0.1:9");
    bad_region["region"] = json!("<b>us</b>");
    assert_eq!(
        control.post_register(&bad_region).await.status,
        StatusCode::BAD_REQUEST
    );
    // A version is free text: it comes back as a JSON string, bounded, for the page to show
    // as text.
    let mut odd = registration("e1", "edge", "http://127.0.0.1:9");
    let markup = "<img src=x onerror=alert(1)>".repeat(10);
    odd["version"] = json!(markup);
    assert!(control.post_register(&odd).await.status.is_success());
    let view = control.node_view("e1").await;
    let version = view["version"].as_str().unwrap();
    assert!(
        markup.starts_with(version) && version.len() <= 64,
        "{version}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_purges_are_listed_newest_first_with_each_nodes_progress() {
    let dir = TempDir::new().unwrap();
    let control = start_control(dir.path(), "").await;
    control.register("e1", "edge", "http://127.0.0.1:9").await;
    let first = control.purge_url(1).await;
    let second = control.purge_url(2).await;
    control.ack("e1", first).await;

    let listed = control.admin(Method::GET, "/v1/purges", "").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let listed = listed.json();
    let ids: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [second, first]);
    assert_eq!(listed[1]["nodes"][0]["id"], "e1");
    assert_eq!(listed[1]["nodes"][0]["state"], "applied");
    assert_eq!(listed[0]["nodes"][0]["state"], "pending");

    let one = control.admin(Method::GET, "/v1/purges?limit=1", "").await;
    assert_eq!(one.json().as_array().unwrap().len(), 1);
    for bad in [
        "/v1/purges?limit=0",
        "/v1/purges?limit=x",
        "/v1/purges?limit=1001",
    ] {
        let refused = control.admin(Method::GET, bad, "").await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            refused.error().contains("limit"),
            "{bad}: {}",
            refused.error()
        );
    }
}
