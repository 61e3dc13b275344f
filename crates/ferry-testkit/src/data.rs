//! Deterministic pseudo-random data: fast, repeatable, and of no
//! cryptographic quality (nothing here needs it).

/// Multiplier that spreads a small seed over all 64 bits (2^64 / φ).
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// xorshift64 (shifts 13, 7, 17).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`. The seed is spread first: xorshift needs a
    /// non-zero state, and `seed | 1` alone would give seeds 2k and 2k + 1
    /// the same stream.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(SPREAD) | 1)
    }

    /// A generator whose state is exactly `state`, unspread (state 0 yields
    /// zeros forever).
    pub fn from_state(state: u64) -> Rng {
        Rng(state)
    }

    /// A generator seeded from `FERRY_TEST_SEED` if set, else from the clock
    /// and the process id, mixed with `salt`. It prints the seed, so that a
    /// failing run can be repeated.
    pub fn from_env(salt: u64) -> Rng {
        let seed = std::env::var("FERRY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) ^ u64::from(std::process::id())
        });
        eprintln!("random seed {seed} (FERRY_TEST_SEED={seed} repeats it)");
        Rng::new(seed ^ salt)
    }

    /// The next state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next byte: bits 32..40 of the next state.
    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 32) as u8
    }

    /// A number in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An independent generator (for another thread), repeatable with this
    /// one's seed.
    pub fn fork(&mut self) -> Rng {
        Rng(self.below(u64::MAX) | 1)
    }
}

/// `len` incompressible bytes, the same for the same seed; different seeds
/// give unrelated bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.byte()).collect()
}

/// `count` bf16 values (little-endian) drawn like trained weights: normal,
/// standard deviation 0.02. The high byte (sign and exponent) takes few
/// values, the low byte is near random, as in real models.
pub fn bf16_weights(count: usize, seed: u64) -> Vec<u8> {
    let mut rng = StarRng::new(seed);
    let mut out = Vec::with_capacity(count * 2);
    for _ in 0..count {
        let (u1, u2) = (1.0 - rng.unit(), rng.unit());
        let v = (0.02 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32;
        out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
    }
    out
}

/// bf16 `weights` each moved by `step` × N(0, 1) (computed in f32, rounded
/// to nearest): a fine-tune's or a training step's change.
pub fn bf16_nudged(weights: &[u8], step: f32, seed: u64) -> Vec<u8> {
    let mut rng = StarRng::new(seed);
    weights
        .chunks_exact(2)
        .flat_map(|c| {
            let (u1, u2) = (1.0 - rng.unit(), rng.unit());
            let n = ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32;
            let v = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) + step * n;
            (((v.to_bits() + 0x8000) >> 16) as u16).to_le_bytes()
        })
        .collect()
}

/// A safetensors file: the header (with `note` in its `__metadata__`), then
/// the BF16 tensors (name, bytes) in the order given.
pub fn safetensors_file(note: &str, tensors: &[(&str, &[u8])]) -> Vec<u8> {
    let mut at = 0;
    let entries: Vec<String> = tensors
        .iter()
        .map(|(name, data)| {
            let e = format!(r#""{name}":{{"dtype":"BF16","shape":[{}],"data_offsets":[{at},{}]}}"#, data.len() / 2, at + data.len());
            at += data.len();
            e
        })
        .collect();
    let header = format!(r#"{{"__metadata__":{{"note":"{note}"}},{}}}"#, entries.join(","));
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    for (_, data) in tensors {
        f.extend_from_slice(data);
    }
    f
}

/// The input generator protocol/vectors/core.json names (`"generator":
/// "xorshift64"`): xorshift64 started at `seed` itself, one byte per step
/// from bits 32..40 of the state. Golden vectors depend on every byte.
pub fn xorshift64_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::from_state(seed);
    (0..len).map(|_| rng.byte()).collect()
}

/// xorshift64* (shifts 12, 25, 27, then a multiply): better low bits than
/// [`Rng`], for draws that use them (fractions, weights). Recorded
/// benchmark inputs depend on its exact stream.
#[derive(Clone, Debug)]
pub struct StarRng(u64);

impl StarRng {
    /// A generator for `seed`, spread like [`Rng::new`].
    pub fn new(seed: u64) -> StarRng {
        StarRng(seed.wrapping_mul(SPREAD) | 1)
    }

    /// A generator whose state is exactly `state` (must not be 0).
    pub fn from_state(state: u64) -> StarRng {
        StarRng(state)
    }

    /// The next output.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in 0..n by remainder (n must not be 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A fraction in [0, 1) with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixed streams: tests, benchmarks and golden vectors were written
    // against these bytes, so the generators must never drift.
    #[test]
    fn the_streams_are_fixed() {
        assert_eq!(noise(16, 5), [0x3a, 0x8f, 0x2c, 0xae, 0x2a, 0x28, 0xcc, 0x71, 0xb3, 0x49, 0x34, 0x20, 0xb2, 0x76, 0x88, 0x69]);
        assert_eq!(xorshift64_bytes(16, 1), [0x00, 0x06, 0x2f, 0x03, 0xb0, 0x02, 0x08, 0xc1, 0x2e, 0xe1, 0xc3, 0xf8, 0x0f, 0xe5, 0xdd, 0x05]);
        let mut star = StarRng::new(1);
        assert_eq!([star.next_u64(), star.next_u64()], [0x0d83_b3e2_9a21_487a, 0x54c4_4c79_f1fe_9d67]);
    }

    #[test]
    fn neighbouring_seeds_give_different_bytes() {
        assert_ne!(noise(64, 2), noise(64, 3));
        assert_ne!(noise(64, 1), xorshift64_bytes(64, 1));
    }

    #[test]
    fn draws_stay_in_range() {
        let (mut rng, mut star) = (Rng::new(9), StarRng::new(9));
        for n in [1, 2, 7, 1000] {
            assert!(rng.below(n) < n && star.below(n) < n);
        }
        assert_eq!(rng.below(0), 0);
        assert!((0..1000).all(|_| (0.0..1.0).contains(&star.unit())));
    }
}
