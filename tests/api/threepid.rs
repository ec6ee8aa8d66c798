//! Email addresses (3PIDs): the endpoints' responses and errors, with email
//! off and with an SMTP server that is down. The full flow with a working
//! SMTP server is the matrix-nio scenario `tests/clients/test_email_notifications.py`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{TestServer, assert_error, backends};

const REQUEST_TOKEN: &str = "/_matrix/client/v3/account/3pid/email/requestToken";

/// Returns a loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn email_off_denies_addresses() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let bob = server.register("bob").await;

        let response = bob
            .post(REQUEST_TOKEN, json!({ "client_secret": "abc", "email": "bob@example.org", "send_attempt": 1 }))
            .await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_THREEPID_DENIED");
        let (_, capabilities) = bob.get("/_matrix/client/v3/capabilities").await;
        assert_eq!(capabilities["capabilities"]["m.3pid_changes"]["enabled"], false, "{backend:?}");
        let (status, list) = bob.get("/_matrix/client/v3/account/3pid").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {list}");
        assert_eq!(list, json!({ "threepids": [] }), "{backend:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn smtp_down_does_not_block() {
    for backend in backends() {
        let port = closed_port();
        let server = TestServer::start_with(&backend, |config| {
            config.email.smtp_host = "127.0.0.1".into();
            config.email.smtp_port = port;
            config.email.smtp_security = "plain".into();
        })
        .await;
        let bob = server.register("bob").await;
        let (_, capabilities) = bob.get("/_matrix/client/v3/capabilities").await;
        assert_eq!(capabilities["capabilities"]["m.3pid_changes"]["enabled"], true, "{backend:?}");

        // The verification email fails in the background; the request does not wait for it.
        let started = Instant::now();
        let body = json!({ "client_secret": "secret-1", "email": "Bob@Example.ORG", "send_attempt": 1 });
        let (status, first) = bob.post(REQUEST_TOKEN, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {first}");
        assert!(started.elapsed() < Duration::from_secs(5), "{backend:?}: requestToken returned at once");
        let sid = first["sid"].as_str().expect("sid").to_owned();
        let (_, again) = bob.post(REQUEST_TOKEN, body).await;
        assert_eq!(again["sid"], sid, "{backend:?}: the same attempt returns the same session");

        let response = bob
            .post(REQUEST_TOKEN, json!({ "client_secret": "bad secret!", "email": "a@b.org", "send_attempt": 1 }))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = bob
            .post(REQUEST_TOKEN, json!({ "client_secret": "ok", "email": "not an address", "send_attempt": 1 }))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = bob.post(REQUEST_TOKEN, json!({ "client_secret": "ok", "email": "a@b.org" })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");

        // /account/3pid/add requires the password, then checks the session.
        let add = json!({ "client_secret": "secret-1", "sid": sid });
        let (status, challenge) = bob.post("/_matrix/client/v3/account/3pid/add", add.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: {challenge}");
        assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.password"] }]), "{backend:?}");
        let mut with_auth = add.clone();
        with_auth["auth"] = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": bob.user_id },
            "password": "correct horse",
            "session": challenge["session"],
        });
        let response = bob.post("/_matrix/client/v3/account/3pid/add", with_auth).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_THREEPID_AUTH_FAILED");

        // A verification link with a wrong token is rejected.
        let (status, _) = server
            .client()
            .get(&format!("/_lattice/email/validate?sid={sid}&client_secret=secret-1&token=wrong"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend:?}");

        let response = bob
            .post("/_matrix/client/v3/account/3pid/delete", json!({ "medium": "email", "address": "bob@example.org" }))
            .await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let response =
            bob.post("/_matrix/client/v3/account/3pid/delete", json!({ "medium": "fax", "address": "1" })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

        // Sending messages goes on while SMTP is down.
        let room = bob.create_room(json!({ "preset": "private_chat" })).await;
        bob.send_text(&room, "still works").await;
        server.stop().await;
    }
}
