//! Merging LoRA adapters into the base weights: `W' = W + Σ wᵢ·scaleᵢ·Bᵢ·Aᵢ`.
//!
//! This is what a server without batched multi-adapter support does for each
//! adapter it serves (and what exporting a merged checkpoint does). Each
//! adapted matrix is dequantised, updated in f32 and quantised back to its
//! own format (or kept in `keep` when given), so the merged model reads as
//! many weight bytes per token as the base. `credence bench serve` uses it
//! as the "merge per request" baseline.

use crate::error::{Error, Result};
use crate::llama::WeightedAdapter;
use crate::quant::{GgmlType, QMatrix};
use crate::weights::{LayerTensor, LayerWeights, ModelWeights};

/// The matrix of `layer` that `tensor` names, if it is a projection.
fn projection(layer: &mut LayerWeights, tensor: LayerTensor) -> Option<&mut QMatrix> {
    Some(match tensor {
        LayerTensor::Q => &mut layer.wq,
        LayerTensor::K => &mut layer.wk,
        LayerTensor::V => &mut layer.wv,
        LayerTensor::O => &mut layer.wo,
        LayerTensor::Gate => &mut layer.w_gate,
        LayerTensor::Up => &mut layer.w_up,
        LayerTensor::Down => &mut layer.w_down,
        _ => return None,
    })
}

/// A copy of `base` with `adapters` merged into every matrix they adapt,
/// stored as `format` (`None`: each matrix keeps its own format).
pub fn merge_adapters(
    base: &ModelWeights,
    adapters: &[WeightedAdapter],
    format: Option<GgmlType>,
) -> Result<ModelWeights> {
    let mut merged = base.clone();
    // Accumulate every adapter's update per matrix first, so a matrix adapted
    // by several adapters is quantised once.
    let mut sums: std::collections::BTreeMap<(usize, usize), (LayerTensor, Vec<f32>)> =
        std::collections::BTreeMap::new();
    for wa in adapters {
        for (layer, tensor, _) in wa.adapter.pairs() {
            let delta = wa.adapter.delta(layer, tensor).ok_or_else(|| {
                Error::Adapter(format!("no factors for layer {layer} {tensor:?}"))
            })?;
            let key = (layer, tensor as usize);
            let entry = sums
                .entry(key)
                .or_insert_with(|| (tensor, vec![0.0; delta.len()]));
            entry
                .1
                .iter_mut()
                .zip(&delta)
                .for_each(|(s, d)| *s += wa.weight * d);
        }
    }
    for ((layer, _), (tensor, delta)) in sums {
        let weights = merged
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::Adapter(format!("layer {layer} is beyond the model")))?;
        let matrix = projection(weights, tensor)
            .ok_or_else(|| Error::Adapter(format!("{tensor:?} is not a projection")))?;
        let mut values = matrix.to_f32();
        if values.len() != delta.len() {
            return Err(Error::Shape(format!(
                "layer {layer} {tensor:?}: update has {} values, weight has {}",
                delta.len(),
                values.len()
            )));
        }
        values.iter_mut().zip(&delta).for_each(|(w, d)| *w += d);
        let ty = format.unwrap_or(matrix.ty());
        *matrix = QMatrix::quantize(ty, matrix.rows(), matrix.cols(), &values)?;
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lora::random_adapter;
    use crate::testing::{tiny_config, tiny_transformer};

    #[test]
    fn merging_zero_weight_changes_nothing_and_a_real_weight_changes_the_adapted_matrix() {
        let dir = tempfile::tempdir().unwrap();
        let base = tiny_transformer(&tiny_config(32), GgmlType::Q8_0, 1, dir.path()).unwrap();
        let adapter = Arc::new(random_adapter(base.config(), 2, &[LayerTensor::V], 5));
        let zero = [WeightedAdapter {
            adapter: Arc::clone(&adapter),
            weight: 0.0,
        }];
        let same = merge_adapters(base.weights(), &zero, Some(GgmlType::F32)).unwrap();
        assert_eq!(
            same.layers[0].wv.to_f32(),
            base.weights().layers[0].wv.to_f32()
        );
        let one = [WeightedAdapter {
            adapter,
            weight: 1.0,
        }];
        let changed = merge_adapters(base.weights(), &one, Some(GgmlType::F32)).unwrap();
        assert_ne!(
            changed.layers[0].wv.to_f32(),
            base.weights().layers[0].wv.to_f32()
        );
        assert_eq!(
            changed.layers[0].wq.bytes(),
            base.weights().layers[0].wq.bytes()
        );
    }
}
