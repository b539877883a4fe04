//! The scheduling queue, in job-id order, kept in two key ranges split at a floor
//! (`meta/queue_floor`): `q/{job}` above it and `qh/{job}`, the held part, at or below it.
//!
//! Why two: a placed job leaves a tombstone in RocksDB until compaction, and a read of the queue
//! steps over every tombstone in its range — at thousands of placements a second that was a
//! tenth of the node's CPU. After each placement batch the floor rises to the highest job the
//! batch placed, so a read of `q/` starts above the batch's tombstones. A job the batch passed
//! over (it did not fit, or its center is down) would hold the floor down and leave every later
//! placement's tombstone in the way of the next read from the head; instead it moves to the
//! held part, a range that only sees tombstones of jobs that were once passed over. The queue
//! reads as the held part, then `q/` above the floor: every held key is at or below the floor,
//! so that is queue order.

use std::ops::ControlFlow;

use crate::kv::{Kv, StoreError};
use crate::tables::{held_queue_key, queue_key, QUEUE_FLOOR_KEY, QUEUE_PREFIX};

/// Whether a job belongs to the held part (its `q/` key at or below the floor).
fn is_held(kv: &impl Kv, job_id: &str) -> Result<bool, StoreError> {
    Ok(kv.get(QUEUE_FLOOR_KEY)?.is_some_and(|floor| queue_key(job_id) <= floor))
}

/// Puts a job in the queue at its place: a job taken off a failed center re-enters below the
/// floor, in the held part.
pub fn enqueue(kv: &mut impl Kv, job_id: &str) -> Result<(), StoreError> {
    let key = if is_held(kv, job_id)? { held_queue_key(job_id) } else { queue_key(job_id) };
    kv.put(key, Vec::new());
    Ok(())
}

/// Takes a job out of the queue if it is queued (a delete of an absent key would be a
/// tombstone too, and every job that ends passes here).
pub fn dequeue(kv: &mut impl Kv, job_id: &str) -> Result<(), StoreError> {
    let key = if is_held(kv, job_id)? { held_queue_key(job_id) } else { queue_key(job_id) };
    if kv.get(&key)?.is_some() {
        kv.delete(key);
    }
    Ok(())
}

/// Raises the floor to job `to` (the highest job a placement batch placed): the jobs still
/// queued between the old floor and it move to the held part. A floor already higher stays.
pub fn raise_floor(kv: &mut impl Kv, to: &str) -> Result<(), StoreError> {
    let to = queue_key(to);
    let floor = kv.get(QUEUE_FLOOR_KEY)?;
    if floor.as_ref().is_some_and(|floor| *floor >= to) {
        return Ok(());
    }
    let mut passed_over = Vec::new();
    let mut visit = |k: &[u8], _: &[u8]| {
        if k > to.as_slice() {
            return ControlFlow::Break(());
        }
        passed_over.push(String::from_utf8_lossy(&k[QUEUE_PREFIX.len()..]).into_owned());
        ControlFlow::Continue(())
    };
    match &floor {
        Some(floor) => kv.scan_after(QUEUE_PREFIX, floor, &mut visit)?,
        None => kv.scan(QUEUE_PREFIX, &mut visit)?,
    }
    for job_id in passed_over {
        kv.delete(queue_key(&job_id));
        kv.put(held_queue_key(&job_id), Vec::new());
    }
    kv.put(QUEUE_FLOOR_KEY.to_vec(), to);
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kv::{KvRead, MemKv};
    use crate::tables::{queued_job_ids, QUEUE_HELD_PREFIX};

    fn queued(kv: &MemKv) -> Vec<String> {
        queued_job_ids(kv, None, usize::MAX).unwrap()
    }

    fn id(n: u32) -> String {
        format!("job-{n:012}")
    }

    fn held(kv: &MemKv) -> usize {
        let mut count = 0;
        kv.scan(QUEUE_HELD_PREFIX, &mut |_, _| {
            count += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        count
    }

    #[test]
    fn a_passed_over_job_is_held_and_the_floor_passes_it() {
        let mut kv = MemKv::default();
        for n in 1..=5 {
            enqueue(&mut kv, &id(n)).unwrap();
        }
        // A batch places 2 and 3 and passes over 1.
        dequeue(&mut kv, &id(2)).unwrap();
        dequeue(&mut kv, &id(3)).unwrap();
        raise_floor(&mut kv, &id(3)).unwrap();
        assert_eq!(kv.get(QUEUE_FLOOR_KEY).unwrap().unwrap(), queue_key(&id(3)));
        assert_eq!(held(&kv), 1, "job 1 is held");
        assert_eq!(queued(&kv), [id(1), id(4), id(5)]);
        // Job 2, taken off a failed center, re-enters at its place; job 1 is placed at last.
        enqueue(&mut kv, &id(2)).unwrap();
        dequeue(&mut kv, &id(1)).unwrap();
        assert_eq!(queued(&kv), [id(2), id(4), id(5)]);
        assert_eq!(queued_job_ids(&kv, Some(&id(2)), 1).unwrap(), [id(4)], "reading after a held job");
        // A lower raise (an older batch's highest job) leaves the floor.
        raise_floor(&mut kv, &id(1)).unwrap();
        assert_eq!(kv.get(QUEUE_FLOOR_KEY).unwrap().unwrap(), queue_key(&id(3)));
    }

    #[test]
    fn a_floor_from_before_the_held_part_reads_the_same() {
        // Older states kept the floor just below the first queued key and nothing held.
        let mut kv = MemKv::default();
        for n in 2..=4 {
            enqueue(&mut kv, &id(n)).unwrap();
        }
        kv.put(QUEUE_FLOOR_KEY.to_vec(), b"q/job-000000000001\xff".to_vec());
        assert_eq!(queued(&kv), [id(2), id(3), id(4)]);
        dequeue(&mut kv, &id(3)).unwrap();
        raise_floor(&mut kv, &id(3)).unwrap();
        assert_eq!(queued(&kv), [id(2), id(4)]);
    }

    proptest! {
        /// Whatever the order of enqueues, dequeues and raises, the queue reads exactly the
        /// queued jobs, in order, from the head or after any job.
        #[test]
        fn the_queue_reads_every_queued_job_in_order(
            ops in proptest::collection::vec((0u8..3, 0u32..40), 0..80),
            after in 0u32..40,
        ) {
            let mut kv = MemKv::default();
            let mut expected = std::collections::BTreeSet::new();
            for (op, n) in ops {
                match op {
                    0 => { enqueue(&mut kv, &id(n)).unwrap(); expected.insert(id(n)); }
                    1 => { dequeue(&mut kv, &id(n)).unwrap(); expected.remove(&id(n)); }
                    _ => raise_floor(&mut kv, &id(n)).unwrap(),
                }
                prop_assert_eq!(queued(&kv), expected.iter().cloned().collect::<Vec<_>>());
            }
            let later: Vec<_> = expected.iter().filter(|j| **j > id(after)).take(3).cloned().collect();
            prop_assert_eq!(queued_job_ids(&kv, Some(&id(after)), 3).unwrap(), later);
        }
    }
}
