//! Request authentication between servers: `X-Matrix` signed requests are
//! accepted; unsigned, wrongly signed, misaddressed or altered ones get 401
//! `M_UNAUTHORIZED` with a message.

use http::Method;
use lattice::federation::auth::authorization_header;
use reqwest::StatusCode;
use ruma::{ServerName, signatures::Ed25519KeyPair};
use serde_json::{Value, json};

use crate::harness::{TestCa, TestServer, backends};

struct Pair {
    ca: TestCa,
    a: TestServer,
    b: TestServer,
    /// A media id uploaded on B, the target of the authenticated requests.
    media_id: String,
}

async fn start_pair(backend: &crate::harness::Backend) -> Pair {
    let ca = TestCa::new();
    let mut servers = TestServer::start_federated(backend, &ca, &["a.lattice.test", "b.lattice.test"], |_| {}).await;
    let b = servers.pop().expect("b");
    let a = servers.pop().expect("a");
    let bob = b.register("bob").await;
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/media/v3/upload", b.base))
        .bearer_auth(bob.token.as_deref().unwrap_or_default())
        .header("content-type", "text/plain")
        .body("hello over federation")
        .send()
        .await
        .expect("upload");
    let body: Value = response.json().await.expect("upload JSON");
    let uri = body["content_uri"].as_str().expect("content_uri").to_owned();
    let media_id = uri.rsplit('/').next().expect("media id").to_owned();
    Pair { ca, a, b, media_id }
}

/// Sends GET `path` to B's federation listener with the given Authorization headers.
async fn get_b(pair: &Pair, path: &str, authorization: &[String]) -> (StatusCode, Vec<u8>) {
    let mut request = pair.ca.client(&[&pair.b]).get(format!("{}{path}", pair.b.federation_base()));
    for value in authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("TLS request to b");
    let status = response.status();
    (status, response.bytes().await.expect("body").to_vec())
}

fn sign(key: &Ed25519KeyPair, origin: &str, destination: &str, path: &str) -> String {
    authorization_header(key, origin, destination, "GET", path, None).expect("sign")
}

#[track_caller]
fn assert_unauthorized(response: &(StatusCode, Vec<u8>), message_part: &str) {
    assert_eq!(response.0, StatusCode::UNAUTHORIZED, "{}", String::from_utf8_lossy(&response.1));
    let body: Value = serde_json::from_slice(&response.1).expect("error JSON");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(message_part), "expected {message_part:?} in {message:?}");
}

#[tokio::test]
async fn signed_requests_accepted_and_bad_ones_rejected() {
    for backend in backends() {
        let pair = start_pair(&backend).await;
        let a_key = &pair.a.homeserver.services().key;
        let path = format!("/_matrix/federation/v1/media/download/{}", pair.media_id);

        // Signed by A for B: accepted (B fetched A's key over TLS to check it).
        let signed = sign(&a_key.pair, "a.lattice.test", "b.lattice.test", &path);
        let (status, body) = get_b(&pair, &path, std::slice::from_ref(&signed)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("hello over federation"));

        // No Authorization header.
        assert_unauthorized(&get_b(&pair, &path, &[]).await, "missing Authorization");
        // Another scheme.
        assert_unauthorized(&get_b(&pair, &path, &["Bearer abc".into()]).await, "X-Matrix");

        // Signed with a key that is not A's, under A's key id.
        let stranger = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), a_key.pair.version().to_owned())
            .expect("stranger key");
        let forged = sign(&stranger, "a.lattice.test", "b.lattice.test", &path);
        assert_unauthorized(&get_b(&pair, &path, &[forged]).await, "does not match");

        // A key id that A never published.
        let unknown = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "unknown".into()).expect("key");
        let unknown_key = sign(&unknown, "a.lattice.test", "b.lattice.test", &path);
        assert_unauthorized(&get_b(&pair, &path, &[unknown_key]).await, "ed25519:unknown");

        // Addressed to another server.
        let misaddressed = sign(&a_key.pair, "a.lattice.test", "c.lattice.test", &path);
        assert_unauthorized(&get_b(&pair, &path, &[misaddressed]).await, "addressed to c.lattice.test");

        // A valid signature for another request does not carry over.
        let other_path = format!("{path}?timeout_ms=1");
        let (status, _) = get_b(&pair, &other_path, std::slice::from_ref(&signed)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "signature bound to the request target");

        // A malformed header names the problem.
        assert_unauthorized(&get_b(&pair, &path, &["X-Matrix origin=\"a.lattice.test".into()]).await, "malformed");

        pair.a.stop().await;
        pair.b.stop().await;
    }
}

#[tokio::test]
async fn federation_client_signs_requests() {
    for backend in backends() {
        let pair = start_pair(&backend).await;
        let federation = &pair.a.homeserver.services().federation;
        let b_name = ServerName::parse("b.lattice.test").expect("server name");
        let path = format!("/_matrix/federation/v1/media/download/{}", pair.media_id);

        // Signed by A's federation client: B accepts it.
        let response = federation.send(&b_name, Method::GET, &path, None, true).await.expect("request to b");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("multipart/mixed; boundary="));
        // The same request unsigned is refused.
        let response = federation.send(&b_name, Method::GET, &path, None, false).await.expect("request to b");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.expect("error JSON");
        assert_eq!(body["errcode"], "M_UNAUTHORIZED");

        // JSON responses come back parsed.
        let version = federation
            .send_json(&b_name, Method::GET, "/_matrix/federation/v1/version", None, true)
            .await
            .expect("version of b");
        assert_eq!(version, json!({ "server": { "name": "Lattice", "version": env!("CARGO_PKG_VERSION") } }));

        pair.a.stop().await;
        pair.b.stop().await;
    }
}

#[tokio::test]
async fn outbound_tls_requires_a_trusted_certificate() {
    for backend in backends() {
        // B's certificate comes from a CA that A does not trust.
        let ca = TestCa::new();
        let other_ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |config| {
            if config.server_name == "a.lattice.test" {
                config.federation.tls_ca_file = Some(other_ca.ca_file());
            }
        })
        .await;
        let b = servers.pop().expect("b");
        let a = servers.pop().expect("a");
        let b_name = ServerName::parse("b.lattice.test").expect("server name");
        let err = a
            .homeserver
            .services()
            .federation
            .send_json(&b_name, Method::GET, "/_matrix/federation/v1/version", None, false)
            .await
            .expect_err("an untrusted certificate is refused");
        assert!(err.to_string().contains("certificate"), "{err}");
        a.stop().await;
        b.stop().await;

        // The test-only switch accepts it.
        let ca = TestCa::new();
        let other_ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |config| {
            config.federation.tls_ca_file = Some(other_ca.ca_file());
            config.federation.insecure_skip_tls_verify_for_tests = true;
        })
        .await;
        let b = servers.pop().expect("b");
        let a = servers.pop().expect("a");
        let version = a
            .homeserver
            .services()
            .federation
            .send_json(&b_name, Method::GET, "/_matrix/federation/v1/version", None, false)
            .await
            .expect("accepted without verification");
        assert_eq!(version["server"]["name"], "Lattice");
        a.stop().await;
        b.stop().await;
    }
}
