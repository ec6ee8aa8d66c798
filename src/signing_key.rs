//! The server's ed25519 signing key: generated on first start, kept in the
//! database, and used to sign every event this server creates.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use rand::{Rng, distributions::Alphanumeric};
use ruma::signatures::Ed25519KeyPair;
use sqlx::Row;

use crate::storage::{Db, now_ms};

pub struct SigningKey {
    pub key_id: String,
    pub pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Loads the current signing key, or generates and stores one.
    pub async fn load_or_generate(db: &Db) -> Result<Self, String> {
        let row = sqlx::query(
            "SELECT key_id, secret FROM signing_keys WHERE expired_ts IS NULL ORDER BY created_ts DESC LIMIT 1",
        )
        .fetch_optional(&db.pool)
        .await
        .map_err(|e| format!("could not read the signing key: {e}"))?;

        let (key_id, document) = match row {
            Some(row) => {
                let key_id: String = row.get(0);
                let secret: String = row.get(1);
                let document = STANDARD_NO_PAD
                    .decode(secret)
                    .map_err(|e| format!("stored signing key {key_id} is not base64: {e}"))?;
                (key_id, document)
            }
            None => {
                let document = Ed25519KeyPair::generate().to_vec();
                let version: String = rand::thread_rng().sample_iter(&Alphanumeric).take(6).map(char::from).collect();
                let key_id = format!("ed25519:{version}");
                let secret = STANDARD_NO_PAD.encode(&document);
                sqlx::query("INSERT INTO signing_keys (key_id, secret, created_ts) VALUES ($1, $2, $3)")
                    .bind(&key_id)
                    .bind(secret)
                    .bind(now_ms())
                    .execute(&db.pool)
                    .await
                    .map_err(|e| format!("could not store the signing key: {e}"))?;
                tracing::info!(key_id, "generated a new signing key");
                (key_id, document)
            }
        };

        let version = key_id.trim_start_matches("ed25519:").to_owned();
        let pair = Ed25519KeyPair::from_der(&document, version)
            .map_err(|e| format!("stored signing key {key_id} is invalid: {e}"))?;
        Ok(Self { key_id, pair })
    }

    /// The public key, unpadded base64 as the key APIs publish it.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.pair.public_key())
    }
}
