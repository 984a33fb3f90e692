//! Connections: the open-file limit, per-client HTTP clients and
//! WebSockets bound to a chosen local address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::{Error, Result};

pub type WsStream = WebSocketStream<TcpStream>;

/// What happened to the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileLimit {
    Raised { from: u64, to: u64 },
    AlreadyAtHard(u64),
}

impl FileLimit {
    pub fn current(self) -> u64 {
        match self {
            FileLimit::Raised { to, .. } => to,
            FileLimit::AlreadyAtHard(limit) => limit,
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: every connection is a
/// file descriptor, and the usual soft limit of 1024 is too low for a fleet.
pub fn raise_file_limit() -> Result<FileLimit> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(Error::FileLimit)?;
    if soft >= hard {
        return Ok(FileLimit::AlreadyAtHard(soft));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(Error::FileLimit)?;
    Ok(FileLimit::Raised {
        from: soft,
        to: hard,
    })
}

/// One client's own HTTP client: one keep-alive connection (HTTP/1.1, no
/// proxy), bound to `local` when given.
pub fn http_client(local: Option<IpAddr>, timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(None)
        .tcp_nodelay(true)
        .connect_timeout(timeout)
        .timeout(timeout)
        .local_address(local)
        .build()
        .map_err(Error::HttpClient)
}

/// The server's socket address, resolved once (WebSocket clients connect
/// their own sockets).
pub async fn resolve(url: &str) -> Result<(SocketAddr, String)> {
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()))
    {
        authority.clone()
    } else {
        format!("{authority}:80")
    };
    let address = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| Error::Resolve {
            address: authority.clone(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| Error::Resolve {
            address: authority.clone(),
            reason: "no address".into(),
        })?;
    Ok((address, authority))
}

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("handshake: {0}")]
    Handshake(#[from] tokio_tungstenite::tungstenite::Error),
}

/// Opens `ws://AUTHORITY/echo` on `server`, from `local` when given.
/// Buffers are kept small: ten thousand connections with the library's
/// default 128 KiB buffers would take gigabytes.
pub async fn ws_connect(
    server: SocketAddr,
    authority: &str,
    local: Option<IpAddr>,
    timeout: Duration,
) -> std::result::Result<WsStream, ConnectError> {
    let open = async {
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(local) = local {
            socket.bind(SocketAddr::new(local, 0))?;
        }
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0);
        let url = format!("ws://{authority}/echo");
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
        Ok::<_, ConnectError>(ws)
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| ConnectError::Timeout)?
}
