//! Boards over long queues: a class's boards are brought up to date many times and must still
//! decide exactly as the per-replica reference does.

use proptest::prelude::*;
use proptest::strategy::Strategy;

use super::*;
use crate::schedule::strategy::Strategy as Scoring;

/// Long queues over roomy centers: a class's boards are brought up to date many times, over
/// ranges that hold and ranges that move, takes and gang give-backs under other weights and
/// policies, pins, and centers that run out of room late.
fn arb_long_queue() -> impl Strategy<Value = (World, Vec<Job>)> {
    let center = (4i64..40, 0i64..6, 0i64..3, 0u8..3, 0i64..30);
    let job = (
        prop::collection::vec(1i64..3, 1..3),
        0usize..PolicyMode::ALL.len(),
        any::<bool>(),
        prop::option::weighted(0.1, 0usize..12),
        prop::option::weighted(0.3, (0usize..Scoring::ALL.len(), 0u32..30)),
    );
    (prop::collection::vec(center, 2..12), prop::collection::vec(job, 8..60)).prop_map(|(centers, jobs)| {
        let ids: Vec<String> = (0..centers.len()).map(|i| format!("c{i}")).collect();
        let refs: Vec<(&str, i64)> = ids.iter().zip(&centers).map(|(id, c)| (id.as_str(), c.0)).collect();
        let mut world = World::new(&refs);
        for (id, &(gpus, running, in_flight, split, price)) in ids.iter().zip(&centers) {
            if in_flight > 0 {
                world.in_flight.insert(id.clone(), held(in_flight));
            }
            world.specs[0].center_prices.insert(id.clone(), price);
            world = world.edit(id, |_, m| {
                let m = m.as_mut().unwrap();
                m.running_task_num = running;
                m.node_free = nodes_of(gpus, split);
            });
        }
        let jobs = jobs
            .into_iter()
            .enumerate()
            .map(|(i, (replicas, mode, loose, pin, weight))| {
                job_with(&format!("j{i}"), &replicas, |r| {
                    r.policy = Some(PolicyMode::ALL[mode]);
                    r.tasks[0].gang = loose.then_some(false);
                    r.tasks[0].center_ids = pin.map(|p| format!("c{p}")).into_iter().collect();
                    if let Some((strategy, weight)) = weight {
                        r.weights.insert(Scoring::ALL[strategy].id().into(), weight);
                    }
                })
            })
            .collect();
        (world, jobs)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn boards_over_long_queues_equal_the_per_replica_reference((world, jobs) in arb_long_queue()) {
        let (catalog, config) = (world.catalog(), world.config());
        prop_assert_eq!(solve(&catalog, &jobs, &config), solve_reference(&catalog, &jobs, &config));
    }
}
