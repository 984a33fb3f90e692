//! The state directory: the token, the outbox, samples set aside, and a
//! lock that keeps two agents from sharing one outbox.
//!
//! ```text
//! STATE_DIR/            0700
//!   token               0600, the server's client_id
//!   lock                held (flock) while an agent runs
//!   outbox/             one file per sample not yet acknowledged
//!   rejected/           samples the server refused as malformed
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};

const TOKEN_FILE: &str = "token";

#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Creates the directory (mode 0700) if missing, and makes an existing
    /// one private: it holds the token.
    pub fn open(path: &Path) -> Result<StateDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| {
                Error::io(
                    format!("cannot create the state directory {}", path.display()),
                    e,
                )
            })?;
        make_private(path)?;
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.path.join("outbox")
    }

    pub fn rejected_dir(&self) -> PathBuf {
        self.path.join("rejected")
    }

    pub fn token_path(&self) -> PathBuf {
        self.path.join(TOKEN_FILE)
    }

    /// The stored token, if there is one.
    pub fn read_token(&self) -> Result<Option<String>> {
        match std::fs::read_to_string(self.token_path()) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|token| !token.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(
                format!("cannot read the token {}", self.token_path().display()),
                e,
            )),
        }
    }

    /// When the token file last changed (to notice a re-enrollment).
    pub fn token_modified(&self) -> Option<SystemTime> {
        std::fs::metadata(self.token_path())
            .and_then(|m| m.modified())
            .ok()
    }

    /// Stores the token durably, readable by the owner only.
    pub fn write_token(&self, token: &str) -> Result<()> {
        write_durably(
            &self.path,
            TOKEN_FILE,
            format!("{token}\n").as_bytes(),
            0o600,
        )
        .map_err(|e| {
            Error::io(
                format!("cannot store the token in {}", self.token_path().display()),
                e,
            )
        })
    }

    /// Takes the directory's lock, or fails if another agent holds it.
    pub fn lock(&self) -> Result<StateLock> {
        let path = self.path.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::Config(format!(
                "another sysmon-agent is running with the state directory {}",
                self.path.display()
            ))),
            Err((_, errno)) => Err(Error::io(
                format!("cannot lock {}", path.display()),
                std::io::Error::from(errno),
            )),
        }
    }
}

/// Held while the agent runs; released when dropped or when the process
/// ends, however it ends.
pub struct StateLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Takes group and other permissions off the state directory, saying so.
fn make_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let cannot = |e| {
        Error::io(
            format!("cannot make the state directory {} private", path.display()),
            e,
        )
    };
    let mode = std::fs::metadata(path)
        .map_err(cannot)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the state directory was readable by others; setting it to 0700"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(cannot)?;
    }
    Ok(())
}

/// Writes `dir/name` so that after a crash or power cut it is either the
/// old file or the complete new one: write a temporary file, fsync it,
/// rename it over `name`, fsync the directory. The temporary is created
/// new (`O_EXCL`), never opened through a link someone left in its place.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let temporary = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        // One left by an interrupted write, or planted: removing a link
        // removes the link, not what it points to.
        match std::fs::remove_file(&temporary) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Makes renames and creations in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether a file name is a temporary left by an interrupted
/// [`write_durably`].
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn token_round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("a/b")).unwrap();
        assert_eq!(state.read_token().unwrap(), None);
        state.write_token("abc").unwrap();
        state.write_token("def").unwrap();
        assert_eq!(state.read_token().unwrap().as_deref(), Some("def"));
        let mode = std::fs::metadata(state.token_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(state.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let leftovers: Vec<_> = std::fs::read_dir(state.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| is_temporary(&e.file_name().to_string_lossy()))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn an_existing_state_directory_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_link_in_place_of_the_temporary_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let name = state
            .token_path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        std::os::unix::fs::symlink(&victim, state.path().join(format!(".{name}.tmp"))).unwrap();
        state.write_token("secret-token").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(state.read_token().unwrap().as_deref(), Some("secret-token"));
    }

    #[test]
    fn one_agent_per_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let held = state.lock().unwrap();
        let error = state.lock().err().expect("second lock refused").to_string();
        assert!(error.contains("another sysmon-agent"), "{error}");
        drop(held);
        assert!(state.lock().is_ok());
    }
}
