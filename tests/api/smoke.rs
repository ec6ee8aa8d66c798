//! The shortest path through the server: register, create a DM, message, sync.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{TestServer, backends, timeline};

#[tokio::test]
async fn dm_message_reaches_sync() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice
            .create_room(json!({ "invite": [bob.user_id], "is_direct": true, "preset": "trusted_private_chat" }))
            .await;
        bob.join(&room).await;
        let event_id = alice.send_text(&room, "hello bob").await;

        let sync = bob.sync("").await;
        let events = timeline(&sync, &room);
        let message = events.iter().find(|e| e["event_id"] == event_id).expect("message in bob's timeline");
        assert_eq!(message["content"]["body"], "hello bob", "{backend:?}");
        assert_eq!(message["sender"], alice.user_id);

        let (status, whoami) = bob.get("/_matrix/client/v3/account/whoami").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(whoami["user_id"], bob.user_id);
        server.stop().await;
    }
}
