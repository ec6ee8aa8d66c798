//! Accounts and sessions: registration with user-interactive authentication,
//! login, whoami, logout, password changes and deactivation.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

const PASSWORD: &str = "correct horse";

/// Logs in with `m.login.password` and a user identifier.
pub async fn login(server: &TestServer, user: &str, password: &str) -> (StatusCode, Value) {
    server
        .client()
        .post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": password,
            }),
        )
        .await
}

/// Logs in and returns a client for the new device, failing the test on error.
pub async fn login_client(server: &TestServer, user: &str, password: &str) -> Client {
    let (status, body) = login(server, user, password).await;
    assert_eq!(status, StatusCode::OK, "login as {user}: {body}");
    let mut client = Client::new(&server.base, body["access_token"].as_str().map(str::to_owned));
    client.user_id = body["user_id"].as_str().unwrap_or_default().to_owned();
    client.device_id = body["device_id"].as_str().unwrap_or_default().to_owned();
    client
}

/// Builds the `auth` object of an `m.login.password` stage for `user_id`.
pub fn password_auth(user_id: &str, password: &str, session: &Value) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user_id },
        "password": password,
        "session": session,
    })
}

/// Returns whether a user-interactive auth response offers a flow of exactly `stages`.
pub fn offers_flow(body: &Value, stages: &[&str]) -> bool {
    body["flows"].as_array().is_some_and(|flows| flows.iter().any(|flow| flow["stages"] == json!(stages)))
}

async fn is_available(server: &TestServer, localpart: &str) -> bool {
    let (status, body) =
        server.client().get(&format!("/_matrix/client/v3/register/available?username={}", encode(localpart))).await;
    status == StatusCode::OK && body["available"] == true
}

async fn whoami(client: &Client) -> (StatusCode, Value) {
    client.get("/_matrix/client/v3/account/whoami").await
}

#[tokio::test]
async fn register_dummy_flow() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let anonymous = server.client();
        let request = json!({ "username": "alice", "password": PASSWORD });

        let (status, challenge) = anonymous.post("/_matrix/client/v3/register", request.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: first call is a challenge: {challenge}");
        assert!(offers_flow(&challenge, &["m.login.dummy"]), "{backend:?}: dummy flow offered: {challenge}");
        let session = challenge["session"].clone();
        assert!(session.as_str().is_some_and(|s| !s.is_empty()), "{backend:?}: session id: {challenge}");
        assert!(challenge["params"].is_object(), "{backend:?}: params is an object: {challenge}");
        assert!(is_available(&server, "alice").await, "{backend:?}: the challenge created no user");

        let mut request = request;
        request["auth"] = json!({ "type": "m.login.dummy", "session": session });
        let (status, body) = anonymous.post("/_matrix/client/v3/register", request).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: registration completes: {body}");
        assert_eq!(body["user_id"], server.user_id("alice"), "{backend:?}: user_id");
        assert_eq!(body["home_server"], server.server_name, "{backend:?}: home_server");
        let token = body["access_token"].as_str().expect("access_token").to_owned();
        let device_id = body["device_id"].as_str().expect("device_id").to_owned();

        let client = Client::new(&server.base, Some(token));
        let (status, me) = whoami(&client).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: the new token works: {me}");
        assert_eq!(me["user_id"], server.user_id("alice"), "{backend:?}: whoami user_id");
        assert_eq!(me["device_id"], device_id, "{backend:?}: whoami device_id");
        assert!(!is_available(&server, "alice").await, "{backend:?}: alice is taken now");
        server.stop().await;
    }
}

#[tokio::test]
async fn register_with_device_and_inhibit_login() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let anonymous = server.client();
        let (status, body) = anonymous
            .post(
                "/_matrix/client/v3/register",
                json!({
                    "username": "alice",
                    "password": PASSWORD,
                    "device_id": "PHONE",
                    "initial_device_display_name": "Alice's phone",
                    "auth": { "type": "m.login.dummy" },
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["device_id"], "PHONE", "{backend:?}: the requested device id is used");
        let alice = Client::new(&server.base, body["access_token"].as_str().map(str::to_owned));
        let (status, device) = alice.get("/_matrix/client/v3/devices/PHONE").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {device}");
        assert_eq!(device["display_name"], "Alice's phone", "{backend:?}: initial display name stored");

        let (status, body) = anonymous
            .post(
                "/_matrix/client/v3/register",
                json!({
                    "username": "bob",
                    "password": PASSWORD,
                    "inhibit_login": true,
                    "auth": { "type": "m.login.dummy" },
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["user_id"], server.user_id("bob"), "{backend:?}: user_id with inhibit_login");
        assert!(body.get("access_token").is_none(), "{backend:?}: no access_token with inhibit_login: {body}");
        assert!(body.get("device_id").is_none(), "{backend:?}: no device_id with inhibit_login: {body}");
        let (status, body) = login(&server, "bob", PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: bob can log in: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn register_with_registration_token() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.registration.tokens = vec!["open-sesame".into()];
        })
        .await;
        let anonymous = server.client();
        let request = json!({ "username": "alice", "password": PASSWORD });

        let (status, challenge) = anonymous.post("/_matrix/client/v3/register", request.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: {challenge}");
        assert!(
            offers_flow(&challenge, &["m.login.registration_token"]),
            "{backend:?}: token flow offered: {challenge}"
        );
        assert!(!offers_flow(&challenge, &["m.login.dummy"]), "{backend:?}: no dummy flow: {challenge}");
        let session = challenge["session"].clone();

        let mut dummy = request.clone();
        dummy["auth"] = json!({ "type": "m.login.dummy", "session": session });
        let (status, body) = anonymous.post("/_matrix/client/v3/register", dummy).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: dummy stage is not enough: {body}");
        assert!(is_available(&server, "alice").await, "{backend:?}: the dummy stage created no user");

        let mut wrong = request.clone();
        wrong["auth"] = json!({ "type": "m.login.registration_token", "token": "guess", "session": session });
        let (status, body) = anonymous.post("/_matrix/client/v3/register", wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: wrong token rejected: {body}");
        assert!(
            body["errcode"].as_str().is_some_and(|e| !e.is_empty()),
            "{backend:?}: errcode names the failure: {body}"
        );
        assert!(
            offers_flow(&body, &["m.login.registration_token"]),
            "{backend:?}: token flow still offered after a wrong token: {body}"
        );
        assert!(is_available(&server, "alice").await, "{backend:?}: the wrong token created no user");

        let mut right = request;
        right["auth"] = json!({ "type": "m.login.registration_token", "token": "open-sesame", "session": session });
        let (status, body) = anonymous.post("/_matrix/client/v3/register", right).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: right token accepted: {body}");
        assert_eq!(body["user_id"], server.user_id("alice"), "{backend:?}: user_id");
        assert!(body["access_token"].is_string(), "{backend:?}: access_token: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn register_disabled() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.registration.enabled = false;
        })
        .await;
        let response = server
            .client()
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(is_available(&server, "alice").await, "{backend:?}: no user was created");
        server.stop().await;
    }
}

#[tokio::test]
async fn register_invalid_usernames() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let anonymous = server.client();
        let too_long = "a".repeat(256);
        for name in ["has space", "colon:inside", "émile", "#hash", "@at", "", too_long.as_str()] {
            let response = anonymous
                .post(
                    "/_matrix/client/v3/register",
                    json!({ "username": name, "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
                )
                .await;
            assert_eq!(response.0, StatusCode::BAD_REQUEST, "{backend:?}: register {name:?}: {}", response.1);
            assert_eq!(response.1["errcode"], "M_INVALID_USERNAME", "{backend:?}: register {name:?}: {}", response.1);

            let path = format!("/_matrix/client/v3/register/available?username={}", encode(name));
            let response = anonymous.get(&path).await;
            assert_eq!(response.0, StatusCode::BAD_REQUEST, "{backend:?}: available {name:?}: {}", response.1);
            assert_eq!(response.1["errcode"], "M_INVALID_USERNAME", "{backend:?}: available {name:?}: {}", response.1);
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn register_taken_username() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        server.register("alice").await;
        let anonymous = server.client();

        for name in ["alice", "ALICE"] {
            let response = anonymous
                .post(
                    "/_matrix/client/v3/register",
                    json!({ "username": name, "password": "other", "auth": { "type": "m.login.dummy" } }),
                )
                .await;
            assert_error(&response, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
        }
        let response = anonymous.get("/_matrix/client/v3/register/available?username=alice").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_USER_IN_USE");

        let (status, body) = anonymous.get("/_matrix/client/v3/register/available?username=bob").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["available"], true, "{backend:?}: bob is available");

        let (status, body) = login(&server, "alice", PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: the original password still works: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn register_guest_rejected() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let (status, body) = server
            .client()
            .post(
                "/_matrix/client/v3/register?kind=guest",
                json!({ "username": "visitor", "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{backend:?}: guest registration is rejected: {body}");
        assert!(
            body["errcode"] == "M_FORBIDDEN" || body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN",
            "{backend:?}: errcode: {body}"
        );
        assert!(body.get("access_token").is_none(), "{backend:?}: no token for a guest: {body}");
        assert!(is_available(&server, "visitor").await, "{backend:?}: no guest user was created");
        server.stop().await;
    }
}

#[tokio::test]
async fn login_by_localpart_and_user_id() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let registered = server.register("alice").await;
        let alice_id = server.user_id("alice");

        // Either form matches whatever its case.
        let upper_id = format!("@ALICE:{}", server.server_name);
        for user in ["alice", alice_id.as_str(), "Alice", upper_id.as_str()] {
            let (status, body) = login(&server, user, PASSWORD).await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: login as {user}: {body}");
            assert_eq!(body["user_id"], alice_id, "{backend:?}: login as {user}: user_id");
            assert_eq!(body["home_server"], server.server_name, "{backend:?}: login as {user}: home_server");
            let device_id = body["device_id"].as_str().expect("device_id");
            assert_ne!(device_id, registered.device_id, "{backend:?}: each login is a new device");

            let client = Client::new(&server.base, body["access_token"].as_str().map(str::to_owned));
            let (status, me) = whoami(&client).await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: login token works: {me}");
            assert_eq!(me["user_id"], alice_id, "{backend:?}: whoami after login as {user}");
            assert_eq!(me["device_id"], device_id, "{backend:?}: whoami device after login as {user}");
        }

        // The deprecated top-level `user` field.
        let (status, body) = server
            .client()
            .post(
                "/_matrix/client/v3/login",
                json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: login with the user field: {body}");
        assert_eq!(body["user_id"], alice_id, "{backend:?}: user field resolves to alice");
        server.stop().await;
    }
}

#[tokio::test]
async fn login_wrong_password_and_unknown_user() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        server.register("alice").await;

        let wrong_password = login(&server, "alice", "battery staple").await;
        assert_error(&wrong_password, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(wrong_password.1.get("access_token").is_none(), "{backend:?}: no token: {}", wrong_password.1);

        let unknown_user = login(&server, "nobody", PASSWORD).await;
        assert_error(&unknown_user, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert_eq!(wrong_password.1, unknown_user.1, "{backend:?}: an unknown user and a wrong password look the same");

        let other_server = login(&server, "@alice:elsewhere.example", PASSWORD).await;
        assert_error(&other_server, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn login_unsupported_type() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        server.register("alice").await;
        let (status, body) =
            server.client().post("/_matrix/client/v3/login", json!({ "type": "m.login.token", "token": "abc" })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend:?}: unsupported login type: {body}");
        assert!(body["errcode"].is_string(), "{backend:?}: errcode present: {body}");
        assert!(body.get("access_token").is_none(), "{backend:?}: no token: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn login_flows_offer_password() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let (status, body) = server.client().get("/_matrix/client/v3/login").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let flows = body["flows"].as_array().expect("flows is an array");
        assert!(flows.iter().any(|f| f["type"] == "m.login.password"), "{backend:?}: password flow: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn whoami_reports_user_and_device() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let (status, body) = whoami(&alice).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["user_id"], alice.user_id, "{backend:?}: user_id");
        assert_eq!(body["device_id"], alice.device_id, "{backend:?}: device_id");
        assert_eq!(body["is_guest"], false, "{backend:?}: is_guest");
        server.stop().await;
    }
}

#[tokio::test]
async fn logout_invalidates_token() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let laptop = login_client(&server, "alice", PASSWORD).await;

        let (status, body) = alice.post("/_matrix/client/v3/logout", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: logout: {body}");
        assert_eq!(body, json!({}), "{backend:?}: logout returns an empty object");

        let response = whoami(&alice).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        let response = alice.post("/_matrix/client/v3/logout", json!({})).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");

        let (status, body) = whoami(&laptop).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: the other device stays logged in: {body}");
        let (status, body) = laptop.get("/_matrix/client/v3/devices").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let devices = body["devices"].as_array().expect("devices");
        assert!(
            !devices.iter().any(|d| d["device_id"] == alice.device_id),
            "{backend:?}: the logged-out device is gone: {body}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn logout_all_devices() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let laptop = login_client(&server, "alice", PASSWORD).await;
        let phone = login_client(&server, "alice", PASSWORD).await;
        let bob = server.register("bob").await;

        let (status, body) = laptop.post("/_matrix/client/v3/logout/all", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: logout/all: {body}");
        for client in [&alice, &laptop, &phone] {
            let response = whoami(client).await;
            assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        }
        let (status, body) = whoami(&bob).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: other users stay logged in: {body}");

        let again = login_client(&server, "alice", PASSWORD).await;
        let (status, body) = again.get("/_matrix/client/v3/devices").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(
            body["devices"].as_array().map(Vec::len),
            Some(1),
            "{backend:?}: only the new device remains: {body}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn password_change_with_uia() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let phone = login_client(&server, "alice", PASSWORD).await;
        let path = "/_matrix/client/v3/account/password";

        let (status, challenge) = alice.post(path, json!({ "new_password": "new secret" })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: challenge: {challenge}");
        assert!(offers_flow(&challenge, &["m.login.password"]), "{backend:?}: password flow: {challenge}");
        let session = challenge["session"].clone();

        let (status, body) = alice
            .post(
                path,
                json!({ "new_password": "new secret", "auth": password_auth(&alice.user_id, "wrong", &session) }),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: wrong password: {body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN", "{backend:?}: failed stage errcode: {body}");
        assert!(offers_flow(&body, &["m.login.password"]), "{backend:?}: flow still offered: {body}");
        let (status, body) = login(&server, "alice", PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: the rejected change kept the old password: {body}");

        let (status, body) = alice
            .post(
                path,
                json!({ "new_password": "new secret", "auth": password_auth(&alice.user_id, PASSWORD, &session) }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: password changed: {body}");

        let response = login(&server, "alice", PASSWORD).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (status, body) = login(&server, "alice", "new secret").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: the new password works: {body}");

        let (status, body) = whoami(&alice).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: the changing device stays logged in: {body}");
        let response = whoami(&phone).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn password_change_keeps_devices() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let phone = login_client(&server, "alice", PASSWORD).await;
        let path = "/_matrix/client/v3/account/password";

        let (_, challenge) = alice.post(path, json!({ "new_password": "new secret" })).await;
        let (status, body) = alice
            .post(
                path,
                json!({
                    "new_password": "new secret",
                    "logout_devices": false,
                    "auth": password_auth("alice", PASSWORD, &challenge["session"]),
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: password changed: {body}");
        let (status, body) = whoami(&phone).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: logout_devices=false keeps other devices: {body}");
        let (status, body) = login(&server, "alice", "new secret").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: the new password works: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn password_uia_rejects_other_user() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        server.register("bob").await;
        let path = "/_matrix/client/v3/account/password";

        let (_, challenge) = alice.post(path, json!({ "new_password": "new secret" })).await;
        let auth = password_auth(&server.user_id("bob"), PASSWORD, &challenge["session"]);
        let (status, body) = alice.post(path, json!({ "new_password": "new secret", "auth": auth })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: bob's password cannot authorize alice: {body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN", "{backend:?}: errcode: {body}");
        let (status, body) = login(&server, "alice", PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: alice's password is unchanged: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn deactivate_with_uia() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = bob.create_room(json!({ "preset": "public_chat" })).await;
        alice.join(&room).await;
        let path = "/_matrix/client/v3/account/deactivate";

        let (status, challenge) = alice.post(path, json!({})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: challenge: {challenge}");
        assert!(offers_flow(&challenge, &["m.login.password"]), "{backend:?}: password flow: {challenge}");
        let session = challenge["session"].clone();

        let (status, body) =
            alice.post(path, json!({ "auth": password_auth(&alice.user_id, "wrong", &session) })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: wrong password: {body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN", "{backend:?}: errcode: {body}");
        let (status, body) = whoami(&alice).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: a failed attempt leaves the account active: {body}");

        let (status, body) =
            alice.post(path, json!({ "auth": password_auth(&alice.user_id, PASSWORD, &session) })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: deactivated: {body}");
        assert!(body["id_server_unbind_result"].is_string(), "{backend:?}: id_server_unbind_result: {body}");

        let response = whoami(&alice).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        // The spec's error for a login to a deactivated account.
        let response = login(&server, "alice", PASSWORD).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_USER_DEACTIVATED");

        let response = server.client().get("/_matrix/client/v3/register/available?username=alice").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
        let response = bob.get(&format!("/_matrix/client/v3/profile/{}", encode(&alice.user_id))).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        let (status, members) = bob.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", encode(&room))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {members}");
        assert!(
            members["joined"].get(alice.user_id.as_str()).is_none(),
            "{backend:?}: the deactivated user left the room: {members}"
        );
        server.stop().await;
    }
}
