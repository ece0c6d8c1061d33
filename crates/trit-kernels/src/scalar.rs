//! The portable scalar path: the reference every SIMD path must equal bit for bit.
//!
//! Arithmetic contract (shared by all paths, which is what makes them exactly equal):
//! for each 256-block `b`, `isum = Σ code·a − Σ a` in i32 (codes 0..=2, so this is
//! Σ value·a exactly), then `acc = acc + (dw · da) · (isum as f32)` in f32, blocks in order,
//! no fused multiply-add.

use crate::formats::{q8k_scale, q8k_sum, Q8_K_BYTES, QK};

/// Decode `nb` blocks of one row into codes (`nb·256` bytes) and scales.
pub(crate) fn decode_row(ty: crate::TernaryType, row: &[u8], codes: &mut [u8], scales: &mut [f32], stride: usize) {
    let bb = ty.block_bytes();
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        let c: &mut [u8; QK] = (&mut codes[b * QK..(b + 1) * QK]).try_into().unwrap();
        crate::formats::decode_codes(ty, blk, c);
        scales[b * stride] = crate::formats::block_scale(ty, blk);
    }
}

/// One block's integer dot product: Σ code·a − Σ a.
#[inline(always)]
pub(crate) fn block_isum(codes: &[u8], act_block: &[u8]) -> i32 {
    let mut s = 0i32;
    for i in 0..QK {
        s += codes[i] as i32 * act_block[4 + i] as i8 as i32;
    }
    s - q8k_sum(act_block)
}

/// `out[c][r]` for R rows of decoded codes (row `r` at `codes[r·k..]`, scales `dw[b·4 + r]`)
/// against the Q8_K rows `acts[c]`.
pub(crate) fn dot_tile(codes: &[u8], k: usize, dw: &[f32], acts: &[&[u8]], out: &mut [[f32; 4]; 4]) {
    let nb = k / QK;
    for (c, act) in acts.iter().enumerate() {
        for r in 0..4 {
            let mut acc = 0f32;
            for b in 0..nb {
                let ab = &act[b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES];
                let isum = block_isum(&codes[r * k + b * QK..r * k + (b + 1) * QK], ab);
                acc += (dw[b * 4 + r] * q8k_scale(ab)) * isum as f32;
            }
            out[c][r] = acc;
        }
    }
}
