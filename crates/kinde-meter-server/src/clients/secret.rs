//! Client secrets: generated once, shown once, stored only as an argon2id hash,
//! checked in constant time.
//!
//! argon2id with the crate's default parameters (19 MiB, 2 passes, 1 lane: the
//! OWASP recommendation) takes tens of milliseconds and 19 MiB per check, on
//! purpose. Callers on the async runtime therefore check through
//! [`SecretChecker`], which runs the work on blocking threads and bounds how many
//! checks run at once, so a flood of token requests cannot exhaust memory.

use std::{fmt, sync::Arc};

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier},
};
use tokio::sync::Semaphore;

/// Random bytes in a secret (256 bits).
pub const SECRET_BYTES: usize = 32;

/// A client secret in the clear. Its `Debug` and `Display` never show it; only
/// [`expose`](Self::expose) does, for the one time it is printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// A fresh secret: [`SECRET_BYTES`] bytes from the operating system's
    /// generator, as lowercase hex (shell- and form-safe, no `-` to be taken for
    /// a flag).
    pub fn generate() -> Result<ClientSecret, SecretError> {
        let mut bytes = [0u8; SECRET_BYTES];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SecretError::Random)?;
        Ok(ClientSecret(hex::encode(bytes)))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its argon2id hash as a PHC string (`$argon2id$v=19$…`) with a fresh random
    /// salt. Slow: call it off the async runtime.
    pub fn hash(&self) -> Result<String, SecretError> {
        Argon2::default()
            .hash_password(self.0.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| SecretError::Hash(e.to_string()))
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// Why a secret could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// The system's random generator failed.
    #[error("the random generator failed")]
    Random,
    /// Hashing failed (not expected with the default parameters).
    #[error("cannot hash the secret: {0}")]
    Hash(String),
}

/// Whether `presented` is the secret whose hash is `phc`. The comparison of the
/// hash outputs is constant time; a malformed `phc` is simply no match. Slow:
/// call it off the async runtime.
pub fn verify(presented: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(presented.as_bytes(), phc)
        .is_ok()
}

/// Checks secrets on blocking threads, at most `limit` at a time.
#[derive(Clone)]
pub struct SecretChecker {
    permits: Arc<Semaphore>,
}

impl SecretChecker {
    /// A checker running at most `limit` (at least 1) checks at once.
    pub fn new(limit: usize) -> SecretChecker {
        SecretChecker {
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }

    /// A checker sized to the machine: one check per available core.
    pub fn per_core() -> SecretChecker {
        SecretChecker::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// [`verify`] on a blocking thread, waiting for a free slot first.
    pub async fn verify(&self, presented: String, phc: String) -> bool {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify(&presented, &phc)
        })
        .await
        .unwrap_or(false)
    }
}
