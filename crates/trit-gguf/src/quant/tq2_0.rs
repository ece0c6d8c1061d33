//! TQ2_0: 256 ternary weights in 66 bytes.
//!
//! Block layout (`block_tq2_0`): `qs[64]` then the f16 scale `d`. The 256 weights form two
//! halves of 128; byte `m` (0..32) of a half holds weights `m`, `m+32`, `m+64`, `m+96` of that
//! half in bit pairs 0-1, 2-3, 4-5, 6-7, each stored as `code + 1` (0, 1, 2).

use half::f16;

use super::{check_bytes, pack_ternary, quantize_ternary_ref, QK_K};
use crate::error::QuantError;

const NAME: &str = "TQ2_0";
/// Bytes per block.
pub const BLOCK_BYTES: usize = QK_K / 4 + 2;

fn pack_block(digits: &[u8; QK_K], d: f32, out: &mut Vec<u8>) {
    let digit = |i: usize| digits[i];
    for half in 0..2 {
        let base = half * 128;
        for m in 0..32 {
            let mut byte = 0u8;
            for n in 0..4 {
                byte |= digit(base + m + n * 32) << (2 * n);
            }
            out.push(byte);
        }
    }
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
}

/// Packs ternary codes (length a multiple of 256) with the same scale `d` in every block.
pub fn pack_tq2_0(codes: &[i8], d: f32, out: &mut Vec<u8>) -> Result<(), QuantError> {
    pack_ternary(NAME, codes, d, BLOCK_BYTES, out, pack_block)
}

/// ggml's reference float quantiser: per block `d = max|x|`, digits `round(x / d) + 1`.
pub fn quantize_tq2_0_ref(x: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    quantize_ternary_ref(NAME, x, out, pack_block)
}

/// Unpacks codes (`digit - 1`; a corrupt digit 3 comes back as 2) and returns each block's `d`.
pub fn unpack_tq2_0(bytes: &[u8], codes: &mut Vec<i8>) -> Result<Vec<f32>, QuantError> {
    check_bytes(NAME, bytes.len(), BLOCK_BYTES)?;
    let mut scales = Vec::with_capacity(bytes.len() / BLOCK_BYTES);
    codes.reserve(bytes.len() / BLOCK_BYTES * QK_K);
    for block in bytes.chunks_exact(BLOCK_BYTES) {
        let qs = &block[..QK_K / 4];
        for half in qs.chunks_exact(32) {
            for n in 0..4 {
                codes.extend(half.iter().map(|b| ((b >> (2 * n)) & 3) as i8 - 1));
            }
        }
        scales.push(f16::from_le_bytes([block[QK_K / 4], block[QK_K / 4 + 1]]).to_f32());
    }
    Ok(scales)
}

/// Dequantises to floats: `code * d`.
pub fn dequantize_tq2_0(bytes: &[u8], out: &mut Vec<f32>) -> Result<(), QuantError> {
    let mut codes = Vec::new();
    let scales = unpack_tq2_0(bytes, &mut codes)?;
    for (block, d) in codes.chunks_exact(QK_K).zip(scales) {
        out.extend(block.iter().map(|&c| f32::from(c) * d));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(seed: u32) -> Vec<i8> {
        let mut s = seed;
        (0..2 * QK_K)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((s >> 16) % 3) as i8 - 1
            })
            .collect()
    }

    #[test]
    fn codes_round_trip() {
        let codes = pattern(7);
        let mut bytes = Vec::new();
        pack_tq2_0(&codes, 1.0, &mut bytes).unwrap();
        assert_eq!(bytes.len(), 2 * BLOCK_BYTES);
        let mut back = Vec::new();
        let d = unpack_tq2_0(&bytes, &mut back).unwrap();
        assert_eq!(back, codes);
        assert_eq!(d, vec![1.0, 1.0]);
    }

    #[test]
    fn hand_checked_layout() {
        // Weight 0 -> byte 0 bits 0-1, weight 32 -> byte 0 bits 2-3, weight 96 -> bits 6-7,
        // weight 128 -> byte 32 bits 0-1, weight 255 -> byte 63 bits 6-7. Others are 0 (digit 1).
        let mut codes = vec![0i8; QK_K];
        codes[0] = 1; // digit 2
        codes[32] = -1; // digit 0
        codes[96] = 1; // digit 2
        codes[128] = -1; // digit 0
        codes[255] = 1; // digit 2
        let mut bytes = Vec::new();
        pack_tq2_0(&codes, 1.0, &mut bytes).unwrap();
        // byte 0: digits (w0=2, w32=0, w64=1, w96=2) -> 2 | 0<<2 | 1<<4 | 2<<6 = 0b10_01_00_10
        assert_eq!(bytes[0], 0b1001_0010);
        assert_eq!(bytes[1], 0b0101_0101); // all zeros codes -> digit 1 everywhere
        assert_eq!(bytes[32], 0b0101_0100);
        assert_eq!(bytes[63], 0b1001_0101);
        assert_eq!(&bytes[64..66], &[0x00, 0x3c]); // f16 1.0
    }

    #[test]
    fn matches_float_reference_for_ternary_input() {
        let codes = pattern(99);
        let x: Vec<f32> = codes.iter().map(|&c| f32::from(c)).collect();
        let mut a = Vec::new();
        let mut b = Vec::new();
        pack_tq2_0(&codes, 1.0, &mut a).unwrap();
        quantize_tq2_0_ref(&x, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_bad_input() {
        let mut out = Vec::new();
        assert!(matches!(pack_tq2_0(&[0; 100], 1.0, &mut out), Err(QuantError::Length { .. })));
        let mut codes = vec![0i8; QK_K];
        codes[5] = 2;
        assert_eq!(pack_tq2_0(&codes, 1.0, &mut out), Err(QuantError::NotTernary { ty: NAME, index: 5, value: 2 }));
    }

    #[test]
    fn dequantize_scales() {
        let codes = pattern(3);
        let mut bytes = Vec::new();
        pack_tq2_0(&codes, 0.5, &mut bytes).unwrap();
        let mut y = Vec::new();
        dequantize_tq2_0(&bytes, &mut y).unwrap();
        let want: Vec<f32> = codes.iter().map(|&c| f32::from(c) * 0.5).collect();
        assert_eq!(y, want);
    }
}
