//! The connection: connect and authenticate, subscribe, keep pull requests topped up, hand
//! each batch to the caller.

use crate::info::parse_info;
use crate::proto::{Op, Raw, header, number, parse, status};
use crate::{Address, PullError, addresses, redact};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a subscription pulls.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Messages per pull request.
    pub batch: usize,
    /// Idle heartbeat the server sends while a request waits for messages.
    pub heartbeat: Duration,
    /// How long each pull request stays open.
    pub expires: Duration,
    /// Connection name shown by the server.
    pub name: String,
}

/// Read buffer to start with; it grows for a message larger than itself. Large enough for
/// one read to carry a few hundred events.
const BUFFER: usize = 1 << 20;

pub struct Pull {
    sock: TcpStream,
    buf: Vec<u8>,
    head: usize,
    tail: usize,
    sid: u64,
    /// The pull request, ready to write: `PUB <next> <inbox> <len>\r\n<json>\r\n`.
    request: Vec<u8>,
    batch: u64,
    /// Messages asked for and not yet delivered or cancelled by a status.
    outstanding: u64,
    stall: Duration,
    pong_due: bool,
    /// The `host:port` this connection uses.
    address: String,
    /// The cluster's client addresses from the latest `INFO` that named any.
    connect_urls: Vec<String>,
    /// The server announced lame duck mode: it will close this connection soon.
    lame_duck: bool,
}

/// What the reader can present in `CONNECT`. Never printed.
#[derive(Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub token: Option<&'a str>,
    pub user_password: Option<(&'a str, &'a str)>,
}

/// Whether a server's `-ERR` refuses our credentials (as opposed to a passing trouble).
pub fn is_auth_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("authorization violation")
        || m.contains("authentication")
        || m.contains("user authentication expired")
        || m.contains("account authentication expired")
}

impl Pull {
    /// Connects to the first address of `url` that answers and starts pulling from
    /// `consumer` on `stream`, which must exist. `token` is sent if given.
    pub async fn open(
        url: &str,
        token: Option<&str>,
        stream: &str,
        consumer: &str,
        opts: &PullOptions,
    ) -> Result<Pull, PullError> {
        let credentials = Credentials {
            token,
            user_password: None,
        };
        Self::open_with(url, credentials, stream, consumer, opts).await
    }

    /// [`open`](Self::open) with any credentials the reader speaks.
    pub async fn open_with(
        url: &str,
        credentials: Credentials<'_>,
        stream: &str,
        consumer: &str,
        opts: &PullOptions,
    ) -> Result<Pull, PullError> {
        Self::open_from(&addresses(url), credentials, stream, consumer, opts)
            .await
            .map_err(|e| match e {
                PullError::Connect { message, .. } => PullError::Connect {
                    url: redact(url),
                    message,
                },
                other => other,
            })
    }

    /// [`open_with`](Self::open_with) on addresses given one by one, tried in their order
    /// (see [`Seeds`](crate::Seeds) for the order after a lost connection).
    pub async fn open_from(
        addresses: &[Address],
        credentials: Credentials<'_>,
        stream: &str,
        consumer: &str,
        opts: &PullOptions,
    ) -> Result<Pull, PullError> {
        let list = || {
            addresses
                .iter()
                .map(|a| a.host_port.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut last = None;
        for address in addresses {
            if address.tls {
                return Err(PullError::Unsupported(format!(
                    "TLS ({})",
                    address.host_port
                )));
            }
            match Self::connect(address, credentials, opts).await {
                Ok(mut pull) => {
                    pull.start(stream, consumer, opts).await?;
                    return Ok(pull);
                }
                Err(e @ PullError::Unsupported(_)) => return Err(e),
                // Every address of one deployment takes the same credentials.
                Err(PullError::Server(e)) if is_auth_error(&e) => {
                    return Err(PullError::Server(e));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            None => PullError::Connect {
                url: list(),
                message: "no address".into(),
            },
            Some(e) if addresses.len() == 1 => e,
            Some(e) => PullError::Connect {
                url: list(),
                message: format!("no server answered; the last said: {e}"),
            },
        })
    }

    /// The `host:port` this connection uses.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The cluster's client addresses (`host:port`) from the latest `INFO` that named any;
    /// at most [`MAX_CONNECT_URLS`](crate::MAX_CONNECT_URLS), each checked.
    pub fn connect_urls(&self) -> &[String] {
        &self.connect_urls
    }

    /// Whether the server announced lame duck mode (it closes this connection soon).
    pub fn lame_duck(&self) -> bool {
        self.lame_duck
    }

    /// Notes what an `INFO` after the greeting says. One that did not parse (`None`) changes
    /// nothing: the connection itself still works.
    fn learn(&mut self, info: Option<crate::Info>) {
        if let Some(info) = info {
            if !info.connect_urls.is_empty() {
                self.connect_urls = info.connect_urls;
            }
            self.lame_duck |= info.ldm;
        }
    }

    async fn connect(
        address: &Address,
        credentials: Credentials<'_>,
        opts: &PullOptions,
    ) -> Result<Pull, PullError> {
        let failed = |message: String| PullError::Connect {
            url: address.host_port.clone(),
            message,
        };
        let sock = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect(&address.host_port),
        )
        .await
        .map_err(|_| failed("no answer within 5 s".into()))?
        .map_err(|e| failed(e.to_string()))?;
        sock.set_nodelay(true)?;
        let mut pull = Pull {
            sock,
            buf: vec![0; BUFFER],
            head: 0,
            tail: 0,
            sid: 1,
            request: Vec::new(),
            batch: opts.batch.max(1) as u64,
            outstanding: 0,
            stall: opts.heartbeat * 2 + Duration::from_secs(1),
            pong_due: false,
            address: address.host_port.clone(),
            connect_urls: Vec::new(),
            lame_duck: false,
        };
        let info = tokio::time::timeout(Duration::from_secs(5), pull.greeting())
            .await
            .map_err(|_| failed("no INFO within 5 s".into()))??;
        if info.tls_required {
            return Err(PullError::Unsupported(format!(
                "TLS (the server at {} requires it)",
                address.host_port
            )));
        }
        if !info.headers {
            return Err(failed(format!(
                "server {} does not support headers",
                info.version
            )));
        }
        pull.connect_urls = info.connect_urls;
        pull.lame_duck = info.ldm;
        let mut connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": false,
            "name": opts.name,
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "headers": true,
            "no_responders": true,
        });
        if let Some(token) = credentials.token {
            connect["auth_token"] = token.into();
        }
        if let Some((user, pass)) = credentials.user_password {
            connect["user"] = user.into();
            connect["pass"] = pass.into();
        }
        let mut hello = b"CONNECT ".to_vec();
        hello.extend_from_slice(connect.to_string().as_bytes());
        hello.extend_from_slice(b"\r\nPING\r\n");
        pull.sock.write_all(&hello).await?;
        // The server answers PONG once it accepted CONNECT, or -ERR (authorization) and closes.
        tokio::time::timeout(Duration::from_secs(5), pull.until_pong())
            .await
            .map_err(|_| failed("no PONG within 5 s".into()))??;
        Ok(pull)
    }

    async fn greeting(&mut self) -> Result<crate::Info, PullError> {
        loop {
            if let Some((op, used)) = parse(&self.buf[self.head..self.tail])? {
                let info = match op {
                    Op::Info(json) => parse_info(json)?,
                    other => {
                        return Err(PullError::Protocol(format!("expected INFO, got {other:?}")));
                    }
                };
                self.head += used;
                return Ok(info);
            }
            self.fill().await?;
        }
    }

    async fn until_pong(&mut self) -> Result<(), PullError> {
        loop {
            while let Some((op, used)) = parse(&self.buf[self.head..self.tail])? {
                let (done, info) = match op {
                    Op::Pong => (true, None),
                    Op::Err(e) => {
                        return Err(PullError::Server(String::from_utf8_lossy(e).into_owned()));
                    }
                    Op::Info(json) => (false, parse_info(json).ok()),
                    _ => (false, None),
                };
                self.learn(info);
                self.head += used;
                if done {
                    return Ok(());
                }
            }
            self.fill().await?;
        }
    }

    async fn start(
        &mut self,
        stream: &str,
        consumer: &str,
        opts: &PullOptions,
    ) -> Result<(), PullError> {
        let inbox = format!("_INBOX.retailflow.{}", unique());
        let body = format!(
            r#"{{"batch":{},"expires":{},"idle_heartbeat":{}}}"#,
            self.batch,
            opts.expires.as_nanos(),
            opts.heartbeat.as_nanos()
        );
        self.request = format!(
            "PUB $JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer} {inbox} {}\r\n{body}\r\n",
            body.len()
        )
        .into_bytes();
        let sub = format!("SUB {inbox} {}\r\n", self.sid);
        self.sock.write_all(sub.as_bytes()).await?;
        self.top_up().await
    }

    /// Asks for another batch whenever no more than one is outstanding.
    async fn top_up(&mut self) -> Result<(), PullError> {
        while self.outstanding <= self.batch {
            self.sock.write_all(&self.request).await?;
            self.outstanding += self.batch;
        }
        Ok(())
    }

    /// Reads more bytes into the buffer, waiting for them.
    async fn fill(&mut self) -> Result<(), PullError> {
        self.make_room();
        let n = self.sock.read(&mut self.buf[self.tail..]).await?;
        if n == 0 {
            return Err(PullError::Closed);
        }
        self.tail += n;
        Ok(())
    }

    /// Reads whatever the socket has without waiting; false when it had nothing.
    fn fill_now(&mut self) -> Result<bool, PullError> {
        self.make_room();
        match self.sock.try_read(&mut self.buf[self.tail..]) {
            Ok(0) => Err(PullError::Closed),
            Ok(n) => {
                self.tail += n;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves the unparsed tail to the front, and grows the buffer when a message does not fit.
    fn make_room(&mut self) {
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        } else if self.tail == self.buf.len() {
            self.buf.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        if self.tail == self.buf.len() {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
    }

    /// Waits for at least one message, then passes every message already received, up to
    /// `max`, to `each`, in stream order. Returns how many it passed.
    ///
    /// Once the server announced lame duck mode, the messages already parsed are still
    /// returned, and then [`PullError::LameDuck`]: the caller moves to another server before
    /// this one closes the connection.
    pub async fn next_batch<F>(&mut self, max: usize, mut each: F) -> Result<usize, PullError>
    where
        F: FnMut(Raw<'_>),
    {
        let mut n = 0;
        loop {
            if self.lame_duck && n == 0 {
                return Err(PullError::LameDuck(self.address.clone()));
            }
            while n < max {
                let Some((op, used)) = parse(&self.buf[self.head..self.tail])? else {
                    break;
                };
                let mut cancelled = 0;
                let mut info = None;
                match op {
                    Op::Msg(m) if m.sid == self.sid => match status(m.headers) {
                        None => {
                            each(m);
                            n += 1;
                            cancelled = 1;
                        }
                        Some((code, description)) => {
                            cancelled = self.on_status(code, description, m.headers)?;
                        }
                    },
                    Op::Info(json) => info = Some(parse_info(json).ok()),
                    Op::Msg(_) | Op::Pong | Op::Ok => {}
                    Op::Ping => self.pong_due = true,
                    Op::Err(e) => {
                        return Err(PullError::Server(String::from_utf8_lossy(e).into_owned()));
                    }
                }
                if let Some(info) = info {
                    self.learn(info);
                }
                self.head += used;
                self.outstanding = self.outstanding.saturating_sub(cancelled);
            }
            if self.pong_due {
                self.sock.write_all(b"PONG\r\n").await?;
                self.pong_due = false;
            }
            self.top_up().await?;
            if n >= max {
                return Ok(n);
            }
            if n > 0 {
                if !self.fill_now()? {
                    return Ok(n);
                }
                continue;
            }
            let stall = self.stall;
            tokio::time::timeout(stall, self.fill())
                .await
                .map_err(|_| PullError::Stalled(stall))??;
        }
    }

    /// Handles a status message; returns how many requested messages it cancelled.
    fn on_status(&self, code: u16, description: &[u8], headers: &[u8]) -> Result<u64, PullError> {
        let pending = || {
            header(headers, "Nats-Pending-Messages")
                .and_then(number)
                .unwrap_or(self.batch)
        };
        let text = || String::from_utf8_lossy(description).into_owned();
        match code {
            100 => Ok(0),
            404 | 408 => Ok(pending()),
            409 => {
                let d = description;
                let fatal = d.eq_ignore_ascii_case(b"Consumer Deleted")
                    || d.eq_ignore_ascii_case(b"Consumer is push based")
                    || d.starts_with(b"Exceeded MaxRequest");
                if fatal || header(headers, "Nats-Pending-Messages").is_none() {
                    Err(PullError::Consumer(text()))
                } else {
                    Ok(pending())
                }
            }
            503 => Err(PullError::Server(
                "no responders: JetStream is not answering for this stream".into(),
            )),
            _ => Err(PullError::Server(format!("status {code} {}", text()))),
        }
    }
}

/// A process-unique token for inbox names.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}{:x}{n}", std::process::id(), nanos)
}
