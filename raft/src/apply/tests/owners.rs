//! Center shards: epochs per change of owner, term fencing, and the fence on owner writes.

use super::*;
use crate::tables::{center_owner, center_owners, CenterOwner};

fn assign(term: u64, pairs: &[(&str, u64)]) -> Command {
    Command::AssignOwners { term, owners: pairs.iter().map(|(c, n)| (c.to_string(), *n)).collect() }
}

fn changed(pairs: &[(&str, u64)]) -> Outcome {
    Outcome::OwnersAssigned { changed: pairs.iter().map(|(c, e)| (c.to_string(), *e)).collect() }
}

#[test]
fn a_change_of_owner_bumps_the_epoch_and_a_repeat_changes_nothing() {
    let mut kv = MemKv::default();
    ok(&mut kv, put_center(center("a"), Create));
    ok(&mut kv, put_center(center("b"), Create));
    assert_eq!(ok(&mut kv, assign(2, &[("a", 1), ("b", 2)])), changed(&[("a", 1), ("b", 1)]));
    assert_eq!(ok(&mut kv, assign(2, &[("a", 1), ("b", 3)])), changed(&[("b", 2)]));
    let stored = center_owners(&kv).unwrap();
    assert_eq!(stored["a"], CenterOwner { node: Some(1), epoch: 1 });
    assert_eq!(stored["b"], CenterOwner { node: Some(3), epoch: 2 });
}

#[test]
fn a_deposed_leaders_assignment_is_refused_and_unknown_centers_are_skipped() {
    let mut kv = MemKv::default();
    ok(&mut kv, put_center(center("a"), Create));
    ok(&mut kv, assign(5, &[("a", 1)]));
    assert_eq!(refused(&mut kv, assign(4, &[("a", 2)])), Refusal::StaleAssignment { term: 4, current: 5 });
    assert_eq!(ok(&mut kv, assign(5, &[("gone", 2)])), changed(&[]));
    assert_eq!(center_owner(&kv, "a").unwrap(), CenterOwner { node: Some(1), epoch: 1 });
}

#[test]
fn a_former_owners_writes_are_refused_after_the_center_changes_hands() {
    let mut kv = MemKv::default();
    ok(&mut kv, put_center(center("a"), Create));
    ok(&mut kv, assign(1, &[("a", 1)]));
    let health = |epoch| Command::SetCenterHealth {
        center_id: "a".into(),
        owner_epoch: epoch,
        available: false,
        reason: "polls failed".into(),
    };
    ok(&mut kv, health(1));
    ok(&mut kv, assign(1, &[("a", 2)]));
    assert_eq!(refused(&mut kv, health(1)), Refusal::StaleOwner { center_id: "a".into(), epoch: 1, current: 2 });
    ok(&mut kv, health(2));
}
