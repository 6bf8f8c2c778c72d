//! Key choosers: a seeded PRNG and YCSB's (scrambled) zipfian generator.

/// xoshiro256** seeded through SplitMix64: fast, small and deterministic for a seed.
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { state: [next(), next(), next(), next()] }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (`n > 0`), by Lemire's multiply-shift (bias below 2^-64 · n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// YCSB's zipfian generator over `[0, items)` (Gray et al., "Quickly generating billion-record
/// synthetic databases"): item 0 is the most popular.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

/// YCSB's default skew.
pub const ZIPFIAN_THETA: f64 = 0.99;

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    /// A generator over `items` items (computes ζ(items, θ), O(items)).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        Zipfian::with_zetan(items, theta, zeta(items, theta))
    }

    /// A generator whose ζ(items, θ) is already known (YCSB precomputes it for 10^10 items).
    pub fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        let zeta2 = zeta(2, theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian { items, theta, alpha: 1.0 / (1.0 - theta), zetan, eta }
    }

    /// The next rank in `[0, items)`.
    pub fn next(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

/// YCSB's FNV-1a over the 8 bytes of `value`, made non-negative as YCSB does.
pub fn fnv_hash64(mut value: u64) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for _ in 0..8 {
        hash ^= value & 0xff;
        hash = hash.wrapping_mul(1_099_511_628_211);
        value >>= 8;
    }
    (hash as i64).unsigned_abs()
}

/// How keys are drawn from `[0, records)`.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Every key equally likely.
    Uniform { records: u64 },
    /// YCSB's ScrambledZipfianGenerator: zipfian ranks over 10^10 items, hashed onto the records,
    /// so the popular keys are spread over the key space rather than clustered at its start.
    ScrambledZipfian { records: u64, zipfian: Zipfian },
}

/// YCSB's item count for the scrambled generator, and ζ(10^10, 0.99) it precomputes.
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

impl KeyChooser {
    /// Uniform keys over `records` (at least 1).
    pub fn uniform(records: u64) -> KeyChooser {
        KeyChooser::Uniform { records: records.max(1) }
    }

    /// Scrambled zipfian keys (θ = 0.99) over `records` (at least 1).
    pub fn scrambled_zipfian(records: u64) -> KeyChooser {
        KeyChooser::ScrambledZipfian {
            records: records.max(1),
            zipfian: Zipfian::with_zetan(SCRAMBLED_ITEMS, ZIPFIAN_THETA, SCRAMBLED_ZETAN),
        }
    }

    /// The next key index in `[0, records)`.
    pub fn next(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform { records } => rng.below(*records),
            KeyChooser::ScrambledZipfian { records, zipfian } => fnv_hash64(zipfian.next(rng)) % records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_rng_is_deterministic_and_seed_dependent() {
        let a: Vec<u64> = (0..8).scan(Rng::new(7), |rng, _| Some(rng.next_u64())).collect();
        let b: Vec<u64> = (0..8).scan(Rng::new(7), |rng, _| Some(rng.next_u64())).collect();
        let c: Vec<u64> = (0..8).scan(Rng::new(8), |rng, _| Some(rng.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
            assert!(rng.below(3) < 3);
        }
    }

    #[test]
    fn zipfian_ranks_follow_the_power_law() {
        let items = 1000;
        let zipfian = Zipfian::new(items, ZIPFIAN_THETA);
        let mut rng = Rng::new(42);
        let samples = 200_000;
        let mut counts = vec![0u64; items as usize];
        for _ in 0..samples {
            let rank = zipfian.next(&mut rng);
            assert!(rank < items);
            counts[rank as usize] += 1;
        }
        // P(rank i) = 1 / ((i+1)^θ ζ(n, θ)).
        let zetan = zeta(items, ZIPFIAN_THETA);
        for rank in [0usize, 1, 9] {
            let expected = samples as f64 / ((rank + 1) as f64).powf(ZIPFIAN_THETA) / zetan;
            let observed = counts[rank] as f64;
            assert!((observed - expected).abs() < expected * 0.1, "rank {rank}: {observed} vs {expected}");
        }
        // Skewed: the top 10% of ranks take well over half of the draws.
        let top: u64 = counts[..100].iter().sum();
        assert!(top as f64 > 0.6 * samples as f64, "top 10% got {top}");
        assert!(counts[0] > counts[10] && counts[10] > counts[500]);
    }

    #[test]
    fn scrambled_zipfian_is_in_range_skewed_and_deterministic() {
        let records = 10_000;
        let chooser = KeyChooser::scrambled_zipfian(records);
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..100_000).map(|_| chooser.next(&mut rng)).collect::<Vec<u64>>()
        };
        let keys = draw(3);
        assert_eq!(keys, draw(3));
        assert_ne!(keys, draw(4));
        let mut counts = vec![0u64; records as usize];
        for &key in &keys {
            assert!(key < records);
            counts[key as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // The hottest key takes about 1/ζ(10^10, 0.99) ≈ 3.8% of the draws (uniform: 0.01%),
        // and the top 1% of keys about ζ(100, 0.99)/ζ(10^10, 0.99) ≈ 20%; yet most keys are touched.
        let hottest = counts[0] as f64 / 100_000.0;
        assert!((0.03..0.05).contains(&hottest), "hottest key drew {hottest}");
        let top: u64 = counts[..100].iter().sum();
        assert!((15_000..30_000).contains(&top), "top 1% drew {top}");
        assert!(counts.iter().filter(|&&c| c > 0).count() > 5_000);
        // The hot keys are not clustered at the start of the key space.
        let mut rng = Rng::new(5);
        let low = (0..10_000).filter(|_| chooser.next(&mut rng) < records / 10).count();
        assert!(low < 5_000, "{low} of 10000 draws in the first tenth");
    }

    #[test]
    fn uniform_covers_the_range() {
        let chooser = KeyChooser::uniform(100);
        let mut rng = Rng::new(9);
        let mut seen = [0u32; 100];
        for _ in 0..100_000 {
            seen[chooser.next(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)));
        assert_eq!(KeyChooser::uniform(0).next(&mut rng), 0);
    }

    #[test]
    fn fnv_matches_ycsb() {
        // Values computed independently with YCSB's Utils.fnvhash64 algorithm.
        assert_eq!(fnv_hash64(0), 0x5738_07cd_d7e5_c63b);
        assert_eq!(fnv_hash64(12_345), 1_792_800_413_050_876_852);
    }
}
