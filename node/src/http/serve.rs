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
//! - hyper answers the requests it cannot parse (400, 414, 431) itself, with an empty body:
//!   [`EnvelopeErrors`] gives those answers the envelope every other error has.
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
use jcs_api::{ApiError, Envelope, ErrorCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Refused connections answered at once (each for at most [`LINGER`]); beyond them a
/// refused connection is closed with whatever of the 503 its socket takes without waiting.
const MAX_REFUSING: usize = 512;
/// How long a refused connection, or one answered with an error hyper raised, is kept open
/// after its answer to read what the client still sends: closing a socket with unread input
/// resets it, and the reset can destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and dropped while lingering.
const LINGER_BYTES: usize = 1 << 20;
/// Only this tail of a write is searched for an error head hyper wrote (they are ~100 bytes).
const HEAD_SEARCH: usize = 1024;
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
    /// A request body must arrive within this after its head, or the request is answered 408;
    /// a client that takes none of an answer's bytes for this long is cut off.
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
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        // One flat buffer per write, so that `EnvelopeErrors` sees whole heads.
        .writev(false);
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
        let conn =
            self.builder.serve_connection(TokioIo::new(EnvelopeErrors::new(stream, self.body_read_timeout)), service);
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
        let mut response = Response::new(AxumBody::from(envelope(ErrorCode::RequestTimeout, &message)));
        *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(response);
    }
    Ok(response)
}

/// The error envelope for an answer with HTTP `status`, as JSON text.
fn envelope(code: ErrorCode, message: &str) -> Vec<u8> {
    serde_json::to_vec(&Envelope::error(&ApiError::new(code, message))).expect("an envelope serializes")
}

/// The whole answer to a connection over the cap.
fn refusal_response(max_connections: usize) -> Bytes {
    let message = format!("too many connections: this node serves {max_connections} at once; retry later");
    let body = envelope(ErrorCode::TooManyConnections, &message);
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

/// A connection's socket that puts the envelope into the error answers hyper writes itself.
///
/// hyper answers a request it cannot parse (`400`, `414`, `431`) with a head only,
/// `content-length: 0`, then closes. With `writev(false)` such a head reaches `poll_write` whole,
/// at the end of one buffer (after any earlier pipelined answer), and the handlers never send an
/// error without a body, so a buffer ending in a 4xx/5xx head with `content-length: 0` is one of
/// hyper's: it is rewritten with the envelope for its status. The rewritten bytes are reported
/// as the original length once taken, and drained before any later write, flush or shutdown.
/// A connection so answered lingers at shutdown, reading what the client still sends.
///
/// It also ends a connection whose client stops reading: a write (or flush) that makes no
/// progress for `stall_after` fails with `TimedOut`, so a client that asks for a large answer
/// and never reads it does not hold its slot and the buffered answer for ever.
struct EnvelopeErrors<T> {
    inner: T,
    stall_after: Duration,
    /// Set while the socket takes no bytes.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Rewritten bytes not yet written, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
    /// An error answer was rewritten: linger before closing.
    linger: bool,
    shut: bool,
    lingered: usize,
    linger_until: Option<Pin<Box<Sleep>>>,
}

impl<T> EnvelopeErrors<T> {
    fn new(inner: T, stall_after: Duration) -> Self {
        EnvelopeErrors {
            inner,
            stall_after,
            stalled: None,
            pending: Vec::new(),
            sent: 0,
            linger: false,
            shut: false,
            lingered: 0,
            linger_until: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> EnvelopeErrors<T> {
    /// `poll` (a write or flush on the socket) as it went, unless it has made no progress for
    /// `stall_after`: then `TimedOut`.
    fn unless_stalled<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stall_after = self.stall_after;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall_after)));
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")));
        }
        Poll::Pending
    }

    fn poll_inner_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.unless_stalled(cx, poll)
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let pending = std::mem::take(&mut self.pending);
            let poll = self.poll_inner_write(cx, &pending[self.sent..]);
            self.pending = pending;
            let n = ready!(poll)?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for EnvelopeErrors<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for EnvelopeErrors<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let Some(rewritten) = with_envelope(buf) else {
            return this.poll_inner_write(cx, buf);
        };
        this.pending = rewritten;
        this.linger = true;
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.unless_stalled(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if !this.shut {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.shut = true;
        }
        if !this.linger {
            return Poll::Ready(Ok(()));
        }
        let until = this.linger_until.get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
        if until.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let mut sink = [0u8; 4096];
        while this.lingered < LINGER_BYTES {
            let mut buf = ReadBuf::new(&mut sink);
            match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => break,
                Ok(()) => this.lingered += buf.filled().len(),
                Err(_) => break,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// `buf` with the error head hyper wrote at its end given the envelope, or `None` when it does
/// not end with a complete 4xx/5xx head carrying `content-length: 0`.
fn with_envelope(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let from = buf.len().saturating_sub(HEAD_SEARCH);
    let start = from + buf[from..].windows(7).rposition(|w| w == b"HTTP/1.")?;
    let head = std::str::from_utf8(&buf[start..buf.len() - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !matches!(parts.next()?, "HTTP/1.1" | "HTTP/1.0") {
        return None;
    }
    let code = parts.next()?;
    // Only the answers hyper writes itself (proto/h1/role.rs `on_error`): 400, 414, 431.
    let status: u16 = code.parse().ok().filter(|s| matches!(s, 400 | 414 | 431) && code.len() == 3)?;
    let mut kept = Vec::new();
    let mut empty = false;
    let mut dated = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.contains(' ') {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            empty = value.trim() == "0";
            if !empty {
                return None;
            }
        } else if name.eq_ignore_ascii_case("date") || name.eq_ignore_ascii_case("connection") {
            dated |= name.eq_ignore_ascii_case("date");
            kept.push(line);
        } else {
            // Not a head hyper wrote: it writes no other header on these answers.
            return None;
        }
    }
    if !empty || !dated {
        return None;
    }
    let (code, message) = match status {
        414 => (ErrorCode::UriTooLong, "the request target is longer than 65534 bytes"),
        431 => (ErrorCode::HeadersTooLarge, "the request line and headers are larger than 96 KiB"),
        _ => (ErrorCode::MalformedRequest, "the request line or a header is malformed"),
    };
    let body = envelope(code, message);
    let mut out = Vec::with_capacity(start + head.len() + body.len() + 64);
    out.extend_from_slice(&buf[..start]);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for line in kept {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
    );
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n";

    /// The head and the envelope of one rewritten answer.
    fn split(answer: &[u8]) -> (String, serde_json::Value) {
        let at = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
        let head = String::from_utf8(answer[..at].to_vec()).unwrap();
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length: ")).expect("a content-length").parse().unwrap();
        assert_eq!(length, answer.len() - at, "{head}");
        (head, serde_json::from_slice(&answer[at..]).unwrap())
    }

    #[test]
    fn hyper_error_heads_get_the_envelope() {
        for (status, code) in [(400, "MALFORMED_REQUEST"), (414, "URI_TOO_LONG"), (431, "HEADERS_TOO_LARGE")] {
            let head =
                format!("HTTP/1.1 {status} Reason\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n");
            let answer = with_envelope(head.as_bytes()).expect("rewritten");
            let (head, envelope) = split(&answer);
            assert!(head.starts_with(&format!("HTTP/1.1 {status} Reason\r\n")), "{head}");
            assert!(head.contains("\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n"), "{head}");
            assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
            assert_eq!(envelope["status"], status);
            assert_eq!(envelope["code"], code);
            assert!(!envelope["errorMsg"].as_str().unwrap().is_empty());
            assert!(envelope["data"].is_null());
        }
    }

    #[test]
    fn an_earlier_pipelined_answer_is_kept_as_it_is() {
        let earlier =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"x\":\"HTTP/1\"}";
        let buf = [&earlier[..], HYPER_431].concat();
        let answer = with_envelope(&buf).expect("rewritten");
        assert_eq!(&answer[..earlier.len()], &earlier[..]);
        let (head, envelope) = split(&answer[earlier.len()..]);
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert_eq!(envelope["code"], "HEADERS_TOO_LARGE");
    }

    #[test]
    fn other_answers_are_untouched() {
        let body = String::from_utf8(envelope(ErrorCode::NotFound, "job 'x' not found")).unwrap();
        for buf in [
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string(),
            "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\n\r\n{body}", body.len()),
            // A head sent alone, its body to follow.
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\n\r\n", body.len()),
            "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n".to_string(),
            "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_string(),
            // Not complete yet.
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n".to_string(),
            "HTTP/1.1 43 X\r\ncontent-length: 0\r\n\r\n".to_string(),
            // Statuses hyper never writes itself, heads without its date or with other headers:
            // bytes that only look like its answers (a log can carry anything).
            "HTTP/1.1 503 X\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n".to_string(),
            "HTTP/1.1 400 X\r\ncontent-length: 0\r\n\r\n".to_string(),
            "HTTP/1.1 400 X\r\ncontent-length: 0\r\nx-log: 1\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n"
                .to_string(),
        ] {
            assert_eq!(with_envelope(buf.as_bytes()), None, "{buf}");
        }
    }

    /// A socket that takes at most 3 bytes a write and is not ready every other time.
    #[derive(Default)]
    struct Trickle {
        out: Vec<u8>,
        ready: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(3);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What reaches the socket when `writes` are written through [`EnvelopeErrors`], then
    /// flushed and shut down.
    async fn through(writes: &[&[u8]]) -> Vec<u8> {
        let mut io = EnvelopeErrors::new(Trickle::default(), Duration::from_secs(3600));
        for write in writes {
            io.write_all(write).await.unwrap();
        }
        io.flush().await.unwrap();
        io.shutdown().await.unwrap();
        io.inner.out
    }

    #[tokio::test]
    async fn writes_split_by_the_socket_come_out_whole() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(through(&[ok, ok]).await, [&ok[..], ok].concat());
        let expected = [&ok[..], &with_envelope(HYPER_431).unwrap()].concat();
        assert_eq!(through(&[ok, HYPER_431]).await, expected);
        assert_eq!(through(&[&[&ok[..], HYPER_431].concat()]).await, expected);
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
