//! The listener: accepts connections under a cap, serves each one with hyper's HTTP/1.1 server under a header
//! timeout, and shuts down without waiting for idle sockets.
//!
//! `axum::serve` has none of this: a client that sends its headers one line every few seconds, or an idle keep-alive
//! socket, would stay open forever, and about a thousand of them exhaust the file limit, after which signed alerts
//! are refused at `accept`. Here
//!
//! - the head of every request must arrive within `listener.header_timeout` of the connection opening or of the
//!   previous answer; hyper's timer covers both, so an idle keep-alive connection is closed after the same time;
//! - at most `max_connections` connections are open at once, a number kept below the process's file limit (raised
//!   to its hard limit at start) so that the store, the executor's pipes and SMTP always find a descriptor: while
//!   the cap is reached, new connections wait in the kernel's backlog instead of taking a descriptor;
//! - on shutdown the listener closes, idle connections are closed at once, and requests in flight finish (the
//!   service bounds that with its deadline).
//!
//! It knows nothing of routes: it serves whatever [`axum::Router`] it is given, and tells handlers the client's
//! address through axum's [`ConnectInfo`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Descriptors kept free for everything that is not a client connection: the store and its WAL, readers, the
/// executor's pipes, outgoing SMTP, the log.
const RESERVED_DESCRIPTORS: u64 = 256;

/// How long the accept loop rests after `accept` fails (out of descriptors, for one), so that it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How connections are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The time a request's head has to arrive, counted from the connection's start or the previous answer.
    pub header_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
}

/// Raises the soft limit on open files to the hard limit, and returns the soft limit in force afterwards (`None`
/// where the platform has no such limit).
pub fn raise_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                } else {
                    tracing::warn!(
                        soft = limit.rlim_cur,
                        hard = limit.rlim_max,
                        "cannot raise the open file limit; keeping the soft limit"
                    );
                }
            }
        }
        Some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// The connection cap in force: the configured one, lowered where needed to stay below the file limit.
pub fn connection_cap(configured: usize, file_limit: Option<u64>) -> usize {
    let Some(limit) = file_limit else { return configured.max(1) };
    let room =
        if limit > 2 * RESERVED_DESCRIPTORS { limit - RESERVED_DESCRIPTORS } else { limit / 2 };
    let cap = (configured as u64).min(room).max(1) as usize;
    if cap < configured {
        tracing::warn!(
            configured,
            cap,
            file_limit = limit,
            "listener.max_connections lowered to stay below the open file limit"
        );
    }
    cap
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes idle connections and waits for the others.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the connection semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept a connection; trying again shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // Header timeouts and clients that hang up are routine; they say nothing about the service.
                tracing::debug!(%peer, error = %err, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The client's address, as the listener recorded it.
pub fn peer(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_file_limit() {
        assert_eq!(connection_cap(1024, Some(1024)), 768);
        assert_eq!(connection_cap(1024, Some(65536)), 1024);
        assert_eq!(connection_cap(1024, Some(300)), 150);
        assert_eq!(connection_cap(64, None), 64);
    }
}
