//! General bad input: malformed bodies, missing or invalid tokens, oversized
//! requests, unknown endpoints and methods, invalid ids in paths, and CORS.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

async fn is_available(server: &TestServer, localpart: &str) -> bool {
    let (status, body) =
        server.client().get(&format!("/_matrix/client/v3/register/available?username={}", encode(localpart))).await;
    status == StatusCode::OK && body["available"] == true
}

async fn joined_rooms(client: &Client) -> Vec<Value> {
    let (status, body) = client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(status, StatusCode::OK, "joined_rooms: {body}");
    body["joined_rooms"].as_array().expect("joined_rooms is an array").clone()
}

/// Sends a request with extra headers and no token, returning the raw response.
async fn send_with_headers(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let http = reqwest::Client::new();
    let mut request = http.request(method, format!("{}{path}", server.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request reaches the server")
}

/// Sends a PUT with a chunked JSON body of about `size` bytes over a raw
/// HTTP/1.1 connection, and returns the status code and the JSON body.
async fn put_chunked(server: &TestServer, path: &str, token: &str, size: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect to the server");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write the request head");
    let payload = format!("{{\"blob\": \"{}\"}}", "y".repeat(size));
    for chunk in payload.as_bytes().chunks(1024) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        // The server may respond and close the connection before the whole body is sent.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;

    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the server answered the chunked request within 10 s");
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    (status, parse_http_body(body))
}

/// Parses a response body that may use chunked transfer encoding.
fn parse_http_body(body: &str) -> Value {
    if let Ok(value) = serde_json::from_str(body) {
        return value;
    }
    let start = body.find('{');
    let end = body.rfind('}');
    match (start, end) {
        (Some(start), Some(end)) if start < end => serde_json::from_str(&body[start..=end]).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

#[tokio::test]
async fn malformed_json_rejected() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        let response = alice.request_raw(Method::POST, "/_matrix/client/v3/createRoom", b"{\"name\": ".to_vec()).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_NOT_JSON");
        assert!(joined_rooms(&alice).await.is_empty(), "{backend:?}: the rejected createRoom made no room");

        let anonymous = server.client();
        let body = b"{\"username\": \"carol\", \"password\": ".to_vec();
        let response = anonymous.request_raw(Method::POST, "/_matrix/client/v3/register", body).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_NOT_JSON");
        assert!(is_available(&server, "carol").await, "{backend:?}: the rejected registration made no user");
        server.stop().await;
    }
}

#[tokio::test]
async fn wrong_shape_names_field() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        let response = alice.post("/_matrix/client/v3/createRoom", json!({ "name": 42 })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let message = response.1["error"].as_str().unwrap_or_default();
        assert!(message.contains("name"), "{backend:?}: the error names the field: {message}");
        assert!(joined_rooms(&alice).await.is_empty(), "{backend:?}: the rejected createRoom made no room");

        let response = alice.post("/_matrix/client/v3/account/password", json!({ "new_password": ["x"] })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let message = response.1["error"].as_str().unwrap_or_default();
        assert!(message.contains("new_password"), "{backend:?}: the error names the field: {message}");

        let response = alice.post("/_matrix/client/v3/delete_devices", json!({})).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let message = response.1["error"].as_str().unwrap_or_default();
        assert!(message.contains("devices"), "{backend:?}: the error names the missing field: {message}");

        let response = server
            .client()
            .post("/_matrix/client/v3/register", json!({ "username": 7, "auth": { "type": "m.login.dummy" } }))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let message = response.1["error"].as_str().unwrap_or_default();
        assert!(message.contains("username"), "{backend:?}: the error names the field: {message}");
        server.stop().await;
    }
}

#[tokio::test]
async fn bad_query_names_parameter() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        let response = alice.get("/_matrix/client/v3/sync?timeout=soon").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let message = response.1["error"].as_str().unwrap_or_default();
        assert!(message.starts_with("invalid query parameter timeout: "), "{backend:?}: names timeout: {message}");

        let response = alice.get("/_matrix/client/unstable/dev.lattice.connections/metrics?from=abc").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let message = response.1["error"].as_str().unwrap_or_default();
        assert!(message.starts_with("invalid query parameter from: "), "{backend:?}: names from: {message}");

        let response = alice.get("/_matrix/client/unstable/dev.lattice.connections/metrics?from=0&to=tomorrow").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let message = response.1["error"].as_str().unwrap_or_default();
        assert!(message.starts_with("invalid query parameter to: "), "{backend:?}: names to: {message}");

        let (status, body) = alice.get("/_matrix/client/v3/sync?timeout=0").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: a valid timeout still works: {body}");
        assert!(body["next_batch"].is_string(), "{backend:?}: the sync has a next_batch: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn non_object_body_rejected() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        for body in [json!([1, 2]), json!("room"), json!(3), Value::Null] {
            let response = alice.post("/_matrix/client/v3/createRoom", body.clone()).await;
            assert_eq!(response.0, StatusCode::BAD_REQUEST, "{backend:?}: body {body}: {}", response.1);
            assert_eq!(response.1["errcode"], "M_BAD_JSON", "{backend:?}: body {body}: {}", response.1);
        }
        assert!(joined_rooms(&alice).await.is_empty(), "{backend:?}: no room was made");
        server.stop().await;
    }
}

#[tokio::test]
async fn missing_and_invalid_tokens() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        let response = server.client().get("/_matrix/client/v3/account/whoami").await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

        let forged = Client::new(&server.base, Some("lat_not_a_real_token".into()));
        let response = forged.get("/_matrix/client/v3/account/whoami").await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        assert_ne!(response.1["soft_logout"], true, "{backend:?}: an unknown token is a hard logout");

        let response = forged.post("/_matrix/client/v3/createRoom", json!({})).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        assert!(joined_rooms(&alice).await.is_empty(), "{backend:?}: nothing was created with a forged token");

        let response = send_with_headers(
            &server,
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            &[("Authorization", "Basic YWxpY2U6cGFzcw==")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{backend:?}: a non-bearer header is no token");
        let body: Value = response.json().await.expect("JSON error body");
        assert_eq!(body["errcode"], "M_MISSING_TOKEN", "{backend:?}: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn access_token_query_parameter() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let token = alice.token.clone().expect("alice has a token");

        let anonymous = server.client();
        let path = format!("/_matrix/client/v3/account/whoami?access_token={}", encode(&token));
        let (status, body) = anonymous.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: the query parameter authenticates: {body}");
        assert_eq!(body["user_id"], alice.user_id, "{backend:?}: user_id");

        let response = anonymous.get("/_matrix/client/v3/account/whoami?access_token=lat_bogus").await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn oversized_body_rejected() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.limits.max_request_body = 2048;
        })
        .await;
        let alice = server.register("alice").await;
        let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.big", encode(&alice.user_id));

        let response = alice.put(&path, json!({ "blob": "x".repeat(8192) })).await;
        assert_error(&response, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
        let response = alice.get(&path).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        let (status, body) = alice.put(&path, json!({ "blob": "small" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: a body under the limit is accepted: {body}");

        // A chunked body has no Content-Length, so the limit applies while reading.
        let (status, body) = put_chunked(&server, &path, alice.token.as_deref().unwrap_or_default(), 8192).await;
        assert_eq!(status, 413, "{backend:?}: chunked oversized body: {body}");
        assert_eq!(body["errcode"], "M_TOO_LARGE", "{backend:?}: chunked oversized body: {body}");
        let (_, stored) = alice.get(&path).await;
        assert_eq!(stored["blob"], "small", "{backend:?}: the oversized put stored nothing");
        server.stop().await;
    }
}

#[tokio::test]
async fn unknown_endpoint_unrecognized() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let response = alice.get("/_matrix/client/v3/no_such_endpoint").await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
        let response = server.client().post("/_matrix/client/v3/no/such/thing", json!({})).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
        server.stop().await;
    }
}

#[tokio::test]
async fn wrong_method_unrecognized() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let response = alice.request(Method::DELETE, "/_matrix/client/v3/account/whoami", None).await;
        assert_error(&response, StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED");
        let response = alice.request(Method::GET, "/_matrix/client/v3/createRoom", None).await;
        assert_error(&response, StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED");
        assert!(joined_rooms(&alice).await.is_empty(), "{backend:?}: no room was made");
        server.stop().await;
    }
}

#[tokio::test]
async fn invalid_ids_in_paths() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        for path in [
            "/_matrix/client/v3/profile/not-a-user".to_owned(),
            format!("/_matrix/client/v3/presence/{}/status", encode("@missing-server")),
            format!("/_matrix/client/v3/rooms/{}/joined_members", encode("not-a-room")),
            format!("/_matrix/client/v3/rooms/{}/state", encode("#alias:localhost")),
        ] {
            let response = alice.get(&path).await;
            assert_eq!(response.0, StatusCode::BAD_REQUEST, "{backend:?}: GET {path}: {}", response.1);
            assert_eq!(response.1["errcode"], "M_INVALID_PARAM", "{backend:?}: GET {path}: {}", response.1);
        }

        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/txn1", encode("not-a-room"));
        let response = alice.put(&path, json!({ "msgtype": "m.text", "body": "hi" })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let path = format!("/_matrix/client/v3/profile/{}/displayname", encode("alice"));
        let response = alice.put(&path, json!({ "displayname": "x" })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let (_, body) = alice.get(&format!("/_matrix/client/v3/profile/{}/displayname", encode(&alice.user_id))).await;
        assert_eq!(body["displayname"], "alice", "{backend:?}: the rejected put changed nothing");
        server.stop().await;
    }
}

#[tokio::test]
async fn cors_on_responses() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let origin = [("Origin", "https://app.example.org")];

        let response = send_with_headers(&server, Method::GET, "/_matrix/client/versions", &origin).await;
        assert_eq!(response.status(), StatusCode::OK, "{backend:?}: versions");
        assert_eq!(
            response.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
            Some("*"),
            "{backend:?}: CORS on a success"
        );

        let response = send_with_headers(&server, Method::GET, "/_matrix/client/v3/account/whoami", &origin).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{backend:?}: whoami without a token");
        assert_eq!(
            response.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
            Some("*"),
            "{backend:?}: CORS on an error, so web clients can read it"
        );

        let response = send_with_headers(&server, Method::GET, "/_matrix/client/v3/no_such_endpoint", &origin).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{backend:?}: unknown endpoint");
        assert!(
            response.headers().contains_key("access-control-allow-origin"),
            "{backend:?}: CORS on an unknown endpoint"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn cors_preflight() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let response = send_with_headers(
            &server,
            Method::OPTIONS,
            "/_matrix/client/v3/createRoom",
            &[
                ("Origin", "https://app.example.org"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization, content-type"),
            ],
        )
        .await;
        assert!(response.status().is_success(), "{backend:?}: preflight succeeds: {}", response.status());
        let header = |name: &str| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase()
        };
        assert_eq!(header("access-control-allow-origin"), "*", "{backend:?}: allow-origin");
        let methods = header("access-control-allow-methods");
        for method in ["get", "post", "put", "delete", "options"] {
            assert!(methods.contains(method), "{backend:?}: {method} allowed: {methods}");
        }
        let allowed = header("access-control-allow-headers");
        for name in ["authorization", "content-type", "x-requested-with"] {
            assert!(allowed.contains(name), "{backend:?}: header {name} allowed: {allowed}");
        }
        server.stop().await;
    }
}
