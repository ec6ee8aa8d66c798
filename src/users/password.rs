//! Password hashing with argon2id, off the async runtime because each hash
//! takes tens of milliseconds by design.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Each argon2 run takes about 19 MiB; running at most two at a time keeps a
/// registration or login burst from multiplying that across blocking threads.
static HASHING: Semaphore = Semaphore::const_new(2);

pub async fn hash(password: &str) -> Result<String> {
    let _permit = HASHING.acquire().await.map_err(|e| Error::internal("hashing a password", e))?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal("hashing a password", e))
    })
    .await
    .map_err(|e| Error::internal("hashing a password", e))?
}

pub async fn verify(password: &str, hash: &str) -> Result<bool> {
    let _permit = HASHING.acquire().await.map_err(|e| Error::internal("verifying a password", e))?;
    let password = password.to_owned();
    let hash = hash.to_owned();
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| Error::internal("reading a password hash", e))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(|e| Error::internal("verifying a password", e))?
}
