//! The NATS client protocol as the server sends it: operations parsed in place from the read
//! buffer, JetStream acknowledgement subjects, status lines and headers.

use crate::PullError;

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
pub(crate) const MAX_LINE: usize = 64 * 1024;

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
pub(crate) fn number(t: &[u8]) -> Option<u64> {
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

/// The values of headers `a` and `b` (as [`header`] finds each) in one pass over the block.
pub fn headers2<'a>(headers: &'a [u8], a: &str, b: &str) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
    let (mut va, mut vb) = (None, None);
    for (n, v) in header_lines(headers) {
        if va.is_none() && n.eq_ignore_ascii_case(a.as_bytes()) {
            va = Some(v);
        }
        if vb.is_none() && n.eq_ignore_ascii_case(b.as_bytes()) {
            vb = Some(v);
        }
        if va.is_some() && vb.is_some() {
            break;
        }
    }
    (va, vb)
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
