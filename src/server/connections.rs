//! Accepting and serving connections within bounds, so that no client can pin the
//! service: a request head must arrive within the header read timeout (counted from
//! when the connection opens or goes idle, so it is the keep-alive timeout too); a
//! write that the client does not take within the write timeout closes the connection;
//! and at most `max_open` connections are open, well below the file-descriptor limit.
//! At the bound a new connection is still accepted, and the oldest idle one (no request
//! in flight) is closed to make room: a health check always gets through; only when
//! every open connection has a request in flight is the new one closed at once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::timed_io::WriteTimeout;

/// The bounds every connection keeps to.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_open: usize,
    /// Time for a request head to arrive, from when the connection opens or goes idle.
    pub header_read_timeout: Duration,
    /// Time a write may wait for the client to take it.
    pub write_timeout: Duration,
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    by_id: BTreeMap<u64, OpenConnection>,
}

#[derive(Debug, Clone)]
struct OpenConnection {
    /// Requests whose answer is not yet wholly sent.
    in_flight: Arc<AtomicUsize>,
    /// Told to close the connection to make room.
    evict: Arc<Notify>,
}

/// Accepts on `listener` and serves `router` until `stop` resolves; then lets every open
/// connection finish its request in flight and close, for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let tasks = TaskTracker::new();
    let (closing, closing_seen) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some((id, connection)) = admit(&open, limits.max_open) else {
            tracing::warn!(
                open = limits.max_open,
                "every connection is busy: a new one is closed"
            );
            continue;
        };
        let served = serve_one(
            stream,
            router.clone(),
            limits,
            connection,
            closing_seen.clone(),
        );
        let open = open.clone();
        tasks.spawn(async move {
            served.await;
            open.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .by_id
                .remove(&id);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!("connections still open after the grace period are closed");
    }
    Ok(())
}

/// Makes room for a new connection (closing the oldest idle one at the bound) and
/// registers it; `None` when every open connection is busy.
fn admit(open: &Mutex<Open>, max_open: usize) -> Option<(u64, OpenConnection)> {
    let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
    if open.by_id.len() >= max_open {
        let idle = open
            .by_id
            .iter()
            .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id)?;
        if let Some(evicted) = open.by_id.remove(&idle) {
            evicted.evict.notify_one();
        }
    }
    let id = open.next_id;
    open.next_id += 1;
    let connection = OpenConnection {
        in_flight: Arc::default(),
        evict: Arc::default(),
    };
    open.by_id.insert(id, connection.clone());
    Some((id, connection))
}

/// Serves one connection until it ends, is evicted, or shutdown closes it.
async fn serve_one(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    OpenConnection { in_flight, evict }: OpenConnection,
    mut closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let answering = InFlight::enter(&in_flight);
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            // The connection counts as busy until the answer's body is wholly sent.
            Ok::<_, Infallible>(response.map(move |body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &answering;
                    frame
                }))
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut connection = std::pin::pin!(builder.serve_connection_with_upgrades(io, service));
    let mut shutting_down = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, "connection ended");
                }
                return;
            }
            () = evict.notified() => {
                tracing::debug!("idle connection closed to make room");
                return;
            }
            changed = closing.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Counts a request in flight on its connection until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A failed accept: the peer's own trouble is ignored; anything else (out of file
/// descriptors, say) is logged and accepting pauses briefly so that connections close.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
