//! A Hugging Face checkpoint (safetensors + config.json + tokenizer.json) and
//! its GGUF conversion (Q/K rows permuted for interleaved RoPE, as llama.cpp's
//! converter does) must compute the same logits.

use std::collections::BTreeMap;

use credence_model::config::LlamaConfig;
use credence_model::gguf::{GgufFile, GgufWriter};
use credence_model::llama::{Model, Transformer};
use credence_model::quant::{GgmlType, QMatrix};
use credence_model::testing::TestRng;
use credence_model::threadpool::ThreadPool;
use credence_model::weights::ModelWeights;
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
