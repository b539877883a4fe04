//! The wire to slurmrestd: one HTTP client, the JWT (fetched, cached, refreshed before expiry
//! and at once when refused), and the one place where transport failures, HTTP codes and
//! slurmrestd's `errors` arrays become [`AdapterError`]s.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::native::{errno, SlurmError};
use crate::{AdapterError, Result};

/// The OpenAPI plugin the adapter speaks (Slurm 22.05).
const API: &str = "/slurm/v0.0.38";
/// Bound on a token command.
const TOKEN_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// A token file is re-read after this long.
const TOKEN_FILE_MAX_AGE: Duration = Duration::from_secs(5);
/// A refused token is replaced at most this often, so a broken token source cannot turn
/// every call into two.
const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);

/// Where tokens come from.
#[derive(Debug, Clone)]
pub(crate) enum TokenSource {
    Fixed(String),
    File(PathBuf),
    Command(String),
}

/// A slurmrestd endpoint with its credentials.
pub(crate) struct Rest {
    http: reqwest::Client,
    base: String,
    user: String,
    source: TokenSource,
    command_max_age: Duration,
    /// The token in use and when it was fetched.
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// One answer: the HTTP status, the JSON body (`Null` when it is not JSON) and its errors.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
    pub errors: Vec<SlurmError>,
}

impl Answer {
    /// The body when the call succeeded without errors, else the error it amounts to.
    pub fn ok(self, what: &str) -> Result<Value> {
        if (200..300).contains(&self.status) && self.errors.is_empty() {
            Ok(self.body)
        } else {
            Err(self.error(what))
        }
    }

    /// Whether some error carries `number`.
    pub fn has(&self, number: i64) -> bool {
        self.errors.iter().any(|e| e.error_number == number)
    }

    /// The adapter error this answer amounts to: a refused token or an unreachable slurmctld
    /// is transient (`Unavailable`), a missing API is `Config`, anything else is the
    /// cluster's definite `Rejected`.
    pub fn error(&self, what: &str) -> AdapterError {
        let errors = if self.errors.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            let list: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
            format!("HTTP {}: {}", self.status, list.join("; "))
        };
        match self.status {
            401 | 403 => AdapterError::Unavailable(format!("{what}: slurmrestd refused the token ({errors})")),
            _ if self.looks_unauthenticated() => AdapterError::Unavailable(format!(
                "{what}: {errors} (how slurmctld answers an expired or invalid token, among other failures)"
            )),
            404 => AdapterError::Config(format!("{what}: slurmrestd does not serve {API} ({errors})")),
            status if status >= 500 || self.errors.iter().any(|e| errno::is_communication(e.error_number)) => {
                AdapterError::Unavailable(format!("{what}: {errors}"))
            }
            _ => AdapterError::Rejected(format!("{what}: {errors}")),
        }
    }

    /// A refused or expired token: HTTP 401, or slurmctld's bare "Unspecified error" (-1),
    /// which is how 22.05 answers a token it cannot verify.
    fn looks_unauthenticated(&self) -> bool {
        self.status == 401 || (self.status >= 500 && self.has(-1))
    }
}

impl Rest {
    pub fn new(
        url: &str,
        user: &str,
        source: TokenSource,
        command_max_age: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| AdapterError::Config(format!("slurm HTTP client: {e}")))?;
        let base = format!("{}{API}", url.trim_end_matches('/'));
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(AdapterError::Config(format!("slurm url '{url}' is not an http:// URL")));
        }
        let cached = tokio::sync::Mutex::new(None);
        Ok(Rest { http, base, user: user.to_string(), source, command_max_age, cached })
    }

    /// Calls `path` (under `/slurm/v0.0.38`). A refused token is refreshed and the call made
    /// once more. Transport failures are `Unavailable`; any answer, errors and all, is returned.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer> {
        let token = self.token(false).await?;
        let answer = self.send(method.clone(), path, body, &token).await?;
        if !answer.looks_unauthenticated() || matches!(self.source, TokenSource::Fixed(_)) {
            return Ok(answer);
        }
        match self.token(true).await {
            Ok(fresh) if fresh != token => self.send(method, path, body, &fresh).await,
            _ => Ok(answer),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>, token: &str) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header("X-SLURM-USER-NAME", &self.user)
            .header("X-SLURM-USER-TOKEN", token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| AdapterError::Unavailable(format!("slurmrestd {method} {url}: {e}"));
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let errors = body.get("errors").cloned().map(serde_json::from_value).and_then(|r| r.ok()).unwrap_or_default();
        Ok(Answer { status, body, errors })
    }

    /// The token to use; `refresh` fetches a new one (after a refusal) unless one was fetched
    /// a moment ago.
    async fn token(&self, refresh: bool) -> Result<String> {
        let mut cached = self.cached.lock().await;
        let max_age = match self.source {
            TokenSource::Fixed(_) => Duration::MAX,
            TokenSource::File(_) => TOKEN_FILE_MAX_AGE,
            TokenSource::Command(_) => self.command_max_age,
        };
        if let Some((token, at)) = cached.as_ref() {
            let age = at.elapsed();
            if age < max_age && (!refresh || age < MIN_REFRESH_GAP) {
                return Ok(token.clone());
            }
        }
        let token = fetch_token(&self.source).await?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }
}

async fn fetch_token(source: &TokenSource) -> Result<String> {
    let text = match source {
        TokenSource::Fixed(token) => token.clone(),
        TokenSource::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| AdapterError::Unavailable(format!("slurm token file {}: {e}", path.display())))?,
        TokenSource::Command(command) => {
            let run = tokio::process::Command::new("sh").arg("-c").arg(command).kill_on_drop(true).output();
            let output = tokio::time::timeout(TOKEN_COMMAND_TIMEOUT, run)
                .await
                .map_err(|_| AdapterError::Unavailable(format!("slurm token command `{command}` timed out")))?
                .map_err(|e| AdapterError::Unavailable(format!("slurm token command `{command}`: {e}")))?;
            if !output.status.success() {
                let stderr = String::from_utf8_lossy(&output.stderr);
                return Err(AdapterError::Unavailable(format!(
                    "slurm token command `{command}` failed ({}): {}",
                    output.status,
                    stderr.trim()
                )));
            }
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    parse_token(&text).ok_or_else(|| AdapterError::Unavailable("slurm token source gave no token".into()))
}

/// The token in a token command's output or a token file: the value of a `SLURM_JWT=` line, or
/// else the first non-empty line.
pub(crate) fn parse_token(text: &str) -> Option<String> {
    let lines = || text.lines().map(str::trim).filter(|line| !line.is_empty());
    let token = lines().find_map(|line| line.strip_prefix("SLURM_JWT=")).or_else(|| lines().next())?;
    Some(token.trim().to_string()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, errors: serde_json::Value) -> Answer {
        Answer { status, body: Value::Null, errors: serde_json::from_value(errors).unwrap() }
    }

    #[test]
    fn tokens_parse_from_scontrol_output_and_files() {
        assert_eq!(parse_token("SLURM_JWT=abc.def\n").as_deref(), Some("abc.def"));
        assert_eq!(parse_token("\n  abc  \n").as_deref(), Some("abc"));
        assert_eq!(parse_token("note\nSLURM_JWT=xyz").as_deref(), Some("xyz"));
        assert_eq!(parse_token(" \n"), None);
    }

    #[test]
    fn answers_map_to_adapter_errors() {
        let down =
            answer(500, serde_json::json!([{"error_code": 1800, "error": "Unable to contact slurm controller"}]));
        assert!(matches!(down.error("nodes"), AdapterError::Unavailable(m) if m.contains("Unable to contact")));
        let refused = answer(401, serde_json::json!([]));
        assert!(matches!(refused.error("jobs"), AdapterError::Unavailable(m) if m.contains("refused the token")));
        assert!(refused.looks_unauthenticated());
        let odd = answer(500, serde_json::json!([{"error_number": -1, "error": "Unspecified error"}]));
        assert!(odd.looks_unauthenticated());
        assert!(matches!(odd.error("jobs"), AdapterError::Unavailable(m) if m.contains("expired or invalid token")));
        let bad = answer(200, serde_json::json!([{"error_code": 9001, "error": "Failure during parsing"}]));
        assert!(matches!(bad.error("submit"), AdapterError::Rejected(m) if m.contains("parsing")));
        assert!(matches!(answer(404, serde_json::json!([])).error("ping"), AdapterError::Config(_)));
        assert!(answer(200, serde_json::json!([])).ok("x").is_ok());
    }
}
