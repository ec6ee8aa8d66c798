//! Server keys: the signed key document, key rotation with `old_verify_keys`,
//! and the notary that fetches, verifies, caches and countersigns the keys
//! of other servers.

use std::collections::BTreeMap;

use lattice::signing_key::SigningKey;
use reqwest::StatusCode;
use ruma::{CanonicalJsonObject, serde::Base64, signatures::verify_json};
use serde_json::{Value, json};

use crate::harness::{TestCa, TestServer, backends};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// Verifies the signature of `signer` on `object` with `key_id` and the
/// unpadded base64 `public_key`.
fn signature_verifies(object: &Value, signer: &str, key_id: &str, public_key: &str) -> bool {
    let canonical: CanonicalJsonObject = serde_json::from_value(object.clone()).expect("canonical JSON");
    // verify_json checks every signer in the object, so keep only the one asked about.
    let mut only = canonical.clone();
    let mut signatures = CanonicalJsonObject::new();
    if let Some(ruma::CanonicalJsonValue::Object(all)) = canonical.get("signatures")
        && let Some(by_signer) = all.get(signer)
    {
        signatures.insert(signer.to_owned(), by_signer.clone());
    }
    only.insert("signatures".into(), ruma::CanonicalJsonValue::Object(signatures));
    let keys = BTreeMap::from([(key_id.to_owned(), Base64::parse(public_key).expect("base64 key"))]);
    let map = BTreeMap::from([(signer.to_owned(), keys)]);
    verify_json(&map, &only).is_ok()
}

#[tokio::test]
async fn key_document_is_signed_by_the_current_key() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| config.server_name = "keys.lattice.test".into()).await;
        let key = server.homeserver.services().key.clone();
        let before = now_ms();
        let (status, body) = server.client().get("/_matrix/key/v2/server").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["server_name"], "keys.lattice.test");
        assert_eq!(body["verify_keys"], json!({ &key.key_id: { "key": key.public_key_base64() } }));
        assert_eq!(body["old_verify_keys"], json!({}));
        let valid_until = body["valid_until_ts"].as_i64().expect("valid_until_ts");
        let day = 24 * 60 * 60 * 1000;
        assert!(valid_until >= before + day, "valid_until_ts {valid_until}");
        assert!(valid_until <= now_ms() + day, "valid_until_ts {valid_until}");
        assert!(signature_verifies(&body, "keys.lattice.test", &key.key_id, &key.public_key_base64()), "{body}");
        // A changed document no longer verifies.
        let mut tampered = body.clone();
        tampered["valid_until_ts"] = json!(valid_until + 1);
        assert!(!signature_verifies(&tampered, "keys.lattice.test", &key.key_id, &key.public_key_base64()));
        server.stop().await;
    }
}

#[tokio::test]
async fn rotated_keys_are_published_as_old_verify_keys() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| config.server_name = "rotate.lattice.test".into()).await;
        let old = server.homeserver.services().key.clone();
        let rotated_at = now_ms();
        let new_id = SigningKey::rotate(&server.homeserver.services().db).await.expect("rotate");
        assert_ne!(new_id, old.key_id);
        let server = server.restart().await;
        let current = server.homeserver.services().key.clone();
        assert_eq!(current.key_id, new_id, "the new key is used after the restart");

        let (status, body) = server.client().get("/_matrix/key/v2/server").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["verify_keys"], json!({ &new_id: { "key": current.public_key_base64() } }));
        let old_entry = &body["old_verify_keys"][&old.key_id];
        assert_eq!(old_entry["key"], old.public_key_base64(), "{body}");
        let expired = old_entry["expired_ts"].as_i64().expect("expired_ts");
        assert!(expired >= rotated_at, "expired_ts {expired}");
        assert!(expired <= now_ms(), "expired_ts {expired}");
        assert!(signature_verifies(&body, "rotate.lattice.test", &new_id, &current.public_key_base64()));
        assert!(body["signatures"]["rotate.lattice.test"].get(&old.key_id).is_none(), "old key does not sign: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn notary_fetches_verifies_caches_and_countersigns() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |config| {
            config.federation.host_overrides.insert("down.lattice.test".into(), "127.0.0.1:9".into());
        })
        .await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let a_key = a.homeserver.services().key.clone();
        let b_key = b.homeserver.services().key.clone();

        // POST: A fetches B's keys over TLS, checks them and countersigns them.
        let (status, body) =
            a.client().post("/_matrix/key/v2/query", json!({ "server_keys": { "b.lattice.test": {} } })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let responses = body["server_keys"].as_array().expect("server_keys");
        assert_eq!(responses.len(), 1, "{body}");
        let response = &responses[0];
        assert_eq!(response["server_name"], "b.lattice.test");
        assert_eq!(response["verify_keys"][&b_key.key_id]["key"], b_key.public_key_base64());
        assert!(signature_verifies(response, "b.lattice.test", &b_key.key_id, &b_key.public_key_base64()));
        assert!(signature_verifies(response, "a.lattice.test", &a_key.key_id, &a_key.public_key_base64()));

        // The keys are cached until valid_until_ts.
        use sqlx::Row;
        let row = sqlx::query("SELECT key_id, public_key, valid_until_ts FROM server_keys WHERE server_name = $1")
            .bind("b.lattice.test")
            .fetch_one(&a.homeserver.services().db.pool)
            .await
            .expect("cached key");
        assert_eq!(row.get::<String, _>(0), b_key.key_id);
        assert_eq!(row.get::<String, _>(1), b_key.public_key_base64());
        assert_eq!(row.get::<i64, _>(2), response["valid_until_ts"].as_i64().unwrap());

        // GET for one server, with a key id criterion through POST as well.
        let (status, body) = a.client().get("/_matrix/key/v2/query/b.lattice.test").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["server_keys"][0]["verify_keys"], response["verify_keys"]);
        let (status, body) = a
            .client()
            .post(
                "/_matrix/key/v2/query",
                json!({ "server_keys": { "b.lattice.test": { &b_key.key_id: { "minimum_valid_until_ts": 0 } } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["server_keys"].as_array().map(Vec::len), Some(1), "{body}");

        // For itself, the notary returns its own key document.
        let (_, body) = a.client().get("/_matrix/key/v2/query/a.lattice.test").await;
        assert_eq!(body["server_keys"][0]["verify_keys"][&a_key.key_id]["key"], a_key.public_key_base64());

        // Once B is down, its cached keys are still served.
        b.stop().await;
        let (status, body) = a.client().get("/_matrix/key/v2/query/b.lattice.test").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["server_keys"][0]["verify_keys"][&b_key.key_id]["key"], b_key.public_key_base64());

        // A server that cannot be reached and was never cached: no keys.
        let (status, body) = a.client().get("/_matrix/key/v2/query/down.lattice.test").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["server_keys"], json!([]));

        // A malformed query names the problem.
        let (status, body) = a.client().post("/_matrix/key/v2/query", json!({ "server_keys": [] })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["errcode"], "M_BAD_JSON");
        assert!(body["error"].as_str().unwrap_or_default().contains("server_keys"), "{body}");
        a.stop().await;
    }
}

#[tokio::test]
async fn federation_version() {
    for backend in backends() {
        let ca = TestCa::new();
        let servers = TestServer::start_federated(&backend, &ca, &["version.lattice.test"], |_| {}).await;
        let server = &servers[0];
        // Over the TLS listener, as another server requests it.
        let response = ca
            .client(&[server])
            .get(format!("{}/_matrix/federation/v1/version", server.federation_base()))
            .send()
            .await
            .expect("TLS request");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body, json!({ "server": { "name": "Lattice", "version": env!("CARGO_PKG_VERSION") } }));
        // Unknown federation endpoints are unrecognized.
        let response = ca
            .client(&[server])
            .get(format!("{}/_matrix/federation/v1/nothing_here", server.federation_base()))
            .send()
            .await
            .expect("TLS request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["errcode"], "M_UNRECOGNIZED");
        for server in servers {
            server.stop().await;
        }
    }
}

#[tokio::test]
async fn ip_literal_server_names_resolve_without_overrides() {
    for backend in backends() {
        let ca = TestCa::new();
        let literal = TestServer::start_ip_literal(&backend, &ca).await;
        let mut servers = TestServer::start_federated(&backend, &ca, &["a.lattice.test"], |_| {}).await;
        let a = servers.pop().expect("server a");
        let literal_key = literal.homeserver.services().key.clone();

        // A reaches 127.0.0.1:PORT directly and checks the certificate for the IP address.
        let path = format!("/_matrix/key/v2/query/{}", literal.server_name);
        let (status, body) = a.client().get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let response = &body["server_keys"][0];
        assert_eq!(response["server_name"], literal.server_name.as_str(), "{body}");
        assert_eq!(response["verify_keys"][&literal_key.key_id]["key"], literal_key.public_key_base64());
        assert!(signature_verifies(
            response,
            &literal.server_name,
            &literal_key.key_id,
            &literal_key.public_key_base64()
        ));

        let destination = a.homeserver.services().federation.resolve(&literal.server_name).await.expect("resolve");
        assert_eq!(destination.tls_host, "127.0.0.1");
        assert_eq!(destination.host_header, literal.server_name);
        assert!(destination.addrs.is_empty(), "no lookup for an IP literal");
        a.stop().await;
        literal.stop().await;
    }
}
