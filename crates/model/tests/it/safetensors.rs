//! A Hugging Face checkpoint (safetensors + config.json + tokenizer.json) and
//! its GGUF conversion (Q/K rows permuted for interleaved RoPE, as llama.cpp's
//! converter does) must compute the same logits, with and without a PEFT
//! adapter trained on the Hugging Face layout.

use std::collections::BTreeMap;
use std::sync::Arc;

use credence_model::config::LlamaConfig;
use credence_model::gguf::{GgufFile, GgufWriter};
use credence_model::llama::{BatchSeq, Model, Transformer, WeightedAdapter};
use credence_model::lora::LoraAdapter;
use credence_model::quant::{GgmlType, QMatrix};
use credence_model::testing::TestRng;
use credence_model::threadpool::ThreadPool;
use credence_model::weights::{LayerTensor, ModelWeights};
use safetensors::tensor::{Dtype, TensorView};

const CONFIG: &str = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
  "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":40,
  "max_position_embeddings":64,"rope_theta":10000.0,"rms_norm_eps":1e-5,"tie_word_embeddings":false}"#;

/// HF-layout weights: name → (shape, values).
fn hf_weights(c: &LlamaConfig) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut rng = TestRng::new(9);
    let mut w = BTreeMap::new();
    let mut mat = |w: &mut BTreeMap<_, _>, name: String, rows: usize, cols: usize| {
        w.insert(
            name,
            (
                vec![rows, cols],
                rng.vec(rows * cols, 1.5 / (cols as f32).sqrt()),
            ),
        );
    };
    let (h, q, kv, ff) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    mat(&mut w, "model.embed_tokens.weight".into(), c.vocab_size, h);
    mat(&mut w, "lm_head.weight".into(), c.vocab_size, h);
    for i in 0..c.n_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        mat(&mut w, p("self_attn.q_proj.weight"), q, h);
        mat(&mut w, p("self_attn.k_proj.weight"), kv, h);
        mat(&mut w, p("self_attn.v_proj.weight"), kv, h);
        mat(&mut w, p("self_attn.o_proj.weight"), h, q);
        mat(&mut w, p("mlp.gate_proj.weight"), ff, h);
        mat(&mut w, p("mlp.up_proj.weight"), ff, h);
        mat(&mut w, p("mlp.down_proj.weight"), h, ff);
        for n in ["input_layernorm.weight", "post_attention_layernorm.weight"] {
            // Exactly representable in f16, so both files hold identical norms.
            w.insert(
                p(n),
                (
                    vec![h],
                    (0..h).map(|j| 1.0 + (j % 16) as f32 / 16.0).collect(),
                ),
            );
        }
    }
    w.insert("model.norm.weight".into(), (vec![h], vec![1.0; h]));
    w
}

/// llama.cpp's Q/K permutation: within each head, HF row `i` becomes row
/// `2i` and row `i + d/2` becomes row `2i + 1`.
fn permute_heads(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let hd = values.len() / cols / heads;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for (j, src) in [i, i + hd / 2].into_iter().enumerate() {
                let (dst, src) = ((h * hd + 2 * i + j) * cols, (h * hd + src) * cols);
                out[dst..dst + cols].copy_from_slice(&values[src..src + cols]);
            }
        }
    }
    out
}

fn gguf_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("lm_head.weight", "output.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("model.layers.", "blk."),
    ];
    map.iter().fold(hf.to_owned(), |s, (a, b)| s.replace(a, b))
}

fn write_hf_dir(dir: &std::path::Path, weights: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    let bytes: BTreeMap<&String, Vec<u8>> = weights
        .iter()
        .map(|(n, (_, v))| {
            (
                n,
                v.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            )
        })
        .collect();
    let views = weights.iter().map(|(n, (shape, _))| {
        (
            n,
            TensorView::new(Dtype::F16, shape.clone(), &bytes[n]).unwrap(),
        )
    });
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = (0..40)
        .map(|i| (format!("w{i}"), serde_json::json!(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

fn gguf_transformer(
    dir: &std::path::Path,
    c: &LlamaConfig,
    weights: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> Transformer {
    let mut w = GgufWriter::new();
    c.write_gguf_metadata(&mut w);
    for (name, (shape, values)) in weights {
        let g = gguf_name(name);
        if shape.len() == 1 {
            w.vector(g, values);
            continue;
        }
        let values = match () {
            _ if name.contains("q_proj") => permute_heads(values, c.n_heads, shape[1]),
            _ if name.contains("k_proj") => permute_heads(values, c.n_kv_heads, shape[1]),
            _ => values.clone(),
        };
        w.matrix(
            g,
            &QMatrix::quantize(GgmlType::F16, shape[0], shape[1], &values).unwrap(),
        );
    }
    let path = dir.join("converted.gguf");
    w.write(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    Transformer::new(
        config.clone(),
        ModelWeights::from_gguf(&file, &config).unwrap(),
    )
    .unwrap()
}

#[test]
fn hf_checkpoint_and_its_gguf_conversion_agree() {
    let dir = tempfile::tempdir().unwrap();
    let config = LlamaConfig::from_hf_json(CONFIG).unwrap();
    let weights = hf_weights(&config);
    write_hf_dir(dir.path(), &weights);
    let hf = Model::load(dir.path()).unwrap();
    assert_eq!(hf.tokenizer().encode("w3 w7", false).unwrap(), vec![3, 7]);
    let gguf = gguf_transformer(dir.path(), &config, &weights);
    let pool = ThreadPool::new(2);
    let tokens = [1, 5, 9, 33, 2, 2, 17];
    let a = hf
        .transformer()
        .forward_all(&pool, &tokens, &mut hf.new_cache(16))
        .unwrap();
    let b = gguf
        .forward_all(&pool, &tokens, &mut gguf.new_cache(16))
        .unwrap();
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-4, "max diff {d}");
}

#[test]
fn broken_checkpoints_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = LlamaConfig::from_hf_json(CONFIG).unwrap();
    let mut weights = hf_weights(&config);
    weights.remove("model.layers.1.mlp.up_proj.weight");
    write_hf_dir(dir.path(), &weights);
    let e = Model::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("missing"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\x10\0\0\0\0\0\0\0{not json}",
    )
    .unwrap();
    let e = Model::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("safetensors"), "{e}");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(
        Model::load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("config.json")
    );
}

const ADAPTER_CONFIG: &str = r#"{"r": 4, "lora_alpha": 8, "peft_type": "LORA", "bias": "none",
  "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}"#;

/// A PEFT `adapter_model.safetensors` (F32, Hugging Face layout) adapting
/// every projection of every layer of `c` with rank 4.
fn peft_weights(c: &LlamaConfig) -> Vec<u8> {
    let mut rng = TestRng::new(21);
    let (h, q, kv, ff) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let modules = [
        ("self_attn.q_proj", h, q),
        ("self_attn.k_proj", h, kv),
        ("self_attn.v_proj", h, kv),
        ("self_attn.o_proj", q, h),
        ("mlp.gate_proj", h, ff),
        ("mlp.up_proj", h, ff),
        ("mlp.down_proj", ff, h),
    ];
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for layer in 0..c.n_layers {
        for (module, in_dim, out_dim) in modules {
            let path = format!("base_model.model.model.layers.{layer}.{module}");
            for (half, shape) in [("A", [4, in_dim]), ("B", [out_dim, 4])] {
                let values = rng.vec(shape[0] * shape[1], 0.3);
                let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                tensors.push((format!("{path}.lora_{half}.weight"), shape.to_vec(), bytes));
            }
        }
    }
    let views = tensors
        .iter()
        .map(|(n, shape, b)| (n, TensorView::new(Dtype::F32, shape.clone(), b).unwrap()));
    safetensors::serialize(views, None).unwrap()
}

/// The HF checkpoint of [`CONFIG`] (as a loaded model) and its GGUF conversion.
fn hf_and_gguf(dir: &std::path::Path) -> (Model, Transformer) {
    let config = LlamaConfig::from_hf_json(CONFIG).unwrap();
    let weights = hf_weights(&config);
    write_hf_dir(dir, &weights);
    let hf = Model::load(dir).unwrap();
    (hf, gguf_transformer(dir, &config, &weights))
}

fn load_adapter(peft: &[u8], base: &LlamaConfig) -> LoraAdapter {
    LoraAdapter::from_bytes(ADAPTER_CONFIG.as_bytes(), peft, base).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Last-token logits of a prompt and then two decode steps (so attention also
/// reads keys cached by earlier steps), concatenated.
fn logits_with(m: &Transformer, pool: &ThreadPool, adapter: Option<LoraAdapter>) -> Vec<f32> {
    let mix: Vec<WeightedAdapter> = adapter
        .into_iter()
        .map(|a| WeightedAdapter {
            adapter: Arc::new(a),
            weight: 1.0,
        })
        .collect();
    let mut cache = m.new_cache(16);
    let mut out = Vec::new();
    for step in [&[1, 5, 9, 33, 2][..], &[17], &[8]] {
        let seq = BatchSeq::new(step, &mut cache).with_adapters(&mix);
        out.extend(m.forward(pool, &mut [seq]).unwrap().remove(0));
    }
    out
}

#[test]
fn a_peft_adapter_computes_the_same_on_an_hf_checkpoint_and_its_gguf_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let (hf, gguf) = hf_and_gguf(dir.path());
    let peft = peft_weights(hf.config());
    let pool = ThreadPool::new(2);
    let hf_logits = logits_with(
        hf.transformer(),
        &pool,
        Some(load_adapter(&peft, hf.config())),
    );
    let gguf_logits = logits_with(&gguf, &pool, Some(load_adapter(&peft, gguf.config())));
    let d = max_diff(&hf_logits, &gguf_logits);
    assert!(d < 1e-3, "adapted logits differ by {d}");
    // The adapter changes the output enough that a misapplied Q/K update shows.
    let base = logits_with(hf.transformer(), &pool, None);
    let change = max_diff(&hf_logits, &base);
    assert!(change > 0.1, "the adapter only moves logits by {change}");
}

#[test]
fn adapter_id_and_export_are_the_same_whichever_base_layout_it_was_loaded_against() {
    let dir = tempfile::tempdir().unwrap();
    let (hf, gguf) = hf_and_gguf(dir.path());
    let (hf_c, gguf_c) = (hf.config(), gguf.config());
    let peft = peft_weights(hf_c);
    let (on_hf, on_gguf) = (load_adapter(&peft, hf_c), load_adapter(&peft, gguf_c));
    assert!(!on_hf.qk_rows_interleaved() && on_gguf.qk_rows_interleaved());
    assert_eq!(on_hf.id(), on_gguf.id());
    let exported = on_gguf.to_peft_bytes().unwrap();
    assert_eq!(on_hf.to_peft_bytes().unwrap(), exported);
    // The export holds exactly the values of the original file.
    let (original, back) = (
        safetensors::SafeTensors::deserialize(&peft).unwrap(),
        safetensors::SafeTensors::deserialize(&exported.1).unwrap(),
    );
    assert_eq!(original.len(), back.len());
    for (name, view) in original.tensors() {
        assert_eq!(back.tensor(&name).unwrap().data(), view.data(), "{name}");
    }
    // At runtime the GGUF copy's Q/K `B` rows follow the converter's
    // permutation; every other factor is untouched.
    for (layer, tensor, p) in on_hf.pairs() {
        let g = on_gguf.pair(layer, tensor).unwrap();
        assert_eq!(p.a, g.a);
        let want = match tensor {
            LayerTensor::Q => permute_heads(&p.b(), hf_c.n_heads, p.rank),
            LayerTensor::K => permute_heads(&p.b(), hf_c.n_kv_heads, p.rank),
            _ => p.b(),
        };
        assert_eq!(g.b(), want, "layer {layer} {tensor:?}");
    }
}

#[test]
fn an_adapter_saved_and_reloaded_on_a_gguf_base_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (hf, gguf) = hf_and_gguf(dir.path());
    let peft = peft_weights(hf.config());
    let on_gguf = load_adapter(&peft, gguf.config());
    let saved = dir.path().join("adapter");
    on_gguf.save(&saved).unwrap();
    let back = LoraAdapter::load(&saved, gguf.config()).unwrap();
    assert!(on_gguf.pairs().eq(back.pairs()));
    assert_eq!(on_gguf, back);
    assert_eq!(on_gguf.id(), back.id());
    // The saved files are in HF layout, so an HF base reads them as PEFT wrote them.
    assert_eq!(
        LoraAdapter::load(&saved, hf.config()).unwrap(),
        load_adapter(&peft, hf.config())
    );
}
