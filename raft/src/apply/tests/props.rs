//! Property tests over random command sequences: batching, invariants, robustness, determinism.

use super::*;
use crate::kv::Overlay;
use proptest::prelude::*;

const CENTERS: &[&str] = &["c1", "c2", "c3"];
const SPECS: &[&str] = &["s1", "s2"];
const IMAGES: &[&str] = &["i1", "i2"];
const DATASETS: &[&str] = &["d1", "d2"];
const KEYS: &[&str] = &["k1", "k2"];
const USERS: &[&str] = &["alice", "bob"];

fn pick(ids: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(ids).prop_map(String::from)
}

fn some_of(ids: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(ids, 0..=ids.len())
}

fn write_mode() -> impl Strategy<Value = WriteMode> {
    prop_oneof![3 => Just(Create), 1 => Just(Replace)]
}

fn request_strategy() -> impl Strategy<Value = CreateTrainJob> {
    (proptest::collection::vec((pick(IMAGES), pick(SPECS), 1i64..3), 1..3), pick(USERS)).prop_map(|(tasks, user)| {
        let mut request = CreateTrainJob { user_name: Some(user), ..job_request("x", "x", 1) };
        request.tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(i, (image, spec, replicas))| {
                let mut task = job_request(&image, &spec, replicas).tasks.remove(0);
                task.name = format!("t{i}");
                task
            })
            .collect();
        request
    })
}

/// Commands over a small id alphabet: they collide (Create twice, Replace missing) and refer
/// to each other (specs to centers, images to specs, jobs to images), so most paths of apply
/// are taken.
fn related_command() -> BoxedStrategy<Command> {
    prop_oneof![
        4 => (pick(CENTERS), write_mode()).prop_map(|(c, mode)| put_center(center(&c), mode)),
        1 => pick(CENTERS).prop_map(|id| Command::DeleteCenter { id }),
        3 => (pick(SPECS), some_of(CENTERS), write_mode()).prop_map(|(s, cs, mode)| put_spec(spec(&s, &cs), mode)),
        1 => pick(SPECS).prop_map(|id| Command::DeleteSpec { id }),
        3 => (pick(IMAGES), pick(CENTERS), some_of(SPECS), write_mode())
            .prop_map(|(i, c, ss, mode)| put_image(image(&i, &c, &ss), mode)),
        1 => pick(IMAGES).prop_map(|id| Command::DeleteImage { id }),
        2 => (pick(DATASETS), some_of(CENTERS), write_mode()).prop_map(|(d, cs, mode)| put_dataset(dataset(&d, &cs), mode)),
        1 => pick(DATASETS).prop_map(|d| Command::DeleteDataset { id: format!("{d}@v1") }),
        2 => (pick(CENTERS), -1i64..4).prop_map(|(center_id, n)| Command::ReportMetrics { center_id, metrics: metrics(n) }),
        5 => (request_strategy(), proptest::option::of(pick(KEYS)))
            .prop_map(|(request, idempotency_key)| Command::SubmitJob { request, idempotency_key }),
        // Retries from a tiny set of keyed requests: replays and reused keys.
        2 => (pick(KEYS), pick(USERS)).prop_map(|(key, user)| submit_with_key(job_request_of(&user, "i1", "s1"), &key)),
        2 => (1u64..6).prop_map(|n| stop(&tables::job_id(n))),
    ]
    .boxed()
}

/// A catalog in which most generated jobs are accepted: `i1` fits `s1` only, `i2` fits all.
fn seed_commands() -> Vec<Command> {
    vec![
        put_center(center("c1"), Create),
        put_center(center("c2"), Create),
        put_center(center("c3"), Create),
        put_spec(spec("s1", &["c1", "c2"]), Create),
        put_spec(spec("s2", &["c3"]), Create),
        put_image(image("i1", "c1", &["s1"]), Create),
        put_image(image("i2", "c3", &[]), Create),
        put_dataset(dataset("d1", &["c1"]), Create),
    ]
}

/// A command sequence, half the time starting from the seeded catalog, half from nothing.
fn sequence(command: BoxedStrategy<Command>, max_len: usize) -> impl Strategy<Value = Vec<Command>> {
    (any::<bool>(), proptest::collection::vec(command, 0..max_len)).prop_map(|(seeded, rest)| {
        let mut commands = if seeded { seed_commands() } else { Vec::new() };
        commands.extend(rest);
        commands
    })
}

/// Anything at all: arbitrary ids, numbers (NaN and infinities included), quantities and
/// lists, mixed with related commands so that the state is not always empty.
fn wild_command() -> BoxedStrategy<Command> {
    let text = || prop_oneof![pick(&["c1", "s1", "i1", "d1@v1", "job-000000000001", ""]), "\\PC{0,8}"];
    let number = || prop_oneof![-3i64..3, any::<i64>()];
    prop_oneof![
        4 => related_command(),
        1 => (text(), text(), any::<f64>(), any::<f64>(), any::<i32>(), write_mode()).prop_map(
            |(id, name, lon, lat, status, mode)| {
                put_center(Center { name, geometry: [lon, lat], status, ..center(&id) }, mode)
            }
        ),
        1 => (text(), text(), text(), text(), number(), write_mode()).prop_map(|(id, list, key, quantity, price, mode)| {
            let mut s = spec(&id, &[]);
            s.computing_center_list = list;
            s.resource_quantity.insert(key, quantity);
            s.price = price;
            put_spec(s, mode)
        }),
        1 => (text(), text(), text(), write_mode()).prop_map(|(id, c, specs, mode)| {
            put_image(Image { resource_spec: specs, ..image(&id, &c, &[]) }, mode)
        }),
        1 => (text(), text(), text(), number(), write_mode()).prop_map(|(name, version, c, size, mode)| {
            let mut d = dataset(&name, &[]);
            d.data_version = version;
            d.size_mb = size;
            d.location = dataset("x", &["c1"]).location;
            d.location[0].ai_center_id = c;
            put_dataset(d, mode)
        }),
        1 => (0usize..4, text()).prop_map(|(kind, id)| match kind {
            0 => Command::DeleteCenter { id },
            1 => Command::DeleteSpec { id },
            2 => Command::DeleteImage { id },
            _ => Command::DeleteDataset { id },
        }),
        1 => (text(), number(), number()).prop_map(|(center_id, running, gpu)| Command::ReportMetrics {
            center_id,
            metrics: CenterMetrics { gpu_free: gpu, ..metrics(running) },
        }),
        1 => (text(), text(), text(), -2i64..1100, 0usize..3, proptest::option::of(text())).prop_map(
            |(name, image, spec, replicas, tasks, idempotency_key)| {
                let mut request = job_request(&image, &spec, replicas);
                request.name = name;
                request.tasks = request.tasks.iter().cycle().take(tasks).cloned().collect();
                Command::SubmitJob { request, idempotency_key }
            }
        ),
        1 => (text(), text()).prop_map(|(job_id, reason)| Command::StopJob { job_id, reason }),
    ]
    .boxed()
}

/// Applies commands one by one, at `T0 + i`.
fn apply_each(kv: &mut MemKv, commands: &[Command]) -> Vec<CommandResult> {
    commands.iter().enumerate().map(|(i, c)| apply_at(kv, c.clone(), T0 + i as i64)).collect()
}

proptest! {
    /// The RocksDB state machine applies a batch through one `Overlay` and writes its writes
    /// atomically; that must be indistinguishable from applying the commands one by one.
    #[test]
    fn applying_batches_through_an_overlay_equals_applying_one_by_one(
        commands in sequence(related_command(), 50),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
    ) {
        let mut direct = MemKv::default();
        let expected = apply_each(&mut direct, &commands);

        let mut bounds: BTreeSet<usize> = cuts.iter().map(|c| c.index(commands.len() + 1)).collect();
        bounds.extend([0, commands.len()]);
        let bounds: Vec<usize> = bounds.into_iter().collect();
        let mut batched = MemKv::default();
        let mut results = Vec::new();
        for window in bounds.windows(2) {
            let mut overlay = Overlay::new(&batched);
            for (i, command) in commands.iter().enumerate().take(window[1]).skip(window[0]) {
                results.push(apply(&mut overlay, command, T0 + i as i64).expect("MemKv never faults"));
            }
            for (key, value) in overlay.into_writes() {
                match value {
                    Some(value) => batched.put(key, value),
                    None => batched.delete(key),
                }
            }
        }
        prop_assert_eq!(results, expected);
        prop_assert_eq!(batched, direct);
    }

    /// The status index, references and bookkeeping stay consistent after any sequence.
    #[test]
    fn invariants_hold_after_any_sequence(commands in sequence(related_command(), 60)) {
        let mut kv = MemKv::default();
        for (i, command) in commands.iter().enumerate() {
            let _ = apply_at(&mut kv, command.clone(), T0 + i as i64);
            if let Err(broken) = check_invariants(&kv) {
                prop_assert!(false, "after command {i} ({command:?}): {broken}");
            }
        }
    }

    /// Apply never panics and never reports a storage fault over state it wrote itself, however
    /// malformed the commands; refusals change nothing and the invariants still hold.
    #[test]
    fn apply_never_panics_on_arbitrary_commands(commands in sequence(wild_command(), 40)) {
        let mut kv = MemKv::default();
        for (i, command) in commands.iter().enumerate() {
            let before = kv.clone();
            let result = apply(&mut kv, command, T0 + i as i64);
            prop_assert!(result.is_ok(), "storage fault on {command:?}: {result:?}");
            if let Ok(Err(_)) = result {
                prop_assert_eq!(&kv, &before, "refused {:?} but changed the state", command);
            }
            if let Err(broken) = check_invariants(&kv) {
                prop_assert!(false, "after command {i} ({command:?}): {broken}");
            }
        }
    }

    /// Same log, same state, same results.
    #[test]
    fn applying_the_same_sequence_twice_gives_identical_state(
        commands in sequence(prop_oneof![3 => related_command(), 1 => wild_command()].boxed(), 40),
    ) {
        let (mut first, mut second) = (MemKv::default(), MemKv::default());
        let results_first = apply_each(&mut first, &commands);
        let results_second = apply_each(&mut second, &commands);
        prop_assert_eq!(results_first, results_second);
        prop_assert_eq!(first.map, second.map);
    }
}
