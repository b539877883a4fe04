//! The scheduling queue (`q/{job}`, in job-id order) and its floor. A placed job leaves a
//! tombstone at the head of the range until RocksDB compacts it, and a read of the queue from
//! the start of its range steps over every one: at thousands of placements a second that was a
//! tenth of the node's CPU. The floor (`meta/queue_floor`) is a key below every queued key,
//! raised to the first queued job after each placement batch, so the queue is read from there.

use crate::kv::{Kv, StoreError};
use crate::tables::{queue_key, queued_job_ids, QUEUE_FLOOR_KEY};

/// A key just below `key`, so that a scan after it starts at `key`: the last byte one lower
/// followed by 0xff (keys are text, so nothing queued sorts between the two), or the proper
/// prefix when the last byte is 0.
fn just_below(mut key: Vec<u8>) -> Vec<u8> {
    match key.pop() {
        Some(last) if last > 0 => key.extend([last - 1, u8::MAX]),
        _ => {}
    }
    key
}

/// Puts a job in the queue, lowering the floor when the job sorts at or below it (a job taken
/// off a failed center re-enters the queue at its old place).
pub fn enqueue(kv: &mut impl Kv, job_id: &str) -> Result<(), StoreError> {
    let key = queue_key(job_id);
    if kv.get(QUEUE_FLOOR_KEY)?.is_some_and(|floor| key <= floor) {
        kv.put(QUEUE_FLOOR_KEY.to_vec(), just_below(key.clone()));
    }
    kv.put(key, Vec::new());
    Ok(())
}

/// Takes a job out of the queue. The floor stays: it only has to be below what is queued.
pub fn dequeue(kv: &mut impl Kv, job_id: &str) {
    kv.delete(queue_key(job_id));
}

/// Raises the floor to just below the first queued job (after a batch placed the head). An
/// empty queue leaves it where it is: every job submitted later sorts above it.
pub fn raise_floor(kv: &mut impl Kv) -> Result<(), StoreError> {
    let Some(first) = queued_job_ids(kv, None, 1)?.pop() else { return Ok(()) };
    let raised = just_below(queue_key(&first));
    if kv.get(QUEUE_FLOOR_KEY)?.is_none_or(|floor| floor < raised) {
        kv.put(QUEUE_FLOOR_KEY.to_vec(), raised);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kv::{KvRead, MemKv};

    fn queued(kv: &MemKv) -> Vec<String> {
        queued_job_ids(kv, None, usize::MAX).unwrap()
    }

    fn id(n: u32) -> String {
        format!("job-{n:012}")
    }

    #[test]
    fn the_floor_follows_the_head_and_a_requeued_job_lowers_it() {
        let mut kv = MemKv::default();
        for n in 1..=5 {
            enqueue(&mut kv, &id(n)).unwrap();
        }
        dequeue(&mut kv, &id(1));
        dequeue(&mut kv, &id(2));
        raise_floor(&mut kv).unwrap();
        let floor = kv.get(QUEUE_FLOOR_KEY).unwrap().unwrap();
        assert!(floor < queue_key(&id(3)) && floor > queue_key(&id(2)), "just below the head");
        enqueue(&mut kv, &id(1)).unwrap();
        assert_eq!(queued(&kv), [id(1), id(3), id(4), id(5)]);
    }

    proptest! {
        /// Whatever the order of enqueues, dequeues and raises, reading the queue from its
        /// floor finds exactly the queued jobs, in order.
        #[test]
        fn reading_from_the_floor_finds_every_queued_job(
            ops in proptest::collection::vec((0u8..3, 0u32..40), 0..80),
        ) {
            let mut kv = MemKv::default();
            let mut expected = std::collections::BTreeSet::new();
            for (op, n) in ops {
                match op {
                    0 => { enqueue(&mut kv, &id(n)).unwrap(); expected.insert(id(n)); }
                    1 => { dequeue(&mut kv, &id(n)); expected.remove(&id(n)); }
                    _ => raise_floor(&mut kv).unwrap(),
                }
                prop_assert_eq!(queued(&kv), expected.iter().cloned().collect::<Vec<_>>());
            }
        }
    }
}
