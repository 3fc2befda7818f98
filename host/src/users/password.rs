//! Password hashing with argon2id into PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
//!
//! Hashing is deliberately slow and memory-hungry, so it runs on the
//! blocking pool and at most one hash per thread allowed (one per core by
//! default) runs at a time: a burst of registrations queues instead of
//! claiming `burst x memory` at once. How long that queue may grow is the
//! caller's decision (`Registrations` bounds it and answers 503 beyond).
//!
//! Nothing here verifies a password against a stored hash on a request's
//! behalf: a retry is compared by its keyed digest instead (`secret`).

use std::sync::Arc;

use anyhow::Context;
#[cfg(test)]
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::command::Password;

/// The cost of a hash. The defaults are OWASP's first recommendation for
/// argon2id (19 MiB, 2 passes, 1 lane), also the `argon2` crate's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Settings {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Argon2Settings {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

/// Hashes and verifies passwords, a bounded number at a time.
#[derive(Debug, Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// A hasher with `settings`, refused when argon2 does not accept them.
    pub fn new(settings: Argon2Settings) -> anyhow::Result<Hasher> {
        Hasher::with_threads(settings, cores())
    }

    /// A hasher running at most `threads` hashes at once.
    pub fn with_threads(settings: Argon2Settings, threads: usize) -> anyhow::Result<Hasher> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters {settings:?}: {e}"))?;
        anyhow::ensure!(threads > 0, "password hashing needs at least one thread");
        Ok(Hasher { params, permits: Arc::new(Semaphore::new(threads)) })
    }

    /// The PHC string of `password` with a fresh random salt.
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let (hasher, password) = (self.clone(), password.clone());
        self.blocking(move || hasher.hash_now(password.expose())).await?
    }

    /// Hashes on the calling thread (for benchmarks and tests).
    pub fn hash_now(&self, password: &str) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut password_hash::rand_core::OsRng);
        let hash = self
            .argon2()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
        Ok(hash.to_string())
    }

    #[cfg(test)]
    fn verify_now(&self, password: &str, phc: &str) -> anyhow::Result<bool> {
        let parsed = PasswordHash::new(phc).map_err(|e| anyhow::anyhow!("stored password hash is not PHC: {e}"))?;
        Ok(self.argon2().verify_password(password.as_bytes(), &parsed).is_ok())
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Runs `work` on a blocking thread once a hashing permit is free. The
    /// permit goes with the work, not with the request: a client that hangs
    /// up cannot free it while its hash still runs.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let permit = self.permits.clone().acquire_owned().await.context("the password hasher is closed")?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .context("password hashing panicked")
    }
}

/// The machine's cores (1 if unknown).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_argon2id_phc_strings_that_verify() {
        let hasher = Hasher::new(Argon2Settings { memory_kib: 64, iterations: 1, parallelism: 1 }).expect("settings");
        let first = hasher.hash_now("correct horse").expect("hash");
        let second = hasher.hash_now("correct horse").expect("hash");
        assert!(first.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{first}");
        assert_ne!(first, second, "each hash has its own salt");
        assert!(hasher.verify_now("correct horse", &first).expect("verify"));
        assert!(!hasher.verify_now("correct horse!", &first).expect("verify"));
    }

    #[test]
    fn parameters_argon2_refuses_are_refused_up_front() {
        assert!(Hasher::new(Argon2Settings { memory_kib: 1, iterations: 1, parallelism: 1 }).is_err());
        assert!(Hasher::new(Argon2Settings { iterations: 0, ..Argon2Settings::default() }).is_err());
    }
}
