//! Block (de)quantisers written from the ggml block layouts (ggml/src/ggml-common.h).
//!
//! The ternary packers take codes in {-1, 0, 1} plus a block scale and produce bytes identical
//! to what ggml's reference quantiser produces for the float input `code * d`.

mod float;
mod q8_0;
mod tq1_0;
mod tq2_0;

pub use float::{bf16_bytes_to_f32, f16_bytes_to_f32, f32_to_f16_bytes};
pub use q8_0::{dequantize_q8_0, quantize_q8_0};
pub use tq1_0::{dequantize_tq1_0, pack_tq1_0, quantize_tq1_0_ref, unpack_tq1_0};
pub use tq2_0::{dequantize_tq2_0, pack_tq2_0, quantize_tq2_0_ref, unpack_tq2_0};

use crate::error::QuantError;

/// Elements in one k-quant super-block (`QK_K`), the block of TQ1_0 and TQ2_0.
pub const QK_K: usize = 256;

pub(crate) fn check_len(ty: &'static str, len: usize, block: usize) -> Result<(), QuantError> {
    if len % block != 0 {
        return Err(QuantError::Length { ty, len, block });
    }
    Ok(())
}

pub(crate) fn check_bytes(ty: &'static str, len: usize, block_bytes: usize) -> Result<(), QuantError> {
    if len % block_bytes != 0 {
        return Err(QuantError::Bytes { ty, len, block_bytes });
    }
    Ok(())
}

/// Checks that every code is -1, 0 or 1.
pub(crate) fn check_ternary(ty: &'static str, codes: &[i8]) -> Result<(), QuantError> {
    match codes.iter().position(|c| !(-1..=1).contains(c)) {
        Some(index) => Err(QuantError::NotTernary { ty, index, value: codes[index] }),
        None => Ok(()),
    }
}

/// Writes one 256-weight ternary block from its digits (code + 1) and block scale `d`.
pub(crate) type PackBlock = fn(&[u8; QK_K], f32, &mut Vec<u8>);

/// Packs ternary codes (length a multiple of 256) with the same scale `d` in every block.
pub(crate) fn pack_ternary(
    ty: &'static str,
    codes: &[i8],
    d: f32,
    block_bytes: usize,
    out: &mut Vec<u8>,
    pack_block: PackBlock,
) -> Result<(), QuantError> {
    check_len(ty, codes.len(), QK_K)?;
    check_ternary(ty, codes)?;
    out.reserve(codes.len() / QK_K * block_bytes);
    for block in codes.chunks_exact(QK_K) {
        pack_block(&std::array::from_fn(|i| (block[i] + 1) as u8), d, out);
    }
    Ok(())
}

/// ggml's reference float quantiser for the ternary types: per block `d = max|x|`, digits
/// `round(x / d) + 1`.
pub(crate) fn quantize_ternary_ref(
    ty: &'static str,
    x: &[f32],
    out: &mut Vec<u8>,
    pack_block: PackBlock,
) -> Result<(), QuantError> {
    check_len(ty, x.len(), QK_K)?;
    for block in x.chunks_exact(QK_K) {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
        pack_block(&std::array::from_fn(|i| float_trit(block[i], id)), amax, out);
    }
    Ok(())
}

/// ggml's `lroundf(x * id) + 1` mapping of a float to a trit digit 0, 1, 2 (`lroundf` rounds
/// halves away from zero, as `f32::round` does). Inputs outside [-1, 1] clamp, as in ggml the
/// quantiser only ever sees `|x * id| <= 1`.
pub(crate) fn float_trit(x: f32, id: f32) -> u8 {
    ((x * id).round() as i32 + 1).clamp(0, 2) as u8
}
