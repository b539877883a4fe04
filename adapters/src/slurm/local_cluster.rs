//! The project's single-host Slurm (`deploy/slurm/jcs-slurm`), as the tests and the demo use
//! it: start it (idempotent), read the environment file it writes, and derive a center's
//! adapter config from it.

use std::path::{Path, PathBuf};

use serde_json::json;

/// A running single-host Slurm with slurmrestd, as `jcs-slurm start` describes it.
#[derive(Debug, Clone)]
pub struct LocalSlurm {
    /// slurmrestd's base URL.
    pub url: String,
    pub partition: String,
    /// A shell command printing a fresh token.
    pub token_command: String,
    /// The cluster's directory (state, logs, `jobs/` for job output).
    pub dir: PathBuf,
    /// The rendered `slurm.conf` (`SLURM_CONF` for scontrol, squeue).
    pub slurm_conf: PathBuf,
}

/// Where `jcs-slurm` keeps the cluster unless `JCS_SLURM_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "/tmp/jcs-slurm";

impl LocalSlurm {
    /// Runs `script start` (it starts whatever is not running and waits until slurmrestd
    /// answers), then reads the environment file.
    pub fn start(script: &Path) -> Result<LocalSlurm, String> {
        let output = std::process::Command::new(script)
            .arg("start")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("{} start failed ({}): {}", script.display(), output.status, stderr.trim()));
        }
        Self::from_env_file(&Self::dir().join("env"))
    }

    /// The cluster `jcs-slurm start` described in `path`.
    pub fn from_env_file(path: &Path) -> Result<LocalSlurm, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .ok_or_else(|| format!("{}: no {name}", path.display()))
        };
        Ok(LocalSlurm {
            url: value("JCS_SLURM_URL")?,
            partition: value("JCS_SLURM_PARTITION")?,
            token_command: value("JCS_SLURM_TOKEN_COMMAND")?,
            dir: value("JCS_SLURM_DIR")?.into(),
            slurm_conf: value("SLURM_CONF")?.into(),
        })
    }

    /// `$JCS_SLURM_DIR`, or the default.
    pub fn dir() -> PathBuf {
        std::env::var_os("JCS_SLURM_DIR").map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
    }

    /// The `adapter.config` of a center on this cluster; job output goes to `jobs/` under the
    /// cluster's directory.
    pub fn center_config(&self) -> serde_json::Value {
        json!({
            "url": self.url,
            "token_command": self.token_command,
            "partitions": [self.partition],
            "log_dir": self.dir.join("jobs"),
        })
    }

    /// A Slurm client command (`squeue`, `scontrol`) aimed at this cluster.
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command.env("SLURM_CONF", &self.slurm_conf);
        command
    }
}

/// For tests that need a real Slurm: starts the project's cluster with `script`. When it cannot
/// be started, the test is skipped with a message saying why — unless `JCS_REQUIRE_SLURM` is
/// set (CI sets it), in which case the test fails.
pub fn for_tests(script: &Path, test: &str) -> Option<LocalSlurm> {
    match LocalSlurm::start(script) {
        Ok(cluster) => Some(cluster),
        Err(why) if std::env::var_os("JCS_REQUIRE_SLURM").is_some() => {
            panic!("{test}: Slurm is required (JCS_REQUIRE_SLURM) but could not be started: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: needs a real Slurm, which could not be started: {why}");
            None
        }
    }
}
