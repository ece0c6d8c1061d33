//! What attention's per-head f16 products may leave out without changing a bit of the
//! result: the KV positions a decode token cannot see.
//!
//! llama.cpp pads the KV cache's view to a multiple of 256 cells (so that its graphs can be
//! reused), and attention runs over all of them: at a 40-token context a decode token still
//! computes 256 K·Q products per head, and 216 of them are hidden by the mask.
//!
//! * **K·Q**: vendor patch 0015 offers the SOFT_MAX that follows the product to the MUL_MAT
//!   hook as a hint. Positions from the last one that the mask leaves visible (to any column,
//!   in any of its slices) onwards get `0` instead of their product: SOFT_MAX adds the mask's
//!   −∞ to either, so both come out of it as exact zeros, and every other output is the same.
//! * **V·softmax**: the softmax rows are the activations, and they are exact zeros at those
//!   positions. A suffix of exact-zero activations is left out in whole 64-element steps of
//!   the f16 kernel's lanes: each skipped term is a ±0 added to a lane that (starting at +0
//!   and summed in round-to-nearest) is never −0, so no lane changes. This holds for finite
//!   weights; a cache cell holding ±∞ or NaN at a hidden position would give NaN unskipped.

use trit_sys as sys;

/// The f16 kernels' lane step: a reduction length that keeps every lane's terms in order.
const LANE_STEP: usize = 64;

/// How many of `dst`'s rows (K·Q: one per KV position) the SOFT_MAX `sm` can see: one past
/// the last row whose mask value is not −∞ for some column `t < n` in some mask slice the
/// product's `ne12 × ne13` heads use; `rows` when the hint does not apply (no mask, attention
/// sinks, a mask type other than F32/F16, or a shape the SOFT_MAX would not accept).
///
/// # Safety
/// `sm` and `mm` are live tensors of the graph being computed, their sources allocated.
pub(crate) unsafe fn visible_rows(
    sm: &sys::ggml_tensor,
    mm: &sys::ggml_tensor,
    rows: usize,
    n: usize,
    ne12: usize,
    ne13: usize,
) -> usize {
    let mask = sm.src[1];
    if !std::ptr::eq(sm.src[0], mm) || mask.is_null() || !sm.src[2].is_null() {
        return rows;
    }
    // SAFETY: the function's contract (a live source of a live node).
    let m = unsafe { &*mask };
    let (mne0, mne1, mne2, mne3) = (m.ne[0] as usize, m.ne[1] as usize, m.ne[2] as usize, m.ne[3] as usize);
    let hidden: fn(*const u8) -> bool = match m.type_ {
        // SAFETY (both): the caller passes a pointer to one element inside the mask.
        sys::GGML_TYPE_F32 => |p| unsafe { std::ptr::read_unaligned(p as *const f32) } == f32::NEG_INFINITY,
        sys::GGML_TYPE_F16 => |p| unsafe { std::ptr::read_unaligned(p as *const u16) } == 0xFC00,
        _ => return rows,
    };
    if mne0 != rows || mne1 < n || mne2 == 0 || mne3 == 0 || m.data.is_null() {
        return rows;
    }
    let mut visible = 0;
    for j3 in 0..mne3.min(ne13) {
        for j2 in 0..mne2.min(ne12) {
            for t in 0..n {
                // SAFETY: t < ne1, j2 < ne2, j3 < ne3 and each row has `rows` elements of
                // the mask's type at nb[0] apart: every element read lies inside the mask.
                let row = unsafe { (m.data as *const u8).add(t * m.nb[1] + j2 * m.nb[2] + j3 * m.nb[3]) };
                let last = (visible..rows).rev().find(|&i| !hidden(row.wrapping_add(i * m.nb[0])));
                if let Some(i) = last {
                    visible = i + 1;
                }
            }
        }
    }
    // A row hidden everywhere: nothing to gain, and SOFT_MAX's result for it is its own.
    if visible == 0 {
        rows
    } else {
        visible
    }
}

/// The reduction length that leaves out the exact-zero suffix shared by the `n` f16
/// activation rows in `act` (row `c` at `act[c·k..][..k]`): `k`, or a multiple of
/// [`LANE_STEP`] below it past which every activation is ±0 (at least one step).
pub(crate) fn nonzero_prefix(act: &[u16], k: usize, n: usize) -> usize {
    let mut last = 0;
    for c in 0..n {
        let row = &act[c * k..(c + 1) * k];
        if let Some(i) = row[last..].iter().rposition(|&h| h & 0x7FFF != 0) {
            last += i + 1;
        }
    }
    last.div_ceil(LANE_STEP).max(1).saturating_mul(LANE_STEP).min(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_prefix_keeps_whole_lane_steps() {
        let k = 256;
        let mut act = vec![0u16; 2 * k];
        assert_eq!(nonzero_prefix(&act, k, 2), 64, "all zero: one step");
        act[5] = 0x3C00;
        assert_eq!(nonzero_prefix(&act, k, 2), 64);
        act[k + 64] = 0x3C00;
        assert_eq!(nonzero_prefix(&act, k, 2), 128, "the later column decides");
        act[k + 200] = 0x8000; // −0 counts as zero
        assert_eq!(nonzero_prefix(&act, k, 2), 128);
        act[255] = 0x0001; // the smallest subnormal does not
        assert_eq!(nonzero_prefix(&act, k, 2), 256);
        let k = 100; // not a multiple of the step: never past k
        let mut act = vec![0u16; k];
        act[70] = 0x3C00;
        assert_eq!(nonzero_prefix(&act, k, 1), 100);
        act[70] = 0;
        act[10] = 0x3C00;
        assert_eq!(nonzero_prefix(&act, k, 1), 64);
    }
}
