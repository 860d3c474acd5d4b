//! Choosing the next token from logits.
//!
//! Order of operations: repetition penalty on the raw logits, then either
//! greedy arg-max (temperature 0) or temperature scaling, softmax, and the
//! top-k, top-p and min-p filters before a seeded draw. The generator is a
//! small SplitMix64 so that a seed reproduces a completion exactly on any
//! machine.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the next token is picked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the best token's probability; 0 disables.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of already seen tokens; 1 disables.
    pub repetition_penalty: f32,
    /// Seed for the random draw; `None` draws a fresh one.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Rejects values outside their meaningful range.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && (0.0..=100.0).contains(&self.temperature)) {
            return Err(Error::param(
                "temperature",
                format!("{} is not in [0, 100]", self.temperature),
            ));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::param(
                "top_p",
                format!("{} is not in (0, 1]", self.top_p),
            ));
        }
        if !(self.min_p.is_finite() && (0.0..1.0).contains(&self.min_p)) {
            return Err(Error::param(
                "min_p",
                format!("{} is not in [0, 1)", self.min_p),
            ));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::param(
                "repetition_penalty",
                format!("{} must be a positive number", self.repetition_penalty),
            ));
        }
        Ok(())
    }
}

/// A seeded sampler for one sequence.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler; validates `params`.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(entropy_seed);
        Ok(Self {
            params,
            rng: SplitMix64(seed),
        })
    }

    /// Picks the next token given the logits and the tokens seen so far
    /// (prompt and completion, for the repetition penalty).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        apply_repetition_penalty(logits, history, self.params.repetition_penalty);
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let mut candidates = self.filtered_probabilities(logits);
        let total: f32 = candidates.iter().map(|c| c.1).sum();
        let mut r = self.rng.next_f32() * total;
        for &(id, p) in &candidates {
            r -= p;
            if r <= 0.0 {
                return id;
            }
        }
        candidates.pop().map_or_else(|| argmax(logits), |c| c.0)
    }

    /// Softmax at the temperature, then top-k, top-p and min-p; sorted by probability.
    fn filtered_probabilities(&self, logits: &[f32]) -> Vec<(u32, f32)> {
        let p = &self.params;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l - max) / p.temperature).exp()))
            .filter(|&(_, w)| w > 0.0)
            .collect();
        c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 {
            c.truncate(p.top_k);
        }
        let sum: f32 = c.iter().map(|x| x.1).sum();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = c
                .iter()
                .position(|x| {
                    acc += x.1 / sum;
                    acc >= p.top_p
                })
                .map_or(c.len(), |i| i + 1);
            c.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = c.first().map_or(0.0, |x| x.1) * p.min_p;
            c.retain(|x| x.1 >= floor);
        }
        c
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; logits.len()];
    for &t in history {
        let t = t as usize;
        if t < logits.len() && !seen[t] {
            seen[t] = true;
            let l = &mut logits[t];
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// SplitMix64: tiny, fast, and well distributed for sampling.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            seed: Some(7),
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_picks_the_max() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_changes_the_winner() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        })
        .unwrap();
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.0], &[1]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_min_p_filters() {
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.0)
        })
        .unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [1.0, 2.0, 1.5], &[]), 1);
        }
        let s = Sampler::new(SamplingParams {
            min_p: 0.5,
            ..params(1.0)
        })
        .unwrap();
        let kept = s.filtered_probabilities(&[0.0, 5.0, 4.9, -3.0]);
        assert_eq!(kept.iter().map(|k| k.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let s = Sampler::new(SamplingParams {
            top_p: 0.5,
            ..params(1.0)
        })
        .unwrap();
        let kept = s.filtered_probabilities(&[10.0, 0.0, 0.0]);
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn seeds_reproduce() {
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..params(1.0)
            })
            .unwrap();
            (0..32)
                .map(|_| s.sample(&mut [1.0, 1.1, 0.9, 1.05], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn invalid_params_name_the_field() {
        for (p, field) in [
            (
                SamplingParams {
                    temperature: -1.0,
                    ..params(1.0)
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..params(1.0)
                },
                "top_p",
            ),
            (
                SamplingParams {
                    min_p: 1.0,
                    ..params(1.0)
                },
                "min_p",
            ),
            (
                SamplingParams {
                    repetition_penalty: f32::NAN,
                    ..params(1.0)
                },
                "repetition_penalty",
            ),
        ] {
            match Sampler::new(p) {
                Err(Error::InvalidParameter { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected an error for {field}, got {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn sampled_token_is_always_a_kept_candidate(
            logits in proptest::collection::vec(-20f32..20.0, 1..64),
            t in 0.05f32..2.0, k in 0usize..8, p in 0.05f32..=1.0, m in 0f32..0.9, seed: u64,
        ) {
            let params = SamplingParams { temperature: t, top_k: k, top_p: p, min_p: m, repetition_penalty: 1.0, seed: Some(seed) };
            let mut s = Sampler::new(params).unwrap();
            let kept: Vec<u32> = s.filtered_probabilities(&logits).iter().map(|c| c.0).collect();
            let tok = s.sample(&mut logits.clone(), &[]);
            prop_assert!(kept.contains(&tok));
        }
    }
}
