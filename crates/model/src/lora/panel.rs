//! `lora_B` held in column panels, the layout the expand streams.
//!
//! The expand adds `Σ_k s[k]·Bᵀ[k, cols]` to an output row. With `Bᵀ` held
//! row-major (`[rank, out_dim]`), a block of output columns reads a short
//! piece of every one of the `rank` rows, `out_dim` values apart: `rank`
//! interleaved streams, which the hardware prefetchers follow poorly when
//! the factors come from DRAM (many distinct adapters in a step). In panels
//! the same values are regrouped by blocks of [`PANEL`] output columns: each
//! panel is the `[rank, width]` slice of `Bᵀ` for its columns, row-major,
//! and panels follow one another, so the whole expand is one sequential
//! stream (measured: the expand's share of a 16-adapter decode step fell by
//! about half).

use std::ops::Range;

/// Output columns per panel: eight AVX registers of f32, the expand
/// kernel's accumulator block.
pub const PANEL: usize = 64;

/// Where each value of a `[rank, out_dim]` `Bᵀ` sits in its panel layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Panels {
    /// Rows of `Bᵀ` (the adapter rank).
    pub rank: usize,
    /// Columns of `Bᵀ` (the projection's output width).
    pub out_dim: usize,
}

/// One panel's part of a column range: where its first row starts in the
/// held factor, the distance between its rows, and the output columns it
/// covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Index of the value for row 0 and the first column of `cols`.
    pub start: usize,
    /// Values from one row to the next (the panel's width).
    pub stride: usize,
    /// Output columns covered.
    pub cols: Range<usize>,
}

impl Panels {
    /// Width of panel `p` (the last one may be narrower).
    fn width(&self, p: usize) -> usize {
        PANEL.min(self.out_dim - p * PANEL)
    }

    /// Index of `Bᵀ[k, o]`.
    pub fn index(&self, k: usize, o: usize) -> usize {
        let p = o / PANEL;
        p * PANEL * self.rank + k * self.width(p) + o % PANEL
    }

    /// The panels' pieces covering output columns `cols` (clamped to
    /// `out_dim`), in column order.
    pub fn pieces(&self, cols: Range<usize>) -> impl Iterator<Item = Piece> + '_ {
        let end = cols.end.min(self.out_dim);
        let start = cols.start.min(end);
        (start / PANEL..end.div_ceil(PANEL)).map(move |p| {
            let first = (p * PANEL).max(start);
            let last = ((p + 1) * PANEL).min(end);
            Piece {
                start: self.index(0, first),
                stride: self.width(p),
                cols: first..last,
            }
        })
    }

    /// Row-major `[rank, out_dim]` values regrouped into panels.
    pub fn from_row_major<T: Copy + Default>(&self, bt: &[T]) -> Vec<T> {
        let mut out = vec![T::default(); bt.len()];
        for (k, row) in bt.chunks_exact(self.out_dim.max(1)).enumerate() {
            for (o, &v) in row.iter().enumerate() {
                out[self.index(k, o)] = v;
            }
        }
        out
    }

    /// Panels back in row-major `[rank, out_dim]` order.
    pub fn to_row_major<T: Copy + Default>(&self, panels: &[T]) -> Vec<T> {
        let mut out = vec![T::default(); panels.len()];
        for (k, row) in out.chunks_exact_mut(self.out_dim.max(1)).enumerate() {
            for (o, v) in row.iter_mut().enumerate() {
                *v = panels[self.index(k, o)];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every value has its own slot, and the layout round-trips.
        #[test]
        fn panels_are_a_permutation(rank in 1usize..40, out_dim in 1usize..300) {
            let p = Panels { rank, out_dim };
            let mut seen = vec![false; rank * out_dim];
            for k in 0..rank {
                for o in 0..out_dim {
                    let i = p.index(k, o);
                    prop_assert!(!seen[i]);
                    seen[i] = true;
                }
            }
            let values: Vec<u32> = (0..(rank * out_dim) as u32).collect();
            prop_assert_eq!(p.to_row_major(&p.from_row_major(&values)), values);
        }

        /// Pieces cover exactly the requested columns, each row of a piece
        /// being contiguous in the panel layout.
        #[test]
        fn pieces_cover_the_columns(rank in 1usize..20, out_dim in 1usize..300, a in 0usize..320, b in 0usize..320) {
            let p = Panels { rank, out_dim };
            let cols = a.min(b)..a.max(b);
            let mut next = cols.start.min(out_dim);
            for piece in p.pieces(cols.clone()) {
                prop_assert_eq!(piece.cols.start, next);
                next = piece.cols.end;
                for k in 0..rank {
                    for (i, o) in piece.cols.clone().enumerate() {
                        prop_assert_eq!(p.index(k, o), piece.start + k * piece.stride + i);
                    }
                }
            }
            prop_assert_eq!(next, cols.end.min(out_dim).max(cols.start.min(out_dim)));
        }
    }
}
