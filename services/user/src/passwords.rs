//! Password hashing with bounded memory: argon2id over a small pool of reused working buffers.
//!
//! Each argon2id hash with the default parameters needs 19 MiB of working memory. Allocating it
//! per hash let glibc move those allocations onto per-thread heaps that are never trimmed, so the
//! service grew by 19 MiB per hash up to hundreds of MiB. Here at most `concurrency` hashes run
//! at once, each in a buffer taken from the pool and put back afterwards, so the service holds
//! at most `concurrency` buffers. A hash waiting for a buffer waits asynchronously; it never fails.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Hashes and verifies passwords as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
#[derive(Clone)]
pub struct Passwords {
    pool: Arc<Pool>,
}

struct Pool {
    /// One permit per buffer: the bound on hashes running at once.
    permits: Arc<Semaphore>,
    /// Idle buffers. Allocated on first use, so an idle service holds none.
    idle: Mutex<Vec<Vec<Block>>>,
}

impl Passwords {
    /// At most `concurrency` hashes at once, and at most that many buffers held.
    pub fn new(concurrency: NonZeroUsize) -> Self {
        Self {
            pool: Arc::new(Pool {
                permits: Arc::new(Semaphore::new(concurrency.get())),
                idle: Mutex::new(Vec::with_capacity(concurrency.get())),
            }),
        }
    }

    /// A new PHC string for `password` with the default parameters and a random salt.
    pub async fn hash(&self, password: String) -> Result<String> {
        self.run(move |memory| hash_with_memory(memory, &password))
            .await?
    }

    /// Whether `password` matches the PHC string `hash`, using the hash's own parameters.
    /// Anything that is not a valid argon2 hash never matches.
    pub async fn verify(&self, hash: String, password: String) -> Result<bool> {
        self.run(move |memory| verify_with_memory(memory, &hash, &password))
            .await
    }

    /// Runs `work` on a blocking thread with a pooled buffer, once one is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T> {
        let permit = self.pool.permits.clone().acquire_owned().await?;
        let mut lease = Lease {
            buffer: self.pool.idle.lock().expect("pool lock").pop(),
            pool: self.pool.clone(),
            _permit: permit,
        };
        // The lease moves into the blocking task, so the buffer and its permit return only when
        // the hash is done, even if the request that asked for it is gone by then.
        let joined = tokio::task::spawn_blocking(move || {
            let buffer = lease.buffer.get_or_insert_with(default_buffer);
            work(buffer)
        })
        .await?;
        Ok(joined)
    }

    /// How many buffers the pool holds now (idle ones; for tests).
    pub fn idle_buffers(&self) -> usize {
        self.pool.idle.lock().expect("pool lock").len()
    }
}

/// A buffer on loan with the permit that allows using it; dropping it returns both.
struct Lease {
    buffer: Option<Vec<Block>>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Runs before the permit is released, so a waiter always finds this buffer.
        if let Some(buffer) = self.buffer.take()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(buffer);
        }
    }
}

fn default_buffer() -> Vec<Block> {
    vec![Block::new(); Params::DEFAULT.block_count()]
}

/// argon2id with the crate's defaults (the OWASP-recommended m=19 MiB, t=2, p=1), the same PHC
/// string `Argon2::default().hash_password` makes.
pub fn hash_with_memory(memory: &mut [Block], password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let params = Params::DEFAULT;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt_bytes = [0u8; argon2::password_hash::Salt::MAX_LENGTH];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| anyhow::anyhow!("decoding a new salt: {e}"))?;
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    fill_output(&argon2, memory, password, salt_bytes, &mut output)
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|e| anyhow::anyhow!("encoding hash parameters: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).map_err(|e| anyhow::anyhow!("encoding a hash: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Recomputes the hash of `password` with the algorithm, version, parameters and salt stored in
/// `hash` and compares in constant time (`Output`'s equality is constant-time).
pub fn verify_with_memory(memory: &mut [Block], hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let Ok(version) = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    // Carries the stored output length too.
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_bytes = [0u8; argon2::password_hash::Salt::MAX_LENGTH];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut output = vec![0u8; expected.len()];
    fill_output(&argon2, memory, password, salt_bytes, &mut output).is_ok()
        && Output::new(&output).is_ok_and(|computed| computed == expected)
}

/// Hashes in the pooled buffer when it is large enough (argon2 uses only the first
/// `block_count` blocks); a stored hash asking for more memory gets a one-off buffer.
fn fill_output(
    argon2: &Argon2<'_>,
    memory: &mut [Block],
    password: &str,
    salt: &[u8],
    output: &mut [u8],
) -> argon2::Result<()> {
    let needed = argon2.params().block_count();
    if memory.len() >= needed {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt, output, memory)
    } else {
        argon2.hash_password_into(password.as_bytes(), salt, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn passwords(concurrency: usize) -> Passwords {
        Passwords::new(NonZeroUsize::new(concurrency).unwrap())
    }

    #[tokio::test]
    async fn new_hashes_have_the_stored_format_and_verify_only_their_password() {
        let passwords = passwords(1);
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        let parsed = PasswordHash::new(&hash).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(parsed.version, Some(19));
        assert_eq!(parsed.params.to_string(), "m=19456,t=2,p=1");
        assert_eq!(parsed.hash.unwrap().len(), 32);
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));

        let verify = |p: &str| passwords.verify(hash.clone(), p.into());
        assert!(verify("correct horse").await.unwrap());
        assert!(!verify("wrong horse").await.unwrap());
        assert!(!verify("").await.unwrap());
        assert!(
            !passwords
                .verify("not a hash".into(), "correct horse".into())
                .await
                .unwrap()
        );
        // Two hashes of one password differ by their salt.
        let again = passwords.hash("correct horse".into()).await.unwrap();
        assert_ne!(hash, again);
    }

    #[tokio::test]
    async fn hashes_from_the_previous_code_verify_and_new_ones_verify_with_it() {
        let passwords = passwords(1);
        // The previous code: `Argon2::default().hash_password` and `verify_password`.
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let old = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(
            passwords
                .verify(old.clone(), "correct horse".into())
                .await
                .unwrap()
        );
        assert!(!passwords.verify(old, "wrong horse".into()).await.unwrap());

        let new = passwords.hash("correct horse".into()).await.unwrap();
        let parsed = PasswordHash::new(&new).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong horse", &parsed)
                .is_err()
        );
    }

    #[tokio::test]
    async fn hashes_with_other_parameters_verify_with_their_own() {
        let passwords = passwords(1);
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        for (m, t, p, len, algorithm) in [
            (8192, 1, 1, 32, Algorithm::Argon2id), // smaller: fits the pooled buffer
            (32768, 1, 1, 32, Algorithm::Argon2id), // larger: a one-off buffer
            (19456, 3, 2, 16, Algorithm::Argon2id), // other lanes and output length
            (8192, 2, 1, 32, Algorithm::Argon2i),
        ] {
            let params = Params::new(m, t, p, Some(len)).unwrap();
            let stored = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string();
            assert!(
                passwords
                    .verify(stored.clone(), "correct horse".into())
                    .await
                    .unwrap(),
                "{stored}"
            );
            assert!(
                !passwords
                    .verify(stored.clone(), "wrong horse".into())
                    .await
                    .unwrap(),
                "{stored}"
            );
        }
        // The pooled buffer survived the one-off and is still the default size.
        assert_eq!(passwords.idle_buffers(), 1);
    }

    #[test]
    fn a_tampered_hash_does_not_verify() {
        let mut memory = default_buffer();
        let hash = hash_with_memory(&mut memory, "correct horse").unwrap();
        assert!(verify_with_memory(&mut memory, &hash, "correct horse"));
        // Change one character of the encoded output.
        let mut tampered = hash.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(!verify_with_memory(&mut memory, &tampered, "correct horse"));
        // Parameters are part of the hash: the same output under other parameters fails.
        let other_params = hash.replace("t=2", "t=1");
        assert!(!verify_with_memory(
            &mut memory,
            &other_params,
            "correct horse"
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_hashes_all_succeed_within_the_bound() {
        let concurrency = 2;
        let passwords = passwords(concurrency);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (passwords, running, most) = (passwords.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    // Counts hashes inside the pool, through the same path as `hash`.
                    passwords
                        .run(move |memory| {
                            use std::sync::atomic::Ordering::SeqCst;
                            let now = running.fetch_add(1, SeqCst) + 1;
                            most.fetch_max(now, SeqCst);
                            let hash = hash_with_memory(memory, &format!("password {i}"));
                            running.fetch_sub(1, SeqCst);
                            hash
                        })
                        .await
                        .unwrap()
                        .unwrap()
                })
            })
            .collect();
        let mut hashes = Vec::new();
        for task in tasks {
            hashes.push(task.await.unwrap());
        }
        for (i, hash) in hashes.into_iter().enumerate() {
            assert!(
                passwords
                    .verify(hash, format!("password {i}"))
                    .await
                    .unwrap()
            );
        }
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!(most <= concurrency, "{most} hashes ran at once");
        assert!(passwords.idle_buffers() <= concurrency);
        assert!(passwords.idle_buffers() >= 1);
    }

    #[tokio::test]
    async fn a_hash_whose_request_is_dropped_still_returns_its_buffer() {
        let passwords = passwords(1);
        let abandoned = passwords.hash("correct horse".into());
        // Polled once: it holds the only permit and runs on a blocking thread, then is dropped.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), abandoned).await;
        // The next hash waits for that one to finish and reuses its buffer.
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(
            passwords
                .verify(hash, "correct horse".into())
                .await
                .unwrap()
        );
        assert_eq!(passwords.idle_buffers(), 1);
    }
}
