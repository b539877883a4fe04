//! The demo catalog of the field report: four centers in two regions (a university center and
//! a carrier cloud in Hunan, two centers in Hangzhou), a few specs, images and a dataset; the
//! centers' monitoring comes from polling their adapters. Loaded once, on the first start of a cluster, through
//! the same replicated commands as any client write.

use jcs_api::model::{Center, Dataset, Image, ResourceSpec};
use jcs_raft::command::{Command, WriteMode};
use serde::Deserialize;

use crate::proposer::Proposer;

const CATALOG: &str = include_str!("../demo/catalog.yaml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoCatalog {
    centers: Vec<Center>,
    specs: Vec<ResourceSpec>,
    images: Vec<Image>,
    datasets: Vec<Dataset>,
}

fn commands() -> Result<Vec<Command>, serde_yaml::Error> {
    let demo: DemoCatalog = serde_yaml::from_str(CATALOG)?;
    let mode = WriteMode::Create;
    let mut commands: Vec<Command> =
        demo.centers.into_iter().map(|center| Command::PutCenter { center, mode }).collect();
    commands.extend(demo.specs.into_iter().map(|spec| Command::PutSpec { spec, mode }));
    commands.extend(demo.images.into_iter().map(|image| Command::PutImage { image, mode }));
    commands.extend(demo.datasets.into_iter().map(|dataset| Command::PutDataset { dataset, mode }));
    Ok(commands)
}

/// Writes the demo catalog; any refusal is an error (the catalog is meant to be consistent).
pub async fn load(proposer: &Proposer) -> anyhow::Result<()> {
    let commands = commands()?;
    let count = commands.len();
    for command in commands {
        proposer.propose(command).await?.map_err(|refusal| anyhow::anyhow!("demo catalog refused: {refusal}"))?;
    }
    tracing::info!(objects = count, "demo catalog loaded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use jcs_raft::kv::MemKv;

    #[test]
    fn the_demo_catalog_applies_cleanly() {
        let mut state = MemKv::default();
        let commands = super::commands().unwrap();
        assert!(commands.len() >= 10);
        for command in &commands {
            jcs_raft::apply::apply(&mut state, command, 1).unwrap().unwrap();
        }
        let centers: Vec<jcs_api::model::Center> =
            jcs_raft::tables::all(&state, jcs_api::model::ObjectKind::Center).unwrap();
        let regions: std::collections::BTreeSet<_> = centers.iter().map(|c| c.region.clone()).collect();
        assert_eq!((centers.len(), regions.len()), (4, 2), "four centers in two regions");
    }
}
