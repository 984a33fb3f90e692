//! argon2id hashing on a few dedicated threads.
//!
//! A hash takes 19 MiB and tens of milliseconds. Run on tokio's blocking
//! pool, a burst of logins spreads those buffers over many threads, and the
//! allocator keeps them per thread: 2,000 logins left ~800 MB resident.
//! A fixed set of threads bounds that to a few buffers, and a bounded queue
//! turns a login flood into 503s instead of a backlog.
//!
//! Each thread also keeps its one buffer for good instead of allocating a
//! new one per hash: glibc raises its mmap threshold once such a block is
//! freed, so later blocks came from malloc arenas, which kept them: 600
//! logins on 2 threads left eight arenas of 38 to 57 MiB each (~430 MB).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Logins that may wait for a hashing thread before new ones get 503.
const QUEUE_CAPACITY: usize = 1024;

enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<Result<String>>,
    },
    Verify {
        stored_hash: String,
        password: String,
        reply: oneshot::Sender<Result<bool>>,
    },
}

pub struct Passwords {
    jobs: mpsc::SyncSender<Job>,
}

impl Passwords {
    /// Starts `threads` hashing threads; they end when this is dropped.
    pub fn start(threads: usize) -> Result<Self> {
        let (jobs, queue) = mpsc::sync_channel(QUEUE_CAPACITY);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || run(&queue))
                .map_err(|e| Error::io("cannot start a password hashing thread", e))?;
        }
        Ok(Self { jobs })
    }

    pub async fn hash(&self, password: String) -> Result<String> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    pub async fn verify(&self, stored_hash: String, password: String) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            stored_hash,
            password,
            reply,
        })?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.jobs.try_send(job).map_err(|error| match error {
            mpsc::TrySendError::Full(_) => Error::Overloaded,
            mpsc::TrySendError::Disconnected(_) => Error::ShuttingDown,
        })
    }
}

fn run(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut hasher = Hasher::default();
    loop {
        let job = match queue.lock() {
            Ok(receiver) => receiver.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else {
            return;
        };
        // A requester that went away no longer needs the answer.
        match job {
            Job::Hash { password, reply } => {
                let _ = reply.send(hasher.hash(&password));
            }
            Job::Verify {
                stored_hash,
                password,
                reply,
            } => {
                let _ = reply.send(hasher.verify(&stored_hash, &password));
            }
        }
    }
}

/// One thread's argon2 working memory (19 MiB with the default parameters),
/// allocated by its first hash and reused by every later one.
#[derive(Default)]
struct Hasher {
    memory: Vec<Block>,
}

impl Hasher {
    /// A new argon2id hash with the default parameters, as a PHC string.
    fn hash(&mut self, password: &str) -> Result<String> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
        self.hash_with(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::default(),
            password.as_bytes(),
            salt.as_salt(),
        )
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
    }

    /// What `PasswordVerifier::verify_password` does: hash again with the
    /// stored hash's algorithm, parameters and salt, compare in constant time.
    fn verify(&mut self, stored_hash: &str, password: &str) -> Result<bool> {
        let parsed = PasswordHash::new(stored_hash)
            .map_err(|e| Error::Internal(format!("stored password hash is unreadable: {e}")))?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let computed = Algorithm::try_from(parsed.algorithm).and_then(|algorithm| {
            let version = parsed
                .version
                .map(Version::try_from)
                .transpose()?
                .unwrap_or_default();
            let params = Params::try_from(&parsed)?;
            self.hash_with(algorithm, version, params, password.as_bytes(), salt)
        });
        Ok(computed.is_ok_and(|hash| hash.hash == Some(expected)))
    }

    /// `PasswordHasher::hash_password` on this thread's memory.
    fn hash_with<'a>(
        &mut self,
        algorithm: Algorithm,
        version: Version,
        params: Params,
        password: &[u8],
        salt: Salt<'a>,
    ) -> password_hash::Result<PasswordHash<'a>> {
        if self.memory.len() < params.block_count() {
            self.memory.resize(params.block_count(), Block::default());
        }
        let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let argon2 = Argon2::new(algorithm, version, params);
        let output = Output::init_with(output_len, |out| {
            Ok(argon2.hash_password_into_with_memory(
                password,
                salt_bytes,
                out,
                &mut self.memory,
            )?)
        })?;
        Ok(PasswordHash {
            algorithm: algorithm.ident(),
            version: Some(version.into()),
            params: ParamsString::try_from(argon2.params())?,
            salt: Some(salt),
            hash: Some(output),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let passwords = Passwords::start(2).unwrap();
        let hash = passwords.hash("123".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(passwords.verify(hash.clone(), "123".into()).await.unwrap());
        assert!(!passwords.verify(hash, "124".into()).await.unwrap());
        assert!(passwords
            .verify("not a hash".into(), "x".into())
            .await
            .is_err());
    }

    /// Hashes stored by the argon2 crate's own `PasswordHasher` (every
    /// version before this one) still verify, and ours verify there.
    #[test]
    fn compatible_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut hasher = Hasher::default();
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        let theirs = Argon2::default()
            .hash_password(b"secret", &salt)
            .unwrap()
            .to_string();
        assert!(hasher.verify(&theirs, "secret").unwrap());
        assert!(!hasher.verify(&theirs, "Secret").unwrap());
        let ours = hasher.hash("secret").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"secret", &parsed)
            .is_ok());
        // Other parameters than the default: the memory grows to fit.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password(b"secret", &salt)
        .unwrap()
        .to_string();
        let big = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(32 * 1024, 2, 1, None).unwrap(),
        )
        .hash_password(b"secret", &salt)
        .unwrap()
        .to_string();
        for stored in [&small, &big, &theirs] {
            assert!(hasher.verify(stored, "secret").unwrap(), "{stored}");
        }
        assert_eq!(hasher.memory.len(), 32 * 1024);
    }
}
