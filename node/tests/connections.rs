//! The REST API's connections under abuse, against real `jcs serve` processes: thousands of
//! idle connections of three kinds (nothing sent, half a head, a head and half a body) cost
//! little memory, leave the node answering, are capped with a 503 envelope, and are closed by
//! the node once their timeouts pass, as are idle keep-alive connections; the errors hyper
//! raises below the handlers (414, 400, 431) are envelopes; a node with such connections open
//! still shuts down within its bound.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::eventually;
use common::procs::free_port;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A `jcs serve` process: a one-member cluster on its own ports and data dir.
struct Jcs {
    child: Child,
    http: u16,
    dir: tempfile::TempDir,
}

impl Jcs {
    fn start(flags: &[&str]) -> Jcs {
        let dir = tempfile::tempdir().unwrap();
        let http = free_port();
        let log = std::fs::File::create(dir.path().join("jcs.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jcs"))
            .args(["serve", "--node-id", "1", "--log", "warn"])
            .args(["--http", &format!("127.0.0.1:{http}"), "--raft", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("jcs binary starts");
        Jcs { child, http, dir }
    }

    async fn wait_ready(&self) {
        eventually("node ready", || async { self.try_get("/readyz").await.is_some_and(|a| a.status == 200) }).await;
    }

    /// `GET path` on a connection of its own, `None` on a transport error.
    async fn try_get(&self, path: &str) -> Option<Answer> {
        let request = format!("GET {path} HTTP/1.1\r\nhost: jcs\r\nconnection: close\r\n\r\n");
        let bytes = exchange(self.http, request.into_bytes()).await.ok()?;
        answers(&bytes).into_iter().next()
    }

    async fn get(&self, path: &str) -> Answer {
        self.try_get(path).await.unwrap_or_else(|| panic!("GET {path}: no answer; log: {}", self.log()))
    }

    /// The node's count of open REST connections (its own metrics request included).
    async fn open_connections(&self) -> usize {
        let metrics = self.get("/metrics").await;
        let line = metrics.text.lines().find(|l| l.starts_with("jcs_http_connections ")).unwrap_or("x 0");
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as usize
    }

    /// Resident memory, KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jcs.log")).unwrap_or_default()
    }

    /// Connects `n` times as `kind`.
    async fn open(&self, kind: Kind, n: usize) -> Vec<TcpStream> {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let mut stream = TcpStream::connect(("127.0.0.1", self.http)).await.unwrap();
            // A refused connection may already be closed: what it sent does not matter.
            let _ = stream.write_all(kind.bytes()).await;
            streams.push(stream);
        }
        streams
    }
}

impl Drop for Jcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ways a client can hold a connection without finishing a request, and (`KeepAlive`)
/// without starting the next one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Silent,
    HalfHead,
    HalfBody,
    KeepAlive,
}

const KINDS: [Kind; 3] = [Kind::Silent, Kind::HalfHead, Kind::HalfBody];

impl Kind {
    fn bytes(self) -> &'static [u8] {
        match self {
            Kind::Silent => b"",
            Kind::HalfHead => b"GET /healthz HTTP/1.1\r\nhost: jcs\r\nx-slow: ",
            Kind::HalfBody => {
                b"POST /openapi/v1/trainjob HTTP/1.1\r\nhost: jcs\r\ncontent-type: application/json\r\n\
                  content-length: 1000\r\n\r\n{\"name\": \"slo"
            }
            Kind::KeepAlive => b"GET /healthz HTTP/1.1\r\nhost: jcs\r\n\r\n",
        }
    }
}

/// One answer off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    text: String,
}

impl Answer {
    fn envelope(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not an envelope: {}{}", self.head, self.text))
    }

    /// Asserts this is the envelope for `status` with `code`.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}{}", self.head, self.text);
        assert!(self.head.to_ascii_lowercase().contains("\r\ncontent-type: application/json\r\n"), "{}", self.head);
        let envelope = self.envelope();
        assert_eq!(envelope["status"], status, "{envelope}");
        assert_eq!(envelope["code"], code, "{envelope}");
        assert!(!envelope["errorMsg"].as_str().unwrap().is_empty(), "{envelope}");
        assert!(envelope["data"].is_null(), "{envelope}");
    }
}

/// The answers in `bytes`, each framed by its content-length.
fn answers(mut bytes: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end + 4]).to_string();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0usize);
        let body = &bytes[end + 4..];
        let length = length.min(body.len());
        out.push(Answer { status, head, text: String::from_utf8_lossy(&body[..length]).to_string() });
        bytes = &body[length..];
    }
    out
}

/// Sends `request` on a new connection and reads until the node closes it.
async fn exchange(port: u16, request: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut read, mut write) = stream.into_split();
    // Written beside the read: the node may answer before it took everything.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        write
    });
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut bytes)).await;
    let _ = writer.await;
    read.map_err(|_| std::io::Error::other("no close within 20 s"))??;
    Ok(bytes)
}

/// Reads each stream until the node closes it: what it sent, and when, from `started`.
fn until_closed(streams: Vec<TcpStream>, started: Instant) -> JoinSet<(Vec<u8>, Duration)> {
    let mut reads = JoinSet::new();
    for mut stream in streams {
        reads.spawn(async move {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes).await;
            (bytes, started.elapsed())
        });
    }
    reads
}

/// Lets this test process hold thousands of sockets.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read or write the struct they are given, live for the calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(limit.rlim_cur >= 8_192, "this test needs 8192 open files, the hard limit is {}", limit.rlim_cur);
}

/// Growth of a node's resident memory per idle connection held, at most: 4 × what a debug build
/// measured (14–16 KiB; with `axum::serve` it was 1,384 KiB).
const MAX_KIB_PER_CONNECTION: u64 = 64;
const CAP: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_cheap_capped_and_closed() {
    raise_fd_limit();
    let cap = CAP.to_string();
    let patient = Jcs::start(&[
        "--max-connections",
        &cap,
        "--header-read-timeout-ms",
        "60000",
        "--body-read-timeout-ms",
        "60000",
    ]);
    let strict =
        Jcs::start(&["--max-connections", &cap, "--header-read-timeout-ms", "1000", "--body-read-timeout-ms", "1000"]);
    tokio::join!(patient.wait_ready(), strict.wait_ready());

    // 900 held connections, 300 of each kind, under the cap of 1000.
    for _ in 0..20 {
        assert_eq!(patient.get("/healthz").await.status, 200);
    }
    let before = patient.rss_kib();
    let mut held = Vec::new();
    for kind in KINDS {
        held.extend(patient.open(kind, 300).await);
    }
    eventually("the node holds the 900 connections", || async { patient.open_connections().await > 900 }).await;
    let grown = patient.rss_kib().saturating_sub(before);
    eprintln!("900 idle connections: RSS grew {grown} KiB, {} KiB each", grown / 900);
    assert!(grown < 900 * MAX_KIB_PER_CONNECTION, "RSS grew {grown} KiB for 900 connections");
    let answer = patient.get("/healthz").await;
    assert_eq!(answer.status, 200, "{answer:?}");

    // 2,100 more: about 100 are taken, the rest get the 503 envelope and the close.
    let started = Instant::now();
    let mut more = Vec::new();
    for kind in KINDS {
        more.extend(patient.open(kind, 700).await);
    }
    let mut reads = until_closed(more, started);
    let mut refused = 0;
    while refused < 1_990 {
        let next = tokio::time::timeout(Duration::from_secs(20), reads.join_next()).await;
        let (bytes, _) = next.expect("refusals within 20 s").expect("a read").unwrap();
        let answer = answers(&bytes).into_iter().next().unwrap_or_else(|| panic!("refused without an answer"));
        answer.assert_error(503, "TOO_MANY_CONNECTIONS");
        assert!(answer.head.contains("\r\nretry-after: 1\r\n"), "{}", answer.head);
        refused += 1;
    }
    let answer = patient.get("/healthz").await;
    answer.assert_error(503, "TOO_MANY_CONNECTIONS");
    assert!(answer.head.contains("\r\nconnection: close\r\n"), "{}", answer.head);
    // The clients leave: their places are free again.
    drop(held);
    reads.abort_all();
    eventually("the node answers once the clients left", || async {
        patient.try_get("/healthz").await.is_some_and(|a| a.status == 200)
    })
    .await;

    // With 1 s timeouts, the node closes every kind by itself; the half-sent body gets a 408.
    let started = Instant::now();
    let mut reads = JoinSet::new();
    for kind in [Kind::Silent, Kind::HalfHead, Kind::HalfBody, Kind::KeepAlive] {
        let mut each = until_closed(strict.open(kind, 225).await, started);
        reads.spawn(async move {
            let mut closed = Vec::new();
            while let Some(read) = each.join_next().await {
                closed.push(read.unwrap());
            }
            (kind, closed)
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(20), reads.join_all()).await;
    for (kind, closed) in all.expect("the node closes every idle connection within 20 s") {
        assert_eq!(closed.len(), 225);
        for (bytes, after) in closed {
            assert!(after >= Duration::from_millis(900), "{kind:?} closed after {after:?}, before its timeout");
            match kind {
                Kind::HalfBody => answers(&bytes)[0].assert_error(408, "REQUEST_TIMEOUT"),
                Kind::KeepAlive => assert_eq!(answers(&bytes).iter().map(|a| a.status).collect::<Vec<_>>(), [200]),
                _ => assert!(bytes.is_empty(), "{kind:?}: {}", String::from_utf8_lossy(&bytes)),
            }
        }
    }
    assert_eq!(strict.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn errors_below_the_handlers_are_envelopes() {
    let node = Jcs::start(&[]);
    node.wait_ready().await;
    let send = |request: String| exchange(node.http, request.into_bytes());
    let id = "j".repeat(70_000);
    let answer = send(format!("GET /openapi/v1/trainjob/{id} HTTP/1.1\r\nhost: jcs\r\n\r\n")).await.unwrap();
    answers(&answer)[0].assert_error(414, "URI_TOO_LONG");
    for malformed in
        ["GET /healthz HTTP/1.1 extra\r\n\r\n", "GET /healthz HTTP/1.1\r\nhost jcs\r\n\r\n", "\x01\x02\r\n\r\n"]
    {
        let answer = send(malformed.to_string()).await.unwrap();
        answers(&answer)[0].assert_error(400, "MALFORMED_REQUEST");
    }
    let big = "b".repeat(200_000);
    let answer = send(format!("GET /healthz HTTP/1.1\r\nhost: jcs\r\nx-big: {big}\r\n\r\n")).await.unwrap();
    answers(&answer)[0].assert_error(431, "HEADERS_TOO_LARGE");

    // An answer pipelined before the error keeps its place; ordinary errors are untouched and
    // keep the connection alive.
    let pipelined = "GET /nowhere HTTP/1.1\r\nhost: jcs\r\n\r\nGET /healthz HTTP/1.1\r\nhost: jcs\r\n\r\nBAD\r\n\r\n";
    let answer = answers(&send(pipelined.to_string()).await.unwrap());
    assert_eq!(answer.len(), 3, "{answer:?}");
    answer[0].assert_error(404, "ROUTE_NOT_FOUND");
    assert_eq!((answer[1].status, answer[1].envelope()["code"].as_str()), (200, Some("OK")));
    answer[2].assert_error(400, "MALFORMED_REQUEST");
}

#[tokio::test]
async fn a_node_with_idle_connections_shuts_down_within_its_bound() {
    // Shutdown grace: write_timeout_ms + placement_wait_ms + 1 s = 2 s, well below the
    // connections' own timeouts (10 s for a head, 30 s for a body).
    let mut node = Jcs::start(&["--write-timeout-ms", "1000", "--placement-wait-ms", "0"]);
    node.wait_ready().await;
    let mut streams = Vec::new();
    for kind in KINDS {
        streams.extend(node.open(kind, 10).await);
    }
    // A keep-alive connection idle after its first answer.
    let mut kept = TcpStream::connect(("127.0.0.1", node.http)).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: jcs\r\n\r\n").await.unwrap();
    let mut first = [0u8; 1024];
    assert!(kept.read(&mut first).await.unwrap() > 0);
    eventually("the node holds the 31 connections", || async { node.open_connections().await > 31 }).await;

    let stopping = Instant::now();
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) }, 0);
    let mut rest = Vec::new();
    assert_eq!(kept.read_to_end(&mut rest).await.unwrap(), 0, "the idle keep-alive connection is closed");
    let mut status = None;
    eventually("the node exits", || {
        status = status.or_else(|| node.child.try_wait().unwrap());
        std::future::ready(status.is_some())
    })
    .await;
    assert!(status.unwrap().success(), "exit {status:?}; log: {}", node.log());
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    drop(streams);
}

/// The open connections the node counts, read from its own metrics (the reading connection
/// itself included).
async fn open_connections(node: &Jcs) -> Option<u64> {
    let metrics = node.try_get("/metrics").await?;
    let line = metrics.text.lines().find(|l| l.starts_with("jcs_http_connections "))?;
    line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|n| n as u64)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    // Only the stall can close this connection: its next head may take a minute.
    let node = Jcs::start(&["--body-read-timeout-ms", "1000", "--header-read-timeout-ms", "60000"]);
    node.wait_ready().await;
    let one = node.get("/openapi.json").await.text.len();
    // Far more than the two sockets' buffers hold: the node's writes must stall.
    let count = (32 << 20) / one + 1;
    let request = "GET /openapi.json HTTP/1.1\r\nhost: jcs\r\n\r\n".repeat(count);
    let stream = TcpStream::connect(("127.0.0.1", node.http)).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The requests go out while nothing is read; the writer ends when the node cuts the link.
    let writer = tokio::spawn(async move { write.write_all(request.as_bytes()).await });
    eventually("the stalled connection is counted", || async { open_connections(&node).await >= Some(2) }).await;
    eventually("the node cuts the stalled connection", || async { open_connections(&node).await == Some(1) }).await;
    let mut received = Vec::new();
    let read_all = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut received)).await;
    assert!(read_all.is_ok(), "the connection ends once its buffered bytes are read");
    let full = count * one;
    assert!(received.len() < full, "{} of {full} bytes: the node waited for the reader", received.len());
    writer.abort();
    assert_eq!(node.get("/healthz").await.status, 200);
}
