//! `adapter.config` of a `slurm` center: where slurmrestd is, how to get a token, where jobs go
//! and what an image means on a cluster that has no container images by default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `adapter.config` of a `slurm` center.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// slurmrestd's base URL, e.g. `http://127.0.0.1:6820` (the adapter speaks
    /// `openapi/v0.0.38`, Slurm 22.05's).
    pub url: String,
    /// The user jobs run as and tokens are issued to (`X-SLURM-USER-NAME`). Default `root`.
    #[serde(default = "default_user")]
    pub user: String,
    /// A fixed token (tests; it expires like any other). Exactly one of `token`,
    /// `token_file` and `token_command` is set.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (or `SLURM_JWT=<token>`), re-read when it may have changed:
    /// an operator's cron or a secrets agent refreshes it.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A shell command printing the token (or `SLURM_JWT=<token>`), e.g.
    /// `scontrol token username=root lifespan=3600`.
    #[serde(default)]
    pub token_command: Option<String>,
    /// A command token is re-run after this many seconds (keep it below the lifespan it asks
    /// for), or at once when slurmrestd refuses the current token. Default 1800.
    #[serde(default = "default_token_refresh_secs")]
    pub token_refresh_secs: u64,
    /// Partitions the center offers: jobs go to them (Slurm picks the first that can run the
    /// job) and their nodes make up the center's resources. Default: `["jcs"]`.
    #[serde(default = "default_partitions")]
    pub partitions: Vec<String>,
    /// Starts the name of every job this jcs cluster submits (`<prefix>.<cluster id>.<replica
    /// key>`; the cluster id already tells jcs clusters apart, the prefix tells jcs's jobs from
    /// others' to people reading `squeue`). Default `jcs`.
    #[serde(default = "default_job_name_prefix")]
    pub job_name_prefix: String,
    /// The account jobs are charged to; absent: the user's default account.
    #[serde(default)]
    pub account: Option<String>,
    /// The directory jobs write their output to, as this node sees it (a shared filesystem
    /// with the compute nodes): `<job name>.<jobid>.out` and `.exit` go there.
    pub log_dir: PathBuf,
    /// The same directory as the compute nodes see it, when it is mounted elsewhere there.
    /// Default: `log_dir`.
    #[serde(default)]
    pub remote_log_dir: Option<PathBuf>,
    /// Variables added to every job's environment (jobs do not inherit slurmrestd's; `PATH`
    /// defaults to the usual system directories).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Images the center offers, by name, and the environment each stands for. A launch
    /// naming another image is rejected (an empty image name always passes). Absent: any
    /// image name is accepted and means nothing to the cluster.
    #[serde(default)]
    pub images: Option<BTreeMap<String, ImageEnvironment>>,
    /// Bound on one call to slurmrestd, in ms (slurmrestd itself waits ~10 s for an
    /// unreachable slurmctld before it answers). Default 15000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

/// What an image means on a Slurm center. Supported: a shell prelude (module loads, a conda
/// environment) and an OCI bundle run by Slurm's `--container`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEnvironment {
    /// Lines the batch script runs before the command, e.g. `module load cuda/11.8` or
    /// `. /opt/conda/bin/activate torch`.
    #[serde(default)]
    pub prelude: Vec<String>,
    /// An OCI container bundle path (Slurm's `--container`; needs `oci.conf` on the cluster).
    #[serde(default)]
    pub container: Option<String>,
}

fn default_user() -> String {
    "root".into()
}

fn default_job_name_prefix() -> String {
    "jcs".into()
}

fn default_token_refresh_secs() -> u64 {
    1800
}

fn default_partitions() -> Vec<String> {
    vec!["jcs".into()]
}

fn default_request_timeout_ms() -> u64 {
    15_000
}
