//! A replica as a Slurm batch job: the `POST /job/submit` body and its batch script.
//!
//! The job's name carries the idempotency key, so a dispatcher in doubt finds the job by name
//! instead of submitting it twice. Its output goes to `<name>.<jobid>.out` in the shared log
//! directory, and the script leaves the command's exit status in `<name>.<jobid>.exit` beside
//! it: after slurmctld forgets a finished job (`MinJobAge`), those two files still say that
//! the key was submitted, under which id, and how it ended.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::config::ImageEnvironment;
use super::native::job_name;
use super::report::gres_demand;
use crate::ReplicaLaunch;

/// `PATH` of a job when the center's config sets none (jobs do not inherit slurmrestd's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a submission goes and what surrounds the command.
pub(crate) struct Target<'a> {
    /// Names this jcs cluster's jobs (`job_name_prefix`).
    pub prefix: &'a str,
    pub partitions: &'a [String],
    pub account: Option<&'a str>,
    /// The log directory as the compute nodes see it.
    pub remote_log_dir: &'a Path,
    pub environment: &'a BTreeMap<String, String>,
    /// The launch's image as this center understands it.
    pub image: Option<&'a ImageEnvironment>,
}

/// The body of `POST /slurm/v0.0.38/job/submit` for one replica.
pub(crate) fn submission(launch: &ReplicaLaunch, target: &Target<'_>) -> Value {
    let name = job_name(target.prefix, &launch.key);
    let dir = target.remote_log_dir.display().to_string();
    let mut environment = BTreeMap::from([("PATH".to_string(), DEFAULT_PATH.to_string())]);
    environment.extend(target.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    environment.extend(launch.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut job = json!({
        "name": name,
        "partition": target.partitions.join(","),
        "nodes": [1, 1],
        "tasks": 1,
        "cpus_per_task": (launch.demand.cpu.ceil() as i64).max(1),
        "environment": environment,
        "current_working_directory": dir,
        "standard_output": format!("{dir}/{name}.%j.out"),
    });
    if launch.demand.memory_mb > 0.0 {
        job["memory_per_node"] = json!(launch.demand.memory_mb.ceil() as i64);
    }
    let gres: Vec<String> = gres_demand(&launch.demand).into_iter().map(|(name, n)| format!("{name}:{n}")).collect();
    if !gres.is_empty() {
        job["gres"] = json!(gres.join(","));
    }
    if let Some(account) = target.account {
        job["account"] = json!(account);
    }
    if let Some(container) = target.image.and_then(|image| image.container.as_deref()) {
        job["container"] = json!(container);
    }
    let prelude = target.image.map(|image| image.prelude.as_slice()).unwrap_or_default();
    json!({ "script": batch_script(&name, &dir, prelude, &launch.command), "job": job })
}

/// The batch script: the image's prelude, the command under `sh -c`, its exit status saved.
pub(crate) fn batch_script(name: &str, remote_log_dir: &str, prelude: &[String], command: &str) -> String {
    let mut script = format!("#!/bin/sh\n# jcs replica {name}\n");
    for line in prelude {
        script.push_str(line);
        script.push('\n');
    }
    let exit_file = quote(&format!("{remote_log_dir}/{name}."));
    script.push_str(&format!(
        "sh -c {}\ncode=$?\necho \"$code\" > {exit_file}\"$SLURM_JOB_ID\".exit\nexit \"$code\"\n",
        quote(command)
    ));
    script
}

/// `text` as one single-quoted shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use jcs_api::model::ReplicaKey;
    use jcs_api::quantity::ResourceAmounts;

    use super::*;

    fn launch() -> ReplicaLaunch {
        ReplicaLaunch {
            key: ReplicaKey { job_id: "job-7".into(), task: 1, replica: 0, attempt: 2 },
            command: "echo 'it''s' \"$JCS_TASK\"; exit 4".into(),
            image: "torch".into(),
            demand: ResourceAmounts { cpu: 1.5, gpu: 2.0, memory_mb: 1000.5, ..ResourceAmounts::default() },
            env: BTreeMap::from([("JCS_TASK".to_string(), "1".to_string())]),
            duration_hint: None,
        }
    }

    #[test]
    fn submission_carries_key_spec_and_environment() {
        let partitions = vec!["gpu".to_string(), "cpu".to_string()];
        let environment = BTreeMap::from([("HOME".to_string(), "/root".to_string())]);
        let image = ImageEnvironment { prelude: vec!["module load cuda".into()], container: Some("/oci/torch".into()) };
        let target = Target {
            prefix: "jcs",
            partitions: &partitions,
            account: Some("ai"),
            remote_log_dir: Path::new("/shared/jcs"),
            environment: &environment,
            image: Some(&image),
        };
        let body = submission(&launch(), &target);
        let job = &body["job"];
        assert_eq!(job["name"], "jcs.job-7.t1.r0.a2");
        assert_eq!(job["partition"], "gpu,cpu");
        assert_eq!((job["cpus_per_task"].as_i64(), job["memory_per_node"].as_i64()), (Some(2), Some(1001)));
        assert_eq!(job["gres"], "gpu:2");
        assert_eq!(job["account"], "ai");
        assert_eq!(job["container"], "/oci/torch");
        assert_eq!(job["standard_output"], "/shared/jcs/jcs.job-7.t1.r0.a2.%j.out");
        assert_eq!(job["environment"]["JCS_TASK"], "1");
        assert_eq!(job["environment"]["HOME"], "/root");
        assert_eq!(job["environment"]["PATH"], DEFAULT_PATH);
        let script = body["script"].as_str().unwrap();
        assert!(script.starts_with("#!/bin/sh\n# jcs replica jcs.job-7.t1.r0.a2\nmodule load cuda\n"), "{script}");
    }

    #[test]
    fn the_script_runs_the_command_and_keeps_its_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let script = batch_script("jcs.k.t0.r0.a0", &dir.path().display().to_string(), &[], &launch().command);
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("SLURM_JOB_ID", "42")
            .env("JCS_TASK", "1")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status.stdout), "its 1\n");
        assert_eq!(status.status.code(), Some(4));
        let saved = std::fs::read_to_string(dir.path().join("jcs.k.t0.r0.a0.42.exit")).unwrap();
        assert_eq!(saved.trim(), "4");
    }
}
