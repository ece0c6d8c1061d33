//! Ternary weights in our buffers: rows split into codes and scales.
//!
//! ggml's TQ2_0 block is 64 bytes of 2-bit codes and an f16 scale, 66 bytes, so a row's code
//! words sit at 2-byte alignment and a mat-vec lane reads them 4 bytes at a time (two loads
//! where a word straddles), each load one more memory round trip on a decode row's critical
//! path. Our buffers hold every TQ2_0 row **split**: its blocks' 64-byte code runs one after
//! another, then its blocks' f16 scales, the row padded to 16 bytes
//! (`kernels/tq_layout.glsl`), so rows start 16-byte aligned and the mat-vec reads four code
//! words per load (`mul_mv_tq.comp`). ggml never sees it: `set_tensor` / `get_tensor` take and
//! give ggml's bytes, and the buffer type's allocation size is the split one (≤ 14 bytes a row
//! more).
//!
//! TQ1_0's base-3 digits cost the mat-vecs arithmetic on the critical path of every row (TQ1_0
//! decode ran 10–15% slower than TQ2_0 although it reads 18% fewer bytes), so a TQ1_0 tensor is
//! also re-encoded as TQ2_0 blocks (lossless: the same weights and f16 scale,
//! `trit_kernels::repack`) and then split, and every kernel reads it as TQ2_0, as the CPU's
//! repack buffer type does. `TRIT_VULKAN_TQ1_AS_TQ2=0` keeps TQ1_0 weights as stored (ggml's
//! 54-byte blocks, 22% less memory for them) for the TQ1_0 kernels; read once, before the first
//! buffer.
//!
//! Inside this crate a held tensor's type ([`crate::ops::ty`]), strides ([`crate::ops::nb`]),
//! span and offset ([`crate::dispatch::locate`]) are the split layout's. That needs whole rows:
//! every stride above the first a multiple of ggml's row and every view starting at a row of
//! its tensor and as long ([`layout_ok`]); `supports_op` declines any other view.

use trit_kernels::formats::{TQ1_0_BYTES, TQ2_0_BYTES};
use trit_sys as sys;

const TQ1: u64 = TQ1_0_BYTES as u64;
const TQ2: u64 = TQ2_0_BYTES as u64;
/// Code bytes of a TQ2_0 block (the scale follows them in ggml's layout).
const CODES: u64 = 64;

/// Whether TQ1_0 tensors in our buffers are re-encoded (on unless `TRIT_VULKAN_TQ1_AS_TQ2=0`).
pub(crate) fn tq1_as_tq2() -> bool {
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

/// ggml's block bytes of `t`'s type where our buffers hold it split (TQ2_0; TQ1_0 unless
/// kept as stored), else None.
fn split_block(t: *const sys::ggml_tensor) -> Option<u64> {
    // SAFETY: t is a live tensor.
    match unsafe { (*t).type_ } {
        sys::GGML_TYPE_TQ2_0 => Some(TQ2),
        sys::GGML_TYPE_TQ1_0 if tq1_as_tq2() => Some(TQ1),
        _ => None,
    }
}

/// Whether `t` is TQ1_0 held as TQ2_0 blocks (where it is in our buffers).
pub(crate) fn reencoded(t: *const sys::ggml_tensor) -> bool {
    split_block(t) == Some(TQ1)
}

/// Whether `t`'s bytes are held split in one of our buffers.
pub(crate) fn is_stored(t: *const sys::ggml_tensor) -> bool {
    // SAFETY: t is a live tensor; `buffer` is null or a live ggml buffer.
    unsafe {
        split_block(t).is_some() && {
            let buf = if (*t).buffer.is_null() { (*root(t)).buffer } else { (*t).buffer };
            crate::ffi::buffer_alloc(buf).is_some()
        }
    }
}

/// Bytes of a split row of `blocks` blocks: codes, scales, padding to 16.
pub(crate) fn row_bytes(blocks: u64) -> u64 {
    (blocks * TQ2).next_multiple_of(16)
}

/// (ggml's row bytes, split row bytes, blocks per row) of the tensor whose allocation holds
/// `t` (a view's rows are its tensor's).
fn rows_of(t: *const sys::ggml_tensor, block: u64) -> (u64, u64, u64) {
    // SAFETY: root(t) is a live tensor.
    let blocks = (unsafe { (*root(t)).ne[0] } as u64) / 256;
    (blocks * block, row_bytes(blocks), blocks)
}

/// Whether `t` (held split) can be read in the split layout: as long a row as its tensor's,
/// every stride above the first whole rows, and starting at a row of its tensor.
pub(crate) fn layout_ok(t: *const sys::ggml_tensor) -> bool {
    let Some(block) = split_block(t) else { return true };
    let (raw_row, _, _) = rows_of(t, block);
    // SAFETY: t and root(t) are live tensors.
    let (ne0, nb, offs) = unsafe { ((*t).ne[0], (*t).nb, (*t).view_offs as u64) };
    raw_row > 0
        && ne0 as u64 == raw_row / block * 256
        && nb[1..].iter().all(|&b| b as u64 % raw_row == 0)
        && offs % raw_row == 0
}

/// A stride of `t` (ggml's bytes, whole rows above the first) in the split layout; the first
/// is TQ2_0's block size.
pub(crate) fn stride(t: *const sys::ggml_tensor, dim: usize, raw: u64) -> u64 {
    let Some(block) = split_block(t) else { return raw };
    let (raw_row, row, _) = rows_of(t, block);
    if dim == 0 {
        raw / block * TQ2
    } else {
        raw.checked_div(raw_row).map_or(raw, |rows| rows * row)
    }
}

/// Bytes from `t`'s first element to one past its last, in the split layout (`nbytes`:
/// ggml_nbytes of `t`).
pub(crate) fn span(t: *const sys::ggml_tensor, nbytes: u64) -> u64 {
    let Some(block) = split_block(t) else { return nbytes };
    let (_, row, _) = rows_of(t, block);
    // SAFETY: t is a live tensor.
    let (ne, nb) = unsafe { ((*t).ne, (*t).nb) };
    row + (1..4).map(|i| (ne[i].max(1) as u64 - 1) * stride(t, i, nb[i] as u64)).sum::<u64>()
}

/// Bytes tensor `t` of `nbytes` (ggml_nbytes) takes in our buffers: whole split rows for a
/// held tensor.
pub(crate) fn alloc_size(t: *const sys::ggml_tensor, nbytes: u64) -> u64 {
    let Some(block) = split_block(t) else { return nbytes };
    // SAFETY: t is a live tensor (the one being allocated, its own root).
    let blocks = (unsafe { (*t).ne[0] } as u64) / 256;
    let raw_row = blocks * block;
    if raw_row == 0 {
        return nbytes;
    }
    nbytes.div_ceil(raw_row) * row_bytes(blocks)
}

/// Offset in the allocation of `t`'s first byte, given ggml's offset `off`: the distance from
/// the root tensor's start in split rows. None when a view starts inside a row.
pub(crate) fn stored_offset(t: *const sys::ggml_tensor, off: u64) -> Option<u64> {
    let r = root(t);
    if r == t {
        return Some(off);
    }
    let (raw_row, row, _) = rows_of(t, split_block(t)?);
    // SAFETY: r is a live tensor placed in the same buffer.
    let base = (unsafe { (*r).data } as u64).wrapping_sub(crate::ffi::FAKE_BASE);
    let into = off.checked_sub(base)?;
    (raw_row > 0 && into % raw_row == 0).then(|| base + into / raw_row * row)
}

/// What a `set_tensor` / `get_tensor` of ggml bytes `[offset, offset + size)` of `t` touches:
/// the split rows `first_row .. first_row + rows` (the allocation's bytes from
/// `stored_offset(t) + first_row * row_bytes`), and the blocks `first_block .. + blocks`
/// (counted from `t`'s first block).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Span {
    pub first_row: u64,
    pub rows: u64,
    pub row_bytes: u64,
    pub blocks_per_row: u64,
    pub first_block: u64,
    pub blocks: u64,
    /// Whether the blocks cover their rows whole (else the rows are read first, so the blocks
    /// outside the write keep their values).
    pub whole_rows: bool,
}

/// The span of a `set_tensor` / `get_tensor` of `size` ggml bytes at `offset` into held
/// tensor `t`, or an error for a part of a block (the layout moves whole blocks).
pub(crate) fn span_of(t: *const sys::ggml_tensor, offset: usize, size: usize) -> Result<Span, String> {
    let block = split_block(t).ok_or("not a held ternary tensor")?;
    let (o, n) = (offset as u64, size as u64);
    if o % block != 0 || n % block != 0 {
        return Err(format!(
            "a ternary tensor is read and written in whole {block}-byte blocks (offset {offset}, size {size})"
        ));
    }
    let (_, row_bytes, bpr) = rows_of(t, block);
    if bpr == 0 {
        return Err("a ternary row shorter than one block".into());
    }
    let (first_block, blocks) = (o / block, n / block);
    let first_row = first_block / bpr;
    let end_row = (first_block + blocks).div_ceil(bpr);
    Ok(Span {
        first_row,
        rows: end_row - first_row,
        row_bytes,
        blocks_per_row: bpr,
        first_block,
        blocks,
        whole_rows: first_block % bpr == 0 && (first_block + blocks) % bpr == 0,
    })
}

/// ggml's bytes (whole blocks of `t`'s type) as TQ2_0 blocks: re-encoded for TQ1_0.
pub(crate) fn to_tq2<'a>(t: *const sys::ggml_tensor, src: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if split_block(t) == Some(TQ1) {
        let mut tq2 = vec![0u8; src.len() / TQ1 as usize * TQ2 as usize];
        trit_kernels::repack::tq1_to_tq2(src, &mut tq2);
        tq2.into()
    } else {
        src.into()
    }
}

/// TQ2_0 blocks as ggml's bytes of `t`'s type into `dst` (canonical TQ1_0 for TQ1_0).
pub(crate) fn from_tq2(t: *const sys::ggml_tensor, tq2: &[u8], dst: &mut [u8]) {
    if split_block(t) == Some(TQ1) {
        trit_kernels::repack::tq2_to_tq1(tq2, dst);
    } else {
        dst.copy_from_slice(tq2);
    }
}

/// Where block `i` of a span (counted from `s.first_block`) lies in its split rows (from row
/// `s.first_row`): the offsets of its 64 code bytes and of its 2 scale bytes.
fn block_at(s: &Span, i: usize) -> (usize, usize) {
    let blk = s.first_block + i as u64;
    let (r, j) = (blk / s.blocks_per_row - s.first_row, blk % s.blocks_per_row);
    let row = r * s.row_bytes;
    ((row + j * CODES) as usize, (row + s.blocks_per_row * CODES + 2 * j) as usize)
}

/// TQ2_0 blocks `s.first_block ..` into the split rows `rows` (from row `s.first_row`).
pub(crate) fn place(s: &Span, tq2: &[u8], rows: &mut [u8]) {
    let c = CODES as usize;
    for (i, b) in tq2.chunks_exact(TQ2 as usize).enumerate() {
        let (codes, scale) = block_at(s, i);
        rows[codes..codes + c].copy_from_slice(&b[..c]);
        rows[scale..scale + 2].copy_from_slice(&b[c..]);
    }
}

/// The split rows' blocks `s.first_block ..` as TQ2_0 blocks into `tq2`.
pub(crate) fn take(s: &Span, rows: &[u8], tq2: &mut [u8]) {
    let c = CODES as usize;
    for (i, b) in tq2.chunks_exact_mut(TQ2 as usize).enumerate() {
        let (codes, scale) = block_at(s, i);
        b[..c].copy_from_slice(&rows[codes..codes + c]);
        b[c..].copy_from_slice(&rows[scale..scale + 2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(first_block: u64, blocks: u64, bpr: u64) -> Span {
        let first_row = first_block / bpr;
        Span {
            first_row,
            rows: (first_block + blocks).div_ceil(bpr) - first_row,
            row_bytes: row_bytes(bpr),
            blocks_per_row: bpr,
            first_block,
            blocks,
            whole_rows: first_block % bpr == 0 && (first_block + blocks) % bpr == 0,
        }
    }

    #[test]
    fn rows_are_codes_then_scales_padded_to_16() {
        assert_eq!(row_bytes(10), 672); // 660 + 12
        assert_eq!(row_bytes(27), 1792); // 1782 + 10
        assert_eq!(row_bytes(8), 528);
        // Three rows of three blocks; block b's bytes are b * 66 + i (mod 256).
        let s = span(0, 9, 3);
        let tq2: Vec<u8> = (0..9 * 66).map(|i| i as u8).collect();
        let mut rows = vec![0u8; 3 * s.row_bytes as usize];
        place(&s, &tq2, &mut rows);
        // Row 1 = blocks 3..6: codes of block 4 at 64..128, its scale at 3 * 64 + 2.
        let row1 = s.row_bytes as usize;
        assert_eq!(rows[row1 + 64..row1 + 128], tq2[4 * 66..4 * 66 + 64]);
        assert_eq!(rows[row1 + 194..row1 + 196], tq2[4 * 66 + 64..5 * 66]);
        let mut back = vec![0u8; tq2.len()];
        take(&s, &rows, &mut back);
        assert_eq!(back, tq2);
        // Blocks 4..8 alone: rows 1..3, not whole; they come back alone.
        let p = span(4, 4, 3);
        assert_eq!((p.first_row, p.rows, p.whole_rows), (1, 2, false));
        let mut part = vec![0u8; 4 * 66];
        take(&p, &rows[row1..], &mut part);
        assert_eq!(part, tq2[4 * 66..8 * 66]);
    }
}
