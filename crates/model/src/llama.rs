//! The llama-family transformer and the loaded model (weights + tokenizer + chat template).
//!
//! [`Transformer::forward`] takes a batch of sequences, each with its own KV
//! cache and therefore its own position. All tokens of the batch are stacked
//! into one matrix so every projection is one matrix product over the whole
//! batch (the weights are read once per step, whatever the batch size);
//! only attention is computed per sequence, reading each sequence's paged KV
//! cache in place. LoRA updates are added per adapter rather than per
//! sequence ([`LoraBatch`]): rows sharing an adapter go through its factors
//! together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chat::ChatTemplate;
use crate::config::{LlamaConfig, RopeStyle};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::kv::{BLOCK_TOKENS, KvCache, KvPool};
use crate::lora::{LoraAdapter, LoraBatch};
use crate::ops;
use crate::quant::QMatrix;
use crate::threadpool::{SharedMut, ThreadPool};
use crate::tokenizer::Tokenizer;
use crate::weights::{LayerTensor, LayerWeights, ModelWeights};

/// One sequence's share of a batch: new tokens to process, its cache, and
/// the LoRA adapters applied to it.
pub struct BatchSeq<'a> {
    /// Tokens appended to the sequence in this step (at least one).
    pub tokens: &'a [u32],
    /// The sequence's cache; its length is the position of `tokens[0]`.
    pub cache: &'a mut KvCache,
    /// Adapters added on top of the base weights for this sequence only:
    /// none, one, or a weighted composition.
    pub adapters: &'a [WeightedAdapter],
}

impl<'a> BatchSeq<'a> {
    /// A sequence on the base model alone.
    pub fn new(tokens: &'a [u32], cache: &'a mut KvCache) -> Self {
        Self {
            tokens,
            cache,
            adapters: &[],
        }
    }

    /// The same sequence with `adapters` applied.
    pub fn with_adapters(self, adapters: &'a [WeightedAdapter]) -> Self {
        Self { adapters, ..self }
    }
}

/// A LoRA adapter and the weight its update is added with (1 for a plain adapter).
#[derive(Clone, Debug)]
pub struct WeightedAdapter {
    /// The adapter.
    pub adapter: Arc<LoraAdapter>,
    /// Multiplier of its `scale·B·A` update.
    pub weight: f32,
}

thread_local! {
    /// Attention scores of the head being computed, reused across tasks.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Config plus weights: everything needed to turn tokens into logits.
#[derive(Clone, Debug)]
pub struct Transformer {
    config: LlamaConfig,
    weights: ModelWeights,
    /// Per layer, q/k/v stacked into one matrix and gate/up into another, so
    /// a step issues two parallel products where it would issue five.
    fused: Vec<FusedLayer>,
    /// RoPE inverse frequencies, one per rotated pair.
    inv_freq: Vec<f32>,
}

/// Row-wise concatenations of a layer's input projections.
#[derive(Clone, Debug)]
struct FusedLayer {
    /// `[q_dim + 2 kv_dim, hidden]`: rows of wq, then wk, then wv.
    qkv: RowStack,
    /// `[2 intermediate, hidden]`: rows of w_gate, then w_up.
    gate_up: RowStack,
}

impl FusedLayer {
    fn new(w: &LayerWeights) -> Self {
        Self {
            qkv: RowStack::new(&[&w.wq, &w.wk, &w.wv]),
            gate_up: RowStack::new(&[&w.w_gate, &w.w_up]),
        }
    }
}

/// Matrices sharing an input, multiplied as one: stacked into a single matrix
/// when they share a storage type (one parallel product), kept apart when not
/// (mixed-quantisation files such as Q4_K_M store some projections as Q6_K).
#[derive(Clone, Debug)]
enum RowStack {
    Stacked(QMatrix),
    Separate(Vec<QMatrix>),
}

impl RowStack {
    fn new(parts: &[&QMatrix]) -> Self {
        let first = parts[0];
        if parts
            .iter()
            .all(|m| m.ty() == first.ty() && m.cols() == first.cols())
        {
            let bytes: Vec<u8> = parts
                .iter()
                .flat_map(|m| m.bytes().iter().copied())
                .collect();
            let rows = parts.iter().map(|m| m.rows()).sum();
            if let Ok(m) = QMatrix::new(first.ty(), rows, first.cols(), bytes.into()) {
                return Self::Stacked(m);
            }
        }
        Self::Separate(parts.iter().map(|m| (*m).clone()).collect())
    }

    /// `out[n, Σ rows] = x[n, cols] · [W₀; W₁; …]ᵀ`.
    fn matmul(&self, pool: &ThreadPool, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        match self {
            Self::Stacked(m) => m.matmul(pool, x, n, out),
            Self::Separate(parts) => {
                let width: usize = parts.iter().map(QMatrix::rows).sum();
                let mut col = 0;
                for m in parts {
                    let r = m.rows();
                    let mut part = vec![0f32; n * r];
                    m.matmul(pool, x, n, &mut part)?;
                    for (t, row) in part.chunks_exact(r).enumerate() {
                        out[t * width + col..t * width + col + r].copy_from_slice(row);
                    }
                    col += r;
                }
                Ok(())
            }
        }
    }
}

/// Per-step layout of the stacked batch.
struct Layout {
    /// First stacked row of each sequence.
    starts: Vec<usize>,
    /// Absolute position of every stacked token.
    positions: Vec<usize>,
    /// Sequence index of every stacked token.
    seq_of: Vec<usize>,
}

impl Layout {
    /// Stacked rows of sequence `seq`.
    fn seq_rows(&self, seq: usize) -> std::ops::Range<usize> {
        let end = self
            .starts
            .get(seq + 1)
            .copied()
            .unwrap_or(self.positions.len());
        self.starts[seq]..end
    }
}

/// Scratch matrices of one forward step, `rows` tokens tall.
struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
}

impl Scratch {
    fn new(c: &LlamaConfig, rows: usize) -> Self {
        let z = |w: usize| vec![0f32; rows * w];
        Self {
            normed: z(c.hidden_size),
            qkv: z(c.q_dim() + 2 * c.kv_dim()),
            q: z(c.q_dim()),
            k: z(c.kv_dim()),
            v: z(c.kv_dim()),
            attn: z(c.q_dim()),
            proj: z(c.hidden_size),
            gate_up: z(2 * c.intermediate_size),
            act: z(c.intermediate_size),
        }
    }
}

impl Transformer {
    /// Assembles a transformer from validated parts.
    pub fn new(config: LlamaConfig, weights: ModelWeights) -> Result<Self> {
        config.validate()?;
        if weights.layers.len() != config.n_layers {
            return Err(Error::Shape(format!(
                "{} layers of weights for a config with {}",
                weights.layers.len(),
                config.n_layers
            )));
        }
        let half = config.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                config
                    .rope_theta
                    .powf(-((2 * i) as f32) / config.head_dim as f32)
            })
            .collect();
        let fused = weights.layers.iter().map(FusedLayer::new).collect();
        Ok(Self {
            config,
            weights,
            fused,
            inv_freq,
        })
    }

    /// The model's dimensions.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The weights.
    pub fn weights(&self) -> &ModelWeights {
        &self.weights
    }

    /// A cache sized for this model, with its own pool and no memory budget.
    pub fn new_cache(&self, capacity_tokens: usize) -> KvCache {
        KvCache::new(&self.config, capacity_tokens)
    }

    /// A pool of KV blocks for this model holding at most `budget_bytes`;
    /// make caches in it with [`KvCache::in_pool`].
    pub fn new_pool(&self, budget_bytes: usize) -> KvPool {
        KvPool::new(&self.config, budget_bytes)
    }

    /// Processes one step for every sequence and returns the logits of each
    /// sequence's last new token.
    pub fn forward(&self, pool: &ThreadPool, batch: &mut [BatchSeq<'_>]) -> Result<Vec<Vec<f32>>> {
        let (hidden, layout) = self.hidden_states(pool, batch)?;
        let last: Vec<usize> = batch
            .iter()
            .zip(&layout.starts)
            .map(|(s, &st)| st + s.tokens.len() - 1)
            .collect();
        let logits = self.logits(pool, &hidden, &last);
        Ok(logits
            .chunks_exact(self.config.vocab_size)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Processes `tokens` for one sequence and returns the logits of every
    /// token, `[tokens.len(), vocab]` row-major (evaluation, perplexity).
    pub fn forward_all(
        &self,
        pool: &ThreadPool,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let mut batch = [BatchSeq::new(tokens, cache)];
        let (hidden, _) = self.hidden_states(pool, &mut batch)?;
        let rows: Vec<usize> = (0..tokens.len()).collect();
        Ok(self.logits(pool, &hidden, &rows))
    }

    fn check_batch(&self, batch: &[BatchSeq<'_>]) -> Result<()> {
        if batch.is_empty() {
            return Err(Error::Shape("empty batch".into()));
        }
        for seq in batch {
            if seq.tokens.is_empty() {
                return Err(Error::Shape(
                    "a sequence in the batch has no new tokens".into(),
                ));
            }
            if let Some(&bad) = seq
                .tokens
                .iter()
                .find(|&&t| t as usize >= self.config.vocab_size)
            {
                return Err(Error::Shape(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    self.config.vocab_size
                )));
            }
            if !seq.cache.fits(&self.config) {
                return Err(Error::Shape(
                    "KV cache was made for a different model".into(),
                ));
            }
            seq.cache.check_room(seq.tokens.len())?;
            for wa in seq.adapters {
                self.check_adapter(wa)?;
            }
        }
        Ok(())
    }

    /// An adapter's factors must fit this model's projections.
    fn check_adapter(&self, wa: &WeightedAdapter) -> Result<()> {
        if !wa.weight.is_finite() {
            return Err(Error::Adapter(format!(
                "adapter weight {} is not finite",
                wa.weight
            )));
        }
        let c = &self.config;
        // Q/K factors are held in the row order of the base they were loaded
        // against; on a base with the other RoPE layout they would be wrong.
        let interleaved = c.rope_style == crate::config::RopeStyle::Interleaved;
        let adapts_qk = wa
            .adapter
            .pairs()
            .any(|(_, t, _)| matches!(t, LayerTensor::Q | LayerTensor::K));
        if adapts_qk && wa.adapter.qk_rows_interleaved() != interleaved {
            return Err(Error::Adapter(format!(
                "adapter {} was loaded for a model with a different q/k row layout; load it \
                 against this model's config",
                wa.adapter.id()
            )));
        }
        for (layer, tensor, pair) in wa.adapter.pairs() {
            let (in_dim, out_dim) = projection_dims(c, tensor);
            if layer >= c.n_layers || (pair.in_dim, pair.out_dim) != (in_dim, out_dim) {
                return Err(Error::Adapter(format!(
                    "adapter {} does not fit this model: layer {layer} {tensor:?} is {}→{}, the model's is {in_dim}→{out_dim}",
                    wa.adapter.id(),
                    pair.in_dim,
                    pair.out_dim
                )));
            }
        }
        Ok(())
    }

    fn layout(batch: &[BatchSeq<'_>]) -> Layout {
        let mut layout = Layout {
            starts: Vec::new(),
            positions: Vec::new(),
            seq_of: Vec::new(),
        };
        for (i, seq) in batch.iter().enumerate() {
            layout.starts.push(layout.positions.len());
            let base = seq.cache.len();
            layout.positions.extend(base..base + seq.tokens.len());
            layout
                .seq_of
                .extend(std::iter::repeat_n(i, seq.tokens.len()));
        }
        layout
    }

    /// Runs every layer; returns the residual stream `[tokens, hidden]`.
    fn hidden_states(
        &self,
        pool: &ThreadPool,
        batch: &mut [BatchSeq<'_>],
    ) -> Result<(Vec<f32>, Layout)> {
        self.check_batch(batch)?;
        // Every block the step writes is allocated up front, so running out of
        // KV memory is an error before any work, never a failure mid-layer.
        for seq in batch.iter_mut() {
            seq.cache.reserve(seq.tokens.len())?;
        }
        let layout = Self::layout(batch);
        let c = &self.config;
        let rows = layout.positions.len();
        let mut x = vec![0f32; rows * c.hidden_size];
        let tokens: Vec<u32> = batch
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        pool.par_rows(&mut x, c.hidden_size, 64, &|i, row| {
            self.weights.embed.row_to_f32(tokens[i] as usize, row)
        });
        let mut s = Scratch::new(c, rows);
        let lora = LoraBatch::new(
            batch
                .iter()
                .enumerate()
                .map(|(i, seq)| (seq.adapters, layout.seq_rows(i))),
        );
        for (l, (w, f)) in self.weights.layers.iter().zip(&self.fused).enumerate() {
            self.attention_block(pool, l, w, f, batch, &layout, &lora, &mut x, &mut s)?;
            self.mlp_block(pool, l, w, f, &lora, &mut x, &mut s)?;
        }
        for seq in batch.iter_mut() {
            seq.cache.commit(seq.tokens.len());
        }
        Ok((x, layout))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        pool: &ThreadPool,
        l: usize,
        w: &LayerWeights,
        f: &FusedLayer,
        batch: &mut [BatchSeq<'_>],
        layout: &Layout,
        lora: &LoraBatch<'_>,
        x: &mut [f32],
        s: &mut Scratch,
    ) -> Result<()> {
        let c = &self.config;
        let rows = layout.positions.len();
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        self.norm_rows(pool, x, &w.attn_norm, &mut s.normed);
        f.qkv.matmul(pool, &s.normed, rows, &mut s.qkv)?;
        let qkv_parts = [
            (LayerTensor::Q, 0),
            (LayerTensor::K, qd),
            (LayerTensor::V, qd + kvd),
        ];
        lora.add(
            pool,
            l,
            &qkv_parts,
            &s.normed,
            c.hidden_size,
            &mut s.qkv,
            qd + 2 * kvd,
        )?;
        for (t, row) in s.qkv.chunks_exact(qd + 2 * kvd).enumerate() {
            s.q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
            s.k[t * kvd..(t + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
            s.v[t * kvd..(t + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
        }
        if let Some(b) = &w.bias {
            add_row_bias(&mut s.q, &b.q);
            add_row_bias(&mut s.k, &b.k);
            add_row_bias(&mut s.v, &b.v);
        }
        self.rope(pool, &mut s.q, c.n_heads, &layout.positions);
        self.rope(pool, &mut s.k, c.n_kv_heads, &layout.positions);
        for (seq, &start) in batch.iter_mut().zip(&layout.starts) {
            let r = start * kvd..(start + seq.tokens.len()) * kvd;
            seq.cache.append(l, &s.k[r.clone()], &s.v[r])?;
        }
        let caches: Vec<&KvCache> = batch.iter().map(|b| &*b.cache).collect();
        self.attend(pool, l, &caches, layout, &s.q, &mut s.attn);
        w.wo.matmul(pool, &s.attn, rows, &mut s.proj)?;
        lora.add(
            pool,
            l,
            &[(LayerTensor::O, 0)],
            &s.attn,
            qd,
            &mut s.proj,
            c.hidden_size,
        )?;
        add_into(x, &s.proj);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn mlp_block(
        &self,
        pool: &ThreadPool,
        l: usize,
        w: &LayerWeights,
        f: &FusedLayer,
        lora: &LoraBatch<'_>,
        x: &mut [f32],
        s: &mut Scratch,
    ) -> Result<()> {
        let c = &self.config;
        let rows = x.len() / c.hidden_size;
        self.norm_rows(pool, x, &w.ffn_norm, &mut s.normed);
        f.gate_up.matmul(pool, &s.normed, rows, &mut s.gate_up)?;
        let (h, ff) = (c.hidden_size, c.intermediate_size);
        let gate_up_parts = [(LayerTensor::Gate, 0), (LayerTensor::Up, ff)];
        lora.add(
            pool,
            l,
            &gate_up_parts,
            &s.normed,
            h,
            &mut s.gate_up,
            2 * ff,
        )?;
        let gate_up = &s.gate_up;
        pool.par_rows(&mut s.act, ff, 16, &|i, a| {
            let row = &gate_up[i * 2 * ff..(i + 1) * 2 * ff];
            a.copy_from_slice(&row[..ff]);
            ops::silu_mul(a, &row[ff..]);
        });
        w.w_down.matmul(pool, &s.act, rows, &mut s.proj)?;
        lora.add(
            pool,
            l,
            &[(LayerTensor::Down, 0)],
            &s.act,
            ff,
            &mut s.proj,
            h,
        )?;
        add_into(x, &s.proj);
        Ok(())
    }

    fn norm_rows(&self, pool: &ThreadPool, x: &[f32], weight: &[f32], out: &mut [f32]) {
        let (h, eps) = (self.config.hidden_size, self.config.rms_eps);
        pool.par_rows(out, h, 64, &|i, o| {
            ops::rms_norm(&x[i * h..(i + 1) * h], weight, eps, o)
        });
    }

    /// Rotary position embedding of `heads` heads per row, in place.
    fn rope(&self, pool: &ThreadPool, m: &mut [f32], heads: usize, positions: &[usize]) {
        let hd = self.config.head_dim;
        let half = hd / 2;
        let style = self.config.rope_style;
        pool.par_rows(m, heads * hd, 64, &|i, row| {
            let pos = positions[i] as f32;
            let (sin, cos): (Vec<f32>, Vec<f32>) =
                self.inv_freq.iter().map(|f| (pos * f).sin_cos()).unzip();
            for head in row.chunks_exact_mut(hd) {
                for p in 0..half {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * p, 2 * p + 1),
                        RopeStyle::Halves => (p, p + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[p] - x1 * sin[p];
                    head[b] = x0 * sin[p] + x1 * cos[p];
                }
            }
        });
    }

    /// Causal attention of every stacked query row against its sequence's cache.
    fn attend(
        &self,
        pool: &ThreadPool,
        l: usize,
        caches: &[&KvCache],
        layout: &Layout,
        q: &[f32],
        out: &mut [f32],
    ) {
        let c = &self.config;
        let (hd, qd, kvd) = (c.head_dim, c.q_dim(), c.kv_dim());
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        // Block tables of this layer, one per sequence: attention reads the
        // blocks in place.
        let tables: Vec<Vec<ops::KvBlock<'_>>> =
            caches.iter().map(|cache| cache.layer_blocks(l)).collect();
        let shared = SharedMut::new(out);
        pool.run(layout.positions.len() * c.n_heads, &|task| {
            let (t, h) = (task / c.n_heads, task % c.n_heads);
            let pos = layout.positions[t];
            let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
            // SAFETY: task (t, h) is the only writer of row t's head-h slice.
            let o = unsafe { shared.slice(t * qd + h * hd..t * qd + (h + 1) * hd) };
            let kv = ops::KvHead {
                blocks: &tables[layout.seq_of[t]],
                block_len: BLOCK_TOKENS,
                stride: kvd,
                offset: (h / group) * hd,
                len: pos + 1,
            };
            SCORES.with_borrow_mut(|scores| ops::attend_head(qh, &kv, scale, scores, o));
        });
    }

    /// Final norm and LM head for the selected stacked rows.
    fn logits(&self, pool: &ThreadPool, hidden: &[f32], rows: &[usize]) -> Vec<f32> {
        let h = self.config.hidden_size;
        let mut normed = vec![0f32; rows.len() * h];
        pool.par_rows(&mut normed, h, 64, &|i, o| {
            ops::rms_norm(
                &hidden[rows[i] * h..(rows[i] + 1) * h],
                &self.weights.norm,
                self.config.rms_eps,
                o,
            )
        });
        let mut out = vec![0f32; rows.len() * self.config.vocab_size];
        self.weights
            .output
            .matmul(pool, &normed, rows.len(), &mut out)
            .expect("shapes were validated when the weights were loaded");
        out
    }
}

/// Input and output widths of a projection.
fn projection_dims(c: &LlamaConfig, tensor: LayerTensor) -> (usize, usize) {
    let (h, q, kv, ff) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    match tensor {
        LayerTensor::Q | LayerTensor::QBias => (h, q),
        LayerTensor::K | LayerTensor::V | LayerTensor::KBias | LayerTensor::VBias => (h, kv),
        LayerTensor::O => (q, h),
        LayerTensor::Gate | LayerTensor::Up => (h, ff),
        LayerTensor::Down => (ff, h),
        LayerTensor::AttnNorm | LayerTensor::FfnNorm => (h, h),
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

fn add_row_bias(m: &mut [f32], bias: &[f32]) {
    m.chunks_exact_mut(bias.len())
        .for_each(|row| add_into(row, bias));
}

/// A model ready to serve: transformer, tokenizer and chat template.
#[derive(Debug)]
pub struct Model {
    name: String,
    path: PathBuf,
    transformer: Transformer,
    tokenizer: Tokenizer,
    chat_template: Option<ChatTemplate>,
}

impl Model {
    /// Loads a `.gguf` file, or a Hugging Face directory with `config.json`,
    /// `*.safetensors` and `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let model = if meta.is_dir() {
            Self::load_hf_dir(path)?
        } else {
            Self::load_gguf(path)?
        };
        tracing::info!(
            name = %model.name,
            layers = model.config().n_layers,
            hidden = model.config().hidden_size,
            kernel = crate::quant::kernel_name(),
            "model loaded"
        );
        Ok(model)
    }

    fn load_gguf(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = LlamaConfig::from_gguf(&file)?;
        let weights = ModelWeights::from_gguf(&file, &config)?;
        let tokenizer = Tokenizer::from_gguf(file.tokenizer_spec()?)?;
        let chat_template = match file.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            Some(src) => Some(chat_template_for(&tokenizer, src)?),
            None => None,
        };
        let name = file
            .get("general.name")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| file_stem(path));
        Ok(Self {
            name,
            path: path.to_owned(),
            transformer: Transformer::new(config, weights)?,
            tokenizer,
            chat_template,
        })
    }

    fn load_hf_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| Error::io(p, e))
        };
        let config = LlamaConfig::from_hf_json(&read("config.json")?)?;
        let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            return Err(Error::Safetensors(format!(
                "no *.safetensors files in {}",
                dir.display()
            )));
        }
        let weights = ModelWeights::from_safetensors(&shards, &config)?;
        let tok_cfg = dir.join("tokenizer_config.json");
        let tok_cfg = tok_cfg.exists().then_some(tok_cfg);
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), tok_cfg.as_deref())?;
        let chat_template = match tok_cfg
            .as_deref()
            .map(hf_chat_template)
            .transpose()?
            .flatten()
        {
            Some(src) => Some(chat_template_for(&tokenizer, &src)?),
            None => None,
        };
        Ok(Self {
            name: file_stem(dir),
            path: dir.to_owned(),
            transformer: Transformer::new(config, weights)?,
            tokenizer,
            chat_template,
        })
    }

    /// Display name (GGUF `general.name`, else the file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's dimensions.
    pub fn config(&self) -> &LlamaConfig {
        self.transformer.config()
    }

    /// The transformer.
    pub fn transformer(&self) -> &Transformer {
        &self.transformer
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model's own chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// See [`Transformer::forward`].
    pub fn forward(&self, pool: &ThreadPool, batch: &mut [BatchSeq<'_>]) -> Result<Vec<Vec<f32>>> {
        self.transformer.forward(pool, batch)
    }

    /// A cache sized for this model, with its own pool and no memory budget.
    pub fn new_cache(&self, capacity_tokens: usize) -> KvCache {
        self.transformer.new_cache(capacity_tokens)
    }

    /// A pool of KV blocks holding at most `budget_bytes`, shared by the
    /// caches made with [`KvCache::in_pool`] (a serving engine's sequences).
    pub fn new_pool(&self, budget_bytes: usize) -> KvPool {
        self.transformer.new_pool(budget_bytes)
    }
}

/// Compiles a chat template with the tokenizer's BOS/EOS strings.
fn chat_template_for(tokenizer: &Tokenizer, source: &str) -> Result<ChatTemplate> {
    let text = |id: Option<u32>| {
        id.and_then(|i| tokenizer.id_to_token(i))
            .unwrap_or_default()
    };
    let eos = text(tokenizer.eos_ids().first().copied());
    ChatTemplate::new(source, &text(tokenizer.bos_id()), &eos)
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned())
}

/// The `chat_template` entry of `tokenizer_config.json` (a string, or a list of named templates).
fn hf_chat_template(path: &Path) -> Result<Option<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
    Ok(match v.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| items.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_owned),
        _ => None,
    })
}
