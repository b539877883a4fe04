//! A small typed HTTP client for the jcs REST API: builds URLs from path segments (ids are
//! percent-encoded), unwraps the `{status, code, errorMsg, data}` envelope into
//! `Result<T, ClientError>`, and retries what is safe to retry.
//!
//! # Retries
//!
//! A request is retried, up to the configured number of attempts with a short exponential
//! backoff, when
//! * it failed in transport (connection refused or reset, no answer): the node may be restarting;
//! * the node answered `503 NO_LEADER`: an election is under way; the wait follows `Retry-After`;
//! * the node answered `504 TIMEOUT`: the write's outcome is unknown and the server asks for a
//!   retry.
//!
//! With several servers (`--server URL1,URL2,…`), a retry after a transport failure or
//! `NO_LEADER` goes to the next server: any node takes any request, so a client keeps working
//! while one node is down.
//!
//! Job submissions are safe to retry because every attempt carries the same `Idempotency-Key`:
//! the server returns the job the first attempt created. Stop and replace (PUT) are idempotent by
//! nature. Catalog creates and deletes have no key: when a first attempt was applied but its
//! answer lost, the retry reports `ALREADY_EXISTS` (create) or `NOT_FOUND` (delete), and the CLI
//! shows exactly that error; check with `get` before trying again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jcs_api::{Envelope, ErrorCode};
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::http::IDEMPOTENCY_HEADER;

/// Every REST path starts with these segments.
const API_PREFIX: [&str; 2] = ["openapi", "v1"];
/// How long one attempt may take before it counts as a transport failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// First retry delay; doubled on every further attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between attempts, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No HTTP answer: connection refused or reset, timeout.
    #[error("cannot reach {url}: {source}")]
    Transport {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    /// The node answered with an error envelope.
    #[error("{code} (HTTP {status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// The `Retry-After` header, when the node sent one.
        retry_after: Option<Duration>,
    },
    /// The answer was not the envelope expected (wrong server, proxy page, version skew).
    #[error("unexpected answer from {url} (HTTP {status}): {detail}")]
    Decode { url: Url, status: u16, detail: String },
}

impl ClientError {
    /// A stable label for counting failures: the envelope's `code`, or `TRANSPORT` / `DECODE`.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Transport { .. } => "TRANSPORT",
            ClientError::Api { code, .. } => code,
            ClientError::Decode { .. } => "DECODE",
        }
    }

    /// How long to wait before retrying, or `None` when a retry cannot help.
    fn retry_delay(&self, backoff: Duration) -> Option<Duration> {
        match self {
            ClientError::Transport { .. } => Some(backoff),
            ClientError::Api { code, retry_after, .. } if code == ErrorCode::NoLeader.as_str() => {
                Some(retry_after.unwrap_or(backoff).min(MAX_BACKOFF))
            }
            ClientError::Api { code, .. } if code == ErrorCode::Timeout.as_str() => Some(backoff),
            _ => None,
        }
    }
}

/// A key unique to this process and call: time, pid and a counter, e.g. `jcs-18c2f…-3f1a-0`.
/// Generated once per logical request so that every retry of it carries the same key.
pub fn unique_key(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{nanos:x}-{:x}-{count}", std::process::id())
}

/// A connection pool to the nodes of one jcs cluster.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The servers, in the order given; requests go to `bases[current]`.
    bases: std::sync::Arc<Vec<Url>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    attempts: u32,
}

impl Client {
    /// A client for `servers` (e.g. `http://127.0.0.1:8080`, or several comma-separated)
    /// keeping up to `pool_size` idle connections per node, making at most `attempts`
    /// attempts per request (1 = no retries).
    pub fn new(servers: &str, pool_size: usize, attempts: u32) -> anyhow::Result<Client> {
        Client::with_timeout(servers, pool_size, attempts, REQUEST_TIMEOUT)
    }

    /// [`Client::new`] with another limit on how long one attempt may take.
    pub fn with_timeout(servers: &str, pool_size: usize, attempts: u32, timeout: Duration) -> anyhow::Result<Client> {
        let mut bases = Vec::new();
        for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let base = Url::parse(server).map_err(|e| anyhow::anyhow!("--server '{server}' is not a URL: {e}"))?;
            if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
                anyhow::bail!("--server '{server}' must be an http:// URL");
            }
            bases.push(base);
        }
        if bases.is_empty() {
            anyhow::bail!("--server names no server");
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool_size)
            .timeout(timeout)
            .user_agent(concat!("jcs-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, bases: std::sync::Arc::new(bases), current: Default::default(), attempts: attempts.max(1) })
    }

    /// A client on the same connection pool that starts at the `n`-th server (modulo their
    /// number) and moves on by itself: spreads a benchmark's clients over every node.
    pub fn starting_at(&self, n: usize) -> Client {
        Client { current: std::sync::Arc::new(n.into()), ..self.clone() }
    }

    /// The URL of `/openapi/v1/{segments}` under the server's base, with a query string.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut path = API_PREFIX.to_vec();
        path.extend_from_slice(segments);
        self.path_url(&path, query)
    }

    /// The URL of `/{segments}` (outside the API prefix: `/admin/…`, `/readyz`).
    pub fn path_url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base().clone();
        url.path_segments_mut().expect("checked in new()").pop_if_empty().extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends the next requests to the next server.
    pub fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    fn base(&self) -> &Url {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// `url` moved onto the current server (the path below the base is kept).
    fn on_current(&self, url: &Url) -> Url {
        let base = self.base();
        let mut moved = url.clone();
        let _ = moved.set_scheme(base.scheme());
        let _ = moved.set_host(base.host_str());
        let _ = moved.set_port(base.port());
        moved
    }

    /// Copies a plain-text download (a replica's log) to stdout as it arrives; with `follow`
    /// the server keeps the stream open while the replica runs.
    pub async fn stream_to_stdout(&self, url: &str, follow: bool) -> anyhow::Result<()> {
        use std::io::Write;
        let mut url = Url::parse(url).map_err(|e| anyhow::anyhow!("bad logUrl '{url}': {e}"))?;
        if follow {
            url.query_pairs_mut().append_pair("follow", "true");
        }
        let http = reqwest::Client::builder().user_agent(concat!("jcs-cli/", env!("CARGO_PKG_VERSION"))).build()?;
        let mut response = http.get(url.clone()).send().await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let bytes = response.bytes().await?;
            let envelope: Envelope<IgnoredAny> = serde_json::from_slice(&bytes).map_err(|_| ClientError::Decode {
                url: url.clone(),
                status,
                detail: snippet(&bytes),
            })?;
            return Err(ClientError::Api {
                status,
                code: envelope.code,
                message: envelope.error_msg,
                retry_after: None,
            }
            .into());
        }
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = response.chunk().await? {
            stdout.write_all(&chunk)?;
            stdout.flush()?;
        }
        Ok(())
    }

    /// `GET` and decode `data`.
    pub async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T, ClientError> {
        self.call(Method::GET, url, None, None).await
    }

    /// Sends `body` as JSON with `method` and decodes `data`.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: &impl serde::Serialize,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("API types serialize to JSON");
        self.call(method, url, Some(Bytes::from(body)), idempotency_key).await
    }

    /// One logical request, retried as the module docs describe. `body` is pre-serialized JSON.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Bytes>,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let result = self.attempt(method.clone(), self.on_current(&url), body.clone(), idempotency_key).await;
            let delay = match &result {
                Err(err) if attempt < self.attempts => err.retry_delay(backoff),
                _ => None,
            };
            let Some(delay) = delay else { return result };
            if matches!(&result, Err(ClientError::Transport { .. }))
                || matches!(&result, Err(ClientError::Api { code, .. }) if code == ErrorCode::NoLeader.as_str())
            {
                self.rotate();
            }
            tokio::time::sleep(delay).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Bytes>,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, url.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json")).body(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header(IDEMPOTENCY_HEADER, key);
        }
        let transport = |source| ClientError::Transport { url: url.clone(), source };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(transport)?;
        let decode = |detail: String| ClientError::Decode { url: url.clone(), status: status.as_u16(), detail };
        if !status.is_success() {
            let envelope: Envelope<IgnoredAny> = serde_json::from_slice(&bytes).map_err(|_| decode(snippet(&bytes)))?;
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: envelope.code,
                message: envelope.error_msg,
                retry_after,
            });
        }
        let envelope: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| decode(e.to_string()))?;
        match envelope.data {
            Some(data) => Ok(data),
            // Operations without a result (delete) answer `data: null`.
            None => T::deserialize(serde_json::Value::Null).map_err(|e| decode(e.to_string())),
        }
    }
}

/// The start of a body that is not an envelope, for the error message.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("not an envelope: {}…", &text[..cut]),
        None if text.is_empty() => "empty body".into(),
        None => format!("not an envelope: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_base_path_and_encode_ids() {
        let client = Client::new("http://h:1/prefix/", 1, 1).unwrap();
        let url = client.url(&["datasets", "coco@2017"], &[("page", "2".into())]);
        assert_eq!(url.as_str(), "http://h:1/prefix/openapi/v1/datasets/coco@2017?page=2");
        let url = client.url(&["centers", "a/b c"], &[]);
        assert_eq!(url.as_str(), "http://h:1/prefix/openapi/v1/centers/a%2Fb%20c");
        assert!(Client::new("localhost:8080", 1, 1).is_err());
        assert!(Client::new(" , ", 1, 1).is_err());
    }

    #[test]
    fn a_retry_moves_to_the_next_server() {
        let client = Client::new("http://a:1/p, http://b:2/p", 1, 1).unwrap();
        let url = client.url(&["trainjob"], &[]);
        assert_eq!(client.on_current(&url).as_str(), "http://a:1/p/openapi/v1/trainjob");
        client.current.fetch_add(1, Ordering::Relaxed);
        assert_eq!(client.on_current(&url).as_str(), "http://b:2/p/openapi/v1/trainjob");
        assert_eq!(client.path_url(&["admin", "cluster"], &[]).as_str(), "http://b:2/p/admin/cluster");
    }

    #[test]
    fn keys_are_unique_and_retry_rules_follow_the_codes() {
        assert_ne!(unique_key("jcs"), unique_key("jcs"));
        let api = |code: &str, retry_after| ClientError::Api {
            status: 503,
            code: code.into(),
            message: String::new(),
            retry_after,
        };
        let backoff = Duration::from_millis(100);
        assert_eq!(api("NO_LEADER", Some(Duration::from_secs(1))).retry_delay(backoff), Some(Duration::from_secs(1)));
        assert_eq!(api("NO_LEADER", Some(Duration::from_secs(60))).retry_delay(backoff), Some(MAX_BACKOFF));
        assert_eq!(api("TIMEOUT", None).retry_delay(backoff), Some(backoff));
        assert_eq!(api("ALREADY_EXISTS", None).retry_delay(backoff), None);
        assert_eq!(api("NOT_FOUND", None).code(), "NOT_FOUND");
    }
}
