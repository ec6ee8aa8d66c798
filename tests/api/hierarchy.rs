//! Space hierarchies. The client `/hierarchy` walks depth first in the
//! spec's child order and previews only what the requester may see, with
//! `suggested_only`, `max_depth` and pages. The federation form lists a
//! space's direct children.

use http::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestCa, TestServer, assert_error, backends, encode};

async fn add_child(client: &Client, space: &str, child: &str, content: Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", encode(space), encode(child));
    let (status, body) = client.put(&path, content).await;
    assert_eq!(status, StatusCode::OK, "add child {child}: {body}");
}

async fn hierarchy(client: &Client, space: &str, query: &str) -> Value {
    let (status, body) = client.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy?{query}", encode(space))).await;
    assert_eq!(status, StatusCode::OK, "hierarchy?{query}: {body}");
    body
}

fn names(page: &Value) -> Vec<String> {
    page["rooms"].as_array().expect("rooms").iter().map(|r| r["name"].as_str().unwrap_or("?").to_owned()).collect()
}

/// Builds a public space with children `b` (invite only, order "a"), `a` (order
/// "b", with child `d`), `c` (suggested) and `e` (removed: empty `via`).
async fn build_space(alice: &Client, server_name: &str) -> String {
    let public = |name: &str| json!({ "preset": "public_chat", "name": name });
    let space = alice
        .create_room(json!({ "preset": "public_chat", "name": "Org", "creation_content": { "type": "m.space" } }))
        .await;
    let a = alice.create_room(public("a")).await;
    let b = alice.create_room(json!({ "preset": "private_chat", "name": "b" })).await;
    let c = alice.create_room(public("c")).await;
    let d = alice.create_room(public("d")).await;
    let e = alice.create_room(public("e")).await;
    let via = json!([server_name]);
    add_child(alice, &space, &a, json!({ "via": via, "order": "b" })).await;
    add_child(alice, &space, &b, json!({ "via": via, "order": "a" })).await;
    add_child(alice, &space, &c, json!({ "via": via, "suggested": true })).await;
    add_child(alice, &space, &e, json!({ "via": [] })).await;
    add_child(alice, &a, &d, json!({ "via": via })).await;
    space
}

#[tokio::test]
async fn hierarchy_walks_in_order_with_previews() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let space = build_space(&alice, &server.server_name).await;

        // Bob is in no room: the invite-only child is not previewed.
        let page = hierarchy(&bob, &space, "").await;
        assert_eq!(names(&page), vec!["Org", "a", "d", "c"]);
        assert!(page.get("next_batch").is_none(), "{page}");
        let root = &page["rooms"][0];
        assert_eq!(root["room_type"], "m.space");
        assert_eq!(root["join_rule"], "public");
        assert_eq!(root["num_joined_members"], 1);
        assert_eq!(root["world_readable"], false);
        let listed: Vec<&str> = root["children_state"]
            .as_array()
            .expect("children_state")
            .iter()
            .filter_map(|c| c["state_key"].as_str())
            .collect();
        assert_eq!(listed.len(), 3, "the removed child is not listed: {root}");
        assert!(root["children_state"][0]["origin_server_ts"].is_u64(), "{root}");
        assert_eq!(root["children_state"][0]["type"], "m.space.child");
        // Alice is a member of every room, so the invite-only child comes first for her.
        assert_eq!(names(&hierarchy(&alice, &space, "").await), vec!["Org", "b", "a", "d", "c"]);

        assert_eq!(names(&hierarchy(&bob, &space, "max_depth=0").await), vec!["Org"]);
        assert_eq!(names(&hierarchy(&bob, &space, "max_depth=1").await), vec!["Org", "a", "c"]);
        assert_eq!(names(&hierarchy(&bob, &space, "suggested_only=true").await), vec!["Org", "c"]);

        // Pages of two, with the settings fixed by the first page.
        let first = hierarchy(&bob, &space, "limit=2").await;
        assert_eq!(names(&first), vec!["Org", "a"]);
        let token = first["next_batch"].as_str().expect("next_batch");
        let second = hierarchy(&bob, &space, &format!("limit=2&from={token}")).await;
        assert_eq!(names(&second), vec!["d", "c"]);
        assert!(second.get("next_batch").is_none(), "{second}");
        let changed =
            bob.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy?from={token}&max_depth=1", encode(&space))).await;
        assert_error(&changed, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let bad = bob.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy?limit=0", encode(&space))).await;
        assert_error(&bad, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

        // A private space, and one that does not exist, are forbidden.
        let private = alice.create_room(json!({ "name": "Hidden", "creation_content": { "type": "m.space" } })).await;
        let response = bob.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", encode(&private))).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let response = bob.get("/_matrix/client/v1/rooms/%21nowhere%3Alocalhost/hierarchy").await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn federation_hierarchy_lists_children() {
    for backend in backends() {
        let ca = TestCa::new();
        let servers = TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |_| {}).await;
        let (a, b) = (&servers[0], &servers[1]);
        let alice = a.register("alice").await;
        let space = build_space(&alice, &a.server_name).await;

        let destination = ruma::ServerName::parse(&a.server_name).expect("server name");
        let path = format!("/_matrix/federation/v1/hierarchy/{}", encode(&space));
        let response = b
            .homeserver
            .services()
            .federation
            .send(&destination, Method::GET, &path, None, true)
            .await
            .expect("the request reaches the other server");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["room"]["name"], "Org", "{body}");
        let mut children: Vec<&str> =
            body["children"].as_array().expect("children").iter().filter_map(|c| c["name"].as_str()).collect();
        children.sort_unstable();
        assert_eq!(children, vec!["a", "c"]);
        assert_eq!(body["inaccessible_children"].as_array().expect("inaccessible_children").len(), 1, "{body}");
    }
}

/// Sets the name of a room.
async fn rename(client: &Client, room: &str, name: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", encode(room));
    let (status, body) = client.put(&path, json!({ "name": name })).await;
    assert_eq!(status, StatusCode::OK, "rename {room}: {body}");
}

/// Returns the summary of the room named `name` in a page.
fn room_named<'a>(page: &'a Value, name: &str) -> &'a Value {
    page["rooms"].as_array().expect("rooms").iter().find(|r| r["name"] == name).expect("a room of that name")
}

#[tokio::test]
async fn hierarchy_reads_rooms_of_other_servers() {
    for backend in backends() {
        const A: &str = "a.lattice.test";
        const B: &str = "b.lattice.test";
        const DOWN: &str = "down.lattice.test";
        let ca = TestCa::new();
        // down.lattice.test points at a closed port on 127.0.0.1.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
        let closed_addr = closed.local_addr().expect("address").to_string();
        drop(closed);
        let servers = TestServer::start_federated(&backend, &ca, &[A, B], |config| {
            config.federation.host_overrides.insert(DOWN.into(), closed_addr.clone());
        })
        .await;
        let (a, b) = (&servers[0], &servers[1]);
        let alice = a.register("alice").await;
        let carol = a.register("carol").await;
        let bob = b.register("bob").await;
        let bea = b.register("bea").await;

        // On b: a sub-space with a public child, an invite-only one, one
        // restricted to the lounge and a world-readable one, and a lone room.
        let lounge = bob.create_room(json!({ "preset": "public_chat", "name": "Lounge" })).await;
        let sub = bob
            .create_room(json!({
                "preset": "public_chat",
                "name": "Sub",
                "topic": "Nested",
                "creation_content": { "type": "m.space" },
            }))
            .await;
        bea.join(&sub).await;
        let deep = bob.create_room(json!({ "preset": "public_chat", "name": "Deep" })).await;
        let secret = bob.create_room(json!({ "preset": "private_chat", "name": "Secret" })).await;
        let club = bob.create_room(json!({ "preset": "private_chat", "name": "Club" })).await;
        let rule = json!({ "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": lounge }] });
        let rule_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.join_rules/", encode(&club));
        assert_eq!(bob.put(&rule_path, rule).await.0, StatusCode::OK);
        let archive = bob
            .create_room(json!({
                "preset": "private_chat",
                "name": "Archive",
                "initial_state": [{
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": { "history_visibility": "world_readable" },
                }],
            }))
            .await;
        let annex = bob.create_room(json!({ "preset": "public_chat", "name": "Annex" })).await;
        add_child(&bob, &sub, &deep, json!({ "via": [B], "order": "a", "suggested": true })).await;
        add_child(&bob, &sub, &secret, json!({ "via": [B], "order": "b" })).await;
        add_child(&bob, &sub, &club, json!({ "via": [B], "order": "c" })).await;
        add_child(&bob, &sub, &archive, json!({ "via": [B], "order": "d" })).await;

        // Alice joins the lounge, so that b shows the club to a, and a to alice.
        let (status, body) =
            alice.post(&format!("/_matrix/client/v3/join/{}?via={B}", encode(&lounge)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // On a: a space whose children are the sub-space on b, a room on a
        // server that is down, a room on b listed after that server, and a local room.
        let space = alice
            .create_room(json!({ "preset": "public_chat", "name": "Org", "creation_content": { "type": "m.space" } }))
            .await;
        let local = alice.create_room(json!({ "preset": "public_chat", "name": "Local" })).await;
        add_child(&alice, &space, &sub, json!({ "via": [B], "order": "a", "suggested": true })).await;
        add_child(&alice, &space, "!ghost:down.lattice.test", json!({ "via": [DOWN], "order": "b" })).await;
        add_child(&alice, &space, &annex, json!({ "via": [DOWN, B], "order": "c" })).await;
        add_child(&alice, &space, &local, json!({ "via": [A], "order": "d" })).await;

        let page = hierarchy(&alice, &space, "").await;
        assert_eq!(names(&page), vec!["Org", "Sub", "Deep", "Club", "Archive", "Annex", "Local"]);
        let remote = room_named(&page, "Sub");
        assert_eq!(remote["room_id"], sub.as_str());
        assert_eq!(remote["topic"], "Nested");
        assert_eq!(remote["num_joined_members"], 2);
        assert_eq!(remote["join_rule"], "public");
        assert_eq!(remote["room_type"], "m.space");
        assert_eq!(remote["world_readable"], false);
        let mut listed: Vec<&str> = remote["children_state"]
            .as_array()
            .expect("children_state")
            .iter()
            .filter_map(|c| c["state_key"].as_str())
            .collect();
        listed.sort_unstable();
        let mut expected = vec![deep.as_str(), secret.as_str(), club.as_str(), archive.as_str()];
        expected.sort_unstable();
        assert_eq!(listed, expected);
        let restricted = room_named(&page, "Club");
        assert_eq!(restricted["join_rule"], "restricted");
        assert_eq!(restricted["allowed_room_ids"], json!([lounge]));
        assert_eq!(room_named(&page, "Archive")["world_readable"], true);
        assert_eq!(room_named(&page, "Annex")["num_joined_members"], 1);
        assert_eq!(room_named(&page, "Deep")["children_state"], json!([]));

        // Carol is not in the lounge, so the club is not shown to her.
        let page = hierarchy(&carol, &space, "").await;
        assert_eq!(names(&page), vec!["Org", "Sub", "Deep", "Archive", "Annex", "Local"]);

        // max_depth, suggested_only and pages apply to the rooms of b too.
        assert_eq!(names(&hierarchy(&carol, &space, "max_depth=1").await), vec!["Org", "Sub", "Annex", "Local"]);
        assert_eq!(names(&hierarchy(&carol, &space, "suggested_only=true").await), vec!["Org", "Sub", "Deep"]);
        let first = hierarchy(&carol, &space, "limit=2").await;
        assert_eq!(names(&first), vec!["Org", "Sub"]);
        let token = first["next_batch"].as_str().expect("next_batch");
        let second = hierarchy(&carol, &space, &format!("limit=2&from={token}")).await;
        assert_eq!(names(&second), vec!["Deep", "Archive"]);
        let token = second["next_batch"].as_str().expect("next_batch");
        let third = hierarchy(&carol, &space, &format!("limit=2&from={token}")).await;
        assert_eq!(names(&third), vec!["Annex", "Local"]);
        assert!(third.get("next_batch").is_none(), "{third}");

        // Responses are cached for a while, so a new name on b does not show yet.
        rename(&bob, &sub, "Sub renamed").await;
        assert_eq!(names(&hierarchy(&carol, &space, "max_depth=1").await), vec!["Org", "Sub", "Annex", "Local"]);
    }
}
