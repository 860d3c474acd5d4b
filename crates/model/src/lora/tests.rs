use safetensors::tensor::{Dtype, TensorView};

use super::*;
use crate::testing::tiny_config;

const Q_A: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const Q_B: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
const V_A: &str = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight";
const V_B: &str = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";
const CONFIG: &str = r#"{"r": 4, "lora_alpha": 8, "peft_type": "LORA", "bias": "none",
  "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM", "fan_in_fan_out": false}"#;

/// (name, shape, values) of one tensor to write.
type Spec = (String, Vec<usize>, Vec<f32>);

fn base() -> LlamaConfig {
    tiny_config(32)
}

/// A valid rank-4 adapter on layer 0 q_proj and layer 1 v_proj.
fn specs() -> Vec<Spec> {
    let b = base();
    let mut rng = TestRng::new(3);
    let mut t = |n: &str, shape: [usize; 2]| {
        let v = rng.vec(shape[0] * shape[1], 0.5);
        (n.to_string(), shape.to_vec(), v)
    };
    vec![
        t(Q_A, [4, b.hidden_size]),
        t(Q_B, [b.q_dim(), 4]),
        t(V_A, [4, b.hidden_size]),
        t(V_B, [b.kv_dim(), 4]),
    ]
}

fn encode(specs: &[Spec], dtype: Dtype) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = specs
        .iter()
        .map(|(_, _, v)| match dtype {
            Dtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            Dtype::BF16 => v
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
            _ => tensors::f32_bytes(v),
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = specs
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load(config: &str, specs: &[Spec]) -> Result<LoraAdapter> {
    LoraAdapter::from_bytes(config.as_bytes(), &encode(specs, Dtype::F32), &base())
}

/// Loads and expects an error whose message contains every `needle`.
fn expect_err(config: &str, specs: &[Spec], needles: &[&str]) {
    let msg = load(config, specs).unwrap_err().to_string();
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` should mention `{n}`");
    }
}

fn with(mut specs: Vec<Spec>, f: impl FnOnce(&mut Vec<Spec>)) -> Vec<Spec> {
    f(&mut specs);
    specs
}

#[test]
fn valid_adapter_loads_with_expected_shapes_and_scale() {
    let a = load(CONFIG, &specs()).unwrap();
    let q = a.pair(0, LayerTensor::Q).unwrap();
    assert_eq!((q.rank, q.in_dim, q.out_dim, q.scale), (4, 64, 64, 2.0));
    let v = a.pair(1, LayerTensor::V).unwrap();
    assert_eq!((v.in_dim, v.out_dim), (64, 32));
    assert!(a.pair(0, LayerTensor::V).is_none());
    assert_eq!(a.pairs().count(), 2);
}

#[test]
fn save_load_round_trip_preserves_adapter_and_id() {
    let targets = [
        LayerTensor::Q,
        LayerTensor::V,
        LayerTensor::O,
        LayerTensor::Down,
    ];
    let a = random_adapter(&base(), 8, &targets, 11);
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path()).unwrap();
    let b = LoraAdapter::load(dir.path(), &base()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.id(), b.id());
    assert_eq!(a.id().len(), 64);
    a.save(dir.path()).unwrap(); // overwriting is fine
}

#[test]
fn id_ignores_json_key_order_and_storage_dtype() {
    let reordered = r#"{"target_modules": ["v_proj", "q_proj"], "fan_in_fan_out": false,
      "bias": "none", "lora_alpha": 8.0, "r": 4, "base_model_name_or_path": "x"}"#;
    let s = specs();
    let a = load(CONFIG, &s).unwrap();
    assert_eq!(a.id(), load(reordered, &s).unwrap().id());
    // The same values, once rounded to f16, hash alike whether stored as F16 or F32.
    let rounded: Vec<Spec> = s
        .into_iter()
        .map(|(n, sh, v)| {
            (
                n,
                sh,
                v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect(),
            )
        })
        .collect();
    let f32_file = load(CONFIG, &rounded).unwrap();
    let f16 = encode(&rounded, Dtype::F16);
    let f16_file = LoraAdapter::from_bytes(CONFIG.as_bytes(), &f16, &base()).unwrap();
    assert_eq!(f32_file, f16_file);
    assert_eq!(f32_file.id(), f16_file.id());
    assert_ne!(a.id(), f32_file.id());
}

#[test]
fn bf16_tensors_decode() {
    let bf = encode(&specs(), Dtype::BF16);
    let a = LoraAdapter::from_bytes(CONFIG.as_bytes(), &bf, &base()).unwrap();
    let want = half::bf16::from_f32(specs()[0].2[0]).to_f32();
    assert_eq!(a.pair(0, LayerTensor::Q).unwrap().a.to_f32()[0], want);
}

#[test]
fn id_depends_on_scale() {
    let a = load(CONFIG, &specs()).unwrap();
    let rs = CONFIG.replace("\"r\": 4", "\"r\": 4, \"use_rslora\": true");
    assert_ne!(a.id(), load(&rs, &specs()).unwrap().id());
}

#[test]
fn tensor_name_errors() {
    let bad = "base_model.model.model.layers.0.self_attn.qq_proj.lora_A.weight";
    expect_err(
        CONFIG,
        &with(specs(), |s| s[0].0 = bad.into()),
        &["unknown tensor", bad],
    );
    let bias = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.bias";
    expect_err(CONFIG, &with(specs(), |s| s[0].0 = bias.into()), &[bias]);
    let far = "base_model.model.model.layers.2.self_attn.v_proj.lora_A.weight";
    expect_err(
        CONFIG,
        &with(specs(), |s| s[2].0 = far.into()),
        &[far, "layer 2", "2 layers"],
    );
    expect_err(
        CONFIG,
        &with(specs(), |s| drop(s.remove(1))),
        &[Q_A, Q_B, "no matching"],
    );
    expect_err(
        CONFIG,
        &with(specs(), |s| drop(s.remove(2))),
        &[V_B, V_A, "no matching"],
    );
}

#[test]
fn shape_and_rank_errors() {
    let reshape = |i: usize, shape: [usize; 2]| {
        with(specs(), |s| {
            s[i].1 = shape.to_vec();
            s[i].2 = vec![0.0; shape[0] * shape[1]];
        })
    };
    expect_err(CONFIG, &reshape(0, [4, 32]), &[Q_A, "input width is 64"]);
    expect_err(CONFIG, &reshape(3, [64, 4]), &[V_B, "output width is 32"]);
    expect_err(CONFIG, &reshape(1, [64, 3]), &["rank mismatch", Q_A, Q_B]);
    expect_err(
        CONFIG,
        &with(specs(), |s| s[0].1 = vec![4 * 64]),
        &[Q_A, "two dimensions"],
    );
    let r8 = CONFIG.replace("\"r\": 4", "\"r\": 8");
    expect_err(&r8, &specs(), &["rank 4", "rank 8"]);
    let pattern = CONFIG.replace("\"r\": 4", "\"r\": 4, \"rank_pattern\": {\"v_proj\": 2}");
    expect_err(
        &pattern,
        &specs(),
        &[V_A, "rank 2", "model.layers.1.self_attn.v_proj"],
    );
}

#[test]
fn value_and_size_errors() {
    expect_err(
        CONFIG,
        &with(specs(), |s| s[3].2[5] = f32::NAN),
        &[V_B, "non-finite", "index 5"],
    );
    expect_err(
        CONFIG,
        &with(specs(), |s| s[0].2[0] = f32::INFINITY),
        &[Q_A, "non-finite"],
    );
    expect_err(CONFIG, &[], &["no LoRA tensors"]);
    let st = encode(&specs(), Dtype::F32);
    let err = LoraAdapter::from_bytes_with_limit(CONFIG.as_bytes(), &st, &base(), 1000);
    assert!(err.unwrap_err().to_string().contains("limit is 1000"));
    let err = LoraAdapter::from_bytes(CONFIG.as_bytes(), b"not safetensors", &base());
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("adapter_model.safetensors")
    );
    let ints = safetensors::serialize(
        [(
            Q_A.to_string(),
            TensorView::new(Dtype::I32, vec![1, 1], &[0; 4]).unwrap(),
        )],
        None,
    )
    .unwrap();
    let err = LoraAdapter::from_bytes(CONFIG.as_bytes(), &ints, &base()).unwrap_err();
    assert!(err.to_string().contains("I32") && err.to_string().contains(Q_A));
}

#[test]
fn the_first_non_finite_value_is_found_in_any_block() {
    let n = 3 * decode::FINITE_BLOCK + 7;
    assert_eq!(decode::first_non_finite(&vec![1.5; n]), None);
    assert_eq!(decode::first_non_finite(&[]), None);
    for at in [0, 1, 255, 256, 257, 700, n - 1] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = vec![-2.0f32; n];
            v[at] = bad;
            // A later bad value must not hide the first one.
            v[n - 1] = f32::NAN;
            assert_eq!(decode::first_non_finite(&v), Some(at), "{bad} at {at}");
        }
    }
}

#[test]
fn loading_from_files_rejects_empty_and_corrupt_weights() {
    let a = random_adapter(&base(), 2, &[LayerTensor::Up], 1);
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path()).unwrap();
    let weights = dir.path().join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 3]).unwrap();
    let err = LoraAdapter::load(dir.path(), &base()).unwrap_err();
    assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");
    std::fs::write(&weights, b"").unwrap();
    let err = LoraAdapter::load(dir.path(), &base()).unwrap_err();
    assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");
}

#[test]
fn a_vouched_id_is_used_as_is_and_does_not_affect_equality() {
    let a = random_adapter(&base(), 2, &[LayerTensor::Q], 3);
    let computed = a.id();
    let vouched = a.clone().with_id("given".into());
    assert_eq!(vouched.id(), "given");
    assert_eq!(vouched, a);
    assert_eq!(a.id(), computed, "the computed id is remembered");
}

#[test]
fn load_respects_file_size_limit() {
    let a = random_adapter(&base(), 2, &[LayerTensor::Up], 1);
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path()).unwrap();
    let err = LoraAdapter::load_with_limit(dir.path(), &base(), 100).unwrap_err();
    assert!(err.to_string().contains("limit is 100"), "{err}");
    let missing = LoraAdapter::load(&dir.path().join("nope"), &base()).unwrap_err();
    assert!(missing.to_string().contains(CONFIG_FILE), "{missing}");
}

#[test]
fn config_field_errors() {
    let cases = [
        ("\"r\": 4", "\"r\": 300", "r is 300"),
        ("\"r\": 4", "\"r\": 0", "r is 0"),
        ("\"LORA\"", "\"IA3\"", "peft_type"),
        ("\"bias\": \"none\"", "\"bias\": \"all\"", "bias"),
        (
            "\"fan_in_fan_out\": false",
            "\"fan_in_fan_out\": true",
            "fan_in_fan_out",
        ),
        (
            "\"fan_in_fan_out\": false",
            "\"use_dora\": true",
            "use_dora",
        ),
        ("[\"q_proj\", \"v_proj\"]", "\".*q_proj\"", "target_modules"),
        (
            "\"lora_alpha\": 8",
            "\"lora_alpha\": \"x\"",
            "adapter_config.json",
        ),
        (
            "\"r\": 4",
            "\"r\": 4, \"rank_pattern\": {\"q_proj\": 999}",
            "rank_pattern",
        ),
        ("\"r\": 4,", "", "missing field `r`"),
    ];
    for (from, to, needle) in cases {
        let json = CONFIG.replace(from, to);
        assert_ne!(json, CONFIG, "case {to} did not apply");
        expect_err(&json, &specs(), &[needle]);
    }
    let only_q = CONFIG.replace("\"q_proj\", \"v_proj\"", "\"q_proj\"");
    expect_err(&only_q, &specs(), &[V_A, "target_modules"]);
    let all = CONFIG.replace("[\"q_proj\", \"v_proj\"]", "\"all-linear\"");
    assert!(load(&all, &specs()).is_ok());
}

#[test]
fn rslora_and_patterns_set_per_module_scale() {
    let rs = CONFIG.replace("\"r\": 4", "\"r\": 4, \"use_rslora\": true");
    let a = load(&rs, &specs()).unwrap();
    assert_eq!(a.pair(0, LayerTensor::Q).unwrap().scale, 4.0); // 8 / sqrt(4)

    let patterned = CONFIG.replace(
        "\"r\": 4",
        "\"r\": 2, \"rank_pattern\": {\"q_proj\": 8, \"layers.1.self_attn.v_proj\": 4, \"proj\": 1},
         \"alpha_pattern\": {\"v_proj\": 2, \"layers.1.self_attn.v_proj\": 12}",
    );
    let s = with(specs(), |s| {
        for t in [0, 1] {
            let (rows, cols) = if t == 0 { (8, 64) } else { (64, 8) };
            s[t].1 = vec![rows, cols];
            s[t].2 = vec![0.25; rows * cols];
        }
    });
    let a = load(&patterned, &s).unwrap();
    let q = a.pair(0, LayerTensor::Q).unwrap();
    assert_eq!((q.rank, q.scale), (8, 1.0)); // "proj" is not a dot-aligned suffix
    let v = a.pair(1, LayerTensor::V).unwrap();
    assert_eq!((v.rank, v.scale), (4, 3.0)); // the longest matching key wins
}

#[test]
fn delta_is_scaled_product_of_b_and_a() {
    let a = random_adapter(&base(), 3, &[LayerTensor::K, LayerTensor::Down], 5);
    let p = a.pair(1, LayerTensor::Down).unwrap();
    assert_eq!(p.scale, 2.0);
    let d = a.delta(1, LayerTensor::Down).unwrap();
    assert_eq!(d.len(), p.out_dim * p.in_dim);
    let (fa, fbt) = (p.a.to_f32(), p.panels().to_row_major(&p.b_panels.to_f32()));
    for (o, i) in [(0, 0), (7, 100), (p.out_dim - 1, p.in_dim - 1)] {
        let want: f32 = (0..p.rank)
            .map(|k| fbt[k * p.out_dim + o] * fa[k * p.in_dim + i])
            .sum::<f32>()
            * p.scale;
        assert!((d[o * p.in_dim + i] - want).abs() < 1e-6);
    }
    assert!(a.delta(0, LayerTensor::Q).is_none());
    assert!(a.delta(5, LayerTensor::K).is_none());
}

#[test]
fn f16_loading_halves_memory_and_keeps_values_close() {
    let exact = random_adapter(&base(), 4, &[LayerTensor::Q, LayerTensor::Down], 8);
    let (config, weights) = exact.to_peft_bytes().unwrap();
    let options = LoadOptions::held_as(LoraDtype::F16);
    let half = LoraAdapter::from_bytes_with(&config, &weights, &base(), &options).unwrap();
    assert_eq!(half.dtype(), LoraDtype::F16);
    assert_eq!(exact.dtype(), LoraDtype::F32);
    assert_eq!(2 * half.resident_bytes(), exact.resident_bytes());
    assert_eq!(
        exact.resident_bytes_as(LoraDtype::F16),
        half.resident_bytes()
    );
    for ((_, _, h), (_, _, e)) in half.pairs().zip(exact.pairs()) {
        for (x, y) in h.b_panels.to_f32().iter().zip(e.b_panels.to_f32().iter()) {
            assert!((x - y).abs() <= y.abs() / 1024.0 + 1e-7, "{x} vs {y}");
        }
        // Q rows are permuted for the interleaved base the same way in both.
        assert_eq!(h.b().len(), e.b().len());
    }
    // Converting keeps an id already known; the rounded content hashes apart.
    let id = exact.id();
    assert_eq!(exact.to_dtype(LoraDtype::F16).id(), id);
    assert_ne!(half.id(), id);
    assert_eq!(
        exact
            .to_dtype(LoraDtype::F16)
            .to_dtype(LoraDtype::F32)
            .dtype(),
        LoraDtype::F32
    );
}

#[test]
fn f16_files_load_exactly_as_f16() {
    let f16_file = encode(&specs(), Dtype::F16);
    let options = LoadOptions::held_as(LoraDtype::F16);
    let half =
        LoraAdapter::from_bytes_with(CONFIG.as_bytes(), &f16_file, &base(), &options).unwrap();
    let wide = LoraAdapter::from_bytes(CONFIG.as_bytes(), &f16_file, &base()).unwrap();
    assert_eq!(half.id(), wide.id());
    assert_eq!(half.to_peft_bytes().unwrap(), wide.to_peft_bytes().unwrap());
}

#[test]
fn interleaving_while_decoding_is_undone_by_export() {
    for (rows, head_dim) in [(8, 4), (12, 4), (10, 4), (9, 3), (6, 1), (7, 64)] {
        let values: Vec<f32> = (0..rows).map(|r| r as f32).collect();
        let mut moved = vec![0.0; rows];
        for (r, v) in values.iter().enumerate() {
            moved[decode::interleaved_row(r, rows, head_dim)] = *v;
        }
        assert_eq!(
            tensors::deinterleave_rows(&moved, 1, head_dim),
            values,
            "{rows} rows, heads of {head_dim}"
        );
    }
}

#[test]
fn wide_inputs_and_out_of_range_values_decode_in_every_dtype() {
    // An input wider than a decode block (as in 7B-class MLPs).
    let base = LlamaConfig {
        intermediate_size: 2600,
        ..tiny_config(32)
    };
    let mut exact = random_adapter(&base, 2, &[LayerTensor::Down, LayerTensor::Q], 4);
    // One value beyond f16's range keeps its factor f32 (and only that one).
    let Some(Factor::F32(a)) = exact.pairs.get_mut(&(1, 6)).map(|p| &mut p.a) else {
        panic!("layer 1 down_proj is adapted in f32");
    };
    a[2601] = 1e6;
    let (config, weights) = exact.to_peft_bytes().unwrap();
    for dtype in [LoraDtype::F32, LoraDtype::F16] {
        let options = LoadOptions::held_as(dtype);
        let loaded = LoraAdapter::from_bytes_with(&config, &weights, &base, &options).unwrap();
        let pair = |layer, tensor| loaded.pair(layer, tensor).unwrap();
        assert_eq!(pair(1, LayerTensor::Down).a.dtype(), LoraDtype::F32);
        assert_eq!(pair(0, LayerTensor::Down).a.dtype(), dtype);
        for ((_, _, got), (_, _, want)) in loaded.pairs().zip(exact.pairs()) {
            for (x, y) in got.a.to_f32().iter().zip(want.a.to_f32().iter()) {
                // Relative rounding, or f16 subnormal spacing near zero.
                assert!(
                    (x - y).abs() <= y.abs() / 1024.0 + 1e-7,
                    "{dtype}: {x} vs {y}"
                );
            }
            assert_eq!(got.b_panels.len(), want.b_panels.len());
        }
        if dtype == LoraDtype::F32 {
            assert_eq!(loaded, exact);
        }
    }
}

#[test]
fn q8_loads_round_each_value_to_its_block_step() {
    let exact = random_adapter(&base(), 4, &[LayerTensor::Q, LayerTensor::Down], 5);
    let (config, weights) = exact.to_peft_bytes().unwrap();
    let options = LoadOptions::held_as(LoraDtype::Q8);
    let loaded = LoraAdapter::from_bytes_with(&config, &weights, &base(), &options).unwrap();
    assert_eq!(loaded.dtype(), LoraDtype::Q8);
    assert_eq!(
        loaded.resident_bytes(),
        exact.resident_bytes_as(LoraDtype::Q8)
    );
    // About 1.125 bytes per value against 4.
    assert!(loaded.resident_bytes() * 3 < exact.resident_bytes());
    for ((_, _, got), (_, _, want)) in loaded.pairs().zip(exact.pairs()) {
        for (g, w) in [(&got.a, &want.a), (&got.b_panels, &want.b_panels)] {
            let (g, w) = (g.to_f32(), w.to_f32());
            for (gb, wb) in g.chunks(super::Q8_BLOCK).zip(w.chunks(super::Q8_BLOCK)) {
                let step = wb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                for (x, y) in gb.iter().zip(wb) {
                    assert!((x - y).abs() <= step / 2.0 + 1e-7, "{x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn q8_runtime_files_with_missing_or_bad_scales_are_refused() {
    let held = random_adapter(&base(), 4, &[LayerTensor::Q], 3).to_dtype(LoraDtype::Q8);
    let (config, _) = held.to_peft_bytes().unwrap();
    let file = held.to_runtime_bytes().unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&file).unwrap();
    let metadata = header.metadata().clone();
    // Rebuilds the file with the first scales tensor changed by `change`
    // (dropped when it returns None).
    let rebuilt = |change: &dyn Fn(&[u8]) -> Option<Vec<u8>>| -> Vec<u8> {
        let parsed = safetensors::SafeTensors::deserialize(&file).unwrap();
        let mut tensors: Vec<(String, TensorView<'_>)> = parsed.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let at = tensors
            .iter()
            .position(|(n, _)| n.ends_with(".scales"))
            .unwrap();
        let (name, view) = tensors.remove(at);
        let changed = change(view.data());
        let mut views = tensors;
        if let Some(bytes) = &changed {
            let shape = vec![bytes.len() / 4];
            views.push((name, TensorView::new(Dtype::F32, shape, bytes).unwrap()));
        }
        safetensors::serialize(views, metadata.clone()).unwrap()
    };
    let load = |bytes: &[u8]| {
        LoraAdapter::from_runtime_bytes(&config, bytes, &base(), &LoadOptions::default())
            .unwrap_err()
            .to_string()
    };
    let e = load(&rebuilt(&|_| None));
    assert!(e.contains("has dtype I8 but the file has no"), "{e}");
    let e = load(&rebuilt(&|b| Some(b[4..].to_vec())));
    assert!(e.contains("F32 values (one per 32 values)"), "{e}");
    let e = load(&rebuilt(&|b| {
        let mut b = b.to_vec();
        b[4..8].copy_from_slice(&(-1.0f32).to_le_bytes());
        Some(b)
    }));
    assert!(e.contains("invalid scale (-1) at index 1"), "{e}");
}

#[test]
fn runtime_files_round_trip_the_held_factors() {
    let exact = random_adapter(&base(), 4, &[LayerTensor::Q, LayerTensor::Down], 9);
    let (config, _) = exact.to_peft_bytes().unwrap();
    for held in LoraDtype::ALL.map(|d| exact.to_dtype(d)) {
        let file = held.to_runtime_bytes().unwrap();
        for dtype in LoraDtype::ALL {
            let options = LoadOptions::held_as(dtype);
            let back = LoraAdapter::from_runtime_bytes(&config, &file, &base(), &options).unwrap();
            assert_eq!(back.dtype(), dtype);
            // Exact whenever the loaded dtype can carry the held values.
            if dtype == held.dtype() || (held.dtype(), dtype) == (LoraDtype::F16, LoraDtype::F32) {
                assert!(back.to_dtype(held.dtype()) == held, "{dtype}");
            }
        }
    }
    // A PEFT file is not a runtime file, and a runtime file only fits the
    // Q/K row layout it was written for.
    let (_, peft) = exact.to_peft_bytes().unwrap();
    let e = LoraAdapter::from_runtime_bytes(&config, &peft, &base(), &LoadOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("not an adapter runtime file"), "{e}");
    let halves = LlamaConfig {
        rope_style: crate::config::RopeStyle::Halves,
        ..base()
    };
    let file = exact.to_runtime_bytes().unwrap();
    let e = LoraAdapter::from_runtime_bytes(&config, &file, &halves, &LoadOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("q/k rows"), "{e}");
}

#[test]
fn non_finite_f16_values_are_refused_when_held_as_f16() {
    let options = LoadOptions::held_as(LoraDtype::F16);
    for (tensor, at, value) in [
        (0, 5, f32::INFINITY),
        (2, 200, f32::NAN),
        (1, 7, f32::NEG_INFINITY),
    ] {
        let mut s = specs();
        s[tensor].2[at] = value;
        let file = encode(&s, Dtype::F16);
        let e =
            LoraAdapter::from_bytes_with(CONFIG.as_bytes(), &file, &base(), &options).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("non-finite value ({value}) at index {at}")),
            "{e}"
        );
    }
}
