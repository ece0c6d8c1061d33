//! Q8_K quantization of f32 activations (the int8 side of every TQ1_0/TQ2_0 product), with
//! AVX2 and AVX-512 paths that write the same bytes as the scalar
//! [`crate::formats::quantize_q8k`] and ggml's `quantize_row_q8_K_ref`.
//!
//! ggml-cpu's x86 build quantizes with that scalar reference (its ARM build has a NEON one):
//! a branch per element to find the block's largest magnitude, one rounding and one store per
//! element, the sums one by one. On the 2-core Zen 4 dev VM that was 4.6% of AVX-512 prefill
//! and ~1.3% of one-thread decode. With trit's kernels installed, ggml-cpu calls this instead
//! (vendor patch 0012) wherever it converts f32 to Q8_K.
//!
//! **Why the bytes are the same.** Per block of 256: the largest magnitude is a maximum, which
//! does not depend on order; its first occurrence gives `max` with its sign, as the scalar
//! loop's strict `>` does; `iscale = −127 / max`, each quant `min(127, round(iscale·x))` with
//! the same f32 multiply and round-to-nearest-even (the vector conversion under the default
//! MXCSR rounding, the scalar `nearest_int`'s magic-number addition, Rust's
//! `round_ties_even`: all equal while |iscale·x| ≤ 127·(1 + 2⁻²³)); the 16 sums are integer
//! sums; `d = 1 / iscale`. Blocks with a NaN or infinite value, or whose `iscale` overflows
//! (a largest magnitude under ~3.7·10⁻³⁷), are not taken (`false`): the caller falls back to
//! the reference, where such blocks get whatever its integer conversion gives.

use crate::formats::{Q8_K_BYTES, QK};
use crate::Isa;

/// Quantize `x` (a multiple of 256 values) into `out` (`x.len() / 256` Q8_K blocks) with the
/// fastest path `isa` offers. Returns false, with `out` partly written, when a block has a
/// value the vector paths do not take (see the module docs) or there is no vector path; the
/// caller then quantizes the whole row with the reference.
pub fn quantize_q8k_into(isa: Isa, x: &[f32], out: &mut [u8]) -> bool {
    if !x.len().is_multiple_of(QK) || out.len() != x.len() / QK * Q8_K_BYTES {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let blocks = x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_K_BYTES));
        match isa {
            // SAFETY: Avx512Vnni is only detected (or accepted) where AVX-512 F/BW run.
            Isa::Avx512Vnni => return blocks.into_iter().all(|(xb, ob)| unsafe { x86::block_avx512(xb, ob) }),
            // SAFETY: these ISAs are only detected (or accepted) where AVX2 runs.
            Isa::Avx2 | Isa::AvxVnni => return blocks.into_iter().all(|(xb, ob)| unsafe { x86::block_avx2(xb, ob) }),
            _ => {}
        }
    }
    let _ = isa;
    false
}

/// Whether `isa` has a vector Q8_K quantizer here.
pub fn has_vector_path(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && matches!(isa, Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::QK;
    use std::arch::x86_64::*;

    /// Writes sum `g` of block `ob` (the sums go straight from a register to their two bytes:
    /// collected in an array of i32 first, they came back as vector loads of scalar stores,
    /// which stalled on store forwarding; ~2% of a real prefill on Zen 4).
    #[inline(always)]
    fn put_sum(ob: &mut [u8], g: usize, s: i32) {
        ob[4 + QK + 2 * g..6 + QK + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
    }

    /// `−127 / max` if it is finite (the vector paths' precondition).
    fn iscale_of(max: f32) -> Option<f32> {
        let iscale = -127.0 / max;
        iscale.is_finite().then_some(iscale)
    }

    /// One block, AVX-512: the 256 values held in 16 registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BW; `xb` is 256 values, `ob` 292 bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn block_avx512(xb: &[f32], ob: &mut [u8]) -> bool {
        debug_assert!(xb.len() == QK && ob.len() == super::Q8_K_BYTES);
        let p = xb.as_ptr();
        let inf = _mm512_set1_ps(f32::INFINITY);
        let mut v = [_mm512_setzero_ps(); 16];
        let mut amax = _mm512_setzero_ps();
        let mut finite: u16 = 0xffff;
        for i in 0..16 {
            // SAFETY: 16 vectors of 16 floats are the block's 256 values.
            v[i] = unsafe { _mm512_loadu_ps(p.add(16 * i)) };
            let a = _mm512_abs_ps(v[i]);
            finite &= _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, inf);
            amax = _mm512_max_ps(amax, a);
        }
        if finite != 0xffff {
            return false;
        }
        let amax = _mm512_reduce_max_ps(amax);
        if amax == 0.0 {
            ob.fill(0); // d = 0, quants 0 (the reference leaves the sums; these are 0)
            return true;
        }
        // Plain loops here and below: iterator adaptors are not compiled with this
        // function's target features, so their closures would not inline.
        let target = _mm512_set1_ps(amax);
        let mut first = 0;
        for i in 0..16 {
            let m = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(v[i]), target);
            if m != 0 {
                first = 16 * i + m.trailing_zeros() as usize;
                break;
            }
        }
        let Some(iscale) = iscale_of(xb[first]) else { return false };
        let is = _mm512_set1_ps(iscale);
        let top = _mm512_set1_epi32(127);
        ob[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        let qs = ob[4..4 + QK].as_mut_ptr();
        for i in 0..16 {
            let q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v[i], is)), top);
            // SAFETY: 16 bytes at 16·i of the block's 256 quant bytes.
            unsafe { _mm_storeu_si128(qs.add(16 * i) as *mut __m128i, _mm512_cvtsepi32_epi8(q)) };
            put_sum(ob, i, _mm512_reduce_add_epi32(q)); // one register is one group of 16
        }
        true
    }

    /// One block, AVX2: three passes over the block in L1 (16 registers cannot hold it).
    ///
    /// # Safety
    /// The CPU must have AVX2; `xb` is 256 values, `ob` 292 bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block_avx2(xb: &[f32], ob: &mut [u8]) -> bool {
        debug_assert!(xb.len() == QK && ob.len() == super::Q8_K_BYTES);
        let p = xb.as_ptr();
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let inf = _mm256_set1_ps(f32::INFINITY);
        // SAFETY (every load below): 32 vectors of 8 floats are the block's 256 values.
        let load = |i: usize| unsafe { _mm256_loadu_ps(p.add(8 * i)) };
        let mut amax = _mm256_setzero_ps();
        let mut finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        for i in 0..32 {
            let a = _mm256_and_ps(load(i), abs);
            finite = _mm256_and_ps(finite, _mm256_cmp_ps::<_CMP_LT_OQ>(a, inf));
            amax = _mm256_max_ps(amax, a);
        }
        if _mm256_movemask_ps(finite) != 0xff {
            return false;
        }
        let amax = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps::<1>(amax));
        let amax = _mm_max_ps(amax, _mm_movehl_ps(amax, amax));
        let amax = _mm_cvtss_f32(_mm_max_ss(amax, _mm_shuffle_ps::<1>(amax, amax)));
        if amax == 0.0 {
            ob.fill(0); // d = 0, quants 0 (the reference leaves the sums; these are 0)
            return true;
        }
        let target = _mm256_set1_ps(amax);
        let mut first = 0;
        for i in 0..32 {
            let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_and_ps(load(i), abs), target));
            if m != 0 {
                first = 8 * i + m.trailing_zeros() as usize;
                break;
            }
        }
        let Some(iscale) = iscale_of(xb[first]) else { return false };
        let is = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        ob[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        let qs = ob[4..4 + QK].as_mut_ptr();
        // The packs interleave 128-bit lanes; this puts the 32 bytes back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for i in 0..8 {
            let q = |j: usize| _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(load(4 * i + j), is)), top);
            let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3));
            let w = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
            let w = _mm256_permutevar8x32_epi32(w, order);
            // SAFETY: 32 bytes at 32·i of the block's 256 quant bytes.
            unsafe { _mm256_storeu_si256(qs.add(32 * i) as *mut __m256i, w) };
            // Groups 2i and 2i + 1: the sums of (q0, q1) and of (q2, q3), side by side.
            let h = _mm256_hadd_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
            let h = _mm256_hadd_epi32(h, h);
            let h = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
            put_sum(ob, 2 * i, _mm_cvtsi128_si32(h));
            put_sum(ob, 2 * i + 1, _mm_extract_epi32::<1>(h));
        }
        true
    }
}
