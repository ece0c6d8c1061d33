//! Q8_0: 32 values in 34 bytes (`block_q8_0`: f16 scale `d`, then 32 signed bytes).

use half::f16;

use super::{check_bytes, check_len};
use crate::error::QuantError;

const NAME: &str = "Q8_0";
/// Values per block.
pub const QK8_0: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = QK8_0 + 2;

/// Quantises like ggml's reference: `d = max|x| / 127`, `q = round(x / d)`.
pub fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    check_len(NAME, x.len(), QK8_0)?;
    out.reserve(x.len() / QK8_0 * BLOCK_BYTES);
    for block in x.chunks_exact(QK8_0) {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    Ok(())
}

/// Dequantises: `q * d`.
pub fn dequantize_q8_0(bytes: &[u8], out: &mut Vec<f32>) -> Result<(), QuantError> {
    check_bytes(NAME, bytes.len(), BLOCK_BYTES)?;
    for block in bytes.chunks_exact(BLOCK_BYTES) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_block() {
        let mut x = vec![0f32; QK8_0];
        x[0] = 127.0;
        x[1] = -63.5; // rounds away from zero to -64
        x[2] = 1.0;
        let mut out = Vec::new();
        quantize_q8_0(&x, &mut out).unwrap();
        assert_eq!(out.len(), BLOCK_BYTES);
        assert_eq!(&out[..2], &[0x00, 0x3c]); // d = 1.0
        assert_eq!(out[2], 127);
        assert_eq!(out[3] as i8, -64);
        assert_eq!(out[4], 1);
        let mut y = Vec::new();
        dequantize_q8_0(&out, &mut y).unwrap();
        assert_eq!(y[0], 127.0);
        assert_eq!(y[1], -64.0);
    }

    #[test]
    fn round_trip_is_close() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.0) * 0.013).collect();
        let mut out = Vec::new();
        quantize_q8_0(&x, &mut out).unwrap();
        let mut y = Vec::new();
        dequantize_q8_0(&out, &mut y).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 0.004, "{a} vs {b}");
        }
    }
}
