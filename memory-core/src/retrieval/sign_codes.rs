//! One-bit codes of centered vectors: the first stage of a search in very large namespaces.
//!
//! Why: the exact int8 scan reads 384 bytes per episode and runs at ~10M vectors/s per core,
//! so a million episodes take ~47 ms on two cores, nearly all of the 50 ms a top-10 answer may
//! take (the lexical side needs its share).
//! A one-bit code keeps the sign of each centered component (48 bytes at 384 dimensions), and
//! a query scores it asymmetrically: the query stays in (16-bit) numbers, summed over the
//! code's bytes through one 256-entry table per byte, so a code costs 48 table reads instead
//! of 384 multiply-adds. The best 8,000 or so by that estimate are then scored exactly on
//! their int8 codes, so what is returned carries the same cosines as the exact scan; what the
//! first stage can lose is an episode whose estimate fell outside the pool (measured in the
//! retrieval bench: recall of the exact top 10 and top 50 at 1M).
//!
//! The estimate: the best one-bit approximation of a centered document `d` is `a * sign(d)`
//! with `a = mean |d_j|`, so `cos(q, d) ~ (a / |d|) * sum_j q_j sign(d_j)` for the centered
//! unit query `q`. `factor = a / |d|` is stored per document; `sum_j q_j sign(d_j)` is
//! `2 * (sum of q_j over the set bits) - sum_j q_j`, the first term from the tables.
//!
//! No crate fits: the vector-search crates bring their own storage and graph, and this is a
//! few table reads over codes the index already owns.

/// Largest magnitude of a quantized query component: eight of them sum into one `i16`
/// table entry (8 x 4,000 < 32,767).
const QUERY_RANGE: f32 = 4_000.0;

/// The one-bit codes and factors of a namespace's documents, in index order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SignCodes {
    bytes: usize,
    bits: Vec<u8>,
    factors: Vec<f32>,
}

impl SignCodes {
    /// Empty codes for vectors of `dims` dimensions.
    pub(crate) fn new(dims: usize) -> Self {
        SignCodes {
            bytes: dims.div_ceil(8),
            bits: Vec::new(),
            factors: Vec::new(),
        }
    }

    /// How many documents are coded.
    pub(crate) fn len(&self) -> usize {
        self.factors.len()
    }

    /// Codes document `i` from its centered components: appended when `i` is the next index,
    /// replaced otherwise. An index past the next one is ignored (callers code in order).
    pub(crate) fn put(&mut self, i: usize, centered: &[f32]) {
        let b = self.bytes;
        if i == self.len() {
            self.bits.resize((i + 1) * b, 0);
            self.factors.push(0.0);
        }
        if let (Some(slot), Some(f)) = (
            self.bits.get_mut(i * b..(i + 1) * b),
            self.factors.get_mut(i),
        ) {
            *f = encode(centered, slot);
        }
    }

    /// Removes document `i`, moving the last one into its place (as the index does).
    pub(crate) fn swap_remove(&mut self, i: usize) {
        let last = self.len().saturating_sub(1);
        if i > last || self.factors.is_empty() {
            return;
        }
        let b = self.bytes;
        self.factors.swap_remove(i);
        if i != last {
            self.bits.copy_within(last * b..(last + 1) * b, i * b);
        }
        self.bits.truncate(last * b);
    }

    fn code(&self, i: usize) -> &[u8] {
        &self.bits[i * self.bytes..(i + 1) * self.bytes]
    }
}

/// Writes the sign bits of one centered document into `code` (bit `k` of byte `p` is
/// component `8p + k`, set when positive) and returns its factor `mean |d_j| / |d|`.
fn encode(centered: &[f32], code: &mut [u8]) -> f32 {
    code.fill(0);
    let (mut abs, mut sq) = (0.0f32, 0.0f32);
    for (j, &x) in centered.iter().enumerate() {
        if x > 0.0
            && let Some(byte) = code.get_mut(j / 8)
        {
            *byte |= 1 << (j % 8);
        }
        abs += x.abs();
        sq += x * x;
    }
    if sq > 1e-12 && !centered.is_empty() {
        abs / centered.len() as f32 / sq.sqrt()
    } else {
        0.0
    }
}

/// A centered unit query prepared for scoring one-bit codes.
pub(crate) struct SignQuery {
    /// Per code byte, the sum of the quantized query components its set bits select.
    tables: Vec<[i16; 256]>,
    /// Sum of every quantized component.
    total: i32,
    /// Back from quantized units to the query's.
    unit: f32,
}

impl SignQuery {
    /// Tables for `query` (centered, unit length) over codes of `dims` dimensions.
    pub(crate) fn new(query: &[f32], dims: usize) -> Self {
        let bytes = dims.div_ceil(8);
        let max = query.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 && max.is_finite() {
            QUERY_RANGE / max
        } else {
            0.0
        };
        let quantized: Vec<i16> = (0..bytes * 8)
            .map(|j| {
                let x = query.get(j).copied().unwrap_or(0.0) * scale;
                // |x| <= QUERY_RANGE, so the cast neither saturates nor wraps.
                x.round() as i16
            })
            .collect();
        let tables = quantized
            .chunks_exact(8)
            .map(|q| {
                let mut table = [0i16; 256];
                // Entry v is entry (v without its highest bit) plus that bit's component.
                for v in 1..256usize {
                    let high = usize::BITS - 1 - v.leading_zeros();
                    table[v] = table[v & !(1 << high)] + q[high as usize];
                }
                table
            })
            .collect();
        SignQuery {
            tables,
            total: quantized.iter().map(|&q| i32::from(q)).sum(),
            unit: if scale > 0.0 { 1.0 / scale } else { 0.0 },
        }
    }

    /// The estimated centered cosine of document `i` of `codes`.
    pub(crate) fn estimate(&self, codes: &SignCodes, i: usize) -> f32 {
        let selected: i32 = self
            .tables
            .iter()
            .zip(codes.code(i))
            .map(|(table, &byte)| i32::from(table[usize::from(byte)]))
            .sum();
        codes.factors[i] * self.unit * (2 * selected - self.total) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn centered(seed: u32, dims: usize) -> Vec<f32> {
        (0..dims)
            .map(|j| ((seed as f32 * 12.9898 + j as f32 * 78.233).sin() * 43_758.547).fract() - 0.5)
            .collect()
    }

    fn unit(mut v: Vec<f32>) -> Vec<f32> {
        crate::embedding::l2_normalize(&mut v);
        v
    }

    #[test]
    fn the_estimate_is_the_cosine_with_the_one_bit_approximation() {
        for dims in [384, 37] {
            let q = unit(centered(1, dims));
            let query = SignQuery::new(&q, dims);
            let mut codes = SignCodes::new(dims);
            for seed in 0..20 {
                let d = centered(seed + 2, dims);
                codes.put(seed as usize, &d);
                // a * sign(d), a = mean |d_j|, over |d|.
                let norm = d.iter().map(|x| x * x).sum::<f32>().sqrt();
                let a = d.iter().map(|x| x.abs()).sum::<f32>() / dims as f32;
                let want: f32 = q
                    .iter()
                    .zip(&d)
                    .map(|(qj, dj)| qj * if *dj > 0.0 { a } else { -a })
                    .sum::<f32>()
                    / norm;
                let got = query.estimate(&codes, seed as usize);
                assert!((got - want).abs() < 2e-3, "{dims}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn put_replaces_and_swap_remove_moves_the_last_code() {
        let dims = 16;
        let mut codes = SignCodes::new(dims);
        for seed in 0..4 {
            codes.put(seed, &centered(seed as u32, dims));
        }
        codes.put(9, &centered(9, dims)); // past the next index: ignored
        assert_eq!(codes.len(), 4);
        codes.put(1, &centered(7, dims));
        let mut want = SignCodes::new(dims);
        for seed in [0, 7, 2, 3] {
            want.put(want.len(), &centered(seed, dims));
        }
        assert_eq!(codes, want);
        codes.swap_remove(0);
        codes.swap_remove(2); // now the last one
        let mut want = SignCodes::new(dims);
        for seed in [3, 7] {
            want.put(want.len(), &centered(seed, dims));
        }
        assert_eq!(codes, want);
        codes.swap_remove(5);
        assert_eq!(codes.len(), 2);
    }
}
