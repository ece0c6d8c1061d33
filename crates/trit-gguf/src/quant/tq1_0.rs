//! TQ1_0: 256 ternary weights in 54 bytes (1.6875 bits per weight).
//!
//! Block layout (`block_tq1_0`): `qs[48]`, `qh[4]`, then the f16 scale `d`. Digits are
//! `code + 1` (0, 1, 2) and several are packed into one byte as a base-3 number, first digit
//! most significant, then scaled into 0..=255 as `ceil(q * 256 / 243)` so that a digit can be
//! read back with a multiply and a shift:
//!
//! * `qs[0..32]`: byte `m` holds weights `m + 32n` for n = 0..5 (weights 0..160),
//! * `qs[32..48]`: byte `m` holds weights `160 + m + 16n` for n = 0..5 (weights 160..240),
//! * `qh[0..4]`: byte `j` holds weights `240 + j + 4n` for n = 0..4 and a fifth digit 0.

use half::f16;

use super::{check_bytes, pack_ternary, quantize_ternary_ref, QK_K};
use crate::error::QuantError;

const NAME: &str = "TQ1_0";
const QS: usize = 48;
const QH: usize = 4;
/// Bytes per block.
pub const BLOCK_BYTES: usize = QS + QH + 2;

/// Five base-3 digits (first most significant) to one byte, rounding the scale-up upwards.
fn encode5(digits: [u8; 5]) -> u8 {
    let q = digits.iter().fold(0u16, |q, &t| q * 3 + u16::from(t));
    (q * 256).div_ceil(243) as u8
}

/// Digit `n` (0 = most significant) of an encoded byte.
fn decode(byte: u8, n: u32) -> u8 {
    let shifted = byte.wrapping_mul(3u8.pow(n));
    ((u16::from(shifted) * 3) >> 8) as u8
}

fn pack_block(digits: &[u8; QK_K], d: f32, out: &mut Vec<u8>) {
    let digit = |i: usize| digits[i];
    for m in 0..32 {
        out.push(encode5(std::array::from_fn(|n| digit(m + 32 * n))));
    }
    for m in 0..16 {
        out.push(encode5(std::array::from_fn(|n| digit(160 + m + 16 * n))));
    }
    for j in 0..QH {
        out.push(encode5(std::array::from_fn(|n| if n < 4 { digit(240 + j + 4 * n) } else { 0 })));
    }
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
}

/// Packs ternary codes (length a multiple of 256) with the same scale `d` in every block.
pub fn pack_tq1_0(codes: &[i8], d: f32, out: &mut Vec<u8>) -> Result<(), QuantError> {
    pack_ternary(NAME, codes, d, BLOCK_BYTES, out, pack_block)
}

/// ggml's reference float quantiser: per block `d = max|x|`, digits `round(x / d) + 1`.
pub fn quantize_tq1_0_ref(x: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    quantize_ternary_ref(NAME, x, out, pack_block)
}

/// Unpacks codes (`digit - 1`) in weight order and returns each block's `d`.
pub fn unpack_tq1_0(bytes: &[u8], codes: &mut Vec<i8>) -> Result<Vec<f32>, QuantError> {
    check_bytes(NAME, bytes.len(), BLOCK_BYTES)?;
    let mut scales = Vec::with_capacity(bytes.len() / BLOCK_BYTES);
    codes.reserve(bytes.len() / BLOCK_BYTES * QK_K);
    for block in bytes.chunks_exact(BLOCK_BYTES) {
        let (qs, rest) = block.split_at(QS);
        let (qh, d) = rest.split_at(QH);
        for group in [&qs[..32], &qs[32..]] {
            for n in 0..5 {
                codes.extend(group.iter().map(|&b| decode(b, n) as i8 - 1));
            }
        }
        for n in 0..4 {
            codes.extend(qh.iter().map(|&b| decode(b, n) as i8 - 1));
        }
        scales.push(f16::from_le_bytes([d[0], d[1]]).to_f32());
    }
    Ok(scales)
}

/// Dequantises to floats: `code * d`.
pub fn dequantize_tq1_0(bytes: &[u8], out: &mut Vec<f32>) -> Result<(), QuantError> {
    let mut codes = Vec::new();
    let scales = unpack_tq1_0(bytes, &mut codes)?;
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
        (0..3 * QK_K)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((s >> 16) % 3) as i8 - 1
            })
            .collect()
    }

    #[test]
    fn every_five_digit_byte_decodes() {
        for q in 0..243u16 {
            let digits: [u8; 5] = std::array::from_fn(|n| ((q / 3u16.pow(4 - n as u32)) % 3) as u8);
            let b = encode5(digits);
            for (n, &want) in digits.iter().enumerate() {
                assert_eq!(decode(b, n as u32), want, "q={q} n={n}");
            }
        }
    }

    #[test]
    fn codes_round_trip() {
        let codes = pattern(11);
        let mut bytes = Vec::new();
        pack_tq1_0(&codes, 1.0, &mut bytes).unwrap();
        assert_eq!(bytes.len(), 3 * BLOCK_BYTES);
        let mut back = Vec::new();
        let d = unpack_tq1_0(&bytes, &mut back).unwrap();
        assert_eq!(back, codes);
        assert_eq!(d, vec![1.0; 3]);
    }

    #[test]
    fn hand_checked_bytes() {
        // All-zero codes: every digit is 1, q = 11111 (base 3) = 121, ceil(121*256/243) = 128.
        // The qh bytes hold 1111 and a 0 digit: q = 11110 (base 3) = 120, ceil(120*256/243) = 127.
        let codes = vec![0i8; QK_K];
        let mut bytes = Vec::new();
        pack_tq1_0(&codes, 1.0, &mut bytes).unwrap();
        assert!(bytes[..48].iter().all(|&b| b == 128));
        assert!(bytes[48..52].iter().all(|&b| b == 127));
        assert_eq!(&bytes[52..54], &[0x00, 0x3c]);

        // All +1: digits 2, q = 22222 = 242 -> (242*256+242)/243 = 255; qh 22220 = 240 -> 253.
        let mut bytes = Vec::new();
        pack_tq1_0(&[1i8; QK_K], 1.0, &mut bytes).unwrap();
        assert!(bytes[..48].iter().all(|&b| b == 255));
        assert!(bytes[48..52].iter().all(|&b| b == 253));

        // Weight 0 = +1, weight 32 = -1, rest 0: byte 0 digits 2,0,1,1,1 = 162+0+9+3+1 = 175 ->
        // ceil(175*256/243) = 185 (175*256 = 44800, +242 = 45042, /243 = 185.3).
        let mut codes = vec![0i8; QK_K];
        codes[0] = 1;
        codes[32] = -1;
        // weight 243 is qh byte 3 (243 = 240 + 3 + 4*0), first digit: 2,1,1,1,0 -> 162+27+9+3 = 201
        // -> (201*256+242)/243 = 212.
        codes[243] = 1;
        let mut bytes = Vec::new();
        pack_tq1_0(&codes, 1.0, &mut bytes).unwrap();
        assert_eq!(bytes[0], 185);
        assert_eq!(bytes[51], 212);
    }

    #[test]
    fn matches_float_reference_for_ternary_input() {
        let codes = pattern(5);
        let x: Vec<f32> = codes.iter().map(|&c| f32::from(c) * 0.25).collect();
        let mut a = Vec::new();
        let mut b = Vec::new();
        pack_tq1_0(&codes, 0.25, &mut a).unwrap();
        quantize_tq1_0_ref(&x, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn dequantize_scales() {
        let codes = pattern(8);
        let mut bytes = Vec::new();
        pack_tq1_0(&codes, 2.0, &mut bytes).unwrap();
        let mut y = Vec::new();
        dequantize_tq1_0(&bytes, &mut y).unwrap();
        let want: Vec<f32> = codes.iter().map(|&c| f32::from(c) * 2.0).collect();
        assert_eq!(y, want);
    }
}
