//! The REST API's accept loop, in place of `axum::serve`, so that an open connection is cheap
//! and never open for ever:
//!
//! - `axum::serve` rebuilt every route for each connection (`Router::with_state(())`, about
//!   1.4 MB each); here the router is finished once and each connection clones an `Arc`.
//! - it gave hyper no timer, so a client that sent half a head, or nothing, or kept an idle
//!   keep-alive connection, held it for good. Here hyper's header read timeout (which also
//!   bounds an idle keep-alive connection's wait for its next request) closes them, and a
//!   request body not received within its own timeout is answered 408.
//! - connections are capped per node: past the cap a client gets a 503 envelope and the close.
//!
//! On shutdown the loop stops accepting, asks every connection to finish its request and
//! close, and waits for them up to a bound (a log follow stream may never end).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::Response;
use axum::{BoxError, Router};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use jcs_api::{Envelope, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Refused connections answered at once (each for at most [`LINGER`]); beyond them a
/// refused connection is closed with whatever of the 503 its socket takes without waiting.
const MAX_REFUSING: usize = 512;
/// How long a refused connection is kept open after its answer to read what the client still
/// sends: closing a socket with unread input resets it, and the reset can destroy the answer
/// before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and dropped while lingering.
const LINGER_BYTES: usize = 1 << 20;
/// Largest request line plus headers (hyper's read buffer while it reads a head): room for the
/// longest target hyper takes (65,534 bytes; longer get 414) and 30 KiB of headers; more gets
/// 431. It bounds what a connection that sends a head costs.
const MAX_HEAD_BYTES: usize = 96 * 1024;

/// The limits of the REST API's connections.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// A request head (or, on an idle keep-alive connection, the next one) must arrive within this.
    pub header_read_timeout: Duration,
    /// A request body must arrive within this after its head, or the request is answered 408.
    pub body_read_timeout: Duration,
    /// On shutdown, open requests get this long to finish before their connections are closed.
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then closes gracefully.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    raise_fd_limit(limits.max_connections);
    // Every route finished now, once: a connection only clones an `Arc`.
    let router = router.with_state(());
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(MAX_HEAD_BYTES);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let refusal = refusal_response(limits.max_connections);
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    // Refusals are logged at most once a minute, with how many there were.
    let (mut refused, mut warned_at) = (0u64, None::<Instant>);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("jcs_http_connections_refused_total").increment(1);
            refused += 1;
            if warned_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                let max_connections = limits.max_connections;
                tracing::warn!(max_connections, refused, "connection cap reached: refusing connections");
                (refused, warned_at) = (0, Some(Instant::now()));
            }
            refuse(stream, &refusing, refusal.clone());
            continue;
        };
        let connection = Connection {
            peer,
            builder: builder.clone(),
            router: router.clone(),
            body_read_timeout: limits.body_read_timeout,
            closed: closed.clone(),
            _permit: permit,
            _open: Open::count(),
        };
        connections.spawn(connection.run(stream));
    }
    drop(listener);
    let open = connections.len();
    tracing::info!(open, grace_ms = limits.shutdown_grace.as_millis() as u64, "REST API closing its connections");
    let _ = closing.send(true);
    let drained =
        tokio::time::timeout(limits.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = connections.len(), "connections still open after the shutdown grace: closed");
        connections.shutdown().await;
    }
}

/// Accept errors are a client that left (go on) or a lack of descriptors or memory (wait a
/// little for connections to close rather than spin).
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::*;
    if matches!(error.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One accepted connection and what it needs; the permit is its place under the cap.
struct Connection {
    peer: SocketAddr,
    builder: Arc<http1::Builder>,
    router: Router,
    body_read_timeout: Duration,
    closed: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
    _open: Open,
}

/// Counts an open connection in `jcs_http_connections` as long as it lives (aborted too).
struct Open;

impl Open {
    fn count() -> Open {
        metrics::gauge!("jcs_http_connections").increment(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("jcs_http_connections").decrement(1.0);
    }
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let (router, limit) = (self.router.clone(), self.body_read_timeout);
        let service = hyper::service::service_fn(move |request| answer(router.clone(), request, limit));
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = closing(&mut self.closed) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = result {
            // Timeouts, resets and unparsable requests: the client's doing, not worth a warning.
            tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
        }
    }
}

/// Resolves once the server closes (or is gone).
async fn closing(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|closing| *closing).await;
}

/// Serves one request; its body, if any, must arrive within `limit`.
async fn answer(router: Router, request: Request<Incoming>, limit: Duration) -> Result<Response, Infallible> {
    if request.body().is_end_stream() {
        return router.oneshot(request).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| DeadlineBody::new(body, limit, expired.clone()));
    let response = router.oneshot(request).await?;
    if expired.load(Ordering::Acquire) {
        tracing::debug!(limit_ms = limit.as_millis() as u64, "request body not received in time");
        let message = format!("the request body was not received within {} ms", limit.as_millis());
        let mut response = Response::new(AxumBody::from(envelope(408, ErrorCode::RequestTimeout, &message)));
        *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(response);
    }
    Ok(response)
}

/// The error envelope for an answer with HTTP `status`, as JSON text.
fn envelope(status: u16, code: ErrorCode, message: &str) -> Vec<u8> {
    let envelope = Envelope::<()> { status, code: code.as_str().into(), error_msg: message.into(), data: None };
    serde_json::to_vec(&envelope).expect("an envelope serializes")
}

/// The whole answer to a connection over the cap.
fn refusal_response(max_connections: usize) -> Bytes {
    let message = format!("too many connections: this node serves {max_connections} at once; retry later");
    let body = envelope(503, ErrorCode::TooManyConnections, &message);
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out.into()
}

/// Answers a connection over the cap with `refusal` and closes it, reading what the client
/// sent meanwhile so that the close does not reset the answer away.
fn refuse(stream: TcpStream, refusing: &Arc<Semaphore>, refusal: Bytes) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        // Flooded: what a fresh socket's send buffer takes (all of it) and the close.
        let _ = stream.try_write(&refusal);
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(LINGER, async {
            stream.write_all(&refusal).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut read = 0;
            while read < LINGER_BYTES {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => read += n,
                }
            }
            io::Result::Ok(())
        })
        .await;
    });
}

/// Raises this process's soft limit of open files to the hard limit, so that the connection
/// cap, not the descriptor limit, is what binds.
fn raise_fd_limit(max_connections: usize) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot raise the open-file limit");
        }
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft < max_connections as u64 + 1024 {
        tracing::warn!(soft, hard, max_connections, "the open-file limit leaves little room above max_connections");
    } else {
        tracing::info!(soft, hard, max_connections, "open-file limit");
    }
}

/// Why a request body stopped: it was not received in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {} ms", .0.as_millis())]
struct BodyTimedOut(Duration);

/// A request body that fails once its deadline passes while it waits for data, and says so
/// through `expired` (the handler sees only a body error; the service answers 408).
struct DeadlineBody {
    body: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Made the first time the body waits for data.
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(body: Incoming, limit: Duration, expired: Arc<AtomicBool>) -> Self {
        DeadlineBody { body, deadline: Instant::now() + limit, limit, sleep: None, expired }
    }

    fn expire(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(BodyTimedOut(self.limit).into())))
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(sleep) = &mut this.sleep {
            if sleep.as_mut().poll(cx).is_ready() {
                return this.expire();
            }
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        this.expire()
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head and the envelope of one answer.
    fn split(answer: &[u8]) -> (String, serde_json::Value) {
        let at = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
        let head = String::from_utf8(answer[..at].to_vec()).unwrap();
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length: ")).expect("a content-length").parse().unwrap();
        assert_eq!(length, answer.len() - at, "{head}");
        (head, serde_json::from_slice(&answer[at..]).unwrap())
    }

    #[test]
    fn the_refusal_is_a_complete_503_envelope() {
        let refusal = refusal_response(7);
        let (head, envelope) = split(&refusal);
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("\r\nconnection: close\r\n") && head.contains("\r\nretry-after: 1\r\n"), "{head}");
        assert_eq!((envelope["status"].as_u64(), envelope["code"].as_str()), (Some(503), Some("TOO_MANY_CONNECTIONS")));
        assert!(envelope["errorMsg"].as_str().unwrap().contains("7"), "{envelope}");
    }
}
