//! The HTTP listener, served by hand (hyper's HTTP/1.1 connection builder) rather than with
//! `axum::serve`, for the bounds a public port needs: at most `api.max_connections` at once
//! (further ones wait in the kernel's listen backlog), a request head and TLS handshake
//! within `api.header_timeout`, and a connection with no traffic for `api.idle_timeout`
//! closed. Without them one client holding thousands of half-sent requests (slowloris) keeps
//! a task and a socket each for ever. Optional TLS (rustls) from PEM files.
//!
//! HTTP/1.1 only: HTTP/2's connection preface would be read before any header timeout runs.

use crate::config::ApiConfig;
use crate::telemetry::Metrics;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// The HTTPS acceptor for `api.tls_cert` / `api.tls_key`; `None` when both are empty.
pub fn tls_acceptor(cfg: &ApiConfig) -> Result<Option<TlsAcceptor>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    match (cfg.tls_cert.is_empty(), cfg.tls_key.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {}
        _ => return Err("api.tls_cert and api.tls_key go together".into()),
    }
    let certs = CertificateDer::pem_file_iter(&cfg.tls_cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("api.tls_cert {}: {e}", cfg.tls_cert))?;
    if certs.is_empty() {
        return Err(format!("api.tls_cert {}: no certificate", cfg.tls_cert));
    }
    // The key's error names the file, never its content.
    let key = PrivateKeyDer::from_pem_file(&cfg.tls_key)
        .map_err(|e| format!("api.tls_key {}: {e}", cfg.tls_key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("api.tls_cert / api.tls_key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Bounds {
    pub fn of(cfg: &ApiConfig) -> Bounds {
        Bounds {
            max_connections: cfg.max_connections.max(1),
            header_timeout: cfg.header_timeout,
            idle_timeout: cfg.idle_timeout,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then connections finish their
/// current request and close.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    bounds: Bounds,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(bounds.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                metrics.http_connection_limit_hits.fetch_add(1, Relaxed);
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // No Nagle delay on answers: they are small and latency is the point.
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            app: app.clone(),
            tls: tls.clone(),
            bounds,
            metrics: metrics.clone(),
            stop: stop_rx.clone(),
        };
        tokio::spawn(async move {
            conn.metrics.http_connections.fetch_add(1, Relaxed);
            conn.serve(tcp).await;
            conn.metrics.http_connections.fetch_sub(1, Relaxed);
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    // Wait (bounded) for the connections to finish what they are answering.
    let all = u32::try_from(bounds.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(bounds.header_timeout, slots.acquire_many(all)).await;
}

struct Connection {
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    bounds: Bounds,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    async fn serve(&self, tcp: TcpStream) {
        let activity = Arc::new(Activity::new());
        let tracked = Tracked {
            inner: tcp,
            activity: activity.clone(),
        };
        match &self.tls {
            None => self.http(tracked, activity).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.bounds.header_timeout, acceptor.accept(tracked))
                    .await
                {
                    Ok(Ok(stream)) => self.http(stream, activity).await,
                    Ok(Err(error)) => {
                        self.metrics.http_tls_failures.fetch_add(1, Relaxed);
                        tracing::debug!(%error, "TLS handshake failed");
                    }
                    Err(_) => {
                        self.metrics.http_tls_failures.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }

    async fn http<S>(&self, io: S, activity: Arc<Activity>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.bounds.header_timeout);
        let conn =
            builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(self.app.clone()));
        tokio::pin!(conn);
        let mut stop = self.stop.clone();
        let mut stopping = *stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        let idle = self.bounds.idle_timeout;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(error) = r {
                        if error.is_timeout() {
                            self.metrics.http_header_timeouts.fetch_add(1, Relaxed);
                        }
                        tracing::debug!(%error, "HTTP connection ended");
                    }
                    return;
                }
                _ = activity.idle_for(idle) => {
                    // Nothing moved either way for `idle`: every handler's own wait is
                    // shorter, so no answer is being cut. Dropping the future closes it.
                    self.metrics.http_idle_closed.fetch_add(1, Relaxed);
                    return;
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When the connection last moved a byte, in ms since it opened.
struct Activity {
    opened: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = last + idle;
            if tokio::time::Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// A stream that notes every read and write that moved bytes.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
