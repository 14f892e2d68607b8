//! Client secrets: generated once, shown once, stored only as an argon2id hash,
//! checked in constant time.
//!
//! argon2id with the crate's default parameters (19 MiB, 2 passes, 1 lane: the
//! OWASP recommendation) takes tens of milliseconds and 19 MiB per check, on
//! purpose. Callers on the async runtime therefore check through
//! [`SecretChecker`], which runs the work on blocking threads and bounds how many
//! checks run at once, so a flood of token requests cannot exhaust memory.
//!
//! A request naming no usable client (unknown or revoked) is checked too,
//! against [`dummy_hash`] and through the same permits, so that it takes as
//! long as a wrong secret and the answer's timing does not tell which client
//! ids exist (`docs/tokens.md`).

use std::{
    fmt,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
};

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

/// The hash of a random secret nobody knows, made once with the parameters of
/// [`ClientSecret::hash`]: what a request naming no usable client is checked
/// against, at the cost of a real check. Slow the first time: force it off the
/// async runtime.
pub fn dummy_hash() -> &'static str {
    static DUMMY: LazyLock<String> = LazyLock::new(|| {
        ClientSecret::generate()
            .and_then(|secret| secret.hash())
            // Not expected; a hash that matches nothing still costs a check.
            .unwrap_or_else(|_| {
                ClientSecret(hex::encode([0x5a; SECRET_BYTES]))
                    .hash()
                    .unwrap_or_default()
            })
    });
    &DUMMY
}

/// Checks secrets on blocking threads, at most `limit` at a time.
#[derive(Clone)]
pub struct SecretChecker {
    permits: Arc<Semaphore>,
    checks: Arc<AtomicU64>,
}

impl SecretChecker {
    /// A checker running at most `limit` (at least 1) checks at once.
    pub fn new(limit: usize) -> SecretChecker {
        SecretChecker {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            checks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A checker sized to the machine: one check per available core.
    pub fn per_core() -> SecretChecker {
        SecretChecker::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// [`verify`] on a blocking thread, waiting for a free slot first.
    pub async fn verify(&self, presented: String, phc: String) -> bool {
        self.run(presented, Some(phc)).await
    }

    /// The same work as [`verify`](Self::verify), through the same permits,
    /// against [`dummy_hash`]: for a request naming no usable client, so
    /// that it costs what a wrong secret costs. Always false.
    pub async fn verify_nothing(&self, presented: String) -> bool {
        self.run(presented, None).await;
        false
    }

    /// Secret checks run so far (real and dummy alike).
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    async fn run(&self, presented: String, phc: Option<String>) -> bool {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let checks = self.checks.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            checks.fetch_add(1, Ordering::Relaxed);
            let phc = phc.as_deref().unwrap_or_else(|| dummy_hash());
            verify(&presented, phc)
        })
        .await
        .unwrap_or(false)
    }

    /// Makes [`dummy_hash`] now on a blocking thread (if on a tokio runtime),
    /// so that the first unknown client does not pay for it.
    pub fn prepare(&self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(|| {
                dummy_hash();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_has_the_parameters_of_real_ones_and_matches_nothing() {
        let real = ClientSecret::generate().unwrap().hash().unwrap();
        let params = |phc: &str| phc.rsplitn(3, '$').nth(2).unwrap().to_owned();
        // `$argon2id$v=19$m=19456,t=2,p=1`: algorithm, version and costs.
        assert_eq!(params(dummy_hash()), params(&real));
        assert!(dummy_hash().starts_with("$argon2id$"));
        assert!(!verify("", dummy_hash()));
        assert!(std::ptr::eq(dummy_hash(), dummy_hash()), "made once");
    }
}
