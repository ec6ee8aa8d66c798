//! Room aliases and the public room directory.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", encode(alias))
}

fn visibility_path(room_id: &str) -> String {
    format!("/_matrix/client/v3/directory/list/room/{}", encode(room_id))
}

async fn room_aliases(client: &Client, room_id: &str) -> Vec<Value> {
    let (status, body) = client.get(&format!("/_matrix/client/v3/rooms/{}/aliases", encode(room_id))).await;
    assert_eq!(status, StatusCode::OK, "aliases of {room_id}: {body}");
    body["aliases"].as_array().expect("aliases array").clone()
}

/// Collects the room ids of a public room list response, in order.
fn listed(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .expect("chunk array")
        .iter()
        .map(|r| r["room_id"].as_str().expect("room_id").to_owned())
        .collect()
}

#[tokio::test]
async fn alias_lifecycle() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        let other_room = alice.create_room(json!({})).await;
        let alias = format!("#meeting:{}", server.server_name);

        let (status, body) = alice.put(&alias_path(&alias), json!({ "room_id": room })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: create alias: {body}");

        let (status, resolved) = bob.get(&alias_path(&alias)).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: resolve alias: {resolved}");
        assert_eq!(resolved["room_id"], room, "{backend:?}: alias resolves to the room");
        assert_eq!(resolved["servers"], json!([server.server_name]), "{backend:?}: servers to join through");

        let taken = alice.put(&alias_path(&alias), json!({ "room_id": other_room })).await;
        assert_eq!(taken.0, StatusCode::CONFLICT, "{backend:?}: taken alias: {}", taken.1);
        assert!(taken.1["errcode"].is_string(), "{backend:?}: taken alias errcode: {}", taken.1);
        let (_, still) = bob.get(&alias_path(&alias)).await;
        assert_eq!(still["room_id"], room, "{backend:?}: taken alias keeps its room");

        let foreign = alice.put(&alias_path("#meeting:elsewhere.example"), json!({ "room_id": room })).await;
        assert_eq!(foreign.0, StatusCode::BAD_REQUEST, "{backend:?}: foreign alias: {}", foreign.1);
        assert!(foreign.1["errcode"].is_string(), "{backend:?}: foreign alias errcode: {}", foreign.1);

        let invalid = alice.put(&alias_path("no-hash"), json!({ "room_id": room })).await;
        assert_eq!(invalid.0, StatusCode::BAD_REQUEST, "{backend:?}: invalid alias: {}", invalid.1);

        // bob joins, but his power level is too low to remove alice's alias.
        bob.join(&room).await;
        let denied = bob.delete(&alias_path(&alias), json!({})).await;
        assert_error(&denied, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (status, _) = bob.get(&alias_path(&alias)).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: alias survives a forbidden delete");

        let (status, body) = alice.delete(&alias_path(&alias), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: delete alias: {body}");
        let gone = bob.get(&alias_path(&alias)).await;
        assert_error(&gone, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let again = alice.delete(&alias_path(&alias), json!({})).await;
        assert_error(&again, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // The creator of an alias may delete it even without power in the room.
        let bobs_alias = format!("#bobs:{}", server.server_name);
        let (status, body) = bob.put(&alias_path(&bobs_alias), json!({ "room_id": room })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: bob creates an alias: {body}");
        let (status, body) = bob.delete(&alias_path(&bobs_alias), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: bob deletes his own alias: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn aliases_of_a_room() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let eve = server.register("eve").await;
        let room = alice.create_room(json!({ "room_alias_name": "first" })).await;
        let second = format!("#second:{}", server.server_name);
        let (status, body) = alice.put(&alias_path(&second), json!({ "room_id": room })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: second alias: {body}");

        let mut aliases = room_aliases(&alice, &room).await;
        aliases.sort_by_key(|a| a.as_str().unwrap_or_default().to_owned());
        let first = format!("#first:{}", server.server_name);
        assert_eq!(aliases, vec![json!(first), json!(second)], "{backend:?}: both local aliases");

        let outsider = eve.get(&format!("/_matrix/client/v3/rooms/{}/aliases", encode(&room))).await;
        assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn directory_visibility() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        let published = alice.create_room(json!({ "visibility": "public" })).await;

        let (status, body) = bob.get(&visibility_path(&room)).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: get visibility: {body}");
        assert_eq!(body["visibility"], "private", "{backend:?}: rooms are private unless published");
        let (_, body) = bob.get(&visibility_path(&published)).await;
        assert_eq!(body["visibility"], "public", "{backend:?}: visibility=public publishes the room");

        let (status, body) = alice.put(&visibility_path(&room), json!({ "visibility": "public" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: publish: {body}");
        let (_, body) = bob.get(&visibility_path(&room)).await;
        assert_eq!(body["visibility"], "public", "{backend:?}: now public");

        bob.join(&room).await;
        let denied = bob.put(&visibility_path(&room), json!({ "visibility": "private" })).await;
        assert_error(&denied, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (_, body) = bob.get(&visibility_path(&room)).await;
        assert_eq!(body["visibility"], "public", "{backend:?}: unchanged after a forbidden change");

        let (status, body) = alice.put(&visibility_path(&room), json!({ "visibility": "private" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: unpublish: {body}");
        let (_, body) = bob.get(&visibility_path(&room)).await;
        assert_eq!(body["visibility"], "private", "{backend:?}: private again");

        let invalid = alice.put(&visibility_path(&room), json!({ "visibility": "secret" })).await;
        assert_eq!(invalid.0, StatusCode::BAD_REQUEST, "{backend:?}: invalid visibility: {}", invalid.1);
        let unknown = bob.get(&visibility_path(&format!("!missing:{}", server.server_name))).await;
        assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn public_rooms_listing() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let busy = alice
            .create_room(json!({ "visibility": "public", "name": "Gardening", "topic": "Tomatoes and more" }))
            .await;
        bob.join(&busy).await;
        let quiet = alice.create_room(json!({ "visibility": "public", "name": "Chess club" })).await;
        let hidden = alice.create_room(json!({ "preset": "public_chat", "name": "Unlisted" })).await;

        let (status, body) = bob.get("/_matrix/client/v3/publicRooms").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: publicRooms: {body}");
        let rooms = listed(&body);
        assert_eq!(rooms, vec![busy.clone(), quiet.clone()], "{backend:?}: published rooms, most members first");
        assert!(!rooms.contains(&hidden), "{backend:?}: unpublished rooms are not listed");
        let entry = &body["chunk"][0];
        assert_eq!(entry["name"], "Gardening", "{backend:?}: name");
        assert_eq!(entry["topic"], "Tomatoes and more", "{backend:?}: topic");
        assert_eq!(entry["num_joined_members"], 2, "{backend:?}: joined member count");
        assert_eq!(entry["world_readable"], false, "{backend:?}: world_readable");
        assert_eq!(entry["guest_can_join"], false, "{backend:?}: guest_can_join");
        assert_eq!(entry["join_rule"], "public", "{backend:?}: join_rule");
        assert_eq!(body["total_room_count_estimate"], 2, "{backend:?}: total estimate");

        // Anyone may read the directory without logging in.
        let (status, anonymous) = server.client().get("/_matrix/client/v3/publicRooms").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: anonymous publicRooms: {anonymous}");
        assert_eq!(listed(&anonymous).len(), 2, "{backend:?}: anonymous listing");

        let (status, found) = bob
            .post("/_matrix/client/v3/publicRooms", json!({ "filter": { "generic_search_term": "tomatoes" } }))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: search: {found}");
        assert_eq!(listed(&found), vec![busy.clone()], "{backend:?}: search matches the topic, ignoring case");
        let (_, by_name) =
            bob.post("/_matrix/client/v3/publicRooms", json!({ "filter": { "generic_search_term": "CHESS" } })).await;
        assert_eq!(listed(&by_name), vec![quiet.clone()], "{backend:?}: search matches the name");
        let (_, nothing) = bob
            .post("/_matrix/client/v3/publicRooms", json!({ "filter": { "generic_search_term": "unlisted" } }))
            .await;
        assert!(listed(&nothing).is_empty(), "{backend:?}: unpublished rooms are not found");
        server.stop().await;
    }
}

#[tokio::test]
async fn public_rooms_pagination() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let mut created = Vec::new();
        for i in 0..5 {
            created.push(alice.create_room(json!({ "visibility": "public", "name": format!("Room {i}") })).await);
        }

        let mut seen = Vec::new();
        let mut since: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 10, "{backend:?}: pagination ends");
            let path = match &since {
                Some(token) => format!("/_matrix/client/v3/publicRooms?limit=2&since={}", encode(token)),
                None => "/_matrix/client/v3/publicRooms?limit=2".to_owned(),
            };
            let (status, body) = alice.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: page {pages}: {body}");
            let page = listed(&body);
            assert!(page.len() <= 2, "{backend:?}: page within the limit");
            if pages > 1 {
                assert!(body["prev_batch"].is_string(), "{backend:?}: later pages have prev_batch");
            }
            seen.extend(page);
            match body["next_batch"].as_str() {
                Some(next) => since = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(pages, 3, "{backend:?}: five rooms in pages of two");
        seen.sort();
        created.sort();
        assert_eq!(seen, created, "{backend:?}: every room exactly once");

        // POST pages the same way.
        let (status, first) = alice.post("/_matrix/client/v3/publicRooms", json!({ "limit": 3 })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: POST page: {first}");
        assert_eq!(listed(&first).len(), 3, "{backend:?}: POST limit");
        let next = first["next_batch"].as_str().expect("next_batch after a partial page");
        let (_, second) = alice.post("/_matrix/client/v3/publicRooms", json!({ "limit": 3, "since": next })).await;
        assert_eq!(listed(&second).len(), 2, "{backend:?}: the rest");
        assert!(second.get("next_batch").is_none(), "{backend:?}: no next_batch on the last page");

        let bad = alice.get("/_matrix/client/v3/publicRooms?since=nonsense").await;
        assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{backend:?}: invalid since: {}", bad.1);
        server.stop().await;
    }
}
