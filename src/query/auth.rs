//! API tokens: who may query, reserve, read the reconciliation, administer or scrape metrics
//! over HTTP.
//!
//! The tokens file holds one token a line, `<secret> <scope>[,<scope>...]`, with blank lines
//! and `#` comments. Only SHA-256 digests of the secrets are kept in memory, and a presented
//! token is compared against every digest in constant time, so neither the time of an answer
//! nor a memory dump of the process gives a secret away. Nothing here logs or prints a secret:
//! errors name the line, never its content. Over NATS, authorisation is NATS's own
//! (server-side permissions per user); these tokens guard the HTTP front end only.

use crate::telemetry::Metrics;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a route needs. `admin` implies every scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Query = 1,
    Reserve = 2,
    Admin = 4,
    Metrics = 8,
    /// Reconciliation and document lineage (finance users, the dashboard).
    Finance = 16,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "query" => Scope::Query,
            "reserve" => Scope::Reserve,
            "admin" => Scope::Admin,
            "metrics" => Scope::Metrics,
            "finance" => Scope::Finance,
            _ => return None,
        })
    }
}

/// The scopes one token carries, as bits of [`Scope`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn allows(self, needed: Scope) -> bool {
        self.0 & (Scope::Admin as u8 | needed as u8) != 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the API tokens file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Names the line, never its content: the content is a secret.
    #[error("API tokens file {path}, line {line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

struct Entry {
    digest: [u8; 32],
    scopes: Scopes,
}

/// The parsed tokens file. Its `Debug` shows the count only.
#[derive(Default)]
pub struct TokenSet {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} tokens)", self.entries.len())
    }
}

/// Shorter secrets are refused: a token is a bearer credential and must not be guessable.
pub const MIN_SECRET_LEN: usize = 16;

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl TokenSet {
    /// Parses the file's text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<TokenSet, TokenFileError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: String| TokenFileError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                problem,
            };
            let mut parts = line.split_whitespace();
            let (Some(secret), Some(scopes), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(
                    "expected `<secret> <scope>[,<scope>...]` (two fields)".into()
                ));
            };
            if secret.len() < MIN_SECRET_LEN {
                return Err(bad(format!(
                    "the secret is shorter than {MIN_SECRET_LEN} characters"
                )));
            }
            let mut bits = 0u8;
            for s in scopes.split(',') {
                match Scope::parse(s) {
                    Some(scope) => bits |= scope as u8,
                    None => {
                        return Err(bad(format!(
                            "unknown scope {s:?}; scopes are query, reserve, finance, admin, metrics"
                        )));
                    }
                }
            }
            entries.push(Entry {
                digest: digest(secret.as_bytes()),
                scopes: Scopes(bits),
            });
        }
        Ok(TokenSet { entries })
    }

    pub fn read(path: &Path) -> Result<TokenSet, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokenFileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(path, &text)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scopes of the presented secret, if it is a known token. Every entry is compared,
    /// whichever matches, so the time taken does not depend on which one did.
    pub fn scopes_of(&self, presented: &[u8]) -> Option<Scopes> {
        let d = digest(presented);
        let mut found = 0u8;
        let mut any = subtle::Choice::from(0);
        for e in &self.entries {
            let eq = e.digest.ct_eq(&d);
            found = u8::conditional_select(&found, &(found | e.scopes.0), eq);
            any |= eq;
        }
        bool::from(any).then_some(Scopes(found))
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header: 401.
    Missing,
    /// A token that is not in the file: 401.
    Invalid,
    /// A known token without the scope the route needs: 403.
    Forbidden,
}

/// The HTTP API's tokens, re-read on SIGHUP. `None` inside: the API is open.
pub struct ApiAuth {
    path: Option<PathBuf>,
    tokens: RwLock<Arc<TokenSet>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth").field("path", &self.path).finish()
    }
}

impl ApiAuth {
    /// Loads `path` (empty: no tokens, the API is open and a warning says so).
    pub fn load(path: &str, metrics: Arc<Metrics>) -> Result<ApiAuth, TokenFileError> {
        if path.is_empty() {
            tracing::warn!(
                "api.tokens_file is not set: the HTTP API is open to anyone who can reach it"
            );
            return Ok(ApiAuth {
                path: None,
                tokens: RwLock::new(Arc::default()),
                metrics,
            });
        }
        let path = PathBuf::from(path);
        let tokens = TokenSet::read(&path)?;
        tracing::info!(path = %path.display(), tokens = tokens.len(), "API tokens loaded");
        Ok(ApiAuth {
            path: Some(path),
            tokens: RwLock::new(Arc::new(tokens)),
            metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Re-reads the tokens file. A file that does not parse keeps the tokens in force.
    /// Returns the number of tokens now in force.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        match TokenSet::read(path) {
            Ok(tokens) => {
                let n = tokens.len();
                if let Ok(mut t) = self.tokens.write() {
                    *t = Arc::new(tokens);
                }
                self.metrics.token_reloads.fetch_add(1, Relaxed);
                tracing::info!(path = %path.display(), tokens = n, "API tokens reloaded");
                Ok(n)
            }
            Err(error) => {
                self.metrics.token_reload_failures.fetch_add(1, Relaxed);
                tracing::error!(%error, "API tokens not reloaded; the previous tokens stay in force");
                Err(error)
            }
        }
    }

    /// Checks an `Authorization` header value against the scope a route needs.
    pub fn check(&self, authorization: Option<&[u8]>, needed: Scope) -> Result<(), Refusal> {
        if self.path.is_none() {
            return Ok(());
        }
        let refusal = match authorization.and_then(bearer) {
            None => Refusal::Missing,
            Some(secret) => {
                // A poisoned lock still holds a whole token set (it is swapped, not edited).
                let tokens = match self.tokens.read() {
                    Ok(t) => t.clone(),
                    Err(p) => p.into_inner().clone(),
                };
                match tokens.scopes_of(secret) {
                    Some(s) if s.allows(needed) => return Ok(()),
                    Some(_) => Refusal::Forbidden,
                    None => Refusal::Invalid,
                }
            }
        };
        let m = &self.metrics;
        match refusal {
            Refusal::Missing => &m.auth_missing,
            Refusal::Invalid => &m.auth_invalid,
            Refusal::Forbidden => &m.auth_forbidden,
        }
        .fetch_add(1, Relaxed);
        Err(refusal)
    }
}

/// The secret of `Bearer <secret>` (scheme case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let secret = rest.trim_ascii();
    (!secret.is_empty()).then_some(secret)
}

/// Re-reads the tokens on every SIGHUP until the process ends. The handler is registered
/// before this returns, so a SIGHUP sent afterwards never takes the default action (exit).
#[cfg(unix)]
pub fn reload_on_sighup(auth: Arc<ApiAuth>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = auth.reload();
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "query-secret-0123456789";
    const R: &str = "reserve-secret-0123456789";
    const A: &str = "admin-secret-0123456789";

    fn auth_with(text: &str) -> ApiAuth {
        let path = PathBuf::from("tokens");
        ApiAuth {
            tokens: RwLock::new(Arc::new(TokenSet::parse(&path, text).unwrap())),
            path: Some(path),
            metrics: Metrics::new(),
        }
    }

    #[test]
    fn scopes_decide_and_admin_implies_all() {
        let a = auth_with(&format!(
            "# comment\n\n{Q} query\n{R} reserve,query\n{A} admin\n"
        ));
        let h = |s: &str| format!("Bearer {s}");
        assert_eq!(a.check(Some(h(Q).as_bytes()), Scope::Query), Ok(()));
        assert_eq!(
            a.check(Some(h(Q).as_bytes()), Scope::Reserve),
            Err(Refusal::Forbidden)
        );
        assert_eq!(a.check(Some(h(R).as_bytes()), Scope::Reserve), Ok(()));
        assert_eq!(
            a.check(Some(h(R).as_bytes()), Scope::Metrics),
            Err(Refusal::Forbidden)
        );
        for s in [Scope::Query, Scope::Reserve, Scope::Admin, Scope::Metrics] {
            assert_eq!(a.check(Some(h(A).as_bytes()), s), Ok(()));
        }
        assert_eq!(a.check(None, Scope::Query), Err(Refusal::Missing));
        assert_eq!(
            a.check(Some(b"Basic abc"), Scope::Query),
            Err(Refusal::Missing)
        );
        assert_eq!(
            a.check(Some(b"bearer nope-nope-nope-nope"), Scope::Query),
            Err(Refusal::Invalid)
        );
        assert_eq!(a.metrics.auth_forbidden.load(Relaxed), 2);
        assert_eq!(a.metrics.auth_missing.load(Relaxed), 2);
        assert_eq!(a.metrics.auth_invalid.load(Relaxed), 1);
    }

    #[test]
    fn a_bad_line_is_named_without_its_secret() {
        let text = format!("{Q} query\n\n{R} reserve,teleport\n");
        let e = TokenSet::parse(Path::new("t"), &text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(!msg.contains(R), "{msg}");
        for bad in [
            Q.to_string(),
            format!("{Q} query extra"),
            "short query".into(),
        ] {
            let e = TokenSet::parse(Path::new("t"), &bad).unwrap_err();
            assert!(e.to_string().contains("line 1"));
            assert!(!e.to_string().contains(Q));
        }
        let set = TokenSet::parse(Path::new("t"), &format!("{Q} query")).unwrap();
        assert!(!format!("{set:?}").contains(Q));
    }
}
