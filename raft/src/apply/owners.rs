//! Applying the leader's center shards ([`Command::AssignOwners`](crate::command::Command)):
//! a deposed leader's assignment is refused by term; a center that changes hands gets the next
//! epoch, which fences every write its former owner still has in flight. Centers that no longer
//! exist are skipped.

use std::collections::BTreeMap;

use jcs_api::model::ObjectKind;

use crate::command::{CommandResult, Outcome, Refusal};
use crate::kv::{get_json, put_json, Kv, StoreError};
use crate::tables::{center_owner, exists, owner_epoch_key, CenterOwner, OWNER_TERM_KEY};

pub fn assign(kv: &mut impl Kv, term: u64, owners: &BTreeMap<String, u64>) -> Result<CommandResult, StoreError> {
    let current: u64 = get_json(kv, OWNER_TERM_KEY)?.unwrap_or(0);
    if term < current {
        return Ok(Err(Refusal::StaleAssignment { term, current }));
    }
    put_json(kv, OWNER_TERM_KEY.to_vec(), &term);
    let mut changed = BTreeMap::new();
    for (center, node) in owners {
        if !exists(kv, ObjectKind::Center, center)? {
            continue;
        }
        let owner = center_owner(kv, center)?;
        if owner.node == Some(*node) {
            continue;
        }
        let epoch = owner.epoch + 1;
        put_json(kv, owner_epoch_key(center), &CenterOwner { node: Some(*node), epoch });
        changed.insert(center.clone(), epoch);
    }
    Ok(Ok(Outcome::OwnersAssigned { changed }))
}
