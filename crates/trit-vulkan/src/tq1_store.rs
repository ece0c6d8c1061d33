//! TQ1_0 weights held as TQ2_0 blocks in our buffers.
//!
//! TQ1_0's base-3 digits cost the mat-vecs arithmetic on the critical path of every row, so
//! TQ1_0 decode ran ~10–15% slower than TQ2_0 on the same GPU although it reads 18% fewer
//! bytes (README, decode rounds 12–14). Our buffers therefore store a TQ1_0 tensor's blocks
//! re-encoded as TQ2_0 blocks (66 bytes instead of 54, lossless: the same weights and f16
//! scale, `trit_kernels::repack`) and every kernel reads it as TQ2_0, as the CPU's repack
//! buffer type does. ggml still sees a TQ1_0 tensor: `set_tensor` / `get_tensor` take and
//! give TQ1_0 bytes, and the buffer type's allocation size is the re-encoded one.
//!
//! Inside this crate a stored tensor's type ([`crate::ops::ty`]), strides
//! ([`crate::ops::nb`]), span and offset ([`crate::dispatch::locate`]) are the TQ2_0
//! layout's: each is ggml's TQ1_0 figure scaled by 66/54 from the start of the tensor the
//! bytes belong to, which is exact for whole blocks (every TQ1_0 stride and size is a
//! multiple of 54).
//!
//! `TRIT_VULKAN_TQ1_AS_TQ2=0` keeps TQ1_0 weights as stored (22% less memory for them) and
//! runs the TQ1_0 kernels; read once, before the first buffer.

use trit_kernels::formats::{TQ1_0_BYTES, TQ2_0_BYTES};
use trit_sys as sys;

const TQ1: u64 = TQ1_0_BYTES as u64;
const TQ2: u64 = TQ2_0_BYTES as u64;

/// Whether TQ1_0 tensors in our buffers are re-encoded (on unless `TRIT_VULKAN_TQ1_AS_TQ2=0`).
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRIT_VULKAN_TQ1_AS_TQ2").map_or(true, |v| v.trim() != "0"))
}

/// The tensor whose allocation holds `t`'s bytes (`t` itself unless it is a view).
fn root(t: *const sys::ggml_tensor) -> *const sys::ggml_tensor {
    // SAFETY: t is a live tensor; view_src, when set, is a live tensor too.
    unsafe {
        if (*t).view_src.is_null() {
            t
        } else {
            (*t).view_src
        }
    }
}

/// Whether `t`'s bytes, once in one of our buffers, are held re-encoded.
fn reencoded(t: *const sys::ggml_tensor) -> bool {
    // SAFETY: t is a live tensor.
    (unsafe { (*t).type_ }) == sys::GGML_TYPE_TQ1_0 && enabled()
}

/// Whether `t` is a TQ1_0 tensor whose bytes are TQ2_0 blocks in one of our buffers.
pub(crate) fn is_stored(t: *const sys::ggml_tensor) -> bool {
    // SAFETY: t is a live tensor; `buffer` is null or a live ggml buffer.
    unsafe {
        reencoded(t) && {
            let buf = if (*t).buffer.is_null() { (*root(t)).buffer } else { (*t).buffer };
            crate::ffi::buffer_alloc(buf).is_some()
        }
    }
}

/// A TQ1_0 byte count or stride (whole blocks) in the re-encoded layout.
pub(crate) fn scaled(tq1_bytes: u64) -> u64 {
    tq1_bytes / TQ1 * TQ2 + tq1_bytes % TQ1
}

/// Bytes tensor `t` of `nbytes` (ggml_nbytes) takes in our buffers: re-encoded, partial
/// blocks rounded up, for a TQ1_0 tensor.
pub(crate) fn alloc_size(t: *const sys::ggml_tensor, nbytes: u64) -> u64 {
    if reencoded(t) {
        stored_alloc(nbytes)
    } else {
        nbytes
    }
}

fn stored_alloc(tq1_bytes: u64) -> u64 {
    tq1_bytes.div_ceil(TQ1) * TQ2
}

/// Offset in the allocation of `t`'s first byte, given ggml's (TQ1_0) offset `off`: the
/// distance from the root tensor's start scaled to the re-encoded layout. None when a view
/// starts inside a block.
pub(crate) fn stored_offset(t: *const sys::ggml_tensor, off: u64) -> Option<u64> {
    let r = root(t);
    if r == t {
        return Some(off);
    }
    // SAFETY: r is a live tensor placed in the same buffer.
    let base = (unsafe { (*r).data } as u64).wrapping_sub(crate::ffi::FAKE_BASE);
    let into = off.checked_sub(base)?;
    (into % TQ1 == 0).then(|| base + scaled(into))
}

/// The re-encoded span of a `set_tensor` / `get_tensor` of `size` TQ1_0 bytes at `offset`
/// into the tensor: (offset, bytes) in the stored layout, or an error for a part of a block
/// (the re-encoding works on whole blocks).
pub(crate) fn stored_span(offset: usize, size: usize) -> Result<(u64, u64), String> {
    let (o, n) = (offset as u64, size as u64);
    if o % TQ1 != 0 || n % TQ1 != 0 {
        return Err(format!(
            "a TQ1_0 tensor is read and written in whole 54-byte blocks (offset {offset}, size {size})"
        ));
    }
    Ok((scaled(o), scaled(n)))
}

/// TQ1_0 blocks → TQ2_0 blocks (`dst` holds room for as many).
pub(crate) fn to_tq2(src: &[u8], dst: &mut [u8]) {
    trit_kernels::repack::tq1_to_tq2(src, dst);
}

/// TQ2_0 blocks → ggml's canonical TQ1_0 blocks for the same weights.
pub(crate) fn to_tq1(src: &[u8], dst: &mut [u8]) {
    trit_kernels::repack::tq2_to_tq1(src, dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_scale_by_whole_blocks() {
        assert_eq!(scaled(0), 0);
        assert_eq!(scaled(54), 66);
        assert_eq!(scaled(540 * 7), 660 * 7);
        assert_eq!(stored_alloc(54 * 10), 660);
        assert_eq!(stored_alloc(55), 132);
        assert_eq!(stored_span(540, 1080), Ok((660, 1320)));
        assert!(stored_span(10, 54).is_err());
        assert!(stored_span(0, 53).is_err());
    }
}
