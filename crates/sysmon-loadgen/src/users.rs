//! The simulated users: registration (bounded, with progress), and the
//! users file that lets a later run skip it.
//!
//! Client `i` is the user `PREFIX` + `i`. Registering costs the server an
//! argon2 hash, tens of milliseconds of CPU per user, so ten thousand users
//! take minutes; `--users-file FILE` keeps prefix, password and tokens in a
//! JSON file, and a later run with the same file reuses every user it holds
//! (registering only the ones it lacks) after checking each token with one
//! cheap `GET /client/USER/time`. That request also returns the user's last
//! stored sample time, after which the new run's sample times start, so runs
//! never send a time the server already holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clock::micros_from_seconds;
use crate::options::{random_prefix, Mode, Plan};
use crate::{Error, Result};

/// The users file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsersFile {
    pub prefix: String,
    pub password: String,
    pub users: Vec<StoredUser>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredUser {
    pub username: String,
    pub token: String,
}

impl UsersFile {
    /// `None` when the file does not exist yet.
    pub fn load(path: &Path) -> Result<Option<UsersFile>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::UsersFileRead {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::UsersFileParse {
                path: path.to_owned(),
                source,
            })
    }

    /// Writes through a temporary file, so an interrupted write does not
    /// lose the tokens.
    pub fn save(&self, path: &Path) -> Result<()> {
        let write_error = |source| Error::UsersFileWrite {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| write_error(e.into()))?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        std::fs::write(&temporary, text).map_err(write_error)?;
        std::fs::rename(&temporary, path).map_err(write_error)
    }
}

/// A simulated client's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub username: String,
    /// Empty in influx mode.
    pub token: String,
    /// The last sample time the server held for this user before the run.
    pub last_stored_micros: Option<i64>,
}

/// Prepares `plan.clients` users: from the users file, registering the
/// rest. Influx mode only names them (host tags).
pub async fn prepare(plan: &Plan) -> Result<Vec<User>> {
    let file = match (&plan.users_file, plan.mode) {
        (Some(path), Mode::V1Batch | Mode::Ws | Mode::HttpForm | Mode::HttpJson) => {
            UsersFile::load(path)?
        }
        _ => None,
    };
    let (prefix, password) = match &file {
        Some(file) => {
            if plan
                .prefix
                .as_ref()
                .is_some_and(|prefix| *prefix != file.prefix)
            {
                return Err(Error::Options(format!(
                    "--prefix differs from the prefix {:?} in the users file",
                    file.prefix
                )));
            }
            (file.prefix.clone(), file.password.clone())
        }
        None => (
            plan.prefix.clone().unwrap_or_else(random_prefix),
            plan.password.clone(),
        ),
    };
    let usernames: Vec<String> = (0..plan.clients).map(|i| format!("{prefix}{i}")).collect();
    if !plan.mode.is_sysmon() {
        return Ok(usernames
            .into_iter()
            .map(|username| User {
                username,
                token: String::new(),
                last_stored_micros: None,
            })
            .collect());
    }

    let known: HashMap<String, String> = file
        .iter()
        .flat_map(|file| &file.users)
        .map(|user| (user.username.clone(), user.token.clone()))
        .collect();
    let saver = plan.users_file.as_ref().map(|path| Saver {
        path: path.clone(),
        prefix: prefix.clone(),
        password: password.clone(),
        earlier: file.map(|file| file.users).unwrap_or_default(),
    });
    let users = register_all(plan, &usernames, &known, &password, saver.as_ref()).await?;
    if let Some(saver) = &saver {
        saver.save(users.iter())?;
    }
    Ok(users)
}

/// Writes the users file: the users it held before, updated and extended
/// with the ones prepared now.
struct Saver {
    path: PathBuf,
    prefix: String,
    password: String,
    earlier: Vec<StoredUser>,
}

impl Saver {
    fn save<'a>(&self, users: impl Iterator<Item = &'a User>) -> Result<()> {
        let mut stored = self.earlier.clone();
        let mut positions: HashMap<String, usize> = stored
            .iter()
            .enumerate()
            .map(|(position, user)| (user.username.clone(), position))
            .collect();
        for user in users {
            let entry = StoredUser {
                username: user.username.clone(),
                token: user.token.clone(),
            };
            match positions.get(&user.username) {
                Some(&position) => stored[position] = entry,
                None => {
                    positions.insert(user.username.clone(), stored.len());
                    stored.push(entry);
                }
            }
        }
        UsersFile {
            prefix: self.prefix.clone(),
            password: self.password.clone(),
            users: stored,
        }
        .save(&self.path)
    }
}

async fn register_all(
    plan: &Plan,
    usernames: &[String],
    known: &HashMap<String, String>,
    password: &str,
    saver: Option<&Saver>,
) -> Result<Vec<User>> {
    // Registrations queue behind each other's argon2 hashes on the server:
    // allow them much longer than a sample.
    let http = crate::net::http_client(None, plan.timeout.max(Duration::from_secs(120)))?;
    let api = Arc::new(Api {
        http,
        url: plan.url.clone(),
        password: password.to_owned(),
    });
    let semaphore = Arc::new(Semaphore::new(plan.register_concurrency));
    let done = Arc::new(AtomicU64::new(0));
    let registered = Arc::new(AtomicU64::new(0));
    let total = usernames.len();
    let in_file = usernames.iter().filter(|u| known.contains_key(*u)).count();
    if in_file > 0 {
        eprintln!(
            "users: checking the tokens of {in_file} users from the users file \
             (a user whose token is refused logs in again)"
        );
    }
    if total - in_file > 0 {
        eprintln!(
            "users: registering {} new users ({} at a time)",
            total - in_file,
            plan.register_concurrency
        );
    }

    let mut tasks = JoinSet::new();
    for (index, username) in usernames.iter().enumerate() {
        let (api, semaphore, done, registered) = (
            api.clone(),
            semaphore.clone(),
            done.clone(),
            registered.clone(),
        );
        let username = username.clone();
        let token = known.get(&username).cloned();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let user = api.prepare(username, token, &registered).await;
            done.fetch_add(1, Ordering::Relaxed);
            (index, user)
        });
    }

    let started = Instant::now();
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    progress.tick().await;
    let mut users: Vec<Option<User>> = vec![None; total];
    let mut saved = 0u64;
    let mut first_error = None;
    let mut errors = 0usize;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok((index, Ok(user)))) => users[index] = Some(user),
                Some(Ok((_, Err(e)))) => {
                    errors += 1;
                    if first_error.is_none() {
                        first_error = Some(e);
                        // No point in going on: stop the others.
                        tasks.abort_all();
                    }
                }
                Some(Err(e)) if e.is_cancelled() => {}
                Some(Err(e)) => {
                    errors += 1;
                    first_error.get_or_insert(Error::Registration {
                        username: "?".into(),
                        reason: format!("task failed: {e}"),
                    });
                }
            },
            _ = progress.tick() => {
                let done = done.load(Ordering::Relaxed);
                let elapsed = started.elapsed().as_secs_f64();
                eprintln!(
                    "users: {done}/{total} ready ({} registered or logged in, {:.0}/s)",
                    registered.load(Ordering::Relaxed),
                    done as f64 / elapsed.max(0.001)
                );
                // Keep what is registered so far, in case the run is stopped.
                let registered = registered.load(Ordering::Relaxed);
                if let Some(saver) = saver.filter(|_| registered > saved) {
                    saver.save(users.iter().flatten())?;
                    saved = registered;
                }
            }
        }
    }
    if let Some(error) = first_error {
        if errors > 1 {
            eprintln!("users: {errors} users failed; the first error follows");
        }
        return Err(error);
    }
    eprintln!(
        "users: {total} ready ({} registered or logged in, {} reused) in {:.1} s",
        registered.load(Ordering::Relaxed),
        done.load(Ordering::Relaxed) - registered.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    users
        .into_iter()
        .enumerate()
        .map(|(index, user)| {
            user.ok_or_else(|| Error::Registration {
                username: usernames[index].clone(),
                reason: "not prepared".into(),
            })
        })
        .collect()
}

struct Api {
    http: reqwest::Client,
    url: String,
    password: String,
}

/// A failure worth retrying (connection trouble, 503, 500) or not.
enum Attempt<T> {
    Done(T),
    Retry(String),
    Fail(String),
}

const ATTEMPTS: u32 = 5;

impl Api {
    async fn prepare(
        &self,
        username: String,
        token: Option<String>,
        registered: &AtomicU64,
    ) -> Result<User> {
        if let Some(token) = token {
            if let Some(last) = self.last_time(&username, &token).await? {
                return Ok(User {
                    username,
                    token,
                    last_stored_micros: last,
                });
            }
            // The token is not (or no longer) valid: log in again.
        }
        let (token, new) = self.register(&username).await?;
        registered.fetch_add(1, Ordering::Relaxed);
        let last_stored_micros = if new {
            None
        } else {
            self.last_time(&username, &token)
                .await?
                .ok_or_else(|| Error::Registration {
                    username: username.clone(),
                    reason: "the token just issued was refused".into(),
                })?
        };
        Ok(User {
            username,
            token,
            last_stored_micros,
        })
    }

    async fn retrying<T, F, Fut>(&self, username: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let mut last_reason = String::new();
        for round in 0..ATTEMPTS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(round))).await;
            }
            match attempt().await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Retry(reason) => last_reason = reason,
                Attempt::Fail(reason) => {
                    return Err(Error::Registration {
                        username: username.to_owned(),
                        reason,
                    })
                }
            }
        }
        Err(Error::Registration {
            username: username.to_owned(),
            reason: format!("{last_reason} (after {ATTEMPTS} attempts)"),
        })
    }

    /// `POST /client`: the token, and whether the user is new.
    async fn register(&self, username: &str) -> Result<(String, bool)> {
        let body = &serde_json::json!({"username": username, "pass": self.password});
        self.retrying(username, || async move {
            let response = match self
                .http
                .post(format!("{}/client", self.url))
                .json(body)
                .send()
                .await
            {
                Ok(response) => response,
                Err(e) => return Attempt::Retry(format!("request failed: {e}")),
            };
            let status = response.status();
            let body: serde_json::Value = match response.json().await {
                Ok(body) => body,
                Err(e) => return Attempt::Retry(format!("status {status}, unreadable body: {e}")),
            };
            match status {
                StatusCode::OK => match body["client_id"].as_str() {
                    Some(token) => {
                        Attempt::Done((token.to_owned(), body.get("registration").is_some()))
                    }
                    None => Attempt::Fail(format!("no client_id in the answer {body}")),
                },
                StatusCode::UNAUTHORIZED => Attempt::Fail(format!(
                    "refused ({body}); does the user exist with another password?"
                )),
                s if s.is_server_error() => Attempt::Retry(format!("status {s}: {body}")),
                s => Attempt::Fail(format!("status {s}: {body}")),
            }
        })
        .await
    }

    /// `GET /client/USER/time`: `None` when the token is refused, else the
    /// last stored sample time (`None` inside when the log is empty).
    async fn last_time(&self, username: &str, token: &str) -> Result<Option<Option<i64>>> {
        self.retrying(username, || async move {
            let response = match self
                .http
                .get(format!("{}/client/{username}/time", self.url))
                .header("Authorization", token)
                .send()
                .await
            {
                Ok(response) => response,
                Err(e) => return Attempt::Retry(format!("request failed: {e}")),
            };
            let status = response.status();
            let body: serde_json::Value = match response.json().await {
                Ok(body) => body,
                Err(e) => return Attempt::Retry(format!("status {status}, unreadable body: {e}")),
            };
            match status {
                StatusCode::OK => match body["end"].as_f64().and_then(micros_from_seconds) {
                    Some(end) => Attempt::Done(Some(Some(end))),
                    None => Attempt::Fail(format!("no end time in {body}")),
                },
                StatusCode::NOT_ACCEPTABLE => Attempt::Done(Some(None)),
                StatusCode::UNAUTHORIZED => Attempt::Done(None),
                s if s.is_server_error() => Attempt::Retry(format!("status {s}: {body}")),
                s => Attempt::Fail(format!("reading the log span: status {s}: {body}")),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        assert_eq!(UsersFile::load(&path).unwrap(), None);
        let file = UsersFile {
            prefix: "lgabc_".into(),
            password: "pw".into(),
            users: vec![StoredUser {
                username: "lgabc_0".into(),
                token: "t0".into(),
            }],
        };
        file.save(&path).unwrap();
        assert_eq!(UsersFile::load(&path).unwrap(), Some(file));
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            UsersFile::load(&path),
            Err(Error::UsersFileParse { .. })
        ));
    }
}
