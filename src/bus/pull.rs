//! A JetStream pull subscription on a connection of its own, read in place.
//!
//! Ingest reads one stream, as fast as the server can send it. Through async-nats every
//! message costs a trip through the client's connection task: two subjects copied out, a
//! header map built, the message queued to the subscription and woken, then a JetStream
//! wrapper with a cloned context. That was a fifth of the data threads' CPU in a black-friday
//! drain. Here one task owns a TCP connection, parses the protocol from its read buffer, and
//! hands each message to the caller as slices of that buffer: the caller decodes the event
//! straight from the bytes the server sent, and nothing is allocated per message.
//!
//! What it speaks: `INFO`; `CONNECT` with no credentials, a token (`nats.token_env`) or a user
//! and password (`nats.user_env`/`nats.password_env`), as the pipeline's other connections;
//! `PING`/`PONG`; `SUB`; `PUB` of pull requests to `$JS.API.CONSUMER.MSG.NEXT`; `MSG`, `HMSG` and the JetStream status messages
//! (100 idle heartbeat, 404, 408, 409, 503). It does not speak TLS, nkeys or credentials files:
//! [`Unsupported`](PullError::Unsupported) says so, and the caller reads through async-nats
//! instead. It does not reconnect: an error ends the subscription and the caller opens a new
//! consumer after the last sequence it received.
//!
//! Pull requests keep between one and two batches asked for: after the caller takes a batch,
//! another is requested, so the server always has a request to fill while the caller decodes.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The connection needs something this reader does not speak (TLS, a credentials file).
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("NATS connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("NATS protocol: {0}")]
    Protocol(String),
    #[error("server error: {0}")]
    Server(String),
    /// The consumer is gone or refuses our requests; open a new one.
    #[error("consumer: {0}")]
    Consumer(String),
    #[error("nothing from the server for {0:?}, not even a heartbeat")]
    Stalled(Duration),
    #[error("the server closed the connection")]
    Closed,
}

/// One server address from `nats.url`: a comma-separated list, each
/// `[scheme://][userinfo@]host[:port]`. async-nats 0.51 ignores credentials written into the
/// URL, and so does this reader: they come from `nats.token_env` for every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host_port: String,
    pub tls: bool,
}

pub fn addresses(url: &str) -> Vec<Address> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (scheme, rest) = match s.split_once("://") {
                Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
                None => (String::from("nats"), s),
            };
            let rest = rest.trim_end_matches('/');
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let has_port = match host.rsplit_once(':') {
                Some((_, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
                None => false,
            };
            let host_port = if has_port {
                host.to_string()
            } else {
                format!("{host}:4222")
            };
            Address {
                host_port,
                tls: scheme == "tls",
            }
        })
        .collect()
}

/// One protocol operation from the server, borrowing the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Msg(Raw<'a>),
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
    Info(&'a [u8]),
}

/// A message as the server sent it. `headers` is the whole header block (`NATS/1.0...`, empty
/// for `MSG`); `reply` is empty when there is none.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Raw<'a> {
    pub subject: &'a [u8],
    pub sid: u64,
    pub reply: &'a [u8],
    pub headers: &'a [u8],
    pub payload: &'a [u8],
}

/// Longest control line accepted (subjects are short; a longer line is a broken stream).
const MAX_LINE: usize = 64 * 1024;

/// Largest message body (headers and payload) accepted: nats-server refuses a `max_payload`
/// above 64 MiB, so a size beyond it is a broken stream, and the read buffer never grows to
/// what a size field alone claims.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Parses one operation from the front of `buf`. `Ok(None)`: not complete yet. On success,
/// also returns how many bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, PullError> {
    let Some(eol) = find_crlf(buf) else {
        if buf.len() > MAX_LINE {
            return Err(PullError::Protocol(format!(
                "no line end in {} bytes",
                buf.len()
            )));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let (verb, args) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let op = match verb {
        b"HMSG" | b"hmsg" | b"MSG" | b"msg" => {
            let with_headers = verb.len() == 4;
            let mut fields = [&[][..]; 5];
            let mut n = 0;
            for f in args
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|f| !f.is_empty())
            {
                if n == fields.len() {
                    return Err(bad_line(line));
                }
                fields[n] = f;
                n += 1;
            }
            // MSG <subject> <sid> [reply] <size>; HMSG <subject> <sid> [reply] <hdr> <total>
            let sizes = if with_headers { 2 } else { 1 };
            let reply = match n - sizes.min(n) {
                2 => &[][..],
                3 => fields[2],
                _ => return Err(bad_line(line)),
            };
            let sid = number(fields[1]).ok_or_else(|| bad_line(line))?;
            let size = |f: &[u8]| {
                number(f)
                    .and_then(|v| usize::try_from(v).ok())
                    .filter(|&v| v <= MAX_MESSAGE)
                    .ok_or_else(|| bad_line(line))
            };
            let (header_len, total) = if with_headers {
                (size(fields[n - 2])?, size(fields[n - 1])?)
            } else {
                (0, size(fields[n - 1])?)
            };
            if header_len > total {
                return Err(bad_line(line));
            }
            // Both bounded by MAX_LINE and MAX_MESSAGE above, so these cannot overflow.
            let end = after + total;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(PullError::Protocol(
                    "message not followed by CRLF".to_string(),
                ));
            }
            let body = &buf[after..end];
            return Ok(Some((
                Op::Msg(Raw {
                    subject: fields[0],
                    sid,
                    reply,
                    headers: &body[..header_len],
                    payload: &body[header_len..],
                }),
                end + 2,
            )));
        }
        b"PING" | b"ping" => Op::Ping,
        b"PONG" | b"pong" => Op::Pong,
        b"+OK" | b"+ok" => Op::Ok,
        b"-ERR" | b"-err" => Op::Err(trim(args)),
        b"INFO" | b"info" => Op::Info(trim(args)),
        _ => return Err(bad_line(line)),
    };
    Ok(Some((op, after)))
}

fn bad_line(line: &[u8]) -> PullError {
    let shown = &line[..line.len().min(200)];
    PullError::Protocol(format!(
        "unexpected line {:?}",
        String::from_utf8_lossy(shown)
    ))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\r') {
        let at = from + i;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at),
            Some(_) => from = at + 1,
            None => return None,
        }
    }
    None
}

/// A non-empty run of ASCII digits as a `u64`; `None` for anything else or an overflow.
fn number(t: &[u8]) -> Option<u64> {
    if t.is_empty() {
        return None;
    }
    t.iter().try_fold(0u64, |acc, &c| {
        if c.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// Stream sequence and pending count from a JetStream reply subject, without the date parsing
/// `Message::info` does. `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`
/// or, with domain and account hash, two tokens more after `ACK` (and possibly a trailing
/// one).
pub fn ack_seq(reply: &[u8]) -> Option<(u64, u64)> {
    // Called once per message: one pass over the bytes, noting where the first tokens end.
    let b = reply;
    let mut dots = [0usize; 11];
    let mut n = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'.' {
            if n < dots.len() {
                dots[n] = i;
            }
            n += 1;
        }
    }
    let token = |k: usize| -> &[u8] {
        let start = if k == 0 { 0 } else { dots[k - 1] + 1 };
        let end = if k < n { dots[k] } else { b.len() };
        &b[start..end]
    };
    let (s, p) = match n + 1 {
        9 => (5, 8),
        t if t >= 11 => (7, 10),
        _ => return None,
    };
    Some((number(token(s))?, number(token(p))?))
}

/// The status code and description of a header block (`NATS/1.0 408 Request Timeout`);
/// `None` for a plain message.
pub fn status(headers: &[u8]) -> Option<(u16, &[u8])> {
    let first = match find_crlf(headers) {
        Some(i) => &headers[..i],
        None => headers,
    };
    let rest = trim(first.strip_prefix(b"NATS/1.0")?);
    if rest.is_empty() {
        return None;
    }
    let (code, description) = match rest.iter().position(|&b| b == b' ') {
        Some(i) => (&rest[..i], trim(&rest[i + 1..])),
        None => (rest, &rest[rest.len()..]),
    };
    Some((u16::try_from(number(code)?).ok()?, description))
}

/// The value of header `name` (ASCII case-insensitive), trimmed; the first if repeated.
pub fn header<'a>(headers: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header_lines(headers).find_map(|(n, v)| n.eq_ignore_ascii_case(name.as_bytes()).then_some(v))
}

/// Every `name: value` line after the version line.
fn header_lines(headers: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw_header_lines(headers).filter_map(split_header)
}

/// Every line after the version line, without its line end.
fn raw_header_lines(headers: &[u8]) -> impl Iterator<Item = &[u8]> {
    headers
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// `name: value`, both trimmed; `None` for a line without a colon or with an empty name.
fn split_header(l: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = l.iter().position(|&b| b == b':')?;
    let (n, v) = (trim(&l[..colon]), trim(&l[colon + 1..]));
    (!n.is_empty()).then_some((n, v))
}

/// Header that keeps, escaped, a header line async-nats cannot hold (see [`header_map`]).
pub const H_INVALID_HEADER: &str = "Retailflow-Invalid-Header";

/// The header block as an async-nats map, for what keeps a message's headers (a dead
/// letter). Never panics: async-nats 0.51 panics on `append` of a name that is not printable
/// ASCII without `:` (a space, say) or of a value holding CR or LF, and nats-server delivers
/// both. Such a line, or one that is not UTF-8, is kept whole as a
/// [`H_INVALID_HEADER`] value with [`escape_header_line`]; blank lines are left out.
pub fn header_map(headers: &[u8]) -> Option<async_nats::HeaderMap> {
    use async_nats::{HeaderName, HeaderValue};
    if headers.is_empty() {
        return None;
    }
    let mut map = async_nats::HeaderMap::new();
    for line in raw_header_lines(headers) {
        if trim(line).is_empty() {
            continue;
        }
        // The fallible constructors are the checks `append` asserts.
        let valid = split_header(line).and_then(|(name, value)| {
            let name = std::str::from_utf8(name).ok()?.parse::<HeaderName>().ok()?;
            let value = std::str::from_utf8(value)
                .ok()?
                .parse::<HeaderValue>()
                .ok()?;
            Some((name, value))
        });
        match valid {
            Some((name, value)) => map.append(name, value),
            None => map.append(
                HeaderName::from_static(H_INVALID_HEADER),
                escape_header_line(line),
            ),
        }
    }
    Some(map)
}

/// A header line as a valid header value: bytes outside printable ASCII, and `%` itself,
/// become `%XX` (upper-case hex), so the original bytes can be recovered exactly.
pub fn escape_header_line(line: &[u8]) -> async_nats::HeaderValue {
    let mut out = String::with_capacity(line.len());
    for &b in line {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    // Only printable ASCII is left, which async-nats accepts; the fallback cannot happen.
    out.parse().unwrap_or_default()
}

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

/// What the server's `INFO` says that matters here.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Info {
    tls_required: bool,
    headers: bool,
    version: String,
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
        let mut last = PullError::Connect {
            url: crate::bus::redact(url),
            message: "no address".into(),
        };
        for address in addresses(url) {
            if address.tls {
                return Err(PullError::Unsupported(format!(
                    "TLS ({})",
                    address.host_port
                )));
            }
            match Self::connect(&address, credentials, opts).await {
                Ok(mut pull) => {
                    pull.start(stream, consumer, opts).await?;
                    return Ok(pull);
                }
                Err(e @ PullError::Unsupported(_)) => return Err(e),
                // Every address of one deployment takes the same credentials.
                Err(PullError::Server(e)) if is_auth_error(&e) => {
                    return Err(PullError::Server(e));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
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

    async fn greeting(&mut self) -> Result<Info, PullError> {
        loop {
            if let Some((op, used)) = parse(&self.buf[self.head..self.tail])? {
                let info = match op {
                    Op::Info(json) => serde_json::from_slice::<Info>(json)
                        .map_err(|e| PullError::Protocol(format!("INFO: {e}")))?,
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
                let done = match op {
                    Op::Pong => true,
                    Op::Err(e) => {
                        return Err(PullError::Server(String::from_utf8_lossy(e).into_owned()));
                    }
                    _ => false,
                };
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
    pub async fn next_batch<F>(&mut self, max: usize, mut each: F) -> Result<usize, PullError>
    where
        F: FnMut(Raw<'_>),
    {
        let mut n = 0;
        loop {
            while n < max {
                let Some((op, used)) = parse(&self.buf[self.head..self.tail])? else {
                    break;
                };
                let mut cancelled = 0;
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
                    Op::Msg(_) | Op::Pong | Op::Ok | Op::Info(_) => {}
                    Op::Ping => self.pong_due = true,
                    Op::Err(e) => {
                        return Err(PullError::Server(String::from_utf8_lossy(e).into_owned()));
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> (Op<'_>, usize) {
        parse(buf).expect("valid").expect("complete")
    }

    #[test]
    fn hmsg_with_reply_and_headers() {
        let frame = b"HMSG retail.v1.pos.S1.sale 7 $JS.ACK.E.c.1.42.42.0.3 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\nPING\r\n";
        let (op, used) = one(frame);
        assert_eq!(
            op,
            Op::Msg(Raw {
                subject: b"retail.v1.pos.S1.sale",
                sid: 7,
                reply: b"$JS.ACK.E.c.1.42.42.0.3",
                headers: b"NATS/1.0\r\nA: b\r\n\r\n",
                payload: b"hello",
            })
        );
        assert_eq!(&frame[used..], b"PING\r\n");
        assert_eq!(one(&frame[used..]), (Op::Ping, 6));
    }

    #[test]
    fn msg_without_reply_or_headers() {
        let (op, used) = one(b"MSG a.b 3 2\r\nhi\r\n");
        assert_eq!(
            op,
            Op::Msg(Raw {
                subject: b"a.b",
                sid: 3,
                reply: b"",
                headers: b"",
                payload: b"hi",
            })
        );
        assert_eq!(used, 17);
        // An empty payload with a reply subject.
        let (op, _) = one(b"MSG a.b 3 r.s 0\r\n\r\n");
        assert!(matches!(
            op,
            Op::Msg(Raw {
                reply: b"r.s",
                payload: b"",
                ..
            })
        ));
    }

    #[test]
    fn a_frame_cut_anywhere_is_incomplete_until_it_is_whole() {
        let frame = b"HMSG s 1 r 12 17\r\nNATS/1.0\r\n\r\nabcde\r\n";
        for cut in 0..frame.len() {
            assert!(
                parse(&frame[..cut]).expect("no error").is_none(),
                "cut {cut}"
            );
        }
        assert_eq!(one(frame).1, frame.len());
    }

    #[test]
    fn control_lines() {
        assert_eq!(one(b"PONG\r\n").0, Op::Pong);
        assert_eq!(one(b"+OK\r\n").0, Op::Ok);
        assert_eq!(
            one(b"-ERR 'Authorization Violation'\r\n").0,
            Op::Err(b"'Authorization Violation'")
        );
        assert_eq!(
            one(b"INFO {\"headers\":true}\r\n").0,
            Op::Info(b"{\"headers\":true}")
        );
    }

    #[test]
    fn broken_frames_are_errors_not_guesses() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"MSG a\r\n",
            b"MSG a x 2\r\nhi\r\n",
            b"HMSG a 1 10 5\r\n",
            b"MSG a 1 b c d 2\r\n",
            b"MSG a 1 2\r\nhiXY",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let endless = vec![b'x'; MAX_LINE + 1];
        assert!(parse(&endless).is_err());
    }

    #[test]
    fn a_size_beyond_any_message_is_a_protocol_error() {
        // On bb9e878 the first panicked: `after + total` overflowed (slice index panic).
        for line in [
            &b"MSG a 1 18446744073709551614\r\n"[..],
            b"MSG a 1 18446744073709551615\r\n",
            b"HMSG a 1 10 18446744073709551614\r\n",
            b"HMSG a 1 r 18446744073709551610 18446744073709551614\r\n",
            // Far beyond what a message may be: no buffer is grown to it.
            b"MSG a 1 67108865\r\n",
            b"HMSG a 1 12 4294967296\r\n",
        ] {
            assert!(
                matches!(parse(line), Err(PullError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        // The largest size allowed is merely incomplete.
        assert!(matches!(parse(b"MSG a 1 67108864\r\n"), Ok(None)));
    }

    #[test]
    fn status_lines() {
        assert_eq!(status(b"NATS/1.0\r\nA: b\r\n\r\n"), None);
        assert_eq!(status(b""), None);
        assert_eq!(
            status(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 12\r\n\r\n"),
            Some((408, &b"Request Timeout"[..]))
        );
        assert_eq!(
            status(b"NATS/1.0 100 Idle Heartbeat\r\n\r\n"),
            Some((100, &b"Idle Heartbeat"[..]))
        );
        assert_eq!(status(b"NATS/1.0 503\r\n\r\n"), Some((503, &b""[..])));
    }

    #[test]
    fn headers_by_name_in_any_case() {
        let h = b"NATS/1.0\r\nNats-Msg-Id: pos/1#2\r\ncontent-type:  application/json \r\n\r\n";
        assert_eq!(header(h, "Content-Type"), Some(&b"application/json"[..]));
        assert_eq!(header(h, "nats-msg-id"), Some(&b"pos/1#2"[..]));
        assert_eq!(header(h, "Missing"), None);
        let map = header_map(h).expect("headers");
        assert_eq!(map.get("Nats-Msg-Id").map(|v| v.as_str()), Some("pos/1#2"));
        assert_eq!(header_map(b""), None);
    }

    /// The inverse of `escape_header_line`, written separately as the test's oracle.
    fn unescape(v: &str) -> Vec<u8> {
        let b = v.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn headers_async_nats_refuses_are_kept_escaped_not_a_panic() {
        // On bb9e878 the first panicked in async-nats (header.rs:455, a name with a space)
        // and the second at header.rs:397 (a value with a bare CR).
        let bad_lines: [&[u8]; 6] = [
            b"X Y: 1",
            b"A: x\ry",
            b"B\x01: v",
            b"N\xc3\xa9: v",
            b"V: \xff\xfe",
            b"no colon at all",
        ];
        for bad in bad_lines {
            let mut h = b"NATS/1.0\r\nNats-Msg-Id: m1\r\n".to_vec();
            h.extend_from_slice(bad);
            h.extend_from_slice(b"\r\nGood: yes\r\n\r\n");
            let map = header_map(&h).expect("headers");
            assert_eq!(map.get("Nats-Msg-Id").map(|v| v.as_str()), Some("m1"));
            assert_eq!(map.get("Good").map(|v| v.as_str()), Some("yes"));
            // Spelled out, not the constant, so this test also runs on bb9e878.
            let kept: Vec<_> = map
                .get_all("Retailflow-Invalid-Header")
                .map(|v| unescape(v.as_str()))
                .collect();
            assert_eq!(
                kept,
                vec![bad.to_vec()],
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn escaped_header_lines_are_printable_and_reversible() {
        assert_eq!(escape_header_line(b"50% \r\n").as_str(), "50%25 %0D%0A");
        let all: Vec<u8> = (0..=255).collect();
        let v = escape_header_line(&all);
        assert!(v.as_str().bytes().all(|b| (b' '..=b'~').contains(&b)));
        assert_eq!(unescape(v.as_str()), all);
        assert_eq!(H_INVALID_HEADER, "Retailflow-Invalid-Header");
    }

    #[test]
    fn addresses_from_the_url_forms_async_nats_takes() {
        let at = |host_port: &str, tls: bool| Address {
            host_port: host_port.into(),
            tls,
        };
        assert_eq!(
            addresses("127.0.0.1:4222"),
            vec![at("127.0.0.1:4222", false)]
        );
        assert_eq!(
            addresses("nats://u:p@h1, tls://h2:7422,localhost,nats://s3cret@h4:4333/,[::1]"),
            vec![
                at("h1:4222", false),
                at("h2:7422", true),
                at("localhost:4222", false),
                at("h4:4333", false),
                at("[::1]:4222", false),
            ]
        );
        assert!(addresses(" , ").is_empty());
    }

    #[test]
    fn the_sequence_and_pending_count_come_from_either_reply_form() {
        assert_eq!(
            ack_seq(b"$JS.ACK.RETAIL_EVENTS.c1.1.4711.4700.1764460800000000000.289"),
            Some((4711, 289))
        );
        // Domain and account hash before the stream, and a trailing token after pending.
        assert_eq!(
            ack_seq(b"$JS.ACK.hub.ACCHASH.RETAIL_EVENTS.c1.2.18.17.1764460800000000000.0.xyz"),
            Some((18, 0))
        );
        assert_eq!(
            ack_seq(b"$JS.ACK.hub.ACCHASH.RETAIL_EVENTS.c1.2.18.17.1764460800000000000.5"),
            Some((18, 5))
        );
    }

    #[test]
    fn anything_else_is_no_position() {
        for bad in [
            "",
            "_INBOX.abc",
            "$JS.ACK.S.c.1.2.3.4",
            "$JS.ACK.S.c.1.x2.3.4.5",
            "$JS.ACK.S.c.1..3.4.5",
            "$JS.ACK.S.c.1.2.3.4.-5",
            "$JS.ACK.S.c.1.99999999999999999999.3.4.5",
            "$JS.ACK.S.c.1.2.3.4.5.6",
        ] {
            assert_eq!(ack_seq(bad.as_bytes()), None, "{bad}");
        }
    }
}
