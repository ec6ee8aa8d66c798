//! The "My Network" page under `/_lattice/network/`: its files, their content
//! types, security and cache headers, and the page configuration.

use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::harness::{TestServer, backends};

const PREFIX: &str = "/_lattice/network";

/// Sends a GET without following redirects and returns the raw response.
async fn get(server: &TestServer, path: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("HTTP client");
    let mut request = client.get(format!("{}{path}", server.base));
    if let Some(tag) = if_none_match {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    request.send().await.expect("request reaches the server")
}

fn header_of(response: &reqwest::Response, name: header::HeaderName) -> String {
    response.headers().get(&name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn page_files_have_types_and_headers() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let files = [
            ("/", "text/html; charset=utf-8", "<title>My Network</title>"),
            ("/index.html", "text/html; charset=utf-8", "<script src=\"app.js\" defer></script>"),
            ("/app.js", "text/javascript; charset=utf-8", "dev.lattice.connections"),
            ("/style.css", "text/css; charset=utf-8", ":focus-visible"),
            ("/icon.svg", "image/svg+xml", "<svg"),
        ];
        for (file, content_type, excerpt) in files {
            let response = get(&server, &format!("{PREFIX}{file}"), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{file}");
            assert_eq!(header_of(&response, header::CONTENT_TYPE), content_type, "{file}");
            assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache", "{file}");
            assert_eq!(header_of(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{file}");
            assert_eq!(header_of(&response, header::X_FRAME_OPTIONS), "DENY", "{file}");
            assert_eq!(header_of(&response, header::REFERRER_POLICY), "no-referrer", "{file}");
            let policy = header_of(&response, header::CONTENT_SECURITY_POLICY);
            assert!(policy.contains("default-src 'none'"), "{file}: {policy}");
            assert!(policy.contains("script-src 'self';"), "{file}: {policy}");
            assert!(!policy.contains("unsafe-inline"), "{file}: {policy}");
            assert!(policy.contains("connect-src 'self'"), "{file}: {policy}");
            assert!(policy.contains("frame-ancestors 'none'"), "{file}: {policy}");
            let etag = header_of(&response, header::ETAG);
            assert!(etag.starts_with('"'), "{file}: etag {etag}");
            assert!(etag.ends_with('"'), "{file}: etag {etag}");
            assert!(etag.len() > 10, "{file}: etag {etag}");
            let body = response.text().await.expect("body");
            assert!(body.contains(excerpt), "{file} does not contain {excerpt}");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn html_has_no_inline_script_or_style() {
    let server = TestServer::start(&backends()[0]).await;
    let html = get(&server, &format!("{PREFIX}/"), None).await.text().await.expect("body");
    // Every <script> loads a file, because the policy allows no inline script.
    for (index, _) in html.match_indices("<script") {
        let tag_end = html[index..].find('>').expect("closed tag") + index;
        assert!(html[index..tag_end].contains("src="), "inline script at byte {index}");
    }
    assert!(!html.contains("<style"), "inline <style> element");
    assert!(!html.contains(" style=\""), "inline style attribute");
    assert!(!html.contains(" onclick="), "inline event handler");
    server.stop().await;
}

#[tokio::test]
async fn unchanged_file_revalidates_with_304() {
    let server = TestServer::start(&backends()[0]).await;
    let first = get(&server, &format!("{PREFIX}/app.js"), None).await;
    let etag = header_of(&first, header::ETAG);

    let again = get(&server, &format!("{PREFIX}/app.js"), Some(&etag)).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header_of(&again, header::ETAG), etag);
    assert_eq!(header_of(&again, header::CACHE_CONTROL), "no-cache");
    assert!(again.bytes().await.expect("body").is_empty());

    let other = get(&server, &format!("{PREFIX}/app.js"), Some("\"something-else\"")).await;
    assert_eq!(other.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn bare_prefix_redirects_to_page() {
    let server = TestServer::start(&backends()[0]).await;
    let response = get(&server, PREFIX, None).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header_of(&response, header::LOCATION), "/_lattice/network/");
    assert_eq!(header_of(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(header_of(&response, header::X_FRAME_OPTIONS), "DENY");
    assert_eq!(header_of(&response, header::REFERRER_POLICY), "no-referrer");
    let policy = header_of(&response, header::CONTENT_SECURITY_POLICY);
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    server.stop().await;
}

#[tokio::test]
async fn config_names_server_and_element_url() {
    let server = TestServer::start_with(&backends()[0], |config| {
        config.server_name = "example.test".into();
        config.web.element_url = "https://element.example.test/#/room/".into();
    })
    .await;
    let response = get(&server, &format!("{PREFIX}/config.json"), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-store");
    assert!(header_of(&response, header::CONTENT_TYPE).starts_with("application/json"));
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["server_name"], "example.test");
    assert_eq!(body["element_url"], "https://element.example.test/#/room/");
    server.stop().await;
}

#[tokio::test]
async fn unknown_file_is_unrecognized() {
    let server = TestServer::start(&backends()[0]).await;
    let response = get(&server, &format!("{PREFIX}/secret.txt"), None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    server.stop().await;
}

#[tokio::test]
async fn page_off_serves_nothing() {
    let server = TestServer::start_with(&backends()[0], |config| config.web.network_page = false).await;
    for file in ["/", "/app.js", "/config.json"] {
        let response = get(&server, &format!("{PREFIX}{file}"), None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{file}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["errcode"], "M_UNRECOGNIZED", "{file}");
    }
    server.stop().await;
}

#[tokio::test]
async fn element_url_must_be_http() {
    let mut config = lattice::Config::default();
    config.web.element_url = "javascript:alert(1)//".into();
    let error = config.validate().expect_err("a javascript: URL is rejected");
    assert!(error.to_string().contains("web.element_url"), "{error}");
}
