//! F16 / BF16 / F32 element conversions (little-endian bytes).

use half::{bf16, f16};

/// Appends `xs` as little-endian IEEE half floats (round to nearest even, as ggml does).
pub fn f32_to_f16_bytes(xs: &[f32], out: &mut Vec<u8>) {
    out.reserve(xs.len() * 2);
    for &x in xs {
        out.extend_from_slice(&f16::from_f32(x).to_le_bytes());
    }
}

/// Decodes little-endian half floats; a trailing odd byte is ignored.
pub fn f16_bytes_to_f32(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()));
}

/// Decodes little-endian bfloat16 values; a trailing odd byte is ignored.
pub fn bf16_bytes_to_f32(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()));
}
