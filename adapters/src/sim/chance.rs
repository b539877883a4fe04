//! Deterministic randomness for the simulator: a seeded splitmix64 stream for transient errors
//! and a keyed hash for failure injection, so that a run with the same seed and the same calls
//! fails the same way every time (no dependency, no global state).

/// splitmix64's output function: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A splitmix64 stream.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
}

/// A number in `0..100` fixed by `text` and `seed` (FNV-1a, then mixed with the seed).
pub(super) fn percentile(text: &str, seed: u64) -> u64 {
    let hash = text.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
    mix(hash ^ mix(seed)) % 100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_repeat_per_seed_and_spread() {
        let draws = |seed| {
            let mut rng = Rng::new(seed);
            (0..1000).map(|_| rng.next_u64() % 100).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let low = draws(7).iter().filter(|d| **d < 30).count();
        assert!((240..=360).contains(&low), "{low} of 1000 draws below 30");
        assert_eq!(percentile("job-1.t0.r0.a0", 1), percentile("job-1.t0.r0.a0", 1));
        let spread = (0..1000).filter(|i| percentile(&format!("job-{i}.t0.r0.a0"), 1) < 50).count();
        assert!((400..=600).contains(&spread), "{spread} of 1000 keys below 50");
    }
}
