//! Device management: list, get, rename and delete devices, and the effect of
//! deleting a device on its access token.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    accounts::{login_client, offers_flow, password_auth},
    harness::{TestServer, assert_error, backends},
};

const PASSWORD: &str = "correct horse";

fn device_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["devices"]
        .as_array()
        .expect("devices is an array")
        .iter()
        .map(|d| d["device_id"].as_str().expect("device_id is a string").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn devices_list_and_get() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let laptop = login_client(&server, "alice", PASSWORD).await;
        server.register("bob").await;

        let (status, body) = alice.get("/_matrix/client/v3/devices").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let mut expected = vec![alice.device_id.clone(), laptop.device_id.clone()];
        expected.sort();
        assert_eq!(device_ids(&body), expected, "{backend:?}: alice's two devices and no one else's");

        let (status, device) = alice.get(&format!("/_matrix/client/v3/devices/{}", laptop.device_id)).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {device}");
        assert_eq!(device["device_id"], laptop.device_id, "{backend:?}: device_id");
        assert!(device["last_seen_ts"].is_i64(), "{backend:?}: last_seen_ts is a timestamp: {device}");
        server.stop().await;
    }
}

#[tokio::test]
async fn device_update_display_name() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);

        let (status, body) = alice.put(&path, json!({ "display_name": "Work laptop" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body, json!({}), "{backend:?}: update returns an empty object");
        let (status, device) = alice.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {device}");
        assert_eq!(device["display_name"], "Work laptop", "{backend:?}: new display name");

        let (_, list) = alice.get("/_matrix/client/v3/devices").await;
        let listed = list["devices"].as_array().expect("devices").iter().find(|d| d["device_id"] == alice.device_id);
        assert_eq!(
            listed.map(|d| d["display_name"].clone()),
            Some(json!("Work laptop")),
            "{backend:?}: the list shows the new name: {list}"
        );

        let response = alice.put(&path, json!({ "display_name": "x".repeat(101) })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let (_, device) = alice.get(&path).await;
        assert_eq!(device["display_name"], "Work laptop", "{backend:?}: a rejected rename changes nothing");
        server.stop().await;
    }
}

#[tokio::test]
async fn device_unknown_is_not_found() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let response = alice.get("/_matrix/client/v3/devices/NOSUCHDEVICE").await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let response = alice.put("/_matrix/client/v3/devices/NOSUCHDEVICE", json!({ "display_name": "x" })).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let response = alice.delete("/_matrix/client/v3/devices/NOSUCHDEVICE", json!({})).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // Another user's device is not found either.
        let bob_device = format!("/_matrix/client/v3/devices/{}", bob.device_id);
        let response = alice.get(&bob_device).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let response = alice.put(&bob_device, json!({ "display_name": "taken over" })).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let (status, device) = bob.get(&bob_device).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {device}");
        assert_ne!(device["display_name"], "taken over", "{backend:?}: bob's device was not renamed");
        server.stop().await;
    }
}

#[tokio::test]
async fn device_delete_with_uia() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let laptop = login_client(&server, "alice", PASSWORD).await;
        let path = format!("/_matrix/client/v3/devices/{}", laptop.device_id);

        let (status, challenge) = alice.delete(&path, json!({})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: challenge: {challenge}");
        assert!(offers_flow(&challenge, &["m.login.password"]), "{backend:?}: password flow: {challenge}");
        let session = challenge["session"].clone();

        let (status, body) =
            alice.delete(&path, json!({ "auth": password_auth(&alice.user_id, "wrong", &session) })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: wrong password: {body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN", "{backend:?}: errcode: {body}");
        let (status, body) = laptop.get("/_matrix/client/v3/account/whoami").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: the device survives a failed attempt: {body}");

        let (status, body) =
            alice.delete(&path, json!({ "auth": password_auth(&alice.user_id, PASSWORD, &session) })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: deleted: {body}");

        let response = laptop.get("/_matrix/client/v3/account/whoami").await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        let response = alice.get(&path).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let (_, list) = alice.get("/_matrix/client/v3/devices").await;
        assert_eq!(device_ids(&list), vec![alice.device_id.clone()], "{backend:?}: one device left");
        server.stop().await;
    }
}

#[tokio::test]
async fn delete_devices_with_uia() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let laptop = login_client(&server, "alice", PASSWORD).await;
        let phone = login_client(&server, "alice", PASSWORD).await;
        let tablet = login_client(&server, "alice", PASSWORD).await;
        let request = json!({ "devices": [laptop.device_id, phone.device_id] });

        let (status, challenge) = alice.post("/_matrix/client/v3/delete_devices", request.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: challenge: {challenge}");
        assert!(offers_flow(&challenge, &["m.login.password"]), "{backend:?}: password flow: {challenge}");
        let (_, list) = alice.get("/_matrix/client/v3/devices").await;
        assert_eq!(device_ids(&list).len(), 4, "{backend:?}: the challenge deleted nothing: {list}");

        let mut request = request;
        request["auth"] = password_auth("alice", PASSWORD, &challenge["session"]);
        let (status, body) = alice.post("/_matrix/client/v3/delete_devices", request).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: deleted: {body}");

        for client in [&laptop, &phone] {
            let response = client.get("/_matrix/client/v3/account/whoami").await;
            assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        }
        let (status, body) = tablet.get("/_matrix/client/v3/account/whoami").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: devices not named stay: {body}");
        let (_, list) = alice.get("/_matrix/client/v3/devices").await;
        let mut expected = vec![alice.device_id.clone(), tablet.device_id.clone()];
        expected.sort();
        assert_eq!(device_ids(&list), expected, "{backend:?}: remaining devices");
        server.stop().await;
    }
}

#[tokio::test]
async fn devices_require_token() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let response = server.client().get("/_matrix/client/v3/devices").await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        server.stop().await;
    }
}
