//! argon2id hashing on a few dedicated threads.
//!
//! A hash takes 19 MiB and tens of milliseconds. Run on tokio's blocking
//! pool, a burst of logins spreads those buffers over many threads, and the
//! allocator keeps them per thread: 2,000 logins left ~800 MB resident.
//! A fixed set of threads bounds that to a few buffers, and a bounded queue
//! turns a login flood into 503s instead of a backlog.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
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
                let _ = reply.send(hash(&password));
            }
            Job::Verify {
                stored_hash,
                password,
                reply,
            } => {
                let _ = reply.send(verify(&stored_hash, &password));
            }
        }
    }
}

fn hash(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
}

fn verify(stored_hash: &str, password: &str) -> Result<bool> {
    let parsed = PasswordHash::new(stored_hash)
        .map_err(|e| Error::Internal(format!("stored password hash is unreadable: {e}")))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
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
}
