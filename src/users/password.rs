//! Password hashing with argon2id, off the async runtime because each hash
//! takes tens of milliseconds by design.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// At most two hashes run at a time, so a registration or login burst cannot
/// multiply their memory across blocking threads.
static HASHING: Semaphore = Semaphore::const_new(2);

/// Argon2id with 7 MiB of memory and 5 passes, one of the equivalent settings
/// that OWASP's password storage guidance lists; it needs a third of the memory
/// of the argon2 crate's default (19 MiB, 2 passes).
fn hasher() -> Result<Argon2<'static>> {
    let params = Params::new(7 * 1024, 5, 1, None).map_err(|e| Error::internal("configuring argon2", e))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

pub async fn hash(password: &str) -> Result<String> {
    let _permit = HASHING.acquire().await.map_err(|e| Error::internal("hashing a password", e))?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher()?
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
        // The hash string carries its own parameters, so older hashes still verify.
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(|e| Error::internal("verifying a password", e))?
}
