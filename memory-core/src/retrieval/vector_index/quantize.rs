//! Symmetric int8 quantization and the dot products over codes.

/// `sum(q[j] * code[j])` in integers. Codes lie in -127..=127, so one product fits in `i16`
/// but sums do not: products are summed in `i32`. Written as one plain sum over blocks of 32,
/// the compiler may reorder the integer additions, and it pairs neighbouring products into
/// the packed multiply-add instruction every x86-64 CPU has (`pmaddwd`: eight `i16` products
/// summed in pairs into four `i32` lanes). The earlier form, sixteen explicit lanes, compiled
/// to a multiply per product and three shuffles to widen it: this one computes the same sums
/// and halves the scan (`retrieval/vector_index_search/10000`: 0.745 -> 0.379 ms, 100000:
/// 3.20 -> 1.83 ms, same hour).
pub(super) fn dot_i8(q: &[i16], code: &[i8]) -> i32 {
    let qc = q.chunks_exact(32);
    let cc = code.chunks_exact(32);
    let (qr, cr) = (qc.remainder(), cc.remainder());
    let mut sum = 0i32;
    for (a, b) in qc.zip(cc) {
        for j in 0..32 {
            sum += i32::from(a[j]) * i32::from(b[j]);
        }
    }
    for (a, b) in qr.iter().zip(cr) {
        sum += i32::from(*a) * i32::from(*b);
    }
    sum
}

/// Symmetric int8 quantization of one vector.
pub(super) fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (0.0, vec![0; v.len()]);
    }
    let scale = max / 127.0;
    let inv = 1.0 / scale;
    // Round half away from zero by adding ±0.5 and truncating: `f32::round` is a library
    // call per element, this vectorizes (and `as` saturates).
    let codes = v
        .iter()
        .map(|x| {
            let y = (x * inv).clamp(-127.0, 127.0);
            (y + 0.5f32.copysign(y)) as i8
        })
        .collect();
    (scale, codes)
}

/// `sum(q[j] * code[j])`, in eight independent lanes so the compiler vectorizes it.
pub(super) fn dot(q: &[f32], code: &[i8]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let qc = q.chunks_exact(8);
    let cc = code.chunks_exact(8);
    let (qr, cr) = (qc.remainder(), cc.remainder());
    for (a, b) in qc.zip(cc) {
        for j in 0..8 {
            lanes[j] += a[j] * f32::from(b[j]);
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (a, b) in qr.iter().zip(cr) {
        sum += a * f32::from(*b);
    }
    sum
}
