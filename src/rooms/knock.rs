//! Knocks on rooms this server is not in (spec: Server-Server API,
//! "Knocking upon a room"): `make_knock` and `send_knock` through a resident
//! server, and the stripped state it returns, kept for the user's `/sync`
//! until the user is invited, joins or withdraws the knock.

use ruma::{OwnedEventId, OwnedServerName, RoomId, UserId};
use serde_json::{Value, json};

use super::Rooms;
use crate::{
    error::Result,
    storage::{self, knocks::RemoteKnock, writer::Stream},
};

impl Rooms {
    /// Knocks on a room this server is not in, through the first of
    /// `servers` that accepts the knock.
    #[tracing::instrument(skip_all, fields(%room_id, user_id = %user))]
    pub async fn knock_remote(
        &self,
        room_id: &RoomId,
        user: &UserId,
        servers: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<OwnedEventId> {
        let mut content = json!({});
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        self.fill_profile(&mut content, user, None).await?;
        let extra = content.as_object().cloned().unwrap_or_default();
        let done = self.remote_membership(room_id, user, "knock", servers, extra).await?;
        let mut knock_state: Vec<Value> = done.answer["knock_room_state"]
            .as_array()
            .map(|events| events.iter().filter(|e| e.is_object()).cloned().collect())
            .unwrap_or_default();
        let own_content = ruma::CanonicalJsonValue::Object(match done.event.get("content") {
            Some(ruma::CanonicalJsonValue::Object(content)) => content.clone(),
            _ => Default::default(),
        });
        knock_state.push(json!({
            "type": "m.room.member",
            "state_key": user,
            "sender": user,
            "content": Value::from(own_content),
        }));
        let row = RemoteKnock {
            room_id: room_id.to_string(),
            user_id: user.to_string(),
            event_id: done.event_id.to_string(),
            server: done.server.to_string(),
            knock_state: Value::Array(knock_state).to_string(),
        };
        self.db
            .writer
            .write(move |w| {
                Box::pin(async move {
                    let stream = w.next_position(Stream::Events);
                    storage::knocks::insert(&mut w.conn, &row, storage::now_ms()).await?;
                    storage::rooms::set_membership(
                        &mut w.conn,
                        &row.room_id,
                        &row.user_id,
                        "knock",
                        &row.event_id,
                        stream,
                    )
                    .await?;
                    Ok(())
                })
            })
            .await?;
        self.notifier.wake([user]);
        Ok(done.event_id)
    }

    /// Returns the server that a knock of `user` on a room this server is not
    /// in went through, when there is such a knock.
    pub async fn remote_knock_server(&self, room_id: &RoomId, user: &UserId) -> Result<Option<OwnedServerName>> {
        let Some(knock) = storage::knocks::get(&self.db.pool, room_id.as_str(), user.as_str()).await? else {
            return Ok(None);
        };
        let membership = storage::rooms::membership(&self.db.pool, room_id.as_str(), user.as_str()).await?;
        if membership.is_none_or(|m| m.membership != "knock") || self.is_resident(room_id).await? {
            return Ok(None);
        }
        Ok(ruma::ServerName::parse(knock.server.as_str()).ok())
    }

    /// Withdraws the knock of `user` on a room this server is not in, with a
    /// leave through the server the knock went through. The knock ends here
    /// even when that server cannot be reached.
    pub async fn withdraw_remote_knock(&self, room_id: &RoomId, user: &UserId, reason: Option<String>) -> Result<()> {
        let servers: Vec<OwnedServerName> = self.remote_knock_server(room_id, user).await?.into_iter().collect();
        let mut extra = serde_json::Map::new();
        if let Some(reason) = reason {
            extra.insert("reason".into(), json!(reason));
        }
        let knock = storage::knocks::get(&self.db.pool, room_id.as_str(), user.as_str()).await?;
        let leave_id = match self.remote_membership(room_id, user, "leave", &servers, extra).await {
            Ok(done) => done.event_id.to_string(),
            Err(err) => {
                tracing::info!(%room_id, user_id = %user, error = %err.message, "withdrawing a knock locally only");
                knock.map(|k| k.event_id).unwrap_or_default()
            }
        };
        let (room, who) = (room_id.to_string(), user.to_string());
        self.db
            .writer
            .write(move |w| {
                Box::pin(async move {
                    let stream = w.next_position(Stream::Events);
                    storage::knocks::delete(&mut w.conn, &room, &who).await?;
                    storage::rooms::set_membership(&mut w.conn, &room, &who, "leave", &leave_id, stream).await?;
                    Ok(())
                })
            })
            .await?;
        self.notifier.wake([user]);
        Ok(())
    }
}
