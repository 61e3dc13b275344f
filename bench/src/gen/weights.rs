//! Llama-shaped bf16 tensors drawn like trained weights, the edits the
//! scenarios make to them, and the safetensors container around them.

use ferry_testkit::StarRng;

/// Model dimensions. The command line always uses `Dims::LLAMA_1B`-like
/// shapes; tests use tiny ones.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub hidden: u64,
    pub ffn: u64,
    pub vocab: u64,
}

impl Dims {
    /// Hidden 1024, FFN 2816, vocabulary 8192: about 24.5 MiB per layer.
    pub const DEFAULT: Dims = Dims { hidden: 1024, ffn: 2816, vocab: 8192 };
}

pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    /// Layer index (None for embeddings, the final norm and the head).
    pub layer: Option<u64>,
    pub norm: bool,
    /// One of the attention projections (q, k, v, o).
    pub attention: bool,
}

impl Tensor {
    pub fn elems(&self) -> u64 {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        self.elems() * 2
    }
}

/// The tensors of a model of about `size_mib` MiB (at least one layer), in
/// file order, and the number of layers.
pub fn layout(size_mib: u64, d: Dims) -> (Vec<Tensor>, u64) {
    let (h, f) = (d.hidden, d.ffn);
    let layer_elems = 4 * h * h + 3 * h * f + 2 * h;
    let budget = (size_mib << 20) / 2;
    let layers = (budget.saturating_sub(2 * d.vocab * h) / layer_elems).max(1);
    let t = |name: String, shape: Vec<u64>, layer, norm, attention| Tensor { name, shape, layer, norm, attention };
    let mut out = vec![t("model.embed_tokens.weight".into(), vec![d.vocab, h], None, false, false)];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (n, shape, norm, attention) in [
            ("self_attn.q_proj.weight", vec![h, h], false, true),
            ("self_attn.k_proj.weight", vec![h, h], false, true),
            ("self_attn.v_proj.weight", vec![h, h], false, true),
            ("self_attn.o_proj.weight", vec![h, h], false, true),
            ("mlp.gate_proj.weight", vec![f, h], false, false),
            ("mlp.up_proj.weight", vec![f, h], false, false),
            ("mlp.down_proj.weight", vec![h, f], false, false),
            ("input_layernorm.weight", vec![h], true, false),
            ("post_attention_layernorm.weight", vec![h], true, false),
        ] {
            out.push(t(format!("{p}.{n}"), shape, Some(l), norm, attention));
        }
    }
    out.push(t("model.norm.weight".into(), vec![h], None, true, false));
    out.push(t("lm_head.weight".into(), vec![d.vocab, h], None, false, false));
    (out, layers)
}

/// xorshift64* — fast, deterministic, good enough for weights.
pub struct Rng(StarRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(StarRng::new(seed))
    }
    /// A generator for stream `parts` (e.g. seed, tensor, version, purpose),
    /// independent of every other combination.
    pub fn stream(parts: &[u64]) -> Rng {
        let mut h = 0x6A09_E667_F3BC_C908u64;
        for &p in parts {
            h = splitmix(h ^ p);
        }
        Rng(StarRng::from_state(h | 1))
    }
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Two standard normal samples (Box-Muller).
    pub fn normal2(&mut self) -> (f32, f32) {
        let r = self.next();
        let u1 = ((r >> 40) as f32 + 1.0) / (1u64 << 24) as f32;
        let u2 = ((r & 0xFF_FFFF) as f32) / (1u64 << 24) as f32;
        let m = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
        (m * c, m * s)
    }
    /// One roughly normal sample (mean 0, variance 1; the sum of four
    /// uniforms), for the many small steps of a training run.
    pub fn quick_normal(&mut self) -> f32 {
        let r = self.next();
        let s = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
        (s as f32 / 65536.0 - 2.0) * 3f32.sqrt()
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Standard deviation of a fine-tune's nudge: 10% of a weight's, about 16
/// bf16 steps at 0.02, so nearly every value's low byte changes.
pub const FINE_TUNE_STEP: f32 = 0.002;
/// Standard deviation of one training step between checkpoints: about 4
/// bf16 steps at 0.02; most values change, a few do not.
pub const CHECKPOINT_STEP: f32 = 0.0005;
/// A step so small that bf16 rounding hides it in nearly every value: a
/// late fine-tune at a tiny learning rate (about 0.6% of bytes change, in
/// every tensor).
pub const SMALL_STEP: f32 = 0.000_000_3;
/// Rank and size of a merged low-rank adapter's update.
pub const ADAPTER_RANK: usize = 16;
pub const ADAPTER_STEP: f32 = 0.001;

/// Tensor `index`'s weights as trained weights look: normal with std 0.02,
/// norms near 1 with std 0.05.
pub fn base_values(t: &Tensor, seed: u64, index: u64, out: &mut Vec<f32>) {
    let n = t.elems() as usize;
    let mut rng = Rng::new(seed ^ (index << 20));
    out.clear();
    out.reserve(n);
    while out.len() < n {
        let (a, b) = rng.normal2();
        let (a, b) = if t.norm { (1.0 + 0.05 * a, 1.0 + 0.05 * b) } else { (0.02 * a, 0.02 * b) };
        out.push(a);
        if out.len() < n {
            out.push(b);
        }
    }
}

/// A fine-tune: every value moves by [`FINE_TUNE_STEP`] × N(0, 1).
pub fn fine_tune(v: &mut [f32], seed: u64, index: u64) {
    let mut rng = Rng::new(seed ^ (index << 20) ^ 0xF1E7_0E5E);
    for pair in v.chunks_mut(2) {
        let (da, db) = rng.normal2();
        pair[0] += FINE_TUNE_STEP * da;
        if let Some(b) = pair.get_mut(1) {
            *b += FINE_TUNE_STEP * db;
        }
    }
}

/// One step of a training run: every value moves by `std` × N(0, 1).
pub fn training_step(v: &mut [f32], rng: &mut Rng, std: f32) {
    for x in v {
        *x += std * rng.quick_normal();
    }
}

/// A merged low-rank adapter: `v += B·A` for a `rows × cols` matrix, with
/// B (rows × rank) and A (rank × cols) normal, scaled so that each value
/// of the update has standard deviation `std`.
pub fn low_rank_update(v: &mut [f32], rows: usize, cols: usize, rank: usize, std: f32, rng: &mut Rng) {
    let normals = |n: usize, rng: &mut Rng| -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (a, b) = rng.normal2();
            out.extend([a, b]);
        }
        out.truncate(n);
        out
    };
    let a = normals(rank * cols, rng);
    let b = normals(rows * rank, rng);
    let scale = std / (rank as f32).sqrt();
    for (i, row) in v.chunks_mut(cols).enumerate().take(rows) {
        for r in 0..rank {
            let coef = scale * b[i * rank + r];
            for (x, ar) in row.iter_mut().zip(&a[r * cols..(r + 1) * cols]) {
                *x += coef * ar;
            }
        }
    }
}

/// Round to nearest even, as PyTorch's `.to(torch.bfloat16)` does.
pub fn bf16(x: f32) -> [u8; 2] {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1));
    ((rounded >> 16) as u16).to_le_bytes()
}

pub fn to_bf16(v: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(v.len() * 2);
    for &x in v {
        out.extend_from_slice(&bf16(x));
    }
}

/// A safetensors header for `tensors[order]`, stored in that order: the
/// u64 LE length, then the JSON (keys sorted, `__metadata__` first),
/// padded with spaces to a multiple of 8. Returns the header and each
/// tensor's offset from the start of the file (in `order`'s order).
pub fn safetensors_header(tensors: &[Tensor], order: &[usize], metadata: &serde_json::Map<String, serde_json::Value>) -> (Vec<u8>, Vec<u64>) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::Value::Object(metadata.clone()));
    let mut off = 0u64;
    let mut offsets = Vec::with_capacity(order.len());
    for &i in order {
        let t = &tensors[i];
        header.insert(t.name.clone(), serde_json::json!({ "dtype": "BF16", "shape": t.shape, "data_offsets": [off, off + t.bytes()] }));
        offsets.push(off);
        off += t.bytes();
    }
    let mut json = serde_json::to_vec(&header).expect("a JSON map serialises");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    let start = out.len() as u64;
    (out, offsets.into_iter().map(|o| start + o).collect())
}

/// The `__metadata__` every generated file carries.
pub fn default_metadata() -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("format".into(), "pt".into());
    m
}

/// Bytes at which `a` and `b` differ, position by position (equal lengths).
pub fn differing_bytes(a: &[u8], b: &[u8]) -> u64 {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x != y).count() as u64
}

/// The bytes of `new` between its longest common prefix and its longest
/// common suffix with `old`: what a single contiguous edit replaced.
pub fn edit_span(old: &[u8], new: &[u8]) -> u64 {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let max_suffix = old.len().min(new.len()) - prefix;
    let suffix = old.iter().rev().zip(new.iter().rev()).take(max_suffix).take_while(|(a, b)| a == b).count();
    (new.len() - prefix - suffix) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_span_counts_an_insert_a_replacement_and_nothing() {
        assert_eq!(edit_span(b"abcdef", b"abcXYdef"), 2);
        assert_eq!(edit_span(b"abcdef", b"abXdef"), 1);
        assert_eq!(edit_span(b"abcdef", b"abcdef"), 0);
        assert_eq!(edit_span(b"aaaa", b"aaaaaa"), 2);
        assert_eq!(edit_span(b"", b"abc"), 3);
    }

    #[test]
    fn streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(&[1, 2, 3]).next()).collect();
        assert!(a.iter().all(|&x| x == a[0]));
        assert_ne!(Rng::stream(&[1, 2, 3]).next(), Rng::stream(&[1, 2, 4]).next());
        assert_ne!(Rng::stream(&[2, 2, 3]).next(), Rng::stream(&[3, 2, 3]).next());
    }

    #[test]
    fn quick_normal_has_unit_variance() {
        let mut r = Rng::stream(&[7]);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.quick_normal() as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn a_fine_tune_changes_most_low_bytes_and_few_high_bytes() {
        let (tensors, _) = layout(1, Dims { hidden: 64, ffn: 176, vocab: 256 });
        let t = &tensors[1];
        let mut v = Vec::new();
        base_values(t, 1, 1, &mut v);
        let (mut before, mut after) = (Vec::new(), Vec::new());
        to_bf16(&v, &mut before);
        fine_tune(&mut v, 1, 1);
        to_bf16(&v, &mut after);
        let low = before.iter().step_by(2).zip(after.iter().step_by(2)).filter(|(a, b)| a != b).count() as f64;
        let high = before.iter().skip(1).step_by(2).zip(after.iter().skip(1).step_by(2)).filter(|(a, b)| a != b).count() as f64;
        let n = t.elems() as f64;
        assert!(low / n > 0.9, "low bytes changed: {}", low / n);
        assert!(high / n < 0.25, "high bytes changed: {}", high / n);
    }
}
