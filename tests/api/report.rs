//! Reporting content. Reports of events, rooms and users pass the spec's
//! checks, are stored with their reporter and reason, and `lattice reports`
//! lists them for the operators.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error, backends, encode};

async fn stored_reports(server: &TestServer) -> Vec<lattice::storage::reports::Report> {
    lattice::storage::reports::newest(&server.homeserver.services().db.pool, 50).await.expect("read the reports")
}

#[tokio::test]
async fn reports_are_checked_and_stored() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let outsider = server.register("outsider").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let spam = bob.send_text(&room, "buy now").await;

        let path = format!("/_matrix/client/v3/rooms/{}/report/{}", encode(&room), encode(&spam));
        let (status, body) = alice.post(&path, json!({ "reason": "spam" })).await;
        assert_eq!((status, body), (StatusCode::OK, json!({})));
        // Only members who can see the event may report it.
        assert_error(&outsider.post(&path, json!({ "reason": "spam" })).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let missing = format!("/_matrix/client/v3/rooms/{}/report/%24missing", encode(&room));
        assert_error(&alice.post(&missing, json!({})).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // Rooms may be reported by anyone, with a reason.
        let room_path = format!("/_matrix/client/v3/rooms/{}/report", encode(&room));
        let (status, _) = outsider.post(&room_path, json!({ "reason": "" })).await;
        assert_eq!(status, StatusCode::OK);
        assert_error(&outsider.post(&room_path, json!({})).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let unknown_room = "/_matrix/client/v3/rooms/%21nowhere%3Alocalhost/report";
        assert_error(
            &outsider.post(unknown_room, json!({ "reason": "x" })).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );

        // Users: local ones must exist; other servers' users cannot be checked.
        let user_path = |user: &str| format!("/_matrix/client/v3/users/{}/report", encode(user));
        let (status, _) = alice.post(&user_path(&bob.user_id), json!({ "reason": "harassment" })).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = alice.post(&user_path("@someone:elsewhere.example"), json!({ "reason": "fake" })).await;
        assert_eq!(status, StatusCode::OK);
        let unknown = alice.post(&user_path(&server.user_id("ghost")), json!({ "reason": "x" })).await;
        assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        assert_error(
            &alice.post(&user_path("not-a-user"), json!({ "reason": "x" })).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
        let long = alice.post(&user_path(&bob.user_id), json!({ "reason": "x".repeat(10_001) })).await;
        assert_error(&long, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        assert!(long.1["error"].as_str().unwrap_or_default().contains("reason"), "{}", long.1);

        let reports = stored_reports(&server).await;
        let summary: Vec<(String, Option<String>, Option<String>, Option<String>, Option<String>)> = reports
            .iter()
            .map(|r| (r.kind.clone(), r.room_id.clone(), r.event_id.clone(), r.user_id.clone(), r.reason.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("user".into(), None, None, Some("@someone:elsewhere.example".into()), Some("fake".into())),
                ("user".into(), None, None, Some(bob.user_id.clone()), Some("harassment".into())),
                ("room".into(), Some(room.clone()), None, None, Some(String::new())),
                (
                    "event".into(),
                    Some(room.clone()),
                    Some(spam.clone()),
                    Some(bob.user_id.clone()),
                    Some("spam".into())
                ),
            ]
        );
        assert_eq!(reports[3].reporter, alice.user_id);
        assert_eq!(reports[2].reporter, outsider.user_id);

        // The operators' listing reads the same rows.
        let url = server.homeserver.services().config.database_url();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(["reports", "--limit", "2"])
            .env("LATTICE_DATABASE__URL", &url)
            .output()
            .expect("run lattice reports");
        assert!(output.status.success(), "lattice reports failed: {}", String::from_utf8_lossy(&output.stderr));
        let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reason"], "fake");
        assert_eq!(lines[1]["user_id"], bob.user_id.as_str());
    }
}
