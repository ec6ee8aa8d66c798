//! OpenID: a user requests a token, and a third party learns who the user
//! is from the federation `userinfo` endpoint, which needs no signature.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestCa, TestServer, assert_error, backends, encode};

#[tokio::test]
async fn openid_token_identifies_user() {
    for backend in backends() {
        let ca = TestCa::new();
        let servers = TestServer::start_federated(&backend, &ca, &["a.lattice.test"], |_| {}).await;
        let server = &servers[0];
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let path = format!("/_matrix/client/v3/user/{}/openid/request_token", encode(&alice.user_id));
        let (status, body) = alice.post(&path, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["matrix_server_name"], "a.lattice.test");
        assert_eq!(body["expires_in"], 3600);
        let token = body["access_token"].as_str().expect("access_token").to_owned();
        assert_error(&bob.post(&path, json!({})).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // A third party calls over HTTPS without signing its request.
        let http = ca.client(&[server]);
        let userinfo = |token: &str| {
            format!("{}/_matrix/federation/v1/openid/userinfo?access_token={}", server.federation_base(), encode(token))
        };
        let response = http.get(userinfo(&token)).send().await.expect("userinfo request");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body, json!({ "sub": alice.user_id }));

        let response = http.get(userinfo("forged")).send().await.expect("userinfo request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN", "{body}");
    }
}
