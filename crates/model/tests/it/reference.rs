//! A deliberately naive f64 llama forward pass, written from the equations
//! and sharing no code with the engine: dequantised weights, unquantised
//! activations, full causal attention recomputed for every position.

use credence_model::config::{LlamaConfig, RopeStyle};
use credence_model::llama::Transformer;
use credence_model::quant::QMatrix;

struct Dense {
    rows: usize,
    cols: usize,
    w: Vec<f64>,
}

impl Dense {
    fn new(m: &QMatrix) -> Self {
        Self {
            rows: m.rows(),
            cols: m.cols(),
            w: m.to_f32().into_iter().map(f64::from).collect(),
        }
    }
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        (0..self.rows)
            .map(|r| {
                self.w[r * self.cols..(r + 1) * self.cols]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    }
}

fn rms_norm(x: &[f64], w: &[f32], eps: f32) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + f64::from(eps)).sqrt();
    x.iter()
        .zip(w)
        .map(|(v, w)| v * s * f64::from(*w))
        .collect()
}

fn rope(v: &mut [f64], pos: usize, c: &LlamaConfig) {
    let hd = c.head_dim;
    for head in v.chunks_exact_mut(hd) {
        for i in 0..hd / 2 {
            let theta = pos as f64 * f64::from(c.rope_theta).powf(-2.0 * i as f64 / hd as f64);
            let (a, b) = match c.rope_style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Halves => (i, i + hd / 2),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * theta.cos() - x1 * theta.sin();
            head[b] = x0 * theta.sin() + x1 * theta.cos();
        }
    }
}

/// Logits for every position of `tokens`, `[len][vocab]`.
pub fn logits(t: &Transformer, tokens: &[u32]) -> Vec<Vec<f64>> {
    let c = t.config();
    let w = t.weights();
    let embed = Dense::new(&w.embed);
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&id| embed.w[id as usize * c.hidden_size..(id as usize + 1) * c.hidden_size].to_vec())
        .collect();
    for lw in &w.layers {
        let (wq, wk, wv, wo) = (
            Dense::new(&lw.wq),
            Dense::new(&lw.wk),
            Dense::new(&lw.wv),
            Dense::new(&lw.wo),
        );
        let (wg, wu, wd) = (
            Dense::new(&lw.w_gate),
            Dense::new(&lw.w_up),
            Dense::new(&lw.w_down),
        );
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (pos, x) in xs.iter().enumerate() {
            let h = rms_norm(x, &lw.attn_norm, c.rms_eps);
            let (mut q, mut k, mut v) = (wq.apply(&h), wk.apply(&h), wv.apply(&h));
            if let Some(b) = &lw.bias {
                q.iter_mut()
                    .zip(&b.q)
                    .for_each(|(a, b)| *a += f64::from(*b));
                k.iter_mut()
                    .zip(&b.k)
                    .for_each(|(a, b)| *a += f64::from(*b));
                v.iter_mut()
                    .zip(&b.v)
                    .for_each(|(a, b)| *a += f64::from(*b));
            }
            rope(&mut q, pos, c);
            rope(&mut k, pos, c);
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let hd = c.head_dim;
        let group = c.n_heads / c.n_kv_heads;
        for (pos, x) in xs.iter_mut().enumerate() {
            let mut attn = vec![0f64; c.q_dim()];
            for h in 0..c.n_heads {
                let g = h / group;
                let q = &qs[pos][h * hd..(h + 1) * hd];
                let scores: Vec<f64> = (0..=pos)
                    .map(|j| {
                        q.iter()
                            .zip(&ks[j][g * hd..(g + 1) * hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    for d in 0..hd {
                        attn[h * hd + d] += p / z * vs[j][g * hd + d];
                    }
                }
            }
            x.iter_mut().zip(wo.apply(&attn)).for_each(|(a, b)| *a += b);
            let h = rms_norm(x, &lw.ffn_norm, c.rms_eps);
            let (g, u) = (wg.apply(&h), wu.apply(&h));
            let act: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            x.iter_mut().zip(wd.apply(&act)).for_each(|(a, b)| *a += b);
        }
    }
    let out = Dense::new(&w.output);
    xs.iter()
        .map(|x| out.apply(&rms_norm(x, &w.norm, c.rms_eps)))
        .collect()
}

/// Largest absolute difference.
pub fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}

/// Root-mean-square difference.
pub fn rms_diff(a: &[f32], b: &[f64]) -> f64 {
    (a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).powi(2))
        .sum::<f64>()
        / a.len() as f64)
        .sqrt()
}
