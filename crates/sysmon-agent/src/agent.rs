//! Wiring: state directory, credentials, outbox, then the collector and
//! sender threads, until a stop is requested.
//!
//! ```text
//! collector thread --push--> outbox (disk) --oldest batch--> sender thread --> transport --> server
//!        tick every interval          ^                            |
//!                                     +------ remove acknowledged --+
//! ```

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::collection::{run_collector, Stats};
use crate::config::{Config, TransportKind};
use crate::enroll::{enroll, Enrolment};
use crate::error::{Error, Result};
use crate::outbox::Outbox;
use crate::sender::{Credentials, Sender};
use crate::state::StateDir;
use crate::transport::http::HttpTransport;
use crate::transport::ws::WsTransport;
use crate::transport::Transport;
use crate::trust::{check_transport_security, Endpoint, Trust};
use crate::wake::Wake;

/// How long a stop waits for a send in flight to finish. A send cut short
/// is harmless: its samples are still in the outbox.
const SENDER_GRACE: Duration = Duration::from_secs(5);

/// What the agent did, reported when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub collected: u64,
    pub sent: u64,
    pub dropped: u64,
    pub rejected: u64,
    pub waiting: usize,
}

/// Checks that the binary can speak the URL's scheme.
pub fn check_scheme(server: &str) -> Result<()> {
    if server.starts_with("https://") && !cfg!(feature = "tls") {
        return Err(Error::Config(
            "this sysmon-agent was built without TLS (cargo feature `tls`): use an http:// server URL".into(),
        ));
    }
    Ok(())
}

/// The server, checked: a scheme this binary speaks, encryption to any
/// other host than this one unless allowed, and the trust store loaded.
fn endpoint(config: &Config, server: &str) -> Result<Endpoint> {
    check_scheme(server)?;
    check_transport_security(server, config.allow_insecure)?;
    Ok(Endpoint {
        server: server.to_owned(),
        timeout: config.timeout,
        trust: Trust::load(config.ca_file.as_deref())?,
    })
}

fn enrolment(config: &Config, name: &str, password: &str) -> Enrolment {
    Enrolment {
        name: name.to_owned(),
        password: password.to_owned(),
        token: config.enroll_token.clone(),
    }
}

/// Enrolls, stores the token, returns it (`--enroll`).
pub fn enroll_and_store(config: &Config) -> Result<String> {
    let (Some(server), Some(name), Some(password)) =
        (&config.server, &config.name, &config.password)
    else {
        return Err(Error::Config(
            "--enroll needs --server, --name and --password".into(),
        ));
    };
    let state = StateDir::open(&config.state_dir)?;
    let token = enroll(
        &endpoint(config, server)?,
        &enrolment(config, name, password),
    )?;
    state.write_token(&token)?;
    Ok(token)
}

/// Called first in each worker thread, with its name (`collector`,
/// `sender`): nothing in `sysmon-agent`; a panic on request in the tests'
/// `sysmon-agent-fault-injection`.
pub type ThreadStart = fn(&'static str);

/// Runs until `wake` is stopped (SIGTERM), or a thread fails.
pub fn run(config: &Config, wake: Arc<Wake>, at_thread_start: ThreadStart) -> Result<Summary> {
    let server = config
        .server
        .clone()
        .ok_or_else(|| Error::Config("no server URL".into()))?;
    let endpoint = endpoint(config, &server)?;
    let state = StateDir::open(&config.state_dir)?;
    let _lock = state.lock()?;

    // An explicit token wins, then logging in with name and password, then
    // the stored token. Settle what can be settled without the network
    // first: a missing token is a configuration error, reported at once.
    let mut token = config.token.clone();
    let mut login = None;
    if let Some(explicit) = &token {
        if state.read_token()?.as_ref() != Some(explicit) {
            state.write_token(explicit)?;
        }
    } else if let (Some(name), Some(password)) = (&config.name, &config.password) {
        login = Some(enrolment(config, name, password));
    } else {
        token = state.read_token()?;
        if token.is_none() {
            return Err(Error::Config(format!(
                "no token in {}: enroll first with --name and --password, or give --token",
                state.token_path().display()
            )));
        }
    }

    let outbox = Arc::new(Outbox::open(
        &state.outbox_dir(),
        &state.rejected_dir(),
        config.outbox,
    )?);
    let transport: Box<dyn Transport> = match config.transport {
        TransportKind::Http => Box::new(HttpTransport::new(&endpoint)),
        TransportKind::Ws => Box::new(WsTransport::new(&endpoint)),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        server,
        transport = config.transport.as_str(),
        interval_s = config.interval.as_secs(),
        state_dir = %state.path().display(),
        backlog = outbox.len(),
        outbox_max_bytes = config.outbox.max_bytes,
        outbox_max_age_s = config.outbox.max_age.as_secs(),
        "sysmon-agent started"
    );

    // Collection starts before anything waits for the network.
    let stats = Arc::new(Stats::default());
    let died = Arc::new(OnceLock::new());
    let collector = {
        let (outbox, wake, stats) = (outbox.clone(), wake.clone(), stats.clone());
        let guard = EndGuard::new("collector", wake.clone(), died.clone());
        let interval = config.interval;
        std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || {
                let _guard = guard;
                at_thread_start("collector");
                run_collector(&outbox, &wake, interval, &stats);
            })
            .map_err(|e| Error::io("cannot start the collector thread", e))?
    };

    // Logging in: a refused password stops the agent (exit status 2); an
    // unreachable server does not, the sender retries.
    let mut enroll_later = None;
    if let Some(enrolment) = login {
        let name = enrolment.name.clone();
        match enroll(&endpoint, &enrolment) {
            Ok(enrolled) => {
                tracing::info!(name, token_file = %state.token_path().display(), "enrolled; token stored");
                if let Err(error) = state.write_token(&enrolled) {
                    tracing::error!(%error, "cannot store the token: enrollment will be needed again after a restart");
                }
                token = Some(enrolled);
            }
            Err(error @ (Error::Unauthorized(_) | Error::Enrollment(_))) => {
                wake.stop();
                let _ = collector.join();
                return Err(error);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot enroll yet; collecting meanwhile, enrolling when the server answers");
                enroll_later = Some(enrolment);
            }
        }
    }

    let sender = {
        let (outbox, wake, stats) = (outbox.clone(), wake.clone(), stats.clone());
        let guard = EndGuard::new("sender", wake.clone(), died.clone());
        let credentials = Credentials {
            state: state.clone(),
            endpoint: endpoint.clone(),
            token,
            enroll: enroll_later,
        };
        let (retry, batch_size) = (config.retry, config.batch_size);
        std::thread::Builder::new()
            .name("sender".into())
            .spawn(move || {
                let _guard = guard;
                at_thread_start("sender");
                Sender::new(
                    &outbox,
                    &wake,
                    &stats,
                    transport,
                    credentials,
                    retry,
                    batch_size,
                )
                .run();
            })
            .map_err(|e| Error::io("cannot start the sender thread", e))?
    };

    while !wake.sleep(Duration::from_secs(3600)) {}
    let _ = collector.join();
    let deadline = Instant::now() + SENDER_GRACE;
    while !sender.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let summary = Summary {
        collected: stats.collected.load(Ordering::Relaxed),
        sent: stats.sent.load(Ordering::Relaxed),
        dropped: outbox.dropped_total(),
        rejected: stats.rejected.load(Ordering::Relaxed),
        waiting: outbox.len(),
    };
    tracing::info!(
        collected = summary.collected,
        sent = summary.sent,
        dropped_total = summary.dropped,
        rejected = summary.rejected,
        waiting = summary.waiting,
        "stopped; samples waiting in the outbox are sent after the next start"
    );
    // Not a configuration error: a restart is what the guard below is for.
    if let Some(thread) = died.get() {
        return Err(Error::WorkerDied(thread));
    }
    Ok(summary)
}

/// Stops the whole agent when a worker thread ends by itself (a panic):
/// better a restart by systemd than an agent that silently stopped
/// collecting or sending. `died` keeps the first such thread's name, for
/// [`Error::WorkerDied`], whose exit status systemd restarts.
struct EndGuard {
    name: &'static str,
    wake: Arc<Wake>,
    died: Arc<OnceLock<&'static str>>,
}

impl EndGuard {
    fn new(name: &'static str, wake: Arc<Wake>, died: Arc<OnceLock<&'static str>>) -> EndGuard {
        EndGuard { name, wake, died }
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if !self.wake.is_stopped() {
            tracing::error!(
                thread = self.name,
                "a worker thread ended unexpectedly; stopping"
            );
            let _ = self.died.set(self.name);
            self.wake.stop();
        }
    }
}
