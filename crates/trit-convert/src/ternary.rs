//! Ternary arithmetic on checkpoint tensors: float decoding, absmean ternarisation, and the
//! transformers 2-bit packed layout.

use safetensors::Dtype;
use trit_gguf::quant;

use crate::error::{ConvertError, Result};
use crate::safetensors_source::TensorRef;

/// Smallest absmean scale, as in transformers' `WeightQuant` (`clamp_(min=1e-5)`).
pub(crate) const MIN_SCALE: f32 = 1e-5;

/// Elements decoded per step when streaming through a tensor.
const CHUNK: usize = 1 << 16;

pub(crate) fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Bytes per element of the float dtypes we read.
fn float_size(dtype: Dtype) -> usize {
    match dtype {
        Dtype::F32 => 4,
        _ => 2,
    }
}

/// Decodes elements `[start, start + n)` of a float tensor into `out` (cleared first).
pub(crate) fn read_f32(t: &TensorRef<'_>, start: usize, n: usize, out: &mut Vec<f32>) {
    out.clear();
    let size = float_size(t.dtype);
    let bytes = &t.data[start * size..(start + n) * size];
    match t.dtype {
        Dtype::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        Dtype::F16 => quant::f16_bytes_to_f32(bytes, out),
        Dtype::BF16 => quant::bf16_bytes_to_f32(bytes, out),
        other => unreachable!("read_f32 on non-float dtype {other:?} (checked by the planner)"),
    }
}

/// `max(mean |W|, 1e-5)` over the whole tensor, accumulated in f64.
pub(crate) fn absmean_scale(t: &TensorRef<'_>) -> f32 {
    let n = t.n_elements();
    let mut buf = Vec::with_capacity(CHUNK);
    let mut sum = 0f64;
    let mut start = 0;
    while start < n {
        let len = CHUNK.min(n - start);
        read_f32(t, start, len, &mut buf);
        sum += buf.iter().map(|v| f64::from(v.abs())).sum::<f64>();
        start += len;
    }
    let mean = if n == 0 { 0.0 } else { (sum / n as f64) as f32 };
    mean.max(MIN_SCALE)
}

/// `clamp(round(w / s), -1, 1)` with round-half-to-even (torch's `round`), computed as
/// `w * (1 / s)` like transformers does.
pub(crate) fn ternarize(w: &[f32], scale: f32, codes: &mut [i8]) {
    let inv = 1.0 / scale;
    for (c, &v) in codes.iter_mut().zip(w) {
        *c = (v * inv).round_ties_even().clamp(-1.0, 1.0) as i8;
    }
}

/// Row `r` of a transformers-packed ternary weight: the uint8 tensor has `out / 4` rows; packed
/// row `p` holds output rows `p`, `p + out/4`, `p + 2·out/4`, `p + 3·out/4` in bit pairs 0-1, 2-3,
/// 4-5, 6-7, each as `code + 1` (transformers `unpack_weights`).
pub(crate) fn unpack_row(t: &TensorRef<'_>, r: usize, cols: usize, codes: &mut [i8]) -> Result<()> {
    let packed_rows = t.shape[0];
    let (p, shift) = (r % packed_rows, 2 * (r / packed_rows));
    let row = &t.data[p * cols..(p + 1) * cols];
    for (col, (c, &b)) in codes.iter_mut().zip(row).enumerate() {
        let digit = (b >> shift) & 3;
        if digit == 3 {
            return Err(ConvertError::NotTernary {
                path: t.file.to_path_buf(),
                tensor: t.name.to_string(),
                row: r,
                col,
            });
        }
        *c = digit as i8 - 1;
    }
    Ok(())
}

/// The single value of a scale tensor (shape `[]` or `[1]`), as f32.
pub(crate) fn scalar(t: &TensorRef<'_>) -> Result<f32> {
    if t.n_elements() != 1 || !is_float(t.dtype) {
        return Err(ConvertError::BadTensor {
            path: t.file.to_path_buf(),
            tensor: t.name.to_string(),
            detail: format!("expected a single float scale, found {:?} of shape {:?}", t.dtype, t.shape),
        });
    }
    let mut v = Vec::with_capacity(1);
    read_f32(t, 0, 1, &mut v);
    let s = v[0];
    if !s.is_finite() || s <= 0.0 {
        return Err(ConvertError::BadTensor {
            path: t.file.to_path_buf(),
            tensor: t.name.to_string(),
            detail: format!("scale {s} is not a positive finite number"),
        });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tref<'a>(dtype: Dtype, shape: Vec<usize>, data: &'a [u8]) -> TensorRef<'a> {
        TensorRef { file: Path::new("m.safetensors"), name: "w", dtype, shape, data }
    }

    #[test]
    fn ternarize_rounds_half_to_even() {
        let mut codes = [0i8; 6];
        ternarize(&[0.5, -0.5, 1.5, 0.51, -7.0, 0.0], 1.0, &mut codes);
        assert_eq!(codes, [0, 0, 1, 1, -1, 0]);
    }

    #[test]
    fn absmean_has_a_floor() {
        let data: Vec<u8> = [0f32; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(absmean_scale(&tref(Dtype::F32, vec![2, 2], &data)), MIN_SCALE);
        let data: Vec<u8> = [1f32, -3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(absmean_scale(&tref(Dtype::F32, vec![1, 2], &data)), 2.0);
    }

    #[test]
    fn unpack_follows_transformers_order() {
        // transformers' docstring example: packed [[0b10100001, 0b00011000],
        // [0b10010000, 0b00001010]] unpacks to rows
        // [0,-1],[-1,1],[-1,1],[-1,1],[1,0],[0,-1],[1,-1],[1,-1].
        let packed = [0b1010_0001u8, 0b0001_1000, 0b1001_0000, 0b0000_1010];
        let t = tref(Dtype::U8, vec![2, 2], &packed);
        let want = [[0, -1], [-1, 1], [-1, 1], [-1, 1], [1, 0], [0, -1], [1, -1], [1, -1]];
        for (r, w) in want.iter().enumerate() {
            let mut codes = [9i8; 2];
            unpack_row(&t, r, 2, &mut codes).unwrap();
            assert_eq!(&codes, w, "row {r}");
        }
    }

    #[test]
    fn unpack_rejects_digit_three() {
        let packed = [0b0000_0001u8, 0b0000_1101];
        let t = tref(Dtype::U8, vec![1, 2], &packed);
        let mut codes = [0i8; 2];
        let e = unpack_row(&t, 1, 2, &mut codes).unwrap_err().to_string();
        assert_eq!(e, "m.safetensors: packed tensor 'w' is not ternary: 2-bit value 3 at row 1, column 1");
    }
}
