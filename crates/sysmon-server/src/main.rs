//! `sysmon-server`: load the configuration, start, serve until a signal.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use sysmon_server::config::{
    CliOptions, ClientCommand, Command, EnrollTokenCommand, FleetTokenCommand, LogFormat,
    UserCommand,
};
use sysmon_server::store::redact_password;
use sysmon_server::{Application, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // clap reads the variables that stand for flags; an empty one is unset.
    let options: CliOptions = sysmon_core::settings::parse();
    let config = Config::load(&options);
    init_logging(config.as_ref().map(|c| c.log_format).unwrap_or_default());
    raise_open_file_limit();
    let outcome = match (config, options.command) {
        (Ok(config), None) => run(config).await,
        (Ok(config), Some(Command::User(command))) => manage_users(config, command).await,
        (Ok(config), Some(Command::Client(command))) => manage_clients(config, command).await,
        (Ok(config), Some(Command::EnrollToken(command))) => {
            manage_enroll_tokens(config, command).await
        }
        (Ok(config), Some(Command::FleetToken(command))) => {
            manage_fleet_tokens(config, command).await
        }
        (Err(error), _) => Err(error.into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let config_file = config
        .config_file
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "none".to_owned());
    let app = Application::build(&config).await.context("cannot start")?;
    tracing::info!(
        address = %app.local_addr()?,
        store = app.store_kind(),
        database = %redact_password(&config.database_url),
        config_file,
        status_log = %config.status_log.path.display(),
        scheme = if config.tls.is_some() { "https" } else { "http" },
        "sysmon-server {} listening",
        env!("CARGO_PKG_VERSION"),
    );
    app.run_until(shutdown_signal()).await?;
    Ok(())
}

/// The configured store and authentication over it, for the subcommands
/// that manage clients and users.
async fn open_store(
    config: &Config,
) -> anyhow::Result<(
    std::sync::Arc<dyn sysmon_server::store::Store>,
    sysmon_server::services::auth::Auth,
)> {
    // Commands write: the primary alone.
    let store =
        sysmon_server::store::connect(&config.database_url, config.ingest.store_options(), None)
            .await
            .context("cannot open the store")?;
    let auth =
        sysmon_server::services::auth::Auth::new(store.clone(), config.login, config.registration)?;
    Ok((store, auth))
}

/// `sysmon-server client ...`: clients, in the configured store.
async fn manage_clients(config: Config, command: ClientCommand) -> anyhow::Result<()> {
    use std::io::Write;

    let (store, auth) = open_store(&config).await?;
    let mut out = std::io::stdout().lock();
    match command {
        ClientCommand::Add { name } => {
            if store.find_client(&name).await?.is_some() {
                anyhow::bail!("there is already a client `{name}`");
            }
            let (password, generated) = new_user_password()?;
            auth.add_client(&name, &password)
                .await
                .context("cannot add the client")?;
            writeln!(out, "added client {name}")?;
            if generated {
                writeln!(out, "password: {password}")?;
            }
        }
        ClientCommand::List => {
            for client in auth.list_clients().await? {
                let registered =
                    chrono::DateTime::from_timestamp_micros(client.created_at.micros())
                        .map(|time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_default();
                writeln!(out, "{}	{registered}	{} tokens", client.name, client.tokens)?;
            }
        }
        ClientCommand::RevokeTokens { name } => {
            let revoked = auth
                .revoke_tokens(&name)
                .await
                .context("cannot revoke the tokens")?;
            writeln!(
                out,
                "revoked {revoked} tokens of {name} and its sessions; running servers refuse them within a second"
            )?;
        }
        ClientCommand::Remove { name } => {
            auth.remove_client(&name)
                .await
                .context("cannot remove the client")?;
            writeln!(out, "removed client {name}; deleting its samples")?;
            let rows = store
                .purge_removed_clients()
                .await
                .context("the client is removed, but deleting its samples failed (the server's retention job retries)")?;
            writeln!(out, "deleted {rows} rows of removed clients")?;
        }
    }
    store.close().await;
    Ok(())
}

/// `sysmon-server enroll-token ...`: enrolment tokens, in the configured
/// store.
async fn manage_enroll_tokens(config: Config, command: EnrollTokenCommand) -> anyhow::Result<()> {
    use std::io::Write;

    let (store, auth) = open_store(&config).await?;
    let mut out = std::io::stdout().lock();
    match command {
        EnrollTokenCommand::Create { note, days, uses } => {
            let created = auth
                .enrollment()
                .create(sysmon_server::services::enrollment::TokenRequest {
                    note,
                    valid_days: days,
                    uses,
                })
                .await
                .context("cannot create the token")?;
            writeln!(out, "created enrolment token {}", created.id)?;
            writeln!(out, "token: {}", created.secret)?;
        }
        EnrollTokenCommand::List => {
            for token in auth.enrollment().list().await? {
                let expires = token
                    .expires_at
                    .and_then(|time| chrono::DateTime::from_timestamp_micros(time.micros()))
                    .map_or("never".to_owned(), |time| {
                        time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
                    });
                let uses_left = token
                    .uses_left
                    .map_or("unlimited".to_owned(), |uses| uses.to_string());
                writeln!(
                    out,
                    "{}\t{uses_left} uses left\t{} used\texpires {expires}\t{}",
                    token.id, token.used, token.note
                )?;
            }
        }
        EnrollTokenCommand::Revoke { id } => {
            auth.enrollment()
                .revoke(id)
                .await
                .context("cannot revoke the token")?;
            writeln!(out, "revoked enrolment token {id}")?;
        }
    }
    store.close().await;
    Ok(())
}

/// `sysmon-server fleet-token ...`: fleet tokens, in the configured store.
async fn manage_fleet_tokens(config: Config, command: FleetTokenCommand) -> anyhow::Result<()> {
    use std::io::Write;

    let (store, auth) = open_store(&config).await?;
    let mut out = std::io::stdout().lock();
    match command {
        FleetTokenCommand::Create {
            note,
            hosts,
            create_hosts,
            export,
        } => {
            let created = auth
                .fleet_tokens()
                .create(sysmon_server::services::fleet_tokens::FleetTokenRequest {
                    note,
                    hosts,
                    create_hosts,
                    export,
                })
                .await
                .context("cannot create the token")?;
            writeln!(out, "created fleet token {}", created.id)?;
            writeln!(out, "token: {}", created.secret)?;
        }
        FleetTokenCommand::List => {
            for token in auth.fleet_tokens().list().await? {
                let kind = match (token.export, token.create_hosts) {
                    (true, _) => "export",
                    (false, true) => "push, creates hosts",
                    (false, false) => "push, known hosts only",
                };
                writeln!(
                    out,
                    "{}\t{kind}\thosts {}\t{}",
                    token.id, token.hosts, token.note
                )?;
            }
        }
        FleetTokenCommand::Revoke { id } => {
            auth.fleet_tokens()
                .revoke(id)
                .await
                .context("cannot revoke the token")?;
            writeln!(out, "revoked fleet token {id}")?;
        }
    }
    store.close().await;
    Ok(())
}

/// `sysmon-server user ...`: dashboard users, in the configured store.
async fn manage_users(config: Config, command: UserCommand) -> anyhow::Result<()> {
    use std::io::Write;

    let (store, auth) = open_store(&config).await?;
    let mut out = std::io::stdout().lock();
    match command {
        UserCommand::Add {
            name,
            admin,
            clients,
        } => {
            let (password, generated) = new_user_password()?;
            auth.add_dashboard_user(&name, &password, admin, clients)
                .await
                .context("cannot add the user")?;
            let role = if admin { "admin" } else { "viewer" };
            writeln!(out, "added dashboard user {name} ({role})")?;
            if generated {
                writeln!(out, "password: {password}")?;
            }
        }
        UserCommand::List => {
            for user in store.dashboard_users().await? {
                let access = if user.is_admin {
                    "admin (every client)".to_owned()
                } else if user.clients.is_empty() {
                    "viewer (no clients)".to_owned()
                } else {
                    format!("viewer ({})", user.clients.join(", "))
                };
                writeln!(out, "{}\t{access}", user.name)?;
            }
        }
        UserCommand::Remove { name } => {
            if !store.delete_dashboard_user(&name).await? {
                anyhow::bail!("there is no dashboard user `{name}`");
            }
            writeln!(out, "removed dashboard user {name} and its sessions")?;
        }
    }
    store.close().await;
    Ok(())
}

/// The first line of stdin, or a random password when stdin is a terminal
/// (typing it there would echo it). Returns whether it was generated.
fn new_user_password() -> anyhow::Result<(String, bool)> {
    use base64::Engine;
    use rand::RngCore;

    if std::io::stdin().is_terminal() {
        let mut secret = [0u8; 15];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        return Ok((password, true));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        anyhow::bail!(
            "no password on stdin: pipe one in, or run from a terminal to get a random one"
        );
    }
    Ok((password, false))
}

/// Every client holds a socket: lift the soft open-file limit to the hard
/// one (often 1,024 -> 1,048,576), so a large fleet is not refused.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(error) => tracing::warn!(%error, soft, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
