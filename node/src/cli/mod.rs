//! The command-line client: `jcs center|spec|image|dataset …` for the catalog,
//! `jcs job …` for Appendix A jobs, and `jcs bench …` to measure a cluster.
//!
//! Every client command takes `--server URL` (env `JCS_SERVER`, default
//! `http://127.0.0.1:8080`) and `--output table|json`. Success prints the result on stdout;
//! failure prints `error: CODE (HTTP status): errorMsg` (or the transport/input problem) on
//! stderr and exits with status 1. Input files are YAML (`.yaml`, `.yml`) or JSON (`.json`);
//! other names are tried as JSON, then YAML. Retries are described in [`client`].
//!
//! * [`client`] — the typed HTTP client and its retry rules.
//! * [`table`] — `--output table` rendering.
//! * [`cluster`] — `jcs cluster status|add|remove`.
//! * [`up`] — `jcs up`, a local multi-node cluster in one command.
//! * [`bench`](mod@bench) — `jcs bench submit`, the submission throughput/latency benchmark.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod table;
pub mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use jcs_api::model::{
    Center, CenterEvent, CreateTrainJob, CreateTrainJobResponse, Dataset, Explain, Image, JobInfo, LogLocation, Page,
    ResourceSpec,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use self::client::Client;
use self::table::Row;

/// Attempts per request for interactive commands (see [`client`] for what is retried).
const ATTEMPTS: u32 = 4;

/// The client subcommands of `jcs` (flattened into its top-level commands).
#[derive(Subcommand)]
pub enum Command {
    /// Manage AI computing centers (Table 1 and jcs's adapter, power, network, performance).
    Center(CatalogArgs),
    /// Manage resource specs (Table 3).
    Spec(CatalogArgs),
    /// Manage images (Table 5).
    Image(CatalogArgs),
    /// Manage datasets (Table 6); a dataset's id is `data_name@data_version`.
    Dataset(CatalogArgs),
    /// Submit, inspect, list and stop training jobs (Appendix A).
    Job(JobArgs),
    /// Center events, newest first: down, up, failed polls, over-commitment, refused
    /// dispatches, retries, reschedules.
    Events(EventArgs),
    /// Cluster membership: status, add, remove.
    Cluster(cluster::ClusterArgs),
    /// Measure a running cluster.
    Bench(bench::BenchArgs),
}

#[derive(Args)]
pub struct EventArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(flatten)]
    page: PageArgs,
    /// Only events of this center.
    #[arg(long)]
    center: Option<String>,
    /// Only events of this kind (center_down, center_up, poll_failed, over_committed,
    /// dispatch_failed, rescheduled, retried).
    #[arg(long)]
    kind: Option<String>,
}

/// Where to send requests and how to print answers.
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// Base URL of a jcs node; several, comma-separated, to fail over between nodes.
    #[arg(
        long,
        global = true,
        env = "JCS_SERVER",
        default_value = "http://127.0.0.1:8080",
        help_heading = "Client options"
    )]
    pub server: String,
    /// How to print results: `table` for people, `json` (the envelope's `data`) for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table, help_heading = "Client options")]
    pub output: Output,
}

/// Output format.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// `jcs center|spec|image|dataset`.
#[derive(Args)]
pub struct CatalogArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    action: CatalogAction,
}

#[derive(Subcommand)]
enum CatalogAction {
    /// Create an object from a YAML or JSON file; fails with ALREADY_EXISTS if its id is taken.
    Create(FileArg),
    /// Replace (PUT) the object the file names by its id.
    Update(FileArg),
    /// Show one object.
    Get { id: String },
    /// List objects, a page at a time.
    Ls(PageArgs),
    /// Delete an object; fails with STILL_REFERENCED while others point at it.
    Rm { id: String },
}

#[derive(Args)]
struct FileArg {
    /// The object, as YAML (.yaml/.yml) or JSON (.json).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
}

#[derive(Args)]
struct PageArgs {
    /// 1-based page number.
    #[arg(long, default_value_t = 1)]
    page: u32,
    /// Items per page (1..=1000).
    #[arg(long, default_value_t = 50)]
    page_size: u32,
}

impl PageArgs {
    fn query(&self) -> Vec<(&'static str, String)> {
        vec![("page", self.page.to_string()), ("pageSize", self.page_size.to_string())]
    }
}

/// `jcs job`.
#[derive(Args)]
pub struct JobArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    action: JobAction,
}

#[derive(Subcommand)]
enum JobAction {
    /// Submit a job (an A.1 body as YAML or JSON) to the replicated queue.
    Submit {
        #[command(flatten)]
        file: FileArg,
        /// Makes resubmissions safe: a submission with a key already used returns that job.
        /// Default: a fresh key from time, pid and a counter, kept across this command's retries.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Show a job and the status of each replica (A.3).
    Get { id: String },
    /// List jobs in submission order.
    Ls {
        #[command(flatten)]
        page: PageArgs,
        /// Only jobs in this status: pending, running, completed, failed.
        #[arg(long)]
        status: Option<String>,
        /// Only jobs of this user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Stop a job (A.2); stopping a stopped job succeeds.
    Stop { id: String },
    /// Why a job went where it went, or why it is still pending: filters, scores, winner.
    Explain { id: String },
    /// Print a replica's log (stdout and stderr), streamed from its center through jcs (A.4).
    Logs {
        id: String,
        /// Task index.
        #[arg(long, default_value_t = 0)]
        task: u32,
        /// Replica index.
        #[arg(long, default_value_t = 0)]
        replica: u32,
        /// Keep printing while the replica runs.
        #[arg(short, long)]
        follow: bool,
    },
    /// Dry-run a submission (an A.1 body): the placement and its explanation, nothing committed.
    /// Confirm by submitting the body with each task's `centerIDs` set to the plan's.
    Plan {
        #[command(flatten)]
        file: FileArg,
    },
}

/// What differs between the four catalog kinds.
trait CatalogObject: Row + Serialize + DeserializeOwned {
    /// The word used in messages: `center`, `spec`, …
    const NOUN: &'static str;
    /// The collection's path: `/openapi/v1/{COLLECTION}`.
    const COLLECTION: &'static str;
    /// The id used in the item path.
    fn id(&self) -> String;
}

macro_rules! catalog_object {
    ($type:ty, $noun:literal, $collection:literal, |$o:ident| $id:expr) => {
        impl CatalogObject for $type {
            const NOUN: &'static str = $noun;
            const COLLECTION: &'static str = $collection;
            fn id(&self) -> String {
                let $o = self;
                $id
            }
        }
    };
}

catalog_object!(Center, "center", "centers", |c| c.ai_center_id.clone());
catalog_object!(ResourceSpec, "spec", "resourcespecs", |s| s.resource_spec_id.clone());
catalog_object!(Image, "image", "images", |i| i.image_id.clone());
catalog_object!(Dataset, "dataset", "datasets", |d| d.dataset_id());

/// Runs a client command; prints the error and returns a failure status if it fails.
pub async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Center(args) => catalog::<Center>(args).await,
        Command::Spec(args) => catalog::<ResourceSpec>(args).await,
        Command::Image(args) => catalog::<Image>(args).await,
        Command::Dataset(args) => catalog::<Dataset>(args).await,
        Command::Job(args) => job(args).await,
        Command::Events(args) => events(args).await,
        Command::Cluster(args) => cluster::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `data` as pretty JSON, or as the table `render` makes of it.
fn show<T: Serialize>(output: Output, data: &T, render: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(data)?),
        Output::Table => println!("{}", render(data)),
    }
    Ok(())
}

/// A single object as a field/value table.
fn detail<T: Serialize>(object: &T) -> String {
    table::detail(&serde_json::to_value(object).expect("API types serialize to JSON"))
}

async fn catalog<K: CatalogObject>(args: CatalogArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client.server, 1, ATTEMPTS)?;
    let output = args.client.output;
    let item = |id: &str| client.url(&[K::COLLECTION, id], &[]);
    match args.action {
        CatalogAction::Create(FileArg { file }) => {
            let object: K = read_file(&file)?;
            let created: K = client.send_json(Method::POST, client.url(&[K::COLLECTION], &[]), &object, None).await?;
            show(output, &created, |c| format!("{} {} created", K::NOUN, c.id()))
        }
        CatalogAction::Update(FileArg { file }) => {
            // Sent as the file has it: a field the file leaves out is left out of the PUT, so
            // the server refuses a replacement that would lose it rather than clear it.
            let fields: serde_json::Value = read_file(&file)?;
            let object: K =
                serde_json::from_value(fields.clone()).with_context(|| format!("invalid {}", file.display()))?;
            let updated: K = client.send_json(Method::PUT, item(&object.id()), &fields, None).await?;
            show(output, &updated, |u| format!("{} {} updated", K::NOUN, u.id()))
        }
        CatalogAction::Get { id } => show(output, &client.get::<K>(item(&id)).await?, detail),
        CatalogAction::Ls(paging) => {
            show(output, &client.get::<Page<K>>(client.url(&[K::COLLECTION], &paging.query())).await?, table::page)
        }
        CatalogAction::Rm { id } => {
            client.call::<()>(Method::DELETE, item(&id), None, None).await?;
            show(output, &serde_json::Value::Null, |_| format!("{} {id} deleted", K::NOUN))
        }
    }
}

async fn job(args: JobArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client.server, 1, ATTEMPTS)?;
    let output = args.client.output;
    match args.action {
        JobAction::Submit { file, idempotency_key } => {
            let request: CreateTrainJob = read_file(&file.file)?;
            let key = idempotency_key.unwrap_or_else(|| client::unique_key("jcs"));
            let url = client.url(&["trainjob"], &[]);
            let created: CreateTrainJobResponse = client.send_json(Method::POST, url, &request, Some(&key)).await?;
            show(output, &created, |c| format!("job {} submitted", c.job_id))
        }
        JobAction::Get { id } => {
            show(output, &client.get::<JobInfo>(client.url(&["trainjob", &id], &[])).await?, table::job)
        }
        JobAction::Ls { page, status, user } => {
            let mut query = page.query();
            query.extend(status.map(|s| ("status", s)));
            query.extend(user.map(|u| ("user", u)));
            show(output, &client.get::<Page<JobInfo>>(client.url(&["trainjob"], &query)).await?, table::page)
        }
        JobAction::Stop { id } => {
            let url = client.url(&["trainjob", &id, "stop"], &[]);
            let stopped: JobInfo = client.send_json(Method::POST, url, &serde_json::json!({}), None).await?;
            show(output, &stopped, |j| table::rows(std::slice::from_ref(j)))
        }
        JobAction::Explain { id } => {
            show(output, &client.get::<Explain>(client.url(&["trainjob", &id, "explain"], &[])).await?, table::explain)
        }
        JobAction::Logs { id, task, replica, follow } => {
            let (task, replica) = (task.to_string(), replica.to_string());
            let url = client.url(&["trainjob", &id, "task", &task, "replica", &replica, "log"], &[]);
            let location: LogLocation = client.get(url).await?;
            client.stream_to_stdout(&location.log_url, follow).await
        }
        JobAction::Plan { file } => {
            let request: CreateTrainJob = read_file(&file.file)?;
            let url = client.url(&["trainjob", "plan"], &[]);
            let plan: Explain = client.send_json(Method::POST, url, &request, None).await?;
            show(output, &plan, table::explain)
        }
    }
}

async fn events(args: EventArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client.server, 1, ATTEMPTS)?;
    let mut query = args.page.query();
    query.extend(args.center.map(|c| ("centerId", c)));
    query.extend(args.kind.map(|k| ("kind", k)));
    let events: Page<CenterEvent> = client.get(client.url(&["events"], &query)).await?;
    show(args.client.output, &events, table::page)
}

/// Reads a YAML or JSON file into `T`, by extension; an unknown extension tries JSON, then YAML.
fn read_file<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let parsed = match extension.as_deref() {
        Some("yaml" | "yml") => serde_yaml::from_str(&text).map_err(anyhow::Error::from),
        Some("json") => serde_json::from_str(&text).map_err(anyhow::Error::from),
        _ => serde_json::from_str(&text).or_else(|json| {
            serde_yaml::from_str(&text).map_err(|yaml| anyhow::anyhow!("neither JSON ({json}) nor YAML ({yaml})"))
        }),
    };
    parsed.with_context(|| format!("invalid {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_by_extension_or_by_trying_both() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let yaml = "name: a\ntasks: []\n";
        let json = r#"{"name": "a", "tasks": []}"#;
        for path in
            [write("j.yaml", yaml), write("j.YML", yaml), write("j.json", json), write("j.txt", yaml), write("j", json)]
        {
            let job: CreateTrainJob = read_file(&path).unwrap();
            assert_eq!(job.name, "a", "{}", path.display());
        }
        let err = read_file::<CreateTrainJob>(&write("bad.txt", "name: [")).unwrap_err();
        assert!(format!("{err:#}").contains("neither JSON"), "{err:#}");
        let err = read_file::<CreateTrainJob>(&write("bad.json", yaml)).unwrap_err();
        assert!(format!("{err:#}").starts_with("invalid "), "{err:#}");
        assert!(read_file::<CreateTrainJob>(&dir.path().join("missing.yaml")).is_err());
    }

    #[test]
    fn the_examples_parse_as_their_kinds() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let center: Center = read_file(&examples.join("center.yaml")).unwrap();
        center.validate().unwrap();
        read_file::<ResourceSpec>(&examples.join("spec.yaml")).unwrap().validate().unwrap();
        read_file::<Image>(&examples.join("image.yaml")).unwrap().validate().unwrap();
        read_file::<Dataset>(&examples.join("dataset.yaml")).unwrap().validate().unwrap();
        read_file::<CreateTrainJob>(&examples.join("job.yaml")).unwrap().validate().unwrap();
        let steered = read_file::<CreateTrainJob>(&examples.join("job-data.yaml")).unwrap();
        steered.validate().unwrap();
        assert_eq!(steered.policy, Some(jcs_api::model::PolicyMode::Data));
        let train = read_file::<CreateTrainJob>(&examples.join("job-train.yaml")).unwrap();
        train.validate().unwrap();
        assert_eq!((train.tasks.len(), train.tasks[1].replica_number), (2, 2));
    }
}
