//! The demo catalog of the field report: four centers in two regions (a university center and
//! a carrier cloud in Hunan, two centers in Hangzhou), a few specs, images and a dataset; the
//! centers' monitoring comes from polling their adapters. Loaded once, on the first start of a cluster, through
//! the same replicated commands as any client write. With a Slurm cluster started by
//! `deploy/slurm/jcs-slurm`, the Hangzhou HPC center B is that real cluster. The catalog file
//! also holds the link between the two regions, which the scheduler takes as its
//! `region_links` when none are configured.

use std::path::Path;

use jcs_adapters::slurm::local_cluster::LocalSlurm;
use jcs_api::model::{AdapterEndpoint, Center, Dataset, Image, ResourceSpec};
use jcs_raft::command::{Command, Refusal, WriteMode};
use jcs_raft::schedule::Link;
use serde::Deserialize;

use crate::proposer::{ProposeError, Proposer};

const CATALOG: &str = include_str!("../demo/catalog.yaml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoCatalog {
    centers: Vec<Center>,
    specs: Vec<ResourceSpec>,
    images: Vec<Image>,
    datasets: Vec<Dataset>,
    region_links: Vec<Link>,
}

/// The links between the demo's regions.
pub fn region_links() -> Result<Vec<Link>, serde_yaml::Error> {
    Ok(serde_yaml::from_str::<DemoCatalog>(CATALOG)?.region_links)
}

/// The demo center that a real Slurm cluster stands in for.
const SLURM_CENTER: &str = "hangzhou-b";

fn commands(slurm: Option<&LocalSlurm>, shared_dir: Option<&Path>) -> Result<Vec<Command>, serde_yaml::Error> {
    let mut demo: DemoCatalog = serde_yaml::from_str(CATALOG)?;
    if let Some(dir) = shared_dir {
        for center in demo.centers.iter_mut().filter(|c| matches!(c.adapter.kind.as_str(), "local" | "sim")) {
            let work_dir = dir.join(&center.ai_center_id).display().to_string();
            if let Some(config) = center.adapter.config.as_object_mut() {
                config.insert("work_dir".into(), work_dir.into());
            }
        }
    }
    if let Some(slurm) = slurm {
        for center in demo.centers.iter_mut().filter(|c| c.ai_center_id == SLURM_CENTER) {
            center.adapter =
                AdapterEndpoint { kind: "slurm".into(), endpoint: slurm.url.clone(), config: slurm.center_config() };
        }
    }
    let mode = WriteMode::Create;
    let mut commands: Vec<Command> =
        demo.centers.into_iter().map(|center| Command::PutCenter { center, mode }).collect();
    commands.extend(demo.specs.into_iter().map(|spec| Command::PutSpec { spec, mode }));
    commands.extend(demo.images.into_iter().map(|image| Command::PutImage { image, mode }));
    commands.extend(demo.datasets.into_iter().map(|dataset| Command::PutDataset { dataset, mode }));
    Ok(commands)
}

/// Writes the demo catalog; any refusal is an error (the catalog is meant to be consistent).
/// `slurm_env` is the environment file of a Slurm cluster to use for the HPC center;
/// `shared_dir` a directory shared by the nodes of one machine, under which the local and
/// simulated centers keep their state (one subdirectory each), so they survive a move to
/// another owner.
pub async fn load(proposer: &Proposer, slurm_env: Option<&Path>, shared_dir: Option<&Path>) -> anyhow::Result<()> {
    let slurm = slurm_env
        .map(LocalSlurm::from_env_file)
        .transpose()
        .map_err(|e| anyhow::anyhow!("demo Slurm cluster: {e} (start it with deploy/slurm/jcs-slurm start)"))?;
    if let Some(slurm) = &slurm {
        tracing::info!(center_id = SLURM_CENTER, url = %slurm.url, "the demo's HPC center is a real Slurm cluster");
    }
    let commands = commands(slurm.as_ref(), shared_dir)?;
    let count = commands.len();
    for command in commands {
        write(proposer, command).await?;
    }
    tracing::info!(objects = count, "demo catalog loaded");
    Ok(())
}

/// Writes one demo object, riding out a change of leader: a write whose outcome is unknown is
/// sent again, and `AlreadyExists` then means the first attempt landed.
async fn write(proposer: &Proposer, command: Command) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut retried = false;
    loop {
        match proposer.propose(command.clone()).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(Refusal::AlreadyExists { .. })) if retried => return Ok(()),
            Ok(Err(refusal)) => anyhow::bail!("demo catalog refused: {refusal}"),
            Err(e @ ProposeError::Fatal(_)) => return Err(e.into()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.into()),
            Err(e) => tracing::info!(error = %e, "demo catalog write not acknowledged; retrying"),
        }
        retried = true;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How long the demo load keeps retrying writes a leader change left unacknowledged.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use jcs_raft::kv::MemKv;

    #[test]
    fn the_demo_catalog_applies_cleanly() {
        let mut state = MemKv::default();
        let commands = super::commands(None, Some(std::path::Path::new("/srv/shared"))).unwrap();
        assert!(commands.len() >= 10);
        for command in &commands {
            jcs_raft::apply::apply(&mut state, command, 1).unwrap().unwrap();
        }
        let centers: Vec<jcs_api::model::Center> =
            jcs_raft::tables::all(&state, jcs_api::model::ObjectKind::Center).unwrap();
        let regions: std::collections::BTreeSet<_> = centers.iter().map(|c| c.region.clone()).collect();
        assert_eq!((centers.len(), regions.len()), (4, 2), "four centers in two regions");
        for center in centers.iter().filter(|c| c.ai_center_id != "hangzhou-b") {
            let dir = format!("/srv/shared/{}", center.ai_center_id);
            assert_eq!(
                center.adapter.config["work_dir"],
                dir.as_str(),
                "{} keeps its state in the shared dir",
                center.ai_center_id
            );
        }
    }

    #[test]
    fn the_demo_links_join_its_two_regions() {
        let links = jcs_raft::schedule::RegionLinks::new(&super::region_links().unwrap()).unwrap();
        let link = links.path("zhejiang", "hunan").expect("hunan ↔ zhejiang");
        assert!(link.bandwidth_mbps > 0.0 && link.latency_ms > 0.0, "{link:?}");
    }

    #[test]
    fn a_slurm_cluster_stands_in_for_the_hpc_center() {
        let slurm = super::LocalSlurm {
            url: "http://127.0.0.1:16820".into(),
            partition: "jcs".into(),
            token_command: "scontrol token".into(),
            dir: "/tmp/jcs-slurm".into(),
            slurm_conf: "/tmp/jcs-slurm/slurm.conf".into(),
        };
        let commands = super::commands(Some(&slurm), None).unwrap();
        let kinds: Vec<(String, String)> = commands
            .iter()
            .filter_map(|c| match c {
                jcs_raft::command::Command::PutCenter { center, .. } => {
                    Some((center.ai_center_id.clone(), center.adapter.kind.clone()))
                }
                _ => None,
            })
            .collect();
        assert!(kinds.contains(&("hangzhou-b".into(), "slurm".into())), "{kinds:?}");
        assert_eq!(kinds.iter().filter(|(_, kind)| kind == "slurm").count(), 1);
    }
}
