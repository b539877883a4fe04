//! The Slurm center: an HPC cluster driven through slurmrestd (`openapi/v0.0.38`, Slurm 22.05),
//! the way the field report manages HPC platforms — through their APIs, never a shell on the
//! login node.
//!
//! - A replica is a one-node batch job named `<prefix>.<idempotency key>` (see `script`), so `find`
//!   asks slurmctld for the name, and after slurmctld has forgotten the job, the shared log
//!   directory, where its output and exit files carry the key and the job id.
//! - Resources and monitoring come from `/nodes` and `/jobs` (see `report`); states map as
//!   `native::native_state` documents.
//! - Stop is `DELETE /job/{id}`: Slurm's cancel, SIGTERM then SIGKILL after the cluster's
//!   `KillWait` (the cluster's grace, not the caller's).
//! - Logs are the job's output file, read from the log directory the cluster shares with the
//!   node.
//! - Images name environments: a shell prelude (modules, conda) or an OCI bundle for Slurm's
//!   `--container` (see `config::ImageEnvironment`).

mod config;
pub mod local_cluster;
mod native;
mod report;
mod rest;
mod script;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jcs_api::model::{FailureCategory, ReplicaKey};
use reqwest::Method;

pub use self::config::{ImageEnvironment, SlurmConfig};
use self::native::{errno, job_name, Job, Node};
use self::rest::{Rest, TokenSource};
use crate::{
    config as adapter_config, logfile, Adapter, AdapterContext, AdapterError, Capabilities, LogChunk, NativeId,
    NativeImage, NativeState, ReplicaLaunch, ResourceReport, Result,
};

/// A center whose replicas are Slurm batch jobs.
pub struct SlurmCenter {
    id: String,
    rest: Rest,
    prefix: String,
    partitions: Vec<String>,
    account: Option<String>,
    log_dir: PathBuf,
    remote_log_dir: PathBuf,
    environment: BTreeMap<String, String>,
    images: Option<BTreeMap<String, ImageEnvironment>>,
    /// What the last listings showed (see [`Listed`]).
    listed: Mutex<Listed>,
}

/// What the last listings of slurmctld showed, so that a submit in the steady state costs one
/// call instead of three: the names of this jcs cluster's jobs (plus what this instance has
/// submitted since), trusted for [`NAMES_MAX_AGE`], and the partitions' nodes, trusted for
/// [`NODES_MAX_AGE`] to check that a demand fits a node; the log directory is read every time
/// (it is local, and it holds the jobs slurmctld has purged). A dispatcher in doubt calls
/// [`Adapter::find`], which always lists afresh.
#[derive(Default)]
struct Listed {
    /// When the last job listing was asked for, and the names it showed.
    names: Option<(Instant, HashMap<String, u64>)>,
    /// This instance's submissions of the last `2 × NAMES_MAX_AGE`: a listing asked for before
    /// one of them completed may not show it.
    submitted: HashMap<String, (u64, Instant)>,
    nodes: Option<(Instant, Vec<Node>)>,
}

/// How long a submit trusts a listing of job names: about one status poll.
const NAMES_MAX_AGE: Duration = Duration::from_secs(5);
/// How long a submit trusts a listing of nodes: their shapes change rarely.
const NODES_MAX_AGE: Duration = Duration::from_secs(30);

impl SlurmCenter {
    /// Reads the config; talks to nobody (the first poll finds out whether slurmrestd answers).
    pub fn new(center_id: &str, config: &serde_json::Value, ctx: &AdapterContext) -> Result<Self> {
        let config: SlurmConfig = adapter_config::parse("slurm", center_id, config)?;
        let misconfigured =
            |what: String| AdapterError::Config(format!("center '{center_id}': slurm adapter config: {what}"));
        let source = match (config.token, config.token_file, config.token_command) {
            (Some(token), None, None) => TokenSource::Fixed(token),
            (None, Some(file), None) => TokenSource::File(file),
            (None, None, Some(command)) => TokenSource::Command(command),
            _ => return Err(misconfigured("set exactly one of token, token_file, token_command".into())),
        };
        if config.partitions.is_empty() {
            return Err(misconfigured("partitions is empty".into()));
        }
        std::fs::create_dir_all(&config.log_dir)
            .map_err(|e| misconfigured(format!("log_dir {}: {e}", config.log_dir.display())))?;
        let rest = Rest::new(
            &config.url,
            &config.user,
            source,
            Duration::from_secs(config.token_refresh_secs),
            Duration::from_millis(config.request_timeout_ms),
        )
        .map_err(|e| misconfigured(e.to_string()))?;
        Ok(SlurmCenter {
            id: center_id.to_string(),
            rest,
            // The cluster's id in every job name (and so in every log file's name): a cluster
            // never finds another cluster's jobs under its keys.
            prefix: match ctx.cluster_id.as_str() {
                "" => config.job_name_prefix,
                cluster => format!("{}.{cluster}", config.job_name_prefix),
            },
            partitions: config.partitions,
            account: config.account,
            remote_log_dir: config.remote_log_dir.unwrap_or_else(|| config.log_dir.clone()),
            log_dir: config.log_dir,
            environment: config.environment,
            images: config.images,
            listed: Mutex::new(Listed::default()),
        })
    }

    fn listed(&self) -> MutexGuard<'_, Listed> {
        self.listed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn jobs(&self) -> Result<Vec<Job>> {
        let asked = Instant::now();
        let body = self.rest.call(Method::GET, "/jobs", None).await?.ok("list jobs")?;
        let jobs: Vec<Job> = list(&body, "jobs");
        let mut names = HashMap::new();
        for job in jobs.iter().filter(|job| job.name.starts_with(&self.prefix)) {
            let id = names.entry(job.name.clone()).or_insert(job.job_id);
            *id = job.job_id.min(*id);
        }
        self.listed().names = Some((asked, names));
        Ok(jobs)
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        let asked = Instant::now();
        let body = self.rest.call(Method::GET, "/nodes", None).await?.ok("list nodes")?;
        let nodes: Vec<Node> = list(&body, "nodes");
        self.listed().nodes = Some((asked, nodes.clone()));
        Ok(nodes)
    }

    /// The job a recent listing (or this instance's own submit) shows under `key`; `None` when
    /// no listing is recent enough to say.
    fn recently_listed(&self, key: &ReplicaKey) -> Option<Option<NativeId>> {
        let listed = self.listed();
        let (_, names) = listed.names.as_ref().filter(|(at, _)| at.elapsed() < NAMES_MAX_AGE)?;
        let name = job_name(&self.prefix, key);
        let id = names.get(&name).or_else(|| listed.submitted.get(&name).map(|(id, _)| id));
        Some(id.map(|id| SlurmRef::native(*id, key)))
    }

    /// The partitions' nodes, from a recent listing if there is one.
    async fn recent_nodes(&self) -> Result<Vec<Node>> {
        let recent = {
            let listed = self.listed();
            listed.nodes.as_ref().filter(|(at, _)| at.elapsed() < NODES_MAX_AGE).map(|(_, nodes)| nodes.clone())
        };
        match recent {
            Some(nodes) => Ok(nodes),
            None => self.nodes().await,
        }
    }

    /// One job as slurmctld knows it; `None` when it has no such job (any more).
    async fn job(&self, id: u64) -> Result<Option<Job>> {
        let answer = self.rest.call(Method::GET, &format!("/job/{id}"), None).await?;
        if answer.has(errno::INVALID_JOB_ID) {
            return Ok(None);
        }
        let body = answer.ok("get job")?;
        Ok(list::<Job>(&body, "jobs").into_iter().find(|job| job.job_id == id))
    }

    /// The jobs the shared log directory has files of: `(key, job id)` per file.
    async fn log_files(&self) -> Result<Vec<(ReplicaKey, u64)>> {
        let unreadable =
            |e: std::io::Error| AdapterError::Unavailable(format!("log dir {}: {e}", self.log_dir.display()));
        let mut entries = tokio::fs::read_dir(&self.log_dir).await.map_err(unreadable)?;
        let mut files = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(unreadable)? {
            if let Some(parsed) = entry.file_name().to_str().and_then(|name| parse_log_file(&self.prefix, name)) {
                files.push(parsed);
            }
        }
        Ok(files)
    }

    /// The job the log directory shows under `key` (one slurmctld may have purged).
    async fn logged(&self, key: &ReplicaKey) -> Result<Option<NativeId>> {
        let files = self.log_files().await?;
        let id = files.into_iter().filter(|(k, _)| k == key).map(|(_, id)| id).min();
        Ok(id.map(|id| SlurmRef::native(id, key)))
    }

    fn local_file(&self, key: &ReplicaKey, id: u64, kind: LogFile) -> PathBuf {
        self.log_dir.join(format!("{}.{id}.{}", job_name(&self.prefix, key), kind.extension()))
    }

    /// The state an exit file records, for a job slurmctld has forgotten.
    async fn saved_state(&self, key: &ReplicaKey, id: u64) -> Option<NativeState> {
        let text = tokio::fs::read_to_string(self.local_file(key, id, LogFile::Exit)).await.ok()?;
        Some(match text.trim().parse::<i32>() {
            Ok(0) => NativeState::Succeeded,
            Ok(code) => NativeState::Failed {
                exit_code: Some(code),
                category: FailureCategory::Application,
                reason: format!("slurm job {id} exited with {code}"),
            },
            Err(_) => return None,
        })
    }

    fn is_job_of(&self, job: &Job, slurm: &SlurmRef) -> bool {
        job.job_id == slurm.job_id && job.name == job_name(&self.prefix, &slurm.key)
    }

    /// The job's output file as this node sees it.
    fn output_of(&self, job: &Job) -> PathBuf {
        let remote = PathBuf::from(job.output_path());
        match remote.strip_prefix(&self.remote_log_dir) {
            Ok(relative) => self.log_dir.join(relative),
            Err(_) => remote,
        }
    }

    fn image(&self, image: &str) -> Result<Option<&ImageEnvironment>> {
        let Some(images) = &self.images else { return Ok(None) };
        if image.is_empty() {
            return Ok(None);
        }
        images.get(image).map(Some).ok_or_else(|| {
            let names: Vec<&String> = images.keys().collect();
            AdapterError::Rejected(format!(
                "image '{image}' is not offered by slurm center '{}' (it has {names:?})",
                self.id
            ))
        })
    }
}

/// Files the log directory holds per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFile {
    Output,
    Exit,
}

impl LogFile {
    fn extension(self) -> &'static str {
        match self {
            LogFile::Output => "out",
            LogFile::Exit => "exit",
        }
    }
}

/// `<prefix>.<key>.<jobid>.out` or `.exit`, as this jcs cluster's jobs leave them.
fn parse_log_file(prefix: &str, name: &str) -> Option<(ReplicaKey, u64)> {
    let rest = name.strip_suffix(".out").or_else(|| name.strip_suffix(".exit"))?;
    let (key, id) = rest.rsplit_once('.')?;
    Some((native::key_of(prefix, key)?, id.parse().ok()?))
}

/// The entries of `body[field]` that parse; one odd entry does not hide the others.
fn list<T: serde::de::DeserializeOwned>(body: &serde_json::Value, field: &str) -> Vec<T> {
    let entries = body.get(field).and_then(|v| v.as_array()).map(Vec::as_slice).unwrap_or_default();
    entries.iter().filter_map(|entry| serde_json::from_value(entry.clone()).ok()).collect()
}

/// A native id as this adapter hands them out: `<slurm job id>:<replica key>`. The key guards
/// against a slurmctld that lost state in a crash and hands the same id to another job: a job
/// under the id but with another name is not the replica's, which is then gone.
#[derive(Debug, Clone)]
struct SlurmRef {
    job_id: u64,
    key: ReplicaKey,
}

impl SlurmRef {
    fn native(job_id: u64, key: &ReplicaKey) -> NativeId {
        NativeId(format!("{job_id}:{key}"))
    }

    /// `None` for ids this adapter never hands out.
    fn parse(id: &NativeId) -> Option<SlurmRef> {
        let (job_id, key) = id.0.split_once(':')?;
        Some(SlurmRef { job_id: job_id.parse().ok()?, key: ReplicaKey::parse(key)? })
    }
}

#[async_trait]
impl Adapter for SlurmCenter {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { live_logs: true, storage: false, images: self.images.is_some(), survives_node_restart: true }
    }

    async fn resources(&self) -> Result<ResourceReport> {
        let (nodes, jobs) = tokio::try_join!(self.nodes(), self.jobs())?;
        if !nodes.iter().any(|n| n.in_any(&self.partitions)) {
            return Err(AdapterError::Unavailable(format!("no nodes in partitions {:?}", self.partitions)));
        }
        Ok(report::resource_report(&self.id, &self.prefix, &self.partitions, &nodes, &jobs))
    }

    async fn images(&self) -> Result<Vec<NativeImage>> {
        let names = self.images.iter().flat_map(|images| images.keys());
        Ok(names.map(|name| NativeImage { name: name.clone(), reference: name.clone() }).collect())
    }

    async fn submit(&self, launch: &ReplicaLaunch) -> Result<NativeId> {
        let image = self.image(&launch.image)?;
        let existing = match self.recently_listed(&launch.key) {
            Some(Some(listed)) => Some(listed),
            Some(None) => self.logged(&launch.key).await?,
            None => self.find(&launch.key).await?,
        };
        if let Some(existing) = existing {
            return Ok(existing);
        }
        report::check_fits_a_node(&self.partitions, &self.recent_nodes().await?, &launch.demand)?;
        let target = script::Target {
            prefix: &self.prefix,
            partitions: &self.partitions,
            account: self.account.as_deref(),
            remote_log_dir: &self.remote_log_dir,
            environment: &self.environment,
            image,
        };
        let body = script::submission(launch, &target);
        let answer = self.rest.call(Method::POST, "/job/submit", Some(&body)).await?;
        let job_id = answer.body.get("job_id").and_then(|v| v.as_u64());
        if !answer.errors.is_empty() || !(200..300).contains(&answer.status) {
            // Slurm may create the job and report why it cannot run: nothing may run unowned.
            if let Some(id) = job_id.filter(|id| *id > 0) {
                self.stop(&SlurmRef::native(id, &launch.key), Duration::ZERO).await?;
            }
            return Err(answer.error("submit job"));
        }
        let id = job_id.ok_or_else(|| AdapterError::Unavailable("submit job: the answer has no job_id".into()))?;
        {
            let mut listed = self.listed();
            listed.submitted.retain(|_, (_, at)| at.elapsed() < 2 * NAMES_MAX_AGE);
            listed.submitted.insert(job_name(&self.prefix, &launch.key), (id, Instant::now()));
        }
        tracing::info!(center = %self.id, key = %launch.key, slurm_job = id, "submitted to slurm");
        Ok(SlurmRef::native(id, &launch.key))
    }

    async fn find(&self, key: &ReplicaKey) -> Result<Option<NativeId>> {
        // A fresh listing: it records the lowest job id under each name.
        self.jobs().await?;
        let name = job_name(&self.prefix, key);
        let listed = self.listed().names.as_ref().and_then(|(_, names)| names.get(&name).copied());
        match listed {
            Some(id) => Ok(Some(SlurmRef::native(id, key))),
            None => self.logged(key).await,
        }
    }

    async fn status(&self, ids: &[NativeId]) -> Result<Vec<NativeState>> {
        let refs: Vec<Option<SlurmRef>> = ids.iter().map(SlurmRef::parse).collect();
        if refs.iter().all(Option::is_none) {
            return Ok(vec![NativeState::Missing; ids.len()]);
        }
        let jobs: HashMap<u64, Job> = self.jobs().await?.into_iter().map(|job| (job.job_id, job)).collect();
        let mut states = Vec::with_capacity(ids.len());
        for slurm in refs {
            let state = match slurm {
                None => NativeState::Missing,
                Some(slurm) => match jobs.get(&slurm.job_id).filter(|job| self.is_job_of(job, &slurm)) {
                    Some(job) => job.state(),
                    None => self.saved_state(&slurm.key, slurm.job_id).await.unwrap_or(NativeState::Missing),
                },
            };
            states.push(state);
        }
        Ok(states)
    }

    async fn stop(&self, id: &NativeId, _grace: Duration) -> Result<()> {
        let Some(slurm) = SlurmRef::parse(id) else { return Ok(()) };
        // Only the replica's own job is cancelled, never one that took over its id.
        if !self.job(slurm.job_id).await?.is_some_and(|job| self.is_job_of(&job, &slurm)) {
            return Ok(());
        }
        let answer = self.rest.call(Method::DELETE, &format!("/job/{}", slurm.job_id), None).await?;
        if answer.has(errno::INVALID_JOB_ID) || answer.has(errno::ALREADY_DONE) {
            return Ok(());
        }
        answer.ok("cancel job")?;
        tracing::info!(center = %self.id, slurm_job = slurm.job_id, key = %slurm.key, "cancelled slurm job");
        Ok(())
    }

    async fn read_log(&self, id: &NativeId, offset: u64, max: usize) -> Result<LogChunk> {
        let not_found = || AdapterError::NotFound(id.to_string());
        let slurm = SlurmRef::parse(id).ok_or_else(not_found)?;
        // Whether it has ended is decided before reading, so the read sees the final log.
        let (path, ended) = match self.job(slurm.job_id).await?.filter(|job| self.is_job_of(job, &slurm)) {
            Some(job) => (self.output_of(&job), job.state().is_final()),
            None => {
                let path = self.local_file(&slurm.key, slurm.job_id, LogFile::Output);
                if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                    return Err(not_found());
                }
                (path, true)
            }
        };
        logfile::read_chunk(&path, offset, max, ended).await
    }
}
