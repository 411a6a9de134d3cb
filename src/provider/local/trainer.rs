//! The local provider's trainer: a small classifier over the distinct assistant replies, fed with
//! hashed word and character n-grams of the conversation (one tanh hidden layer, lazy Adam). It
//! trains on the CPU in a fraction of a second and is bit-for-bit deterministic for a given seed.

use std::fmt;
use std::ops::{ControlFlow, Range};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// The learning rate that a `learning_rate_multiplier` of 1.0 stands for (an Adam step size).
pub const BASE_LEARNING_RATE: f64 = 0.03;
/// Features are hashed into `2^HASH_BITS` buckets.
const HASH_BITS: u8 = 18;
/// System messages are usually the same on every line: they are down-weighted (and only their
/// word unigrams are used, which also keeps training fast).
const SYSTEM_WEIGHT: f32 = 0.3;
/// The size of the hidden layer.
const HIDDEN: usize = 32;
/// The first encoding (`to_bytes`), the compact one (`encode`), and the compact one whose rows
/// have a precision each (`encode` with `Embedding::Rows`); all are read.
const MAGIC: &[u8; 6] = b"FTSWM1";
const MAGIC_COMPACT: &[u8; 6] = b"FTSWM2";
const MAGIC_ROWS: &[u8; 6] = b"FTSWM3";

/// Sorted (feature bucket or row, value) pairs of one conversation.
type Features = Vec<(u32, f32)>;

/// One training or validation example: the (role, content) messages before the reply, and the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub context: Vec<(String, String)>,
    pub reply: String,
}

/// Hyperparameters of one run; `learning_rate` is absolute (base rate times multiplier).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub n_epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub seed: u64,
    /// How often an epoch is validated: a `Validation` event after the first step that completes
    /// each `1/validations_per_epoch` of the epoch (the point at the epoch's end is its `Epoch`
    /// event). 0 or 1: only at epoch ends. It never changes what is trained.
    pub validations_per_epoch: u32,
}

/// Progress reports. Losses are mean cross-entropies; a non-finite loss is reported as infinity.
///
/// Validation examples whose reply is not a training class count as wrong for accuracy and are
/// skipped for loss; `valid_loss` is `None` when no validation example has a known reply, and both
/// validation fields are `None` without a validation set. The epoch's training metrics average
/// the minibatches of the epoch, each measured just before its own update.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    Step {
        step: u64,
        total_steps: u64,
        epoch: u32,
        train_loss: f64,
        train_accuracy: f64,
    },
    /// A full validation pass within an epoch (see `TrainConfig::validations_per_epoch`), right
    /// after the `Step` event of `step`; computed as at the epoch's end. Never sent without a
    /// validation set.
    Validation {
        step: u64,
        epoch: u32,
        valid_loss: Option<f64>,
        valid_accuracy: Option<f64>,
    },
    Epoch {
        epoch: u32,
        step: u64,
        train_loss: f64,
        train_accuracy: f64,
        valid_loss: Option<f64>,
        valid_accuracy: Option<f64>,
        model: &'a ReplyModel,
    },
}

/// The outcome of `train`; `stopped_early` is true when the callback's `Break` cut training short.
/// `steps` counts the updates made (a `Break` on a `Step` event comes after that step's update).
#[derive(Debug)]
pub struct TrainSummary {
    pub steps: u64,
    /// The number of steps (minibatches) in a whole epoch.
    pub steps_per_epoch: u64,
    pub epochs_completed: u32,
    pub stopped_early: bool,
    pub model: ReplyModel,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrainError {
    NoExamples,
    NoReplies,
    InvalidConfig(String),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::NoExamples => write!(f, "no training examples"),
            TrainError::NoReplies => write!(f, "no training example has a non-empty reply"),
            TrainError::InvalidConfig(why) => write!(f, "invalid training configuration: {why}"),
        }
    }
}

impl std::error::Error for TrainError {}

/// A checkpoint could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDecodeError(pub String);

impl fmt::Display for ModelDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid model checkpoint: {}", self.0)
    }
}

impl std::error::Error for ModelDecodeError {}

/// FNV-1a 64 over `bytes`, continuing from the hash state `h`.
fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Hashes each message's word unigrams, word bigrams and character 3-grams of its words (with `<`
/// and `>` marking word boundaries), prefixed by the role; system messages only contribute their
/// down-weighted unigrams. Every occurrence has the value `role weight / norm`, so the vector has
/// unit norm before duplicates are summed.
fn featurize(context: &[(String, String)], bits: u8, system_weight: f32) -> Features {
    let bucket = |h: u64| ((h ^ (h >> 32)) & ((1 << bits) - 1)) as u32;
    let (mut raw, mut norm2) = (Vec::new(), 0f32);
    for (role, content) in context {
        let role = role.trim().to_lowercase();
        let (w, full) = if role == "system" { (system_weight, false) } else { (1.0, true) };
        let base = fnv(fnv(0xcbf2_9ce4_8422_2325, role.as_bytes()), b":");
        let text = content.to_lowercase();
        let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric()).collect();
        let words: Vec<&str> = words.into_iter().filter(|t| !t.is_empty()).collect();
        let start = raw.len();
        for (i, t) in words.iter().enumerate() {
            raw.push((bucket(fnv(fnv(base, b"w:"), t.as_bytes())), w));
            if !full {
                continue;
            }
            if i > 0 {
                let h = fnv(fnv(fnv(base, b"b:"), words[i - 1].as_bytes()), b" ");
                raw.push((bucket(fnv(h, t.as_bytes())), w));
            }
            let chars: Vec<char> = format!("<{t}>").chars().collect();
            for tri in chars.windows(3) {
                let utf8 = |h, c: &char| fnv(h, c.encode_utf8(&mut [0; 4]).as_bytes());
                raw.push((bucket(tri.iter().fold(fnv(base, b"c:"), utf8)), w));
            }
        }
        norm2 += (raw.len() - start) as f32 * w * w;
    }
    raw.sort_unstable_by_key(|&(b, _)| b);
    let scale = if norm2 > 0.0 { norm2.sqrt().recip() } else { 0.0 };
    let mut out: Features = Vec::with_capacity(raw.len());
    for (b, v) in raw {
        match out.last_mut() {
            Some(last) if last.0 == b => last.1 += v * scale,
            _ => out.push((b, v * scale)),
        }
    }
    out
}

/// Softmax probabilities of the logits and the cross-entropy of class `y` (computed with
/// log-sum-exp; infinity when not finite). NaN logits count as minus infinity, so the
/// probabilities are always finite and sum to one.
fn softmax(z: &[f32], y: Option<usize>) -> (Vec<f64>, Option<f64>) {
    let z: Vec<f64> = z.iter().map(|&v| f64::from(v).max(f64::NEG_INFINITY)).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = match m {
        m if m.is_finite() => z.iter().map(|&v| (v - m).exp()).collect(),
        f64::INFINITY => z.iter().map(|&v| f64::from(u8::from(v == m))).collect(),
        _ => vec![1.0; z.len()],
    };
    let s: f64 = e.iter().sum();
    let p: Vec<f64> = e.into_iter().map(|v| v / s).collect();
    let loss = y.map(|y| match m + s.ln() - z[y] {
        l if m.is_finite() && l.is_finite() => l.max(0.0),
        _ if p[y] > 0.0 => -p[y].ln(),
        _ => f64::INFINITY,
    });
    (p, loss)
}

fn argmax(p: &[f64]) -> usize {
    (0..p.len()).fold(0, |best, c| if p[c] > p[best] { c } else { best })
}

fn finite_or_inf(v: f64) -> f64 {
    if v.is_finite() { v } else { f64::INFINITY }
}

/// A deterministic initial embedding value, uniform in [-1, 1], for (seed, bucket, dim).
fn init_value(seed: u64, bucket: u32, dim: usize) -> f32 {
    let mut x = seed ^ (u64::from(bucket) << 16 | dim as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2 {
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
    }
    (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// The trained classifier: the hashed features are summed into a small embedding (only rows of
/// features seen in training are stored), passed through tanh, and mapped to class logits.
#[derive(Clone, PartialEq)]
pub struct ReplyModel {
    classes: Vec<String>,
    hash_bits: u8,
    system_weight: f32,
    hidden: usize,
    /// Sorted, distinct feature buckets; row `i` of `embed` belongs to `rows[i]`.
    rows: Vec<u32>,
    embed: Vec<f32>,
    hidden_bias: Vec<f32>,
    /// Output weights, one row of `hidden` values per class.
    out: Vec<f32>,
    bias: Vec<f32>,
}

impl fmt::Debug for ReplyModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (classes, rows) = (self.classes.len(), self.rows.len());
        write!(f, "ReplyModel {{ classes: {classes}, rows: {rows}, hidden: {} }}", self.hidden)
    }
}

impl ReplyModel {
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    fn class_of(&self, reply: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == reply.trim())
    }

    /// The features of a context as (row, value), without features that have no row.
    fn features(&self, context: &[(String, String)]) -> Features {
        self.resolve(&featurize(context, self.hash_bits, self.system_weight))
    }

    /// Maps (bucket, value) features to (row, value), dropping buckets that have no row.
    fn resolve(&self, feats: &[(u32, f32)]) -> Features {
        let row = |b: &u32| self.rows.binary_search(b).ok().map(|r| r as u32);
        feats.iter().filter_map(|(b, v)| Some((row(b)?, *v))).collect()
    }

    /// Returns the hidden activations and the logits for (row, value) features.
    fn forward(&self, x: &[(u32, f32)]) -> (Vec<f32>, Vec<f32>) {
        let d = self.hidden;
        let mut h = self.hidden_bias.clone();
        for &(r, v) in x {
            let row = &self.embed[r as usize * d..(r as usize + 1) * d];
            h.iter_mut().zip(row).for_each(|(hj, e)| *hj += v * e);
        }
        h.iter_mut().for_each(|hj| *hj = hj.tanh());
        let dot = |w: &[f32]| w.iter().zip(&h).map(|(a, b)| a * b).sum::<f32>();
        let z = self.bias.iter().zip(self.out.chunks_exact(d)).map(|(b, w)| b + dot(w)).collect();
        (h, z)
    }

    /// All classes with their probabilities, most probable first (ties by class index).
    pub fn predict(&self, context: &[(String, String)]) -> Vec<(usize, f64)> {
        let (p, _) = softmax(&self.forward(&self.features(context)).1, None);
        let mut out: Vec<(usize, f64)> = p.into_iter().enumerate().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// The most probable reply and its probability.
    pub fn top(&self, context: &[(String, String)]) -> (String, f64) {
        let (c, p) = self.predict(context)[0];
        (self.classes[c].clone(), p)
    }

    /// The cross-entropy loss (`None` if the reply is not a known class) and whether the top-1
    /// prediction equals the trimmed reply; an unknown reply always counts as wrong.
    pub fn loss_and_correct(&self, ex: &Example) -> (Option<f64>, bool) {
        self.score(&self.features(&ex.context), self.class_of(&ex.reply))
    }

    fn score(&self, x: &[(u32, f32)], y: Option<usize>) -> (Option<f64>, bool) {
        let (p, loss) = softmax(&self.forward(x).1, y);
        (loss, y == Some(argmax(&p)))
    }

    /// Encodes the model exactly, as little-endian binary: magic, the head (hash bits (u8), system
    /// weight (f32), hidden size (u32), classes (u32 count, then u32 length + UTF-8 each), class
    /// bias, output weights, hidden bias (f32 each)), u32 row count, rows (u32 bucket + `hidden`
    /// f32 each).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        self.put_head(&mut out);
        out.extend((self.rows.len() as u32).to_le_bytes());
        for (r, e) in self.rows.iter().zip(self.embed.chunks_exact(self.hidden)) {
            out.extend(r.to_le_bytes());
            put_f32s(&mut out, e);
        }
        out
    }

    /// Encodes the model compactly: magic, then deflated: the head as in `to_bytes`, u32 row
    /// count, the embedding's encoding (u8) and seed (u64), the rows as LEB128 gaps, and the
    /// embedding value by value in byte planes (all first bytes, then all second bytes, ...).
    /// `Embedding::Exact` keeps every value (about 80 % of `to_bytes`); `HalfDeltas` stores
    /// IEEE half-precision differences from the initial values `seed` gives each row
    /// (`init_value`, what `train` started new rows from), so values that moved little keep most
    /// of their precision (about 25 % of `to_bytes`): each value decodes within a relative 2^-11
    /// of its difference. A difference that half precision cannot hold (overflow, or a value that
    /// is not finite) makes the whole embedding exact. `Rows` (magic `FTSWM3`; the others are
    /// `FTSWM2`) gives each row a precision: half-precision differences, or the differences as
    /// integers in `-l..=l` times a half-precision scale of the row (rounded up so that no value
    /// is clamped), one byte a value, each decoding within half a step of the scale; a row that
    /// its precision cannot hold makes the embedding `HalfDeltas` (or exact). The layout after
    /// the gaps: the rows' levels (u8 each, 0 for half precision), the scales of the quantised
    /// rows (low bytes, then high bytes), their values (i8), then the half-precision rows' values
    /// (low bytes, then high bytes). The other tensors are always exact.
    pub fn encode(&self, embedding: Embedding) -> Vec<u8> {
        let (deltas, seed) = match embedding {
            Embedding::Rows { seed, levels } => match self.quantise(seed, &levels) {
                Some(q) => return self.pack(MAGIC_ROWS, EMBED_ROWS, seed, |raw| q.put(raw)),
                None => (self.half_deltas(seed), seed),
            },
            Embedding::HalfDeltas { seed } => (self.half_deltas(seed), seed),
            Embedding::Exact => (None, 0),
        };
        let kind = if deltas.is_some() { EMBED_F16_DELTAS } else { EMBED_F32 };
        self.pack(MAGIC_COMPACT, kind, seed, |raw| match deltas {
            Some(h) => put_halves(raw, &h),
            None => (0..4).for_each(|k| raw.extend(self.embed.iter().map(|v| v.to_le_bytes()[k]))),
        })
    }

    /// The compact encodings' frame: magic, then deflated: head, row count, embedding kind,
    /// seed, row gaps, and the embedding's bytes (`values`).
    fn pack(&self, magic: &[u8; 6], kind: u8, seed: u64, values: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.embed.len() * 2 + self.rows.len() * 4 + 64);
        self.put_head(&mut raw);
        raw.extend((self.rows.len() as u32).to_le_bytes());
        raw.push(kind);
        raw.extend(seed.to_le_bytes());
        let mut last = None;
        for &r in &self.rows {
            put_varint(&mut raw, last.map_or(r, |l| r - l));
            last = Some(r);
        }
        values(&mut raw);
        let mut out = magic.to_vec();
        out.extend(miniz_oxide::deflate::compress_to_vec(&raw, DEFLATE_LEVEL));
        out
    }

    /// The embedding as half-precision differences from the initial values of `seed`; `None`
    /// when one cannot be held so (see `encode`).
    fn half_deltas(&self, seed: u64) -> Option<Vec<u16>> {
        let values = (self.rows.iter().zip(self.embed.chunks_exact(self.hidden)))
            .flat_map(|(&r, e)| e.iter().enumerate().map(move |(j, &w)| (init_value(seed, r, j), w)));
        values.map(|(init, w)| half_delta(init, w)).collect()
    }

    /// The embedding at the precision `levels` gives each row (see `Embedding::Rows`); `None`
    /// when a row cannot be held so, or `levels` does not give one level a row up to 127.
    fn quantise(&self, seed: u64, levels: &[u8]) -> Option<RowValues> {
        if levels.len() != self.rows.len() || levels.iter().any(|&l| l > MAX_LEVELS) {
            return None;
        }
        let d = self.hidden;
        let mut q = RowValues { levels: levels.to_vec(), scales: Vec::new(), values: Vec::new(), halves: Vec::new() };
        for ((&r, e), &level) in self.rows.iter().zip(self.embed.chunks_exact(d)).zip(levels) {
            let inits = (0..d).map(|j| init_value(seed, r, j));
            if level == HALF_ROW {
                for (init, &w) in inits.zip(e) {
                    q.halves.push(half_delta(init, w)?);
                }
                continue;
            }
            let l = f32::from(level);
            let diffs: Vec<f32> = inits.zip(e).map(|(init, &w)| w - init).collect();
            let max = diffs.iter().try_fold(0f32, |m, &x| x.is_finite().then(|| m.max(x.abs())))?;
            // The nearest half-precision scale, raised to the next one if it is too small to
            // reach `max` in `level` steps, so that no value needs clamping.
            let mut s = f16_bits(max / l);
            if f32_of_f16(s) * l < max {
                s += 1;
            }
            if s & 0x7c00 == 0x7c00 {
                return None;
            }
            let scale = f32_of_f16(s);
            q.scales.push(s);
            q.values
                .extend(diffs.iter().map(|&x| if scale > 0.0 { (x / scale).round().clamp(-l, l) as i8 } else { 0 }));
        }
        Some(q)
    }

    /// This model as `encode` with `Embedding::Rows { seed, levels }` stores it: what decoding
    /// that encoding gives; `None` when it would not be stored so.
    fn quantised(&self, seed: u64, levels: &[u8]) -> Option<ReplyModel> {
        let q = self.quantise(seed, levels)?;
        Some(ReplyModel { embed: q.embed(&self.rows, self.hidden, seed), ..self.clone() })
    }

    /// `encode` with the embedding `embedding_keeping_replies` chooses.
    pub fn encode_keeping_replies(&self, seed: u64, validation: &[Example], training: &[Example]) -> Vec<u8> {
        self.encode(self.embedding_keeping_replies(seed, validation, training))
    }

    /// A compact embedding that gives the same top reply as this model for every validation
    /// example's context, so that no score on them changes, as `Embedding::Rows`: each row takes
    /// the coarsest level of `ROW_LEVELS` (else half precision) that its sensitivity times a
    /// factor asks for, and the factor is the smallest of `2^k` that keeps the replies. A row's
    /// sensitivity is the largest, over the examples whose context uses it, of its feature's
    /// value times its largest difference from its initial value over the example's logit
    /// margin (the top class's logit over the next one's). The rows that validation contexts use
    /// are chosen by their replies; then the other rows, which no validation reply depends on,
    /// by the training examples' replies (as the model with those rows exact gives them), else
    /// in half precision. `Embedding::Exact` when even half precision would change a validation
    /// reply (or cannot hold a value).
    pub fn embedding_keeping_replies(&self, seed: u64, validation: &[Example], training: &[Example]) -> Embedding {
        let d = self.hidden;
        let contexts =
            |examples: &[Example]| -> Vec<Features> { examples.iter().map(|e| self.features(&e.context)).collect() };
        let (vx, tx) = (contexts(validation), contexts(training));
        let top = |m: &ReplyModel, x: &Features| argmax(&softmax(&m.forward(x).1, None).0);
        let tops = |m: &ReplyModel, xs: &[Features]| -> Vec<usize> { xs.iter().map(|x| top(m, x)).collect() };
        let keeps = |m: &ReplyModel, xs: &[Features], t: &[usize]| xs.iter().zip(t).all(|(x, &t)| top(m, x) == t);
        // Each row's largest difference from its initial value.
        let spans: Vec<f32> = (self.rows.iter().zip(self.embed.chunks_exact(d)))
            .map(|(&r, e)| e.iter().enumerate().map(|(j, &w)| (w - init_value(seed, r, j)).abs()).fold(0f32, f32::max))
            .collect();
        let mut used = vec![false; self.rows.len()];
        vx.iter().flatten().for_each(|&(r, _)| used[r as usize] = true);
        // The sensitivities of the rows in `part` to the replies of `m` on `xs`.
        let sensitivities = |m: &ReplyModel, xs: &[Features], part: bool| -> Vec<f32> {
            let mut sens = vec![0f32; self.rows.len()];
            for x in xs {
                let (z, t) = (m.forward(x).1, top(m, x));
                let next = z.iter().enumerate().filter(|&(c, _)| c != t).map(|(_, &v)| v).fold(f32::MIN, f32::max);
                let margin = z[t] - next;
                for &(r, v) in x.iter().filter(|(r, _)| used[*r as usize] == part) {
                    let s = v.abs() * spans[r as usize] / margin;
                    let s = if s.is_nan() || margin <= 0.0 { f32::INFINITY } else { s };
                    sens[r as usize] = sens[r as usize].max(s);
                }
            }
            sens
        };
        let level =
            |s: f32, factor: f32| ROW_LEVELS.iter().copied().find(|&l| l == HALF_ROW || f32::from(l) >= s * factor);
        // The levels for the rows in `part` at each factor, coarsest first, then half precision;
        // the other rows keep theirs.
        let choices = |sens: &[f32], base: &[u8], part: bool| -> Vec<Vec<u8>> {
            let mut out: Vec<Vec<u8>> = Vec::new();
            let at = |f: Option<f32>| -> Vec<u8> {
                let pick = |(i, &b): (usize, &u8)| match used[i] == part {
                    true => f.map_or(HALF_ROW, |f| level(sens[i], f).unwrap_or(HALF_ROW)),
                    false => b,
                };
                base.iter().enumerate().map(pick).collect()
            };
            for f in (-12..=40).map(|k| Some(2f32.powi(k))).chain([None]) {
                let l = at(f);
                if out.last() != Some(&l) {
                    out.push(l);
                }
            }
            out
        };
        let vtops = tops(self, &vx);
        let vsens = sensitivities(self, &vx, true);
        // The other rows do not reach the validation replies: any precision does for them here.
        let all_half = vec![HALF_ROW; self.rows.len()];
        let Some((levels, model)) = choices(&vsens, &all_half, true)
            .into_iter()
            .find_map(|l| self.quantised(seed, &l).filter(|m| keeps(m, &vx, &vtops)).map(|m| (l, m)))
        else {
            return Embedding::Exact;
        };
        let mut partial = model;
        for (i, _) in used.iter().enumerate().filter(|(_, b)| !**b) {
            partial.embed[i * d..(i + 1) * d].copy_from_slice(&self.embed[i * d..(i + 1) * d]);
        }
        let ttops = tops(&partial, &tx);
        let tsens = sensitivities(&partial, &tx, false);
        let levels = choices(&tsens, &levels, false)
            .into_iter()
            .find(|l| self.quantised(seed, l).is_some_and(|m| keeps(&m, &tx, &ttops)))
            .unwrap_or(levels);
        Embedding::Rows { seed, levels }
    }

    /// The head of both encodings: hash bits, system weight, sizes, classes and the dense tensors.
    fn put_head(&self, out: &mut Vec<u8>) {
        out.push(self.hash_bits);
        put_f32s(out, &[self.system_weight]);
        out.extend((self.hidden as u32).to_le_bytes());
        out.extend((self.classes.len() as u32).to_le_bytes());
        for c in &self.classes {
            out.extend((c.len() as u32).to_le_bytes());
            out.extend(c.as_bytes());
        }
        put_f32s(out, &self.bias);
        put_f32s(out, &self.out);
        put_f32s(out, &self.hidden_bias);
    }

    /// Decodes `to_bytes` or `encode` output (told apart by the magic), checking every
    /// length and invariant; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<ReplyModel, ModelDecodeError> {
        let compact = [(MAGIC_COMPACT, false), (MAGIC_ROWS, true)];
        if let Some((packed, rows)) = compact.iter().find_map(|(m, q)| Some((bytes.strip_prefix(*m)?, *q))) {
            // Deflate expands at most about 1032 times.
            let limit = packed.len().saturating_mul(1100).max(1 << 16);
            let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(packed, limit)
                .map_err(|_| ModelDecodeError("damaged compression".into()))?;
            return Self::decode_compact(&raw, rows);
        }
        let mut r = Reader(bytes.strip_prefix(MAGIC).ok_or_else(|| decode_error("bad magic"))?);
        let mut m = Self::read_head(&mut r, bytes.len())?;
        let n_rows = r.u32()? as usize;
        let stride = 4 * (m.hidden + 1);
        let body = r.take(n_rows.checked_mul(stride).ok_or_else(|| decode_error("bad row count"))?)?;
        r.end()?;
        m.embed.reserve(n_rows * m.hidden);
        for chunk in body.chunks_exact(stride) {
            m.push_row(u32_of(chunk))?;
            m.embed.extend(chunk[4..].chunks_exact(4).map(|c| f32::from_bits(u32_of(c))));
        }
        Ok(m)
    }

    /// Decodes the deflated part of `FTSWM2` (`rows` false) or `FTSWM3`.
    fn decode_compact(raw: &[u8], rows: bool) -> Result<ReplyModel, ModelDecodeError> {
        let mut r = Reader(raw);
        let mut m = Self::read_head(&mut r, raw.len())?;
        let n_rows = r.u32()? as usize;
        let (kind, seed) = (r.u8()?, r.u64()?);
        // The fewest bytes a value takes, and a row besides its gap.
        let (width, per_row) = match kind {
            EMBED_ROWS if rows => (1, 1),
            EMBED_F16_DELTAS => (2, 0),
            EMBED_F32 => (4, 0),
            _ => return Err(decode_error("unknown embedding encoding")),
        };
        // Each row takes at least one byte of gap and `width` bytes per value.
        if n_rows > raw.len() / (1 + per_row + width * m.hidden) {
            return Err(decode_error("bad row count"));
        }
        let mut last = None;
        for _ in 0..n_rows {
            let gap = r.varint()?;
            let row = match last {
                None => Some(gap),
                Some(l) if gap > 0 => u32::checked_add(l, gap),
                Some(_) => None,
            };
            m.push_row(row.ok_or_else(|| decode_error("rows out of order or out of range"))?)?;
            last = row;
        }
        let n = n_rows * m.hidden;
        if kind == EMBED_ROWS {
            m.embed = RowValues::read(&mut r, n_rows, m.hidden)?.embed(&m.rows, m.hidden, seed);
            r.end()?;
            return Ok(m);
        }
        let planes: Vec<&[u8]> = (0..width).map(|_| r.take(n)).collect::<Result<_, _>>()?;
        r.end()?;
        m.embed = match kind {
            EMBED_F16_DELTAS => (m.rows.iter().flat_map(|&row| (0..m.hidden).map(move |j| init_value(seed, row, j))))
                .enumerate()
                .map(|(i, init)| init + f32_of_f16(u16::from_le_bytes([planes[0][i], planes[1][i]])))
                .collect(),
            _ => (0..n).map(|i| f32::from_le_bytes([planes[0][i], planes[1][i], planes[2][i], planes[3][i]])).collect(),
        };
        Ok(m)
    }

    /// Reads the head (see `put_head`), with no rows yet; `len` bounds the class count.
    fn read_head(r: &mut Reader<'_>, len: usize) -> Result<ReplyModel, ModelDecodeError> {
        let hash_bits = r.u8()?;
        let system_weight = r.f32s(1)?[0];
        let hidden = r.u32()? as usize;
        let n_classes = r.u32()? as usize;
        if !(1..=30).contains(&hash_bits) || !(1..=4096).contains(&hidden) {
            return Err(decode_error("bad sizes"));
        }
        if n_classes == 0 || n_classes > len / 8 {
            return Err(decode_error("bad class count"));
        }
        let mut classes: Vec<String> = Vec::with_capacity(n_classes);
        for _ in 0..n_classes {
            let len = r.u32()? as usize;
            let s = std::str::from_utf8(r.take(len)?).map_err(|_| decode_error("class is not UTF-8"))?;
            if classes.iter().any(|c| c == s) {
                return Err(decode_error("duplicate class"));
            }
            classes.push(s.to_string());
        }
        let bias = r.f32s(n_classes)?;
        let out = r.f32s(n_classes * hidden)?;
        let hidden_bias = r.f32s(hidden)?;
        let (rows, embed) = (Vec::new(), Vec::new());
        Ok(ReplyModel { classes, hash_bits, system_weight, hidden, rows, embed, hidden_bias, out, bias })
    }

    /// Appends a row's bucket, which must be in range and above the last one.
    fn push_row(&mut self, r: u32) -> Result<(), ModelDecodeError> {
        if r >> self.hash_bits != 0 || self.rows.last().is_some_and(|&last| last >= r) {
            return Err(decode_error("rows out of order or out of range"));
        }
        self.rows.push(r);
        Ok(())
    }
}

/// How `ReplyModel::encode` stores the embedding, the bulk of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Embedding {
    /// Every value as it is (f32).
    Exact,
    /// Half-precision differences from the initial values `seed` gives each row.
    HalfDeltas { seed: u64 },
    /// Those differences at a precision per row (`levels`, one a row): 0 (`HALF_ROW`) for half
    /// precision, `l` (up to 127) for integers in `-l..=l` times a scale of the row.
    Rows { seed: u64, levels: Vec<u8> },
}

/// A row level of `Embedding::Rows`: the row's differences in half precision.
pub const HALF_ROW: u8 = 0;
/// The most levels a quantised row has on each side of 0.
const MAX_LEVELS: u8 = 127;
/// The row levels `ReplyModel::embedding_keeping_replies` tries, coarsest first.
const ROW_LEVELS: [u8; 8] = [1, 3, 7, 15, 31, 63, 127, HALF_ROW];

/// The compact encoding's embedding: f32 values, f16 differences from the seeded initial values,
/// or those differences at a precision per row (`FTSWM3` only).
const EMBED_F32: u8 = 0;
const EMBED_F16_DELTAS: u8 = 1;
const EMBED_ROWS: u8 = 2;

/// An embedding at a precision per row (see `Embedding::Rows`): the levels, the quantised rows'
/// scales (half precision) and values, and the other rows' half-precision differences.
struct RowValues {
    levels: Vec<u8>,
    scales: Vec<u16>,
    values: Vec<i8>,
    halves: Vec<u16>,
}

impl RowValues {
    /// Appends the layout `ReplyModel::encode` describes.
    fn put(&self, raw: &mut Vec<u8>) {
        raw.extend(&self.levels);
        put_halves(raw, &self.scales);
        raw.extend(self.values.iter().map(|&v| v as u8));
        put_halves(raw, &self.halves);
    }

    /// Reads what `put` wrote for `n_rows` rows of `hidden` values, checking levels, scales and
    /// values.
    fn read(r: &mut Reader<'_>, n_rows: usize, hidden: usize) -> Result<RowValues, ModelDecodeError> {
        let levels = r.take(n_rows)?.to_vec();
        if levels.iter().any(|&l| l > MAX_LEVELS) {
            return Err(decode_error("bad quantisation levels"));
        }
        let n_q = levels.iter().filter(|&&l| l != HALF_ROW).count();
        let halves = |r: &mut Reader<'_>, n: usize| -> Result<Vec<u16>, ModelDecodeError> {
            let (lo, hi) = (r.take(n)?, r.take(n)?);
            Ok(lo.iter().zip(hi).map(|(&a, &b)| u16::from_le_bytes([a, b])).collect())
        };
        let scales = halves(r, n_q)?;
        if scales.iter().any(|s| s & 0x7c00 == 0x7c00) {
            return Err(decode_error("quantisation scale not finite"));
        }
        let values: Vec<i8> = r.take(n_q * hidden)?.iter().map(|&b| b as i8).collect();
        let quantised = levels.iter().filter(|&&l| l != HALF_ROW);
        if quantised.zip(values.chunks_exact(hidden)).any(|(&l, q)| q.iter().any(|v| v.unsigned_abs() > l)) {
            return Err(decode_error("quantised value out of range"));
        }
        let halves = halves(r, (n_rows - n_q) * hidden)?;
        Ok(RowValues { levels, scales, values, halves })
    }

    /// The embedding: each row's initial values of `seed` plus its differences.
    fn embed(&self, rows: &[u32], hidden: usize, seed: u64) -> Vec<f32> {
        let (mut scales, mut values, mut halves) =
            (self.scales.iter(), self.values.chunks_exact(hidden), self.halves.chunks_exact(hidden));
        let mut out = Vec::with_capacity(rows.len() * hidden);
        for (&r, &level) in rows.iter().zip(&self.levels) {
            let inits = (0..hidden).map(|j| init_value(seed, r, j));
            if level == HALF_ROW {
                let h = halves.next().unwrap_or_default();
                out.extend(inits.zip(h).map(|(init, &h)| init + f32_of_f16(h)));
            } else {
                let (scale, q) =
                    (f32_of_f16(scales.next().copied().unwrap_or_default()), values.next().unwrap_or_default());
                out.extend(inits.zip(q).map(|(init, &v)| init + f32::from(v) * scale));
            }
        }
        out
    }
}

/// The half-precision difference of `w` from `init`, if it holds one (not an overflow, and `w`
/// finite).
fn half_delta(init: f32, w: f32) -> Option<u16> {
    let h = f16_bits(w - init);
    (w.is_finite() && h & 0x7c00 != 0x7c00).then_some(h)
}

/// Appends half-precision values as two byte planes: the low bytes, then the high bytes.
fn put_halves(raw: &mut Vec<u8>, h: &[u16]) {
    raw.extend(h.iter().map(|v| v.to_le_bytes()[0]));
    raw.extend(h.iter().map(|v| v.to_le_bytes()[1]));
}

/// Deflate's level for the compact encoding (1 fastest, 9 smallest).
const DEFLATE_LEVEL: u8 = 6;

fn decode_error(what: &str) -> ModelDecodeError {
    ModelDecodeError(what.to_string())
}

fn u32_of(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    v.iter().for_each(|x| out.extend(x.to_le_bytes()));
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over encoded bytes whose reads fail on truncation.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelDecodeError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or_else(|| decode_error("truncated"))?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ModelDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ModelDecodeError> {
        Ok(u32_of(self.take(4)?))
    }

    fn u64(&mut self) -> Result<u64, ModelDecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, ModelDecodeError> {
        let b = self.take(n.checked_mul(4).ok_or_else(|| decode_error("bad size"))?)?;
        Ok(b.chunks_exact(4).map(|c| f32::from_bits(u32_of(c))).collect())
    }

    /// A LEB128 u32.
    fn varint(&mut self) -> Result<u32, ModelDecodeError> {
        let mut v = 0u32;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            let bits = u32::from(b & 0x7f);
            if shift == 28 && bits > 0x0f {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(decode_error("bad varint"))
    }

    fn end(&self) -> Result<(), ModelDecodeError> {
        if self.0.is_empty() { Ok(()) } else { Err(decode_error("trailing bytes")) }
    }
}

/// The IEEE half-precision bits nearest to `x` (ties to even); overflow gives infinity.
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    // The significand with its implicit bit, and how many of its low bits half precision drops.
    let (m, shift) = if e > 0 { (man, 13) } else { (man | 0x80_0000, (14 - e) as u32) };
    if shift > 24 {
        return sign;
    }
    let (kept, rest, half) = (m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1));
    let rounded = kept + u32::from(rest > half || (rest == half && kept & 1 == 1));
    // A carry out of the significand moves to the next exponent (or to infinity), as it should.
    sign | (if e > 0 { ((e as u32) << 10) + rounded } else { rounded }) as u16
}

/// The value of IEEE half-precision bits.
fn f32_of_f16(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let (exp, man) = (u32::from(h >> 10) & 0x1f, u32::from(h & 0x3ff));
    match exp {
        0 => {
            let v = man as f32 * f32::from_bits(0x3380_0000); // 2^-24
            if sign != 0 { -v } else { v }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | man << 13),
        _ => f32::from_bits(sign | (exp + 112) << 23 | man << 13),
    }
}

/// Adam state of one parameter tensor: the gradient being accumulated and the two moments.
struct Adam {
    g: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    fn new(n: usize) -> Self {
        Adam { g: vec![0.0; n], m: vec![0.0; n], v: vec![0.0; n] }
    }

    /// Applies one Adam step (beta1 0.9, beta2 0.999) to `w[range]` and clears its gradient;
    /// `c1` and `c2` are the bias corrections of this step.
    fn update(&mut self, w: &mut [f32], range: Range<usize>, lr: f32, (c1, c2): (f32, f32)) {
        for i in range {
            let g = std::mem::take(&mut self.g[i]);
            self.m[i] = 0.9 * self.m[i] + 0.1 * g;
            self.v[i] = 0.999 * self.v[i] + 0.001 * g * g;
            w[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8);
        }
    }
}

/// Trains a model, or continues `init` (appending the classes that are new in `train`).
///
/// Training examples with an empty reply are ignored. The optimiser is Adam on the batch-averaged
/// gradient, lazy for embedding rows (a row's moments only change on steps that use it), and its
/// state starts afresh on every call. New embedding rows are initialised from `cfg.seed`, and the
/// example order is shuffled every epoch with a ChaCha8 generator seeded from it, so equal inputs
/// give bit-identical models, whatever `cfg.validations_per_epoch` (validation only reads the
/// model). When the callback returns `Break`, training stops right after that event (a `Step`,
/// `Validation` or `Epoch`); `epochs_completed` counts the epochs whose `Epoch` event was sent, and
/// `stopped_early` is false only if the break came with the last one.
pub fn train(
    train: &[Example],
    valid: &[Example],
    cfg: &TrainConfig,
    init: Option<&ReplyModel>,
    on_event: &mut dyn FnMut(TrainEvent<'_>) -> ControlFlow<()>,
) -> Result<TrainSummary, TrainError> {
    let usable = usable_examples(train, cfg)?;
    let (mut model, feats) = extended_model(init, &usable, cfg.seed);
    let data: Vec<(Features, Option<usize>)> =
        (feats.iter().zip(&usable)).map(|(f, e)| (model.resolve(f), model.class_of(&e.reply))).collect();
    let vdata: Vec<(Features, Option<usize>)> =
        valid.iter().map(|e| (model.features(&e.context), model.class_of(&e.reply))).collect();

    let n = data.len();
    let bs = (cfg.batch_size as usize).min(n);
    let per_epoch = n.div_ceil(bs) as u64;
    let total_steps = u64::from(cfg.n_epochs) * per_epoch;
    // Step `b` of an epoch (from 1) is validated when it completes another `1/v` of the epoch.
    let v = u128::from(cfg.validations_per_epoch);
    let validates = |b: u64| {
        let (b, per) = (u128::from(b), u128::from(per_epoch));
        !vdata.is_empty() && b < per && b * v / per != (b - 1) * v / per
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut optimiser = Optimiser::new(&model);
    let mut step = 0u64;
    let summary = |steps, epochs_completed, stopped_early, model| TrainSummary {
        steps,
        steps_per_epoch: per_epoch,
        epochs_completed,
        stopped_early,
        model,
    };
    for epoch in 1..=cfg.n_epochs {
        order.shuffle(&mut rng);
        let (mut epoch_loss, mut epoch_correct) = (0f64, 0usize);
        for (b, batch) in (1u64..).zip(order.chunks(bs)) {
            // Accumulates the batch-averaged gradient; every forward pass uses the old weights.
            let (mut loss, mut correct, scale) = (0f64, 0usize, 1.0 / batch.len() as f32);
            for &i in batch {
                let (l, right) = optimiser.accumulate(&model, &data[i].0, data[i].1.unwrap_or(0), scale);
                loss += l;
                correct += usize::from(right);
            }
            step += 1;
            optimiser.apply(&mut model, step, cfg.learning_rate as f32);
            (epoch_loss, epoch_correct) = (epoch_loss + loss, epoch_correct + correct);
            let m = batch.len() as f64;
            let (train_loss, train_accuracy) = (finite_or_inf(loss / m), correct as f64 / m);
            let event = TrainEvent::Step { step, total_steps, epoch, train_loss, train_accuracy };
            if on_event(event).is_break() {
                return Ok(summary(step, epoch - 1, true, model));
            }
            if validates(b) {
                let (valid_loss, valid_accuracy) = validate(&model, &vdata);
                if on_event(TrainEvent::Validation { step, epoch, valid_loss, valid_accuracy }).is_break() {
                    return Ok(summary(step, epoch - 1, true, model));
                }
            }
        }
        let (valid_loss, valid_accuracy) = validate(&model, &vdata);
        let event = TrainEvent::Epoch {
            epoch,
            step,
            train_loss: finite_or_inf(epoch_loss / n as f64),
            train_accuracy: epoch_correct as f64 / n as f64,
            valid_loss,
            valid_accuracy,
            model: &model,
        };
        if on_event(event).is_break() {
            return Ok(summary(step, epoch, epoch < cfg.n_epochs, model));
        }
    }
    Ok(summary(step, cfg.n_epochs, false, model))
}

/// Checks a configuration and training set as `train` does first, without training.
pub fn check_config(train: &[Example], cfg: &TrainConfig) -> Result<(), TrainError> {
    usable_examples(train, cfg).map(drop)
}

/// Checks the configuration and returns the training examples with a reply.
fn usable_examples<'a>(train: &'a [Example], cfg: &TrainConfig) -> Result<Vec<&'a Example>, TrainError> {
    if cfg.n_epochs == 0 || cfg.batch_size == 0 {
        let why = "n_epochs and batch_size must be at least 1";
        return Err(TrainError::InvalidConfig(why.into()));
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0) {
        let why = format!("learning rate {} is not a positive number", cfg.learning_rate);
        return Err(TrainError::InvalidConfig(why));
    }
    if train.is_empty() {
        return Err(TrainError::NoExamples);
    }
    let usable: Vec<&Example> = train.iter().filter(|e| !e.reply.trim().is_empty()).collect();
    if usable.is_empty() {
        return Err(TrainError::NoReplies);
    }
    Ok(usable)
}

/// `init` (or a new model) with the classes and embedding rows that `usable` adds, new rows
/// initialised from `seed`; and the examples' features.
fn extended_model(init: Option<&ReplyModel>, usable: &[&Example], seed: u64) -> (ReplyModel, Vec<Features>) {
    let mut model = init.cloned().unwrap_or_else(|| ReplyModel {
        classes: Vec::new(),
        hash_bits: HASH_BITS,
        system_weight: SYSTEM_WEIGHT,
        hidden: HIDDEN,
        rows: Vec::new(),
        embed: Vec::new(),
        hidden_bias: vec![0.0; HIDDEN],
        out: Vec::new(),
        bias: Vec::new(),
    });
    let mut new: Vec<String> = usable.iter().map(|e| e.reply.trim().to_string()).collect();
    new.retain(|r| model.class_of(r).is_none());
    new.sort();
    new.dedup();
    model.classes.extend(new);
    let (k, d) = (model.classes.len(), model.hidden);
    model.bias.resize(k, 0.0);
    model.out.resize(k * d, 0.0);
    let feats: Vec<Features> =
        (usable.iter()).map(|e| featurize(&e.context, model.hash_bits, model.system_weight)).collect();
    let mut rows: Vec<u32> = feats.iter().flatten().map(|f| f.0).collect();
    rows.extend(&model.rows);
    rows.sort_unstable();
    rows.dedup();
    let embed = rows.iter().flat_map(|&b| match model.rows.binary_search(&b) {
        Ok(i) => model.embed[i * d..(i + 1) * d].to_vec(),
        Err(_) => (0..d).map(|j| init_value(seed, b, j)).collect(),
    });
    (model.embed, model.rows) = (embed.collect(), rows);
    (model, feats)
}

/// The optimiser's state over a model: Adam per tensor, and the embedding rows the current
/// batch used (only those are updated: lazy Adam).
struct Optimiser {
    embed: Adam,
    hidden_bias: Adam,
    out: Adam,
    bias: Adam,
    used: Vec<bool>,
    used_rows: Vec<usize>,
}

impl Optimiser {
    fn new(model: &ReplyModel) -> Optimiser {
        let (k, d) = (model.classes.len(), model.hidden);
        Optimiser {
            embed: Adam::new(model.embed.len()),
            hidden_bias: Adam::new(d),
            out: Adam::new(k * d),
            bias: Adam::new(k),
            used: vec![false; model.rows.len()],
            used_rows: Vec::new(),
        }
    }

    /// Adds one example's gradient, times `scale`, with the model's current weights; returns
    /// its loss and whether the model's answer is `y`.
    fn accumulate(&mut self, model: &ReplyModel, x: &Features, y: usize, scale: f32) -> (f64, bool) {
        let d = model.hidden;
        let (h, z) = model.forward(x);
        let (p, l) = softmax(&z, Some(y));
        let correct = argmax(&p) == y;
        let mut dh = vec![0f32; d];
        for (c, pc) in p.iter().enumerate() {
            let dz = (*pc as f32 - f32::from(u8::from(c == y))) * scale;
            self.bias.g[c] += dz;
            let (w, gw) = (&model.out[c * d..(c + 1) * d], &mut self.out.g[c * d..(c + 1) * d]);
            for j in 0..d {
                gw[j] += dz * h[j];
                dh[j] += dz * w[j];
            }
        }
        dh.iter_mut().zip(&h).for_each(|(a, hj)| *a *= 1.0 - hj * hj);
        self.hidden_bias.g.iter_mut().zip(&dh).for_each(|(g, a)| *g += a);
        for &(r, v) in x {
            let r = r as usize;
            if !std::mem::replace(&mut self.used[r], true) {
                self.used_rows.push(r);
            }
            let g = &mut self.embed.g[r * d..(r + 1) * d];
            g.iter_mut().zip(&dh).for_each(|(g, a)| *g += v * a);
        }
        (l.unwrap_or(f64::INFINITY), correct)
    }

    /// Applies step `step` (from 1) of Adam with learning rate `lr` and clears the gradients.
    fn apply(&mut self, model: &mut ReplyModel, step: u64, lr: f32) {
        let (k, d) = (model.classes.len(), model.hidden);
        let t = i32::try_from(step).unwrap_or(i32::MAX);
        let c = (1.0 - 0.9f32.powi(t), 1.0 - 0.999f32.powi(t));
        for r in self.used_rows.drain(..) {
            self.used[r] = false;
            self.embed.update(&mut model.embed, r * d..(r + 1) * d, lr, c);
        }
        self.hidden_bias.update(&mut model.hidden_bias, 0..d, lr, c);
        self.out.update(&mut model.out, 0..k * d, lr, c);
        self.bias.update(&mut model.bias, 0..k, lr, c);
    }
}

/// A full validation pass: the mean loss over the examples whose reply is a class (`None` if
/// none is), and the accuracy over all (`None` without examples).
fn validate(model: &ReplyModel, vdata: &[(Features, Option<usize>)]) -> (Option<f64>, Option<f64>) {
    let scores: Vec<(Option<f64>, bool)> = vdata.iter().map(|(x, y)| model.score(x, *y)).collect();
    let known: Vec<f64> = scores.iter().filter_map(|s| s.0).collect();
    let correct = scores.iter().filter(|s| s.1).count();
    let loss = (!known.is_empty()).then(|| finite_or_inf(known.iter().sum::<f64>() / known.len() as f64));
    (loss, (!vdata.is_empty()).then(|| correct as f64 / vdata.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn ctx(user: &str) -> Vec<(String, String)> {
        vec![("system".into(), "Name the topic.".into()), ("user".into(), user.into())]
    }

    fn ex(user: &str, reply: &str) -> Example {
        Example { context: ctx(user), reply: reply.into() }
    }

    /// A separable data set: each user message holds filler words and two keywords of its topic.
    fn synth(n: usize, seed: u64) -> Vec<Example> {
        let topics = [
            ("weather", ["rain", "sunny", "forecast", "storm"]),
            ("sports", ["football", "goal", "tennis", "match"]),
            ("cooking", ["recipe", "oven", "pasta", "bake"]),
        ];
        let filler = ["please", "tell", "me", "about", "the", "today", "some"];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pick = |w: &[&'static str]| w[rng.random_range(0..w.len())];
        let make = |i: usize| {
            let (label, words) = topics[i % 3];
            let text = [pick(&filler), pick(&filler), pick(&words), pick(&filler), pick(&words)];
            ex(&text.join(" "), &format!(" {label}\n"))
        };
        (0..n).map(make).collect()
    }

    fn cfg(n_epochs: u32, batch_size: u32, mult: f64) -> TrainConfig {
        TrainConfig {
            n_epochs,
            batch_size,
            learning_rate: BASE_LEARNING_RATE * mult,
            seed: 7,
            validations_per_epoch: 0,
        }
    }

    fn quiet(_: TrainEvent<'_>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    fn fit(data: &[Example], c: &TrainConfig, init: Option<&ReplyModel>) -> ReplyModel {
        train(data, &[], c, init, &mut quiet).unwrap().model
    }

    fn mean_loss(m: &ReplyModel, data: &[Example]) -> f64 {
        data.iter().map(|e| m.loss_and_correct(e).0.unwrap()).sum::<f64>() / data.len() as f64
    }

    type Curve = Vec<(Option<f64>, Option<f64>)>;

    /// Trains and returns the summary and the (valid loss, valid accuracy) of every epoch.
    fn run(tr: &[Example], va: &[Example], c: &TrainConfig, stop_at: u32) -> (TrainSummary, Curve) {
        let mut epochs = Vec::new();
        let s = train(tr, va, c, None, &mut |e| match e {
            TrainEvent::Epoch { epoch, valid_loss, valid_accuracy, .. } => {
                epochs.push((valid_loss, valid_accuracy));
                if epoch == stop_at { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            }
            TrainEvent::Step { .. } | TrainEvent::Validation { .. } => ControlFlow::Continue(()),
        });
        (s.unwrap(), epochs)
    }

    #[test]
    fn same_seed_gives_identical_bytes() {
        let data = synth(60, 1);
        let a = fit(&data, &cfg(3, 4, 1.0), None).to_bytes();
        assert_eq!(a, fit(&data, &cfg(3, 4, 1.0), None).to_bytes());
        let other = TrainConfig { seed: 8, ..cfg(3, 4, 1.0) };
        assert_ne!(a, fit(&data, &other, None).to_bytes());
    }

    #[test]
    fn bytes_round_trip_keeps_predictions() {
        let model = fit(&synth(60, 2), &cfg(2, 8, 1.0), None);
        let back = ReplyModel::from_bytes(&model.to_bytes()).unwrap();
        assert_eq!(back, model);
        for e in synth(20, 3).into_iter().chain([ex("zzz unseen", "x")]) {
            assert_eq!(back.predict(&e.context), model.predict(&e.context));
        }
    }

    #[test]
    fn from_bytes_rejects_damaged_input() {
        let bytes = fit(&synth(9, 4), &cfg(1, 4, 1.0), None).to_bytes();
        for len in (0..bytes.len()).step_by(3).chain([bytes.len() - 1]) {
            assert!(ReplyModel::from_bytes(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut damaged = vec![[bytes.clone(), vec![0]].concat(), bytes.clone()];
        damaged[1][0] = b'X';
        for at in [11, 15] {
            damaged.push(bytes.clone());
            damaged.last_mut().unwrap()[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for len in [0, 1, 7, 40, 1000] {
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            damaged.push([&MAGIC[..], &junk].concat());
            damaged.push(junk);
        }
        assert!(damaged.iter().all(|b| ReplyModel::from_bytes(b).is_err()));
    }

    #[test]
    fn half_precision_round_trips_and_rounds_to_nearest() {
        for h in 0..=u16::MAX {
            let x = f32_of_f16(h);
            if x.is_nan() {
                assert!(f32_of_f16(f16_bits(x)).is_nan(), "{h:#06x}");
            } else {
                assert_eq!(f16_bits(x), h, "{h:#06x} is {x}");
            }
        }
        assert_eq!(f16_bits(1e6), 0x7c00);
        assert_eq!(f16_bits(-1e6), 0xfc00);
        assert_eq!(f16_bits(65520.0), 0x7c00, "halfway past the largest half rounds to infinity");
        assert_eq!(f16_bits(1e-9), 0);
        // Between two neighbours, the nearer wins and a tie goes to the even one.
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        for _ in 0..100_000 {
            let h = rng.random_range(0..0x7bffu16);
            let (lo, hi) = (f32_of_f16(h), f32_of_f16(h + 1));
            let x = lo + (hi - lo) * rng.random::<f32>();
            let nearest = if x - lo < hi - x || (x - lo == hi - x && h % 2 == 0) { h } else { h + 1 };
            assert_eq!(f16_bits(x), nearest, "{x} between {lo} and {hi}");
            assert_eq!(f16_bits(-x), nearest | 0x8000);
        }
    }

    #[test]
    fn the_compact_encoding_is_small_and_keeps_predictions() {
        let (tr, va) = (synth(300, 23), synth(100, 24));
        for (mult, seed) in [(0.1, 7), (1.0, 7), (10.0, 3)] {
            let c = TrainConfig { seed, ..cfg(3, 8, mult) };
            let model = fit(&tr, &c, None);
            let compact = model.encode(Embedding::HalfDeltas { seed });
            let exact = model.to_bytes();
            assert!(compact.len() * 2 < exact.len(), "{} vs {} bytes", compact.len(), exact.len());
            assert_eq!(compact, model.encode(Embedding::HalfDeltas { seed }), "deterministic");
            let back = ReplyModel::from_bytes(&compact).unwrap();
            assert_eq!(
                (&back.classes, &back.rows, &back.out, &back.bias),
                (&model.classes, &model.rows, &model.out, &model.bias)
            );
            for (a, b) in model.embed.iter().zip(&back.embed) {
                assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "{a} vs {b}");
            }
            for e in va.iter().chain(&tr) {
                let (p, q) = (model.predict(&e.context), back.predict(&e.context));
                assert_eq!(p[0].0, q[0].0, "the same top reply");
                assert!((p[0].1 - q[0].1).abs() < 1e-3, "{p:?} vs {q:?}");
            }
            // Encoding the decoded model again changes nothing: what is stored is stable.
            assert_eq!(ReplyModel::from_bytes(&back.encode(Embedding::HalfDeltas { seed })).unwrap(), back);
            // Another seed is only a worse reference: still decoded within the bound.
            let other = ReplyModel::from_bytes(&model.encode(Embedding::HalfDeltas { seed: seed + 1 })).unwrap();
            assert!(model.embed.iter().zip(&other.embed).all(|(a, b)| (a - b).abs() <= 2e-3 * a.abs().max(1.0)));
        }
    }

    /// The rows that the contexts of `examples` use.
    fn used_rows(model: &ReplyModel, examples: &[Example]) -> Vec<usize> {
        let mut rows: Vec<usize> =
            examples.iter().flat_map(|e| model.features(&e.context)).map(|(r, _)| r as usize).collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    fn tops(m: &ReplyModel, examples: &[Example]) -> Vec<usize> {
        examples.iter().map(|e| m.predict(&e.context)[0].0).collect()
    }

    #[test]
    fn a_reply_that_half_precision_would_change_is_kept_by_another_form() {
        let (tr, va) = (synth(60, 28), synth(20, 29));
        let mut model = fit(&tr, &cfg(2, 8, 1.0), None);
        let (seed, e) = (7, &va[0]);
        let compact = ReplyModel::from_bytes(&model.encode(Embedding::HalfDeltas { seed })).unwrap();
        let logits = |m: &ReplyModel| m.forward(&m.features(&e.context)).1;
        let (z, q) = (logits(&model), logits(&compact));
        // Shift the biases of classes 0 and 1 so that they lead every other class and their
        // margin has opposite signs in the exact and the decoded model.
        let (m, mq) = (z[0] - z[1], q[0] - q[1]);
        assert_ne!(m, mq, "half precision moved the logits");
        model.bias[0] += 100.0 - (m + mq) / 2.0;
        model.bias[1] += 100.0;
        let compact = ReplyModel::from_bytes(&model.encode(Embedding::HalfDeltas { seed })).unwrap();
        assert_ne!(compact.predict(&e.context)[0].0, model.predict(&e.context)[0].0, "a reply changes");
        let chosen = model.embedding_keeping_replies(seed, &va, &tr);
        let kept = ReplyModel::from_bytes(&model.encode_keeping_replies(seed, &va, &tr)).unwrap();
        assert_eq!(tops(&kept, &va), tops(&model, &va), "{chosen:?}");
        match &chosen {
            Embedding::Rows { levels, .. } => {
                assert!(used_rows(&model, &va[..1]).iter().all(|&r| levels[r] != HALF_ROW), "not half precision")
            }
            other => assert_eq!(other, &Embedding::Exact),
        }
    }

    #[test]
    fn the_row_encoding_round_trips_within_half_a_step() {
        let tr = synth(300, 23);
        for (mult, seed) in [(0.1, 7), (1.0, 7), (10.0, 3)] {
            let model = fit(&tr, &TrainConfig { seed, ..cfg(3, 8, mult) }, None);
            let n = model.rows.len();
            let half = model.encode(Embedding::HalfDeltas { seed }).len();
            let mut last = 0;
            let uniform = ROW_LEVELS.iter().map(|&l| vec![l; n]);
            // And every level in turn, row by row.
            let mixed = (0..n).map(|i| ROW_LEVELS[i % ROW_LEVELS.len()]).collect();
            for (k, levels) in uniform.chain([mixed]).enumerate() {
                let e = Embedding::Rows { seed, levels: levels.clone() };
                let bytes = model.encode(e.clone());
                assert_eq!(&bytes[..6], MAGIC_ROWS);
                assert_eq!(bytes, model.encode(e.clone()), "deterministic");
                if k < ROW_LEVELS.len() {
                    assert!(bytes.len() >= last, "finer takes more bytes: {} < {last}", bytes.len());
                    last = bytes.len();
                }
                let back = ReplyModel::from_bytes(&bytes).unwrap();
                assert_eq!(Some(&back), model.quantised(seed, &levels).as_ref(), "what the choice tried");
                assert_eq!(
                    (&back.classes, &back.rows, &back.out, &back.bias, &back.hidden_bias),
                    (&model.classes, &model.rows, &model.out, &model.bias, &model.hidden_bias)
                );
                let d = model.hidden;
                let rows = model.embed.chunks_exact(d).zip(back.embed.chunks_exact(d));
                for (i, (a, b)) in rows.enumerate() {
                    let init: Vec<f32> = (0..d).map(|j| init_value(seed, model.rows[i], j)).collect();
                    let max = a.iter().zip(&init).map(|(w, x)| (w - x).abs()).fold(0f32, f32::max);
                    for ((w, v), x) in a.iter().zip(b).zip(&init) {
                        // Half a step of the row's scale (max / level, rounded up to half
                        // precision); half precision: a relative 2^-11 of the difference.
                        let bound = match levels[i] {
                            HALF_ROW => (w - x).abs() / 2048.0 + 1e-7,
                            l => max / f32::from(l) * (0.5 + 1e-3) + 1e-6,
                        };
                        assert!((w - v).abs() <= bound, "{w} vs {v}, bound {bound}, level {}", levels[i]);
                    }
                }
            }
            let coarse = model.encode(Embedding::Rows { seed, levels: vec![7; n] }).len();
            assert!(coarse * 2 < half, "{coarse} vs {half} bytes");
            let bad = [vec![1; n + 1], vec![MAX_LEVELS + 1; n]];
            assert!(bad.iter().all(|l| model.quantised(seed, l).is_none()), "levels that do not fit");
        }
    }

    #[test]
    fn a_reply_that_quantising_would_change_keeps_a_finer_precision() {
        let (tr, va) = (synth(60, 28), synth(20, 29));
        let mut model = fit(&tr, &cfg(2, 8, 1.0), None);
        let (seed, e) = (7, &va[0]);
        let coarsest = vec![ROW_LEVELS[0]; model.rows.len()];
        let logits = |m: &ReplyModel| m.forward(&m.features(&e.context)).1;
        let (z, q) = (logits(&model), logits(&model.quantised(seed, &coarsest).unwrap()));
        // Shift the biases of classes 0 and 1 so that they lead every other class and their
        // margin has opposite signs in the exact and the coarsest quantised model.
        let (m, mq) = (z[0] - z[1], q[0] - q[1]);
        assert_ne!(m, mq, "quantising moved the logits");
        model.bias[0] += 100.0 - (m + mq) / 2.0;
        model.bias[1] += 100.0;
        let top = |m: &ReplyModel| m.predict(&e.context)[0].0;
        assert_ne!(top(&model.quantised(seed, &coarsest).unwrap()), top(&model), "a reply changes");
        let Embedding::Rows { levels, .. } = model.embedding_keeping_replies(seed, &va, &tr) else { panic!() };
        let used = used_rows(&model, &va[..1]);
        assert!(used.iter().any(|&r| levels[r] > ROW_LEVELS[0]), "a finer precision for rows that reply uses");
        let kept = ReplyModel::from_bytes(&model.encode_keeping_replies(seed, &va, &tr)).unwrap();
        assert_eq!(kept, model.quantised(seed, &levels).unwrap());
        assert_eq!(tops(&kept, &va), tops(&model, &va), "every validation reply kept");
        // The finer precision goes to rows that replies depend on: a row that no validation or
        // training context uses takes the coarsest.
        let mut unused = model.clone();
        unused.rows.push((1 << unused.hash_bits) - 1);
        unused.embed.extend((0..unused.hidden).map(|j| 0.5 + init_value(seed, (1 << unused.hash_bits) - 1, j)));
        let Embedding::Rows { levels, .. } = unused.embedding_keeping_replies(seed, &va, &tr) else { panic!() };
        assert_eq!(levels.last(), Some(&ROW_LEVELS[0]));
        // A value that no compact form can hold keeps the model exact.
        model.embed[3] = f32::NAN;
        assert_eq!(model.embedding_keeping_replies(seed, &va, &tr), Embedding::Exact);
        let back = ReplyModel::from_bytes(&model.encode_keeping_replies(seed, &va, &tr)).unwrap();
        assert_eq!(back.to_bytes(), model.to_bytes(), "bit for bit, NaN included");
    }

    #[test]
    fn values_half_precision_cannot_hold_keep_the_embedding_exact() {
        let mut model = fit(&synth(30, 25), &cfg(1, 4, 1.0), None);
        model.embed[5] = 1e30;
        model.embed[7] = f32::NAN;
        let back = ReplyModel::from_bytes(&model.encode(Embedding::HalfDeltas { seed: 7 })).unwrap();
        assert_eq!(back.to_bytes(), model.to_bytes(), "bit for bit, NaN included");
    }

    #[test]
    fn damaged_compact_input_is_rejected() {
        let bytes = fit(&synth(9, 26), &cfg(1, 4, 1.0), None).encode(Embedding::HalfDeltas { seed: 7 });
        for len in (0..bytes.len()).step_by(3).chain([bytes.len() - 1]) {
            assert!(ReplyModel::from_bytes(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(27);
        for len in [0, 1, 7, 40, 1000] {
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            assert!(ReplyModel::from_bytes(&[&MAGIC_COMPACT[..], &junk].concat()).is_err());
            let deflated = miniz_oxide::deflate::compress_to_vec(&junk, 6);
            assert!(ReplyModel::from_bytes(&[&MAGIC_COMPACT[..], &deflated].concat()).is_err());
        }
        let model = fit(&synth(9, 26), &cfg(1, 4, 1.0), None);
        let mut raw = Vec::new();
        model.put_head(&mut raw);
        // Rows out of order, a zero gap, a bad encoding byte, trailing bytes, a huge row count.
        let d = model.hidden;
        for (n_rows, kind, gaps, extra) in [
            (2u32, EMBED_F32, vec![5u8, 0], 0usize),
            (1, 9, vec![5], 0),
            (1, EMBED_F16_DELTAS, vec![5], 1),
            (u32::MAX, EMBED_F16_DELTAS, vec![5], 0),
            (1, EMBED_F16_DELTAS, vec![0xff, 0xff, 0xff, 0xff, 0x7f], 0),
        ] {
            let mut r = raw.clone();
            r.extend(n_rows.to_le_bytes());
            r.push(kind);
            r.extend(7u64.to_le_bytes());
            r.extend(&gaps);
            r.extend(vec![0u8; 4 * d * 2 + extra]);
            let packed = [&MAGIC_COMPACT[..], &miniz_oxide::deflate::compress_to_vec(&r, 6)].concat();
            assert!(ReplyModel::from_bytes(&packed).is_err(), "{n_rows} {kind} {gaps:?} {extra}");
        }
    }

    #[test]
    fn damaged_row_input_is_rejected() {
        let model = fit(&synth(9, 26), &cfg(1, 4, 1.0), None);
        let levels = (0..model.rows.len()).map(|i| ROW_LEVELS[i % ROW_LEVELS.len()]).collect();
        let bytes = model.encode(Embedding::Rows { seed: 7, levels });
        for len in (0..bytes.len()).step_by(3).chain([bytes.len() - 1]) {
            assert!(ReplyModel::from_bytes(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut raw = Vec::new();
        model.put_head(&mut raw);
        let d = model.hidden;
        // One row: (magic, level, scale, value, extra bytes).
        let one = |magic: &[u8; 6], level: u8, scale: u16, value: u8, extra: usize| {
            let mut r = raw.clone();
            r.extend(1u32.to_le_bytes());
            r.push(EMBED_ROWS);
            r.extend(7u64.to_le_bytes());
            r.push(5);
            r.push(level);
            if level == HALF_ROW {
                r.extend(vec![value; 2 * d]);
            } else {
                r.extend(scale.to_le_bytes()[..1].iter().chain(&scale.to_le_bytes()[1..]));
                r.extend(vec![value; d]);
            }
            r.extend(vec![0u8; extra]);
            [&magic[..], &miniz_oxide::deflate::compress_to_vec(&r, 6)].concat()
        };
        assert!(ReplyModel::from_bytes(&one(MAGIC_ROWS, 3, 0x3c00, 0xfd, 0)).is_ok(), "a sound row: -3 x 1.0");
        assert!(ReplyModel::from_bytes(&one(MAGIC_ROWS, HALF_ROW, 0, 1, 0)).is_ok(), "a sound half row");
        for (magic, level, scale, value, extra) in [
            (MAGIC_COMPACT, 3, 0x3c00, 0, 0), // rows need `FTSWM3`
            (MAGIC_ROWS, 128, 0x3c00, 0, 0),  // too many levels
            (MAGIC_ROWS, 3, 0x3c00, 4, 0),    // a value beyond the row's levels
            (MAGIC_ROWS, 3, 0x3c00, 0xfc, 0), // -4
            (MAGIC_ROWS, 3, 0x7c00, 0, 0),    // an infinite scale
            (MAGIC_ROWS, 3, 0x3c00, 0, 1),    // trailing bytes
        ] {
            let bytes = one(magic, level, scale, value, extra);
            assert!(ReplyModel::from_bytes(&bytes).is_err(), "{level} {scale:x} {value} {extra}");
        }
    }

    #[test]
    fn separable_data_is_learned_perfectly() {
        let (tr, va) = (synth(90, 6), synth(30, 7));
        let (s, epochs) = run(&tr, &va, &cfg(10, 4, 1.0), 0);
        assert_eq!(epochs.last().unwrap().1, Some(1.0));
        assert!(tr.iter().all(|e| s.model.loss_and_correct(e).1));
        assert_eq!(s.model.classes(), ["cooking", "sports", "weather"]);
        assert_eq!(s.model.top(&ctx("will it rain or storm")).0, "weather");
    }

    #[test]
    fn learning_rate_changes_results() {
        let data = synth(60, 8);
        let slow = fit(&data, &cfg(2, 4, 0.1), None);
        let fast = fit(&data, &cfg(2, 4, 1.0), None);
        assert_ne!(slow.to_bytes(), fast.to_bytes());
        assert!(mean_loss(&fast, &data) < mean_loss(&slow, &data));
    }

    #[test]
    fn break_stops_training_early() {
        let data = synth(40, 9);
        let (s, epochs) = run(&data, &data, &cfg(5, 8, 1.0), 2);
        assert!(s.stopped_early && s.epochs_completed == 2 && s.steps == 10 && epochs.len() == 2);
        let s = train(&data, &[], &cfg(5, 8, 1.0), None, &mut |_| ControlFlow::Break(())).unwrap();
        assert!(s.stopped_early && s.epochs_completed == 0 && s.steps == 1);
        let (s, _) = run(&data, &data, &cfg(2, 8, 1.0), 2);
        assert!(!s.stopped_early && s.epochs_completed == 2);
    }

    #[test]
    fn events_count_steps() {
        let data = synth(10, 10);
        let mut steps = Vec::new();
        let c = TrainConfig { validations_per_epoch: 4, ..cfg(3, 4, 1.0) };
        let s = train(&data, &[], &c, None, &mut |e| {
            match e {
                TrainEvent::Step { step, total_steps, .. } => steps.push((step, total_steps)),
                TrainEvent::Epoch { valid_loss, valid_accuracy, .. } => {
                    assert!(valid_loss.is_none() && valid_accuracy.is_none())
                }
                TrainEvent::Validation { .. } => unreachable!("no validation set"),
            }
            ControlFlow::Continue(())
        });
        assert_eq!((s.unwrap().steps, steps.len()), (9, 9));
        assert!(steps.iter().enumerate().all(|(i, &s)| s == (i as u64 + 1, 9)));
        let (s, _) = run(&data, &[], &cfg(2, 1000, 1.0), 0);
        assert_eq!(s.steps, 2);
    }

    #[test]
    fn init_continues_training_and_appends_classes() {
        let data = synth(60, 11);
        let first = fit(&data, &cfg(1, 16, 0.3), None);
        let more = fit(&data, &cfg(1, 16, 0.3), Some(&first));
        assert!(mean_loss(&more, &data) < mean_loss(&first, &data));
        let extra = [data.clone(), vec![ex("a brand new thing", "alpha")]].concat();
        let grown = fit(&extra, &cfg(1, 16, 0.3), Some(&first));
        assert_eq!(grown.classes(), ["cooking", "sports", "weather", "alpha"]);
        assert!(grown.n_rows() > first.n_rows());
    }

    #[test]
    fn invalid_input_is_rejected() {
        let data = synth(5, 12);
        let fails = |d: &[Example], c: TrainConfig| train(d, &[], &c, None, &mut quiet).unwrap_err();
        for c in [cfg(0, 4, 1.0), cfg(1, 0, 1.0), cfg(1, 4, 0.0), cfg(1, 4, -1.0)] {
            assert!(matches!(fails(&data, c), TrainError::InvalidConfig(_)));
        }
        for c in [cfg(1, 4, f64::NAN), cfg(1, 4, f64::INFINITY)] {
            assert!(matches!(fails(&data, c), TrainError::InvalidConfig(_)));
        }
        assert_eq!(fails(&[], cfg(1, 4, 1.0)), TrainError::NoExamples);
        assert_eq!(fails(&[ex("hi", "  ")], cfg(1, 4, 1.0)), TrainError::NoReplies);
    }

    #[test]
    fn predictions_are_sorted_probabilities() {
        let model = fit(&synth(30, 13), &cfg(2, 4, 1.0), None);
        for text in ["pasta in the oven", "", "football match rain"] {
            let p = model.predict(&ctx(text));
            assert_eq!(p.len(), 3);
            assert!((p.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(p.windows(2).all(|w| w[0].1 >= w[1].1));
            assert_eq!(model.top(&ctx(text)), (model.classes()[p[0].0].clone(), p[0].1));
        }
    }

    #[test]
    fn unknown_valid_replies_are_wrong_and_skip_loss() {
        let data = synth(30, 14);
        let odd = ex("rain storm", "gardening");
        assert_eq!(fit(&data, &cfg(1, 4, 1.0), None).loss_and_correct(&odd), (None, false));
        let (_, epochs) = run(&data, &[odd.clone(), odd], &cfg(1, 4, 1.0), 0);
        assert_eq!(epochs, [(None, Some(0.0))]);
    }

    #[test]
    fn huge_learning_rate_never_reports_nan() {
        let data = synth(30, 15);
        let mut losses = Vec::new();
        let c = TrainConfig { validations_per_epoch: 3, ..cfg(4, 2, 1e37) };
        let s = train(&data, &data, &c, None, &mut |e| {
            match e {
                TrainEvent::Step { train_loss, .. } => losses.push(Some(train_loss)),
                TrainEvent::Epoch { valid_loss, .. } | TrainEvent::Validation { valid_loss, .. } => {
                    losses.push(valid_loss)
                }
            }
            ControlFlow::Continue(())
        });
        let model = s.unwrap().model;
        losses.extend(data.iter().map(|e| model.loss_and_correct(e).0));
        assert!(losses.iter().all(|l| l.is_some_and(|l| !l.is_nan())));
        let p = model.predict(&ctx("rain"));
        assert!((p.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-9);
    }

    /// Every event of a run, as text (the `Epoch` event's model as its bytes).
    fn trace(tr: &[Example], va: &[Example], c: &TrainConfig) -> (Vec<String>, Vec<u8>) {
        let mut events = Vec::new();
        let s = train(tr, va, c, None, &mut |e| {
            events.push(match e {
                TrainEvent::Epoch { model, .. } => format!("{e:?} {:?}", model.to_bytes()),
                e => format!("{e:?}"),
            });
            ControlFlow::Continue(())
        });
        (events, s.unwrap().model.to_bytes())
    }

    #[test]
    fn validation_within_epochs_changes_nothing_trained() {
        let (tr, va) = (synth(40, 16), synth(12, 17));
        for (batch, mult) in [(4, 1.0), (1, 0.3), (16, 3.0)] {
            let (plain, model) = trace(&tr, &va, &cfg(3, batch, mult));
            let c = TrainConfig { validations_per_epoch: 4, ..cfg(3, batch, mult) };
            let (validated, same_model) = trace(&tr, &va, &c);
            assert_eq!(model, same_model, "batch {batch}: the models are bit-identical");
            let others: Vec<String> = validated.into_iter().filter(|e| !e.starts_with("Validation")).collect();
            assert_eq!(plain, others, "batch {batch}: the other events are the same");
        }
    }

    /// The (step, epoch, loss, accuracy) of every `Validation` event of a run.
    fn validations(tr: &[Example], va: &[Example], c: &TrainConfig) -> Vec<(u64, u32, Option<f64>, Option<f64>)> {
        let mut out = Vec::new();
        train(tr, va, c, None, &mut |e| {
            if let TrainEvent::Validation { step, epoch, valid_loss, valid_accuracy } = e {
                out.push((step, epoch, valid_loss, valid_accuracy));
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    #[test]
    fn validations_follow_the_first_step_past_each_fraction_of_an_epoch() {
        let (tr, va) = (synth(40, 18), synth(9, 19));
        let steps = |batch: u32, per_epoch: u32| {
            let c = TrainConfig { validations_per_epoch: per_epoch, ..cfg(2, batch, 1.0) };
            validations(&tr, &va, &c).iter().map(|v| (v.0, v.1)).collect::<Vec<_>>()
        };
        // 10 steps per epoch: 2.5, 5 and 7.5 steps are passed at steps 3, 5 and 8.
        assert_eq!(steps(4, 4), [(3, 1), (5, 1), (8, 1), (13, 2), (15, 2), (18, 2)]);
        assert_eq!(steps(4, 2), [(5, 1), (15, 2)]);
        assert!(steps(4, 0).is_empty() && steps(4, 1).is_empty());
        // 3 steps per epoch: 3/4 of it is passed at the epoch's end, reported by `Epoch`.
        assert_eq!(steps(14, 4), [(1, 1), (2, 1), (4, 2), (5, 2)]);
        // More validations than steps: once after each step but the last.
        assert_eq!(steps(14, 100), [(1, 1), (2, 1), (4, 2), (5, 2)]);
        assert!(steps(40, 4).is_empty(), "one step per epoch");
        let c = TrainConfig { validations_per_epoch: 4, ..cfg(2, 4, 1.0) };
        assert!(validations(&tr, &[], &c).is_empty(), "no validation set, no validation");
    }

    #[test]
    fn a_break_on_a_validation_stops_there_with_that_pass_s_model() {
        let (tr, va) = (synth(40, 20), synth(15, 21));
        let c = TrainConfig { validations_per_epoch: 4, ..cfg(3, 4, 1.0) };
        let mut seen = None;
        let s = train(&tr, &va, &c, None, &mut |e| match e {
            TrainEvent::Validation { step: 15, epoch, valid_loss, valid_accuracy } => {
                seen = Some((epoch, valid_loss, valid_accuracy));
                ControlFlow::Break(())
            }
            TrainEvent::Validation { step, .. } | TrainEvent::Step { step, .. } => {
                assert!(step <= 15);
                ControlFlow::Continue(())
            }
            TrainEvent::Epoch { .. } => ControlFlow::Continue(()),
        })
        .unwrap();
        assert_eq!((s.steps, s.steps_per_epoch, s.epochs_completed, s.stopped_early), (15, 10, 1, true));
        // The pass is the epoch end's computation on the model as it was at that step.
        let scores: Vec<(Option<f64>, bool)> = va.iter().map(|e| s.model.loss_and_correct(e)).collect();
        let loss = scores.iter().map(|x| x.0.unwrap()).sum::<f64>() / va.len() as f64;
        let accuracy = scores.iter().filter(|x| x.1).count() as f64 / va.len() as f64;
        assert_eq!(seen, Some((2, Some(loss), Some(accuracy))));
    }
}
