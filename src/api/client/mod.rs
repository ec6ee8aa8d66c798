//! Client-Server API endpoints, one module per area of the spec.

mod account;
mod account_data;
mod appservice;
mod connections;
mod devices;
mod discovery;
mod filter;
mod hierarchy;
mod key_backup;
mod keys;
mod membership;
mod messages;
mod openid;
pub(crate) mod presence;
mod profile;
mod push_rules;
mod pushers;
mod receipts;
mod relations;
mod report;
pub(crate) mod room_directory;
mod rooms;
mod search;
mod send;
mod state;
mod sync;
mod threepid;
mod to_device;
mod typing;
pub mod uiaa;
mod user_directory;

use std::sync::Arc;

use axum::{
    Router,
    routing::{delete, get, post, put},
};

use crate::Services;

pub fn router() -> Router<Arc<Services>> {
    const V3: &str = "/_matrix/client/v3";
    let r = |path: &str| format!("{V3}{path}");
    Router::new()
        // Discovery
        .route("/_matrix/client/versions", get(discovery::versions))
        .route(&r("/capabilities"), get(discovery::capabilities))
        // Accounts and sessions
        .route(&r("/register"), post(account::register))
        .route(&r("/register/available"), get(account::available))
        .route(&r("/login"), get(account::login_flows).post(account::login))
        .route(&r("/account/whoami"), get(account::whoami))
        .route(&r("/logout"), post(account::logout))
        .route(&r("/logout/all"), post(account::logout_all))
        .route(&r("/account/password"), post(account::change_password))
        .route(&r("/account/deactivate"), post(account::deactivate))
        .route(&r("/devices"), get(devices::list))
        .route(&r("/devices/{device_id}"), get(devices::get).put(devices::update).delete(devices::delete))
        .route(&r("/delete_devices"), post(devices::delete_many))
        // Account data and filters
        .route(&r("/user/{user_id}/account_data/{kind}"), get(account_data::get_global).put(account_data::put_global))
        .route(
            &r("/user/{user_id}/rooms/{room_id}/account_data/{kind}"),
            get(account_data::get_room).put(account_data::put_room),
        )
        .route(&r("/user/{user_id}/filter"), post(filter::create))
        .route(&r("/user/{user_id}/filter/{filter_id}"), get(filter::get))
        // Rooms
        .route(&r("/createRoom"), post(rooms::create))
        .route(&r("/joined_rooms"), get(membership::joined_rooms))
        .route(&r("/join/{room_id_or_alias}"), post(membership::join_by_id_or_alias))
        .route(&r("/knock/{room_id_or_alias}"), post(membership::knock))
        .route(&r("/rooms/{room_id}/join"), post(membership::join))
        .route(&r("/rooms/{room_id}/invite"), post(membership::invite))
        .route(&r("/rooms/{room_id}/leave"), post(membership::leave))
        .route(&r("/rooms/{room_id}/forget"), post(membership::forget))
        .route(&r("/rooms/{room_id}/kick"), post(membership::kick))
        .route(&r("/rooms/{room_id}/ban"), post(membership::ban))
        .route(&r("/rooms/{room_id}/unban"), post(membership::unban))
        .route(&r("/rooms/{room_id}/members"), get(membership::members))
        .route(&r("/rooms/{room_id}/joined_members"), get(membership::joined_members))
        .route(&r("/rooms/{room_id}/state"), get(state::all))
        .route(&r("/rooms/{room_id}/state/{kind}"), get(state::get_empty_key).put(state::put_empty_key))
        .route(&r("/rooms/{room_id}/state/{kind}/"), get(state::get_empty_key).put(state::put_empty_key))
        .route(&r("/rooms/{room_id}/state/{kind}/{state_key}"), get(state::get).put(state::put))
        .route(&r("/rooms/{room_id}/send/{kind}/{txn_id}"), put(send::send))
        .route(&r("/rooms/{room_id}/redact/{event_id}/{txn_id}"), put(send::redact))
        .route(&r("/rooms/{room_id}/event/{event_id}"), get(messages::event))
        .route(&r("/rooms/{room_id}/messages"), get(messages::messages))
        .route(&r("/search"), post(search::search))
        .route(&r("/rooms/{room_id}/upgrade"), post(rooms::upgrade))
        .route(&r("/user/{user_id}/openid/request_token"), post(openid::request_token))
        .route(&r("/rooms/{room_id}/report/{event_id}"), post(report::event))
        .route(&r("/rooms/{room_id}/report"), post(report::room))
        .route(&r("/users/{user_id}/report"), post(report::user))
        .route(&r("/rooms/{room_id}/context/{event_id}"), get(messages::context))
        .route(&r("/rooms/{room_id}/typing/{user_id}"), put(typing::set))
        .route(&r("/rooms/{room_id}/receipt/{receipt_type}/{event_id}"), post(receipts::receipt))
        .route(&r("/rooms/{room_id}/read_markers"), post(receipts::read_markers))
        .route(&r("/rooms/{room_id}/aliases"), get(room_directory::room_aliases))
        // Room directory
        .route(
            &r("/directory/room/{alias}"),
            get(room_directory::resolve_alias).put(room_directory::put_alias).delete(room_directory::delete_alias),
        )
        .route(
            &r("/directory/list/room/{room_id}"),
            get(room_directory::get_visibility).put(room_directory::set_visibility),
        )
        .route(&r("/publicRooms"), get(room_directory::public_rooms).post(room_directory::search_public_rooms))
        // Sync
        .route(&r("/sync"), get(sync::sync))
        // Push notifications
        .route(&r("/pushrules/"), get(push_rules::get_all))
        .route(&r("/pushrules/global/"), get(push_rules::get_global))
        .route(
            &r("/pushrules/{scope}/{kind}/{rule_id}"),
            get(push_rules::get_rule).put(push_rules::put_rule).delete(push_rules::delete_rule),
        )
        .route(
            &r("/pushrules/{scope}/{kind}/{rule_id}/enabled"),
            get(push_rules::get_enabled).put(push_rules::put_enabled),
        )
        .route(
            &r("/pushrules/{scope}/{kind}/{rule_id}/actions"),
            get(push_rules::get_actions).put(push_rules::put_actions),
        )
        .route(&r("/pushers"), get(pushers::list))
        .route(&r("/pushers/set"), post(pushers::set))
        .route(&r("/notifications"), get(pushers::notifications))
        // Email addresses, and the links that emails carry
        .route(&r("/account/3pid"), get(threepid::list))
        .route(&r("/account/3pid/email/requestToken"), post(threepid::request_token))
        .route(&r("/account/3pid/add"), post(threepid::add))
        .route(&r("/account/3pid/delete"), post(threepid::delete))
        .route("/_lattice/email/validate", get(threepid::validate))
        .route("/_lattice/email/unsubscribe", get(threepid::unsubscribe_page).post(threepid::unsubscribe))
        // Profiles, presence, user directory
        .route(&r("/profile/{user_id}"), get(profile::get))
        .route(&r("/profile/{user_id}/displayname"), get(profile::get_displayname).put(profile::set_displayname))
        .route(&r("/profile/{user_id}/avatar_url"), get(profile::get_avatar_url).put(profile::set_avatar_url))
        .route(&r("/presence/{user_id}/status"), get(presence::get).put(presence::set))
        .route(&r("/user_directory/search"), post(user_directory::search))
        // End-to-end encryption
        .route(&r("/keys/upload"), post(keys::upload))
        .route(&r("/keys/query"), post(keys::query))
        .route(&r("/keys/claim"), post(keys::claim))
        .route(&r("/keys/changes"), get(keys::changes))
        .route(&r("/keys/device_signing/upload"), post(keys::upload_signing_keys))
        .route(&r("/keys/signatures/upload"), post(keys::upload_signatures))
        .route(&r("/sendToDevice/{event_type}/{txn_id}"), put(to_device::send))
        .route(&r("/room_keys/version"), get(key_backup::latest_version).post(key_backup::create_version))
        .route(
            &r("/room_keys/version/{version}"),
            get(key_backup::get_version).put(key_backup::update_version).delete(key_backup::delete_version),
        )
        .route(&r("/room_keys/keys"), get(key_backup::get_all).put(key_backup::put_all).delete(key_backup::delete_all))
        .route(
            &r("/room_keys/keys/{room_id}"),
            get(key_backup::get_room).put(key_backup::put_room).delete(key_backup::delete_room),
        )
        .route(
            &r("/room_keys/keys/{room_id}/{session_id}"),
            get(key_backup::get_session).put(key_backup::put_session).delete(key_backup::delete_session),
        )
        // Application services and third-party networks
        .route("/_matrix/client/v1/appservice/{appservice_id}/ping", post(appservice::ping))
        // Relationships and threads
        .route("/_matrix/client/v1/rooms/{room_id}/relations/{event_id}", get(relations::all))
        .route("/_matrix/client/v1/rooms/{room_id}/relations/{event_id}/{rel_type}", get(relations::of_type))
        .route(
            "/_matrix/client/v1/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}",
            get(relations::of_type_and_event_type),
        )
        .route("/_matrix/client/v1/rooms/{room_id}/threads", get(relations::threads))
        .route("/_matrix/client/v1/rooms/{room_id}/hierarchy", get(hierarchy::hierarchy))
        .route(&r("/thirdparty/protocols"), get(appservice::protocols))
        .route(&r("/thirdparty/protocol/{protocol}"), get(appservice::protocol))
        .route(&r("/thirdparty/location/{protocol}"), get(appservice::protocol_locations))
        .route(&r("/thirdparty/user/{protocol}"), get(appservice::protocol_users))
        .route(&r("/thirdparty/location"), get(appservice::locations_by_alias))
        .route(&r("/thirdparty/user"), get(appservice::users_by_id))
        .merge(connections_router())
}

/// The namespaced connection endpoints (`docs/connections.md`).
fn connections_router() -> Router<Arc<Services>> {
    const PREFIX: &str = "/_matrix/client/unstable/dev.lattice.connections";
    let c = |path: &str| format!("{PREFIX}{path}");
    Router::new()
        .route(&c("/connections"), get(connections::list))
        .route(&c("/connections/{user_id}"), delete(connections::remove))
        .route(&c("/requests"), get(connections::pending).post(connections::send))
        .route(&c("/requests/{room_id}/accept"), post(connections::accept))
        .route(&c("/requests/{room_id}/decline"), post(connections::decline))
        .route(&c("/requests/{room_id}/withdraw"), post(connections::withdraw))
        .route(&c("/degree/{user_id}"), get(connections::degree))
        .route(&c("/metrics"), get(connections::metrics))
}
