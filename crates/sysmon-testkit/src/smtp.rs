//! A real SMTP server a test starts to receive alert emails: EHLO/HELO,
//! MAIL, RCPT, DATA, QUIT as RFC 5321 has them, STARTTLS (RFC 3207) or TLS
//! from the first byte, and AUTH PLAIN/LOGIN (RFC 4954) when a login is
//! required; it keeps each message's text and who logged in.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::TlsAcceptor;

/// How the sink protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text throughout.
    None,
    /// Plain until the client asks for STARTTLS (which it must before
    /// logging in).
    StartTls,
    /// TLS from the first byte (port 465's way).
    Implicit,
}

#[derive(Debug, Clone)]
pub struct SmtpOptions {
    pub tls: SmtpTls,
    /// (username, password) a client must log in with before MAIL.
    pub login: Option<(String, String)>,
}

pub struct SmtpSink {
    pub address: SocketAddr,
    /// The sink's self-signed certificate (for `127.0.0.1`), PEM, when it
    /// speaks TLS: a client trusts it as its CA.
    pub certificate_pem: Option<String>,
    state: Arc<Mutex<Accepted>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Accepted {
    messages: Vec<String>,
    logins: Vec<String>,
}

struct Session {
    options: SmtpOptions,
    state: Arc<Mutex<Accepted>>,
}

/// How a run of commands ended.
enum Ended {
    Closed,
    /// The client asked for TLS and was told to go ahead.
    StartTls,
}

impl SmtpSink {
    /// Plain text, no login.
    pub async fn start() -> SmtpSink {
        SmtpSink::start_with(SmtpOptions {
            tls: SmtpTls::None,
            login: None,
        })
        .await
    }

    pub async fn start_with(options: SmtpOptions) -> SmtpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink");
        let address = listener.local_addr().expect("SMTP sink address");
        let (certificate_pem, acceptor) = if options.tls == SmtpTls::None {
            (None, None)
        } else {
            let (pem, acceptor) = self_signed_acceptor();
            (Some(pem), Some(acceptor))
        };
        let state = Arc::new(Mutex::new(Accepted::default()));
        let session = Arc::new(Session {
            options,
            state: state.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session.clone().serve(stream, acceptor.clone()));
            }
        });
        SmtpSink {
            address,
            certificate_pem,
            state,
            task,
        }
    }

    /// Every message accepted so far, headers and body, in order.
    pub fn messages(&self) -> Vec<String> {
        self.state.lock().expect("SMTP sink state").messages.clone()
    }

    /// The usernames that logged in, in order.
    pub fn logins(&self) -> Vec<String> {
        self.state.lock().expect("SMTP sink state").logins.clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn self_signed_acceptor() -> (String, TlsAcceptor) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("generate the SMTP sink's certificate");
    let key = rustls_pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("the SMTP sink's key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("the SMTP sink's TLS config");
    (certified.cert.pem(), TlsAcceptor::from(Arc::new(config)))
}

impl Session {
    async fn serve(self: Arc<Self>, stream: tokio::net::TcpStream, acceptor: Option<TlsAcceptor>) {
        match (self.options.tls, acceptor) {
            (SmtpTls::Implicit, Some(acceptor)) => {
                if let Ok(tls) = acceptor.accept(stream).await {
                    self.commands(BufReader::new(tls), true, true).await;
                }
            }
            (SmtpTls::StartTls, Some(acceptor)) => {
                let mut plain = BufReader::new(stream);
                if let Ended::StartTls = self.commands(&mut plain, true, false).await {
                    if let Ok(tls) = acceptor.accept(plain.into_inner()).await {
                        self.commands(BufReader::new(tls), false, true).await;
                    }
                }
            }
            _ => {
                self.commands(BufReader::new(stream), true, false).await;
            }
        }
    }

    /// Answers commands until the client quits, goes away, or (on a plain
    /// connection that offers it) starts TLS.
    async fn commands<S>(&self, mut stream: S, greet: bool, secure: bool) -> Ended
    where
        S: AsyncBufReadExt + AsyncWrite + AsyncRead + Unpin,
    {
        if greet
            && write(&mut stream, "220 sysmon-testkit ESMTP\r\n")
                .await
                .is_err()
        {
            return Ended::Closed;
        }
        let offers_starttls = self.options.tls == SmtpTls::StartTls && !secure;
        // A password only over TLS, unless the sink is plain throughout.
        let offers_auth =
            self.options.login.is_some() && (secure || self.options.tls == SmtpTls::None);
        let mut logged_in = self.options.login.is_none();
        loop {
            let Some(line) = read_line(&mut stream).await else {
                return Ended::Closed;
            };
            let command = line.to_ascii_uppercase();
            let reply = if command.starts_with("EHLO") {
                let mut reply = String::from("250-sysmon-testkit\r\n");
                if offers_starttls {
                    reply.push_str("250-STARTTLS\r\n");
                }
                if offers_auth {
                    reply.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                reply.push_str("250 8BITMIME\r\n");
                reply
            } else if command.starts_with("STARTTLS") && offers_starttls {
                if write(&mut stream, "220 go ahead\r\n").await.is_err() {
                    return Ended::Closed;
                }
                return Ended::StartTls;
            } else if command.starts_with("AUTH") && offers_auth {
                match self.authenticate(&mut stream, &line).await {
                    Some(user) => {
                        logged_in = true;
                        self.state
                            .lock()
                            .expect("SMTP sink state")
                            .logins
                            .push(user);
                        "235 authenticated\r\n".into()
                    }
                    None => "535 authentication failed\r\n".into(),
                }
            } else if command.starts_with("MAIL") && !logged_in {
                "530 authentication required\r\n".into()
            } else if command.starts_with("DATA") {
                if write(&mut stream, "354 end with <CRLF>.<CRLF>\r\n")
                    .await
                    .is_err()
                {
                    return Ended::Closed;
                }
                let mut message = Vec::new();
                while let Some(line) = read_line(&mut stream).await {
                    if line == "." {
                        break;
                    }
                    // Dot-stuffing (RFC 5321 4.5.2) undone.
                    message.push(line.strip_prefix('.').map(str::to_owned).unwrap_or(line));
                }
                self.state
                    .lock()
                    .expect("SMTP sink state")
                    .messages
                    .push(message.join("\n"));
                "250 queued\r\n".into()
            } else if command.starts_with("QUIT") {
                let _ = write(&mut stream, "221 bye\r\n").await;
                return Ended::Closed;
            } else if ["HELO", "MAIL", "RCPT", "RSET", "NOOP"]
                .iter()
                .any(|known| command.starts_with(known))
            {
                "250 OK\r\n".into()
            } else {
                "502 not implemented\r\n".into()
            };
            if write(&mut stream, &reply).await.is_err() {
                return Ended::Closed;
            }
        }
    }

    /// AUTH PLAIN (initial response or asked for) or AUTH LOGIN; the user
    /// when the login is right.
    async fn authenticate<S>(&self, stream: &mut S, line: &str) -> Option<String>
    where
        S: AsyncBufReadExt + AsyncWrite + Unpin,
    {
        let (user, password) = self.options.login.as_ref()?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let decode = |text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
        };
        let (given_user, given_password) = match words.get(1).map(|w| w.to_ascii_uppercase()) {
            Some(mechanism) if mechanism == "PLAIN" => {
                let response = match words.get(2) {
                    Some(initial) => initial.to_string(),
                    None => {
                        write(stream, "334 \r\n").await.ok()?;
                        read_line(stream).await?
                    }
                };
                let decoded = decode(&response)?;
                let mut parts = decoded.split('\0').skip(1);
                (parts.next()?.to_owned(), parts.next()?.to_owned())
            }
            Some(mechanism) if mechanism == "LOGIN" => {
                write(stream, "334 VXNlcm5hbWU6\r\n").await.ok()?;
                let user = decode(&read_line(stream).await?)?;
                write(stream, "334 UGFzc3dvcmQ6\r\n").await.ok()?;
                (user, decode(&read_line(stream).await?)?)
            }
            _ => return None,
        };
        (&given_user == user && &given_password == password).then_some(given_user)
    }
}

async fn read_line<S: AsyncBufReadExt + Unpin>(stream: &mut S) -> Option<String> {
    let mut line = String::new();
    match stream.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, text: &str) -> std::io::Result<()> {
    stream.write_all(text.as_bytes()).await?;
    stream.flush().await
}
