//! Discovery: `/versions`, `/.well-known/matrix/*` and `/capabilities`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends};

#[tokio::test]
async fn versions_lists_v1_16() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let (status, body) = server.client().get("/_matrix/client/versions").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let versions = body["versions"].as_array().expect("versions is an array");
        assert!(versions.iter().any(|v| v == "v1.16"), "{backend:?}: v1.16 missing from {body}");
        assert!(versions.iter().all(Value::is_string), "{backend:?}: every version is a string: {body}");
        assert!(body["unstable_features"].is_object(), "{backend:?}: unstable_features is an object: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn well_known_client_has_base_url() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.public_baseurl = Some("https://matrix.example.org/".into());
        })
        .await;
        let (status, body) = server.client().get("/.well-known/matrix/client").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(
            body["m.homeserver"]["base_url"], "https://matrix.example.org/",
            "{backend:?}: base_url is public_baseurl"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn well_known_client_default_base_url() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let (status, body) = server.client().get("/.well-known/matrix/client").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let base_url = body["m.homeserver"]["base_url"].as_str().expect("base_url is a string");
        assert!(url::Url::parse(base_url).is_ok(), "{backend:?}: base_url {base_url:?} is a URL");
        server.stop().await;
    }
}

#[tokio::test]
async fn well_known_server_not_found_by_default() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let response = server.client().get("/.well-known/matrix/server").await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn well_known_server_when_configured() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.well_known_server = Some("matrix.example.org:443".into());
        })
        .await;
        let (status, body) = server.client().get("/.well-known/matrix/server").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["m.server"], "matrix.example.org:443", "{backend:?}: m.server is the configured value");
        server.stop().await;
    }
}

#[tokio::test]
async fn capabilities_room_versions_and_password() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let (status, body) = alice.get("/_matrix/client/v3/capabilities").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let capabilities = &body["capabilities"];
        let versions = &capabilities["m.room_versions"];
        assert_eq!(versions["default"], "12", "{backend:?}: default room version");
        assert_eq!(versions["available"]["12"], "stable", "{backend:?}: room version 12 is stable: {body}");
        assert!(
            versions["available"].as_object().is_some_and(|a| a.values().all(|s| s == "stable" || s == "unstable")),
            "{backend:?}: every available version is stable or unstable: {body}"
        );
        assert_eq!(capabilities["m.change_password"]["enabled"], true, "{backend:?}: password change enabled");
        server.stop().await;
    }
}

#[tokio::test]
async fn capabilities_default_follows_config() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.rooms.default_version = "11".into();
        })
        .await;
        let alice = server.register("alice").await;
        let (status, body) = alice.get("/_matrix/client/v3/capabilities").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(
            body["capabilities"]["m.room_versions"]["default"], "11",
            "{backend:?}: default follows rooms.default_version"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn capabilities_requires_token() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let response = server.client().get("/_matrix/client/v3/capabilities").await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn legacy_r0_paths_served_as_v3() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        // `/versions` lists r0.6.1, so r0 clients log in and read on r0 paths.
        let login = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": "correct horse",
        });
        let (status, body) = server.client().post("/_matrix/client/r0/login", login).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["user_id"], alice.user_id.as_str(), "{backend:?}");
        let token = body["access_token"].as_str().expect("access token").to_owned();
        let client = Client::new(&server.base, Some(token));
        let (status, body) = client.get("/_matrix/client/r0/account/whoami").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["user_id"], alice.user_id.as_str(), "{backend:?}");

        // The query string is kept.
        let (status, body) = client.get("/_matrix/client/r0/sync?timeout=soon").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend:?}: {body}");

        let response = client.get("/_matrix/client/r0/no_such_endpoint").await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    }
}
