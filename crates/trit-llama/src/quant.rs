//! ggml's own (de)quantisers, for checking trit's formats against llama.cpp's.

use crate::{Error, Result};

/// Dequantise `n` values of ggml type id `ty` from `bytes` with ggml's `to_float`.
pub fn ggml_to_float(ty: u32, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    if ty >= trit_sys::GGML_TYPE_COUNT {
        return Err(Error::Invalid(format!("unknown ggml type {ty}")));
    }
    // SAFETY: ty is a valid ggml_type; the traits table is static.
    let traits = unsafe { &*trit_sys::ggml_get_type_traits(ty as trit_sys::ggml_type) };
    let block = traits.blck_size as usize;
    if block == 0 || !n.is_multiple_of(block) || bytes.len() != n / block * traits.type_size {
        return Err(Error::Invalid(format!(
            "ggml type {ty}: {} bytes cannot hold {n} values (block {block}, {} bytes per block)",
            bytes.len(),
            traits.type_size
        )));
    }
    let to_float = traits.to_float.ok_or_else(|| Error::Invalid(format!("ggml type {ty} has no to_float")))?;
    let mut out = vec![0f32; n];
    // SAFETY: bytes holds exactly n/block blocks of this type, out has room for n floats.
    unsafe { to_float(bytes.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
    Ok(out)
}
