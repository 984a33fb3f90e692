//! Wiring: open the store, start the services, bind the listener, serve
//! until told to stop, then shut down in order so that nothing accepted is
//! lost.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Local;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::connections::{self, ConnectionLimits};
use crate::error::{Error, Result};
use crate::proxy::TrustedProxies;
use crate::routes;
use crate::services::alerts::Alerts;
use crate::services::auth::{Auth, RegistrationMode, FIRST_ADMIN};
use crate::services::ingest::{Feeds, Ingest};
use crate::services::integrations::Integrations;
use crate::services::leadership::Leadership;
use crate::services::metrics::Metrics;
use crate::services::peers;
use crate::services::readiness::Readiness;
use crate::services::reads::Reads;
use crate::services::retention;
use crate::services::rollups::Rollups;
use crate::services::self_monitor::SelfMonitor;
use crate::services::status_log::StatusLog;
use crate::state::{AppState, Services};
use crate::store;
use crate::tls;
use tokio_rustls::TlsAcceptor;

/// A server that is bound and ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Folded once more after the writers stop, before the store closes.
    rollups: Arc<Rollups>,
    folder: JoinHandle<()>,
    /// Closed last, once every writer has finished.
    store: Arc<dyn store::Store>,
    ingest_writers: JoinSet<()>,
    background: Vec<JoinHandle<()>>,
    services_stop: CancellationToken,
    shutdown_grace: Duration,
    /// How long SIGTERM leaves `/readyz` failing before connections close.
    shutdown_drain: Duration,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    proxies: TrustedProxies,
}

impl Application {
    /// Opens the store (running migrations), starts the services and binds
    /// the address. Errors here are configuration errors: the caller exits.
    pub async fn build(config: &Config) -> Result<Application> {
        let metrics = Arc::new(Metrics::new());
        let replica = config
            .read_replica_url
            .clone()
            .map(|url| store::ReadReplica {
                url,
                reads: metrics.replica_reads(),
            });
        let store =
            store::connect(&config.database_url, config.ingest.store_options(), replica).await?;
        if config.ingest.durability == store::Durability::Relaxed {
            tracing::warn!(
                "ingest.durability is relaxed: an acknowledged sample survives sysmon \
                 crashing, but not a power cut or an OS crash just after"
            );
        }
        let status_log = StatusLog::open(config.status_log.clone())?;
        let listener = TcpListener::bind(&config.bind)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.bind)))?;

        let services_stop = CancellationToken::new();
        let tls = match &config.tls {
            Some(files) => Some(tls::acceptor(files, services_stop.clone())?),
            None => None,
        };
        let rollups = Rollups::start(store.clone(), config.ingest.rollups, metrics.clone()).await?;
        let folder = rollups.clone().spawn(services_stop.clone());
        let (leadership, leadership_task) =
            Leadership::start(store.clone(), services_stop.clone()).await;
        let (alerts, alert_feed, alert_tasks) = Alerts::start(
            store.clone(),
            config.alerts.clone(),
            &config.bind,
            metrics.clone(),
            leadership.clone(),
            services_stop.clone(),
        )
        .await?;
        let (announcements, announced) = peers::announce_channel(store.as_ref()).unzip();
        let feeds = Feeds {
            alerts: Some(alert_feed),
            peers: announcements,
        };
        let (ingest, ingest_writers) = Ingest::start(
            store.clone(),
            rollups.clone(),
            &config.ingest,
            config.retention.raw,
            metrics.clone(),
            feeds,
            services_stop.clone(),
        );
        let peer_tasks = match announced {
            Some(announced) => {
                let alerts = alerts.clone();
                peers::start(
                    store.clone(),
                    ingest.clone(),
                    Arc::new(move || alerts.wants_peer_samples()),
                    announced,
                    services_stop.clone(),
                )
            }
            None => Vec::new(),
        };
        let (monitor, sampler) = SelfMonitor::start(services_stop.clone());
        let status_writer = status_log.spawn(monitor.watch(), services_stop.clone());

        let auth = Arc::new(Auth::new(store.clone(), config.login, config.registration)?);
        if config.registration.mode == RegistrationMode::Open && !config.listens_on_loopback() {
            tracing::warn!(
                bind = %config.bind,
                "registration is open to anyone who reaches this address: set \
                 `registration: {{mode: closed}}` and add clients with `sysmon-server client add`, \
                 unless every host that can reach it may register"
            );
        }
        let initial_password = config.dashboard.initial_admin_password.as_deref();
        if let Some(password) = auth.ensure_first_admin(initial_password).await? {
            hand_over_first_password(&password, &config.status_log.path);
        }
        let retention_job = retention::spawn(
            store.clone(),
            config.retention,
            leadership,
            services_stop.clone(),
        );
        let revocation_watch = auth.clone().watch_revocations(services_stop.clone());

        let integrations =
            Integrations::new(store.clone(), ingest.clone(), metrics.clone(), auth.clone());
        let readiness = Arc::new(Readiness::new(store.clone(), ingest.clone()));
        let state = AppState::new(Services {
            alerts,
            auth,
            reads: Reads::new(
                store.clone(),
                rollups.clone(),
                config.retention,
                config.downloads,
            ),
            integrations,
            ingest,
            monitor: Arc::new(monitor),
            readiness,
            metrics,
            started_at: Local::now(),
            shutdown: CancellationToken::new(),
            session_lifetime: config.dashboard.session_lifetime,
            limits: config.limits,
        });
        Ok(Application {
            listener,
            state,
            rollups,
            folder,
            store,
            ingest_writers,
            background: [sampler, status_writer, retention_job, revocation_watch]
                .into_iter()
                .chain(alert_tasks)
                .chain(peer_tasks)
                .chain([leadership_task])
                .collect(),
            services_stop,
            shutdown_grace: config.shutdown_grace,
            shutdown_drain: config.shutdown_drain,
            limits: config.limits,
            tls,
            proxies: config.trusted_proxies.clone(),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the bound address", e))
    }

    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Serves until `stop` resolves, then: stops accepting, closes
    /// WebSockets, lets in-flight requests finish, commits every queued
    /// sample, and closes the store.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Application {
            listener,
            state,
            rollups,
            folder,
            store,
            mut ingest_writers,
            background,
            services_stop,
            shutdown_grace,
            shutdown_drain,
            limits,
            tls,
            proxies,
        } = self;
        let connections_stop = state.shutdown.clone();
        let metrics = state.metrics.clone();
        let readiness = state.readiness.clone();
        let app = routes::router(state);

        let signalled = connections_stop.clone();
        tokio::spawn(async move {
            stop.await;
            readiness.drain();
            if !shutdown_drain.is_zero() {
                tracing::info!(
                    drain_s = shutdown_drain.as_secs_f64(),
                    "shutting down: /readyz answers 503 while requests are still served, so load balancers move away"
                );
                tokio::time::sleep(shutdown_drain).await;
            }
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            signalled.cancel();
        });
        let mut serve = tokio::spawn(connections::serve(
            listener,
            app,
            limits,
            tls,
            proxies,
            metrics,
            connections_stop.clone(),
        ));

        // Requests in flight may still be waiting for their commit, so the
        // writers keep running until the server has stopped serving.
        tokio::select! {
            served = &mut serve => log_serve_outcome(served),
            _ = connections_stop.cancelled() => {
                match tokio::time::timeout(shutdown_grace, &mut serve).await {
                    Ok(served) => log_serve_outcome(served),
                    Err(_) => {
                        tracing::warn!(grace_s = shutdown_grace.as_secs_f64(), "requests still open after the grace period; closing them");
                        serve.abort();
                    }
                }
            }
        }

        services_stop.cancel();
        while let Some(outcome) = ingest_writers.join_next().await {
            if let Err(error) = outcome {
                tracing::error!(%error, "an ingest writer failed");
            }
        }
        // The writers are done: what they committed is all pending now.
        let _ = folder.await;
        if let Err(error) = rollups.fold().await {
            tracing::warn!(%error, "last rollup fold failed; the next start folds from the journal");
        }
        for task in background {
            let _ = task.await;
        }
        store.close().await;
        tracing::info!("stopped; every acknowledged sample is committed");
        Ok(())
    }
}

/// The file a generated first-admin password is written to, beside the
/// status log (the server's working files).
pub const FIRST_PASSWORD_FILE: &str = "initial-admin-password";

/// Gives the operator the generated password of the first dashboard user
/// in a file only this user can read, not in the log, which others (and
/// log shippers) read. Should the file not be writable, the log is the
/// only way left, and says so.
fn hand_over_first_password(password: &str, status_log: &Path) {
    let dir = status_log
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = dir.join(FIRST_PASSWORD_FILE);
    match write_private(&file, password) {
        Ok(()) => tracing::warn!(
            user = FIRST_ADMIN,
            file = %file.display(),
            "created the first dashboard user; its password is in the file (readable by this \
             user only): log in at / with it, then delete the file"
        ),
        Err(error) => tracing::warn!(
            user = FIRST_ADMIN,
            password,
            %error,
            file = %file.display(),
            "created the first dashboard user; its password cannot be written to the file, so \
             it is shown here, once: log in at / and keep it"
        ),
    }
}

/// Writes `text` to a new file of mode 0600 (replacing one left by an
/// earlier start, never writing through a link in its place).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{text}")?;
    file.sync_all()
}

fn log_serve_outcome(served: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(error) = served {
        tracing::error!(%error, "the HTTP server task failed");
    }
}
