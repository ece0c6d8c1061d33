//! Ternary weights against f32 activations: `y = W·x` and, for training's input gradient,
//! `dx += Wᵀ·dy`.
//!
//! `gemv_t_f32` equals the scalar path bit for bit on every ISA (each output lane sees the
//! same `dx + (d·dy[r])·t` sequence, and `t ∈ {−1, 0, 1}` makes each product exact).
//! `gemv_f32` sums 8 lanes at a time on AVX2 (4 on NEON), so it equals the scalar path only within
//! float rounding (tests allow 1e-5 relative to Σ|w·x|).

use crate::{decode_row, Isa, KernelError, Weights, QK};

fn check(isa: Isa, in_len: usize, need_in: usize, out_len: usize, need_out: usize) -> Result<(), KernelError> {
    isa.check()?;
    if in_len < need_in {
        return Err(KernelError::ShortBuffer { what: "input", need: need_in, got: in_len });
    }
    if out_len < need_out {
        return Err(KernelError::ShortBuffer { what: "output", need: need_out, got: out_len });
    }
    Ok(())
}

/// `y[r] = Σ_k W[r,k]·x[k]` for every row.
pub fn gemv_f32(isa: Isa, w: &Weights<'_>, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    check(isa, x.len(), w.k, y.len(), w.rows)?;
    let nb = w.k / QK;
    let mut codes = vec![0u8; w.k];
    let mut dw = vec![0f32; nb];
    for (r, yr) in y.iter_mut().enumerate().take(w.rows) {
        decode_row(isa, w.ty, w.row(r), &mut codes, &mut dw, 1);
        let mut acc = 0f32;
        for b in 0..nb {
            let c = &codes[b * QK..(b + 1) * QK];
            let xb = &x[b * QK..(b + 1) * QK];
            let s = match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => {
                    // SAFETY: AVX2 present (checked); `c` and `xb` hold 256 elements each.
                    unsafe { x86f::dot256(c.as_ptr(), xb.as_ptr()) }
                }
                #[cfg(target_arch = "aarch64")]
                Isa::Neon | Isa::NeonDot => {
                    // SAFETY: NEON present (checked); `c` and `xb` hold 256 elements each.
                    unsafe { neonf::dot256(c.as_ptr(), xb.as_ptr()) }
                }
                _ => c.iter().zip(xb).fold(0f32, |s, (&c, &x)| s + (c as f32 - 1.0) * x),
            };
            acc += dw[b] * s;
        }
        *yr = acc;
    }
    Ok(())
}

/// `dx[k] += Σ_r W[r,k]·dy[r]`.
pub fn gemv_t_f32(isa: Isa, w: &Weights<'_>, dy: &[f32], dx: &mut [f32]) -> Result<(), KernelError> {
    check(isa, dy.len(), w.rows, dx.len(), w.k)?;
    let nb = w.k / QK;
    let mut codes = vec![0u8; w.k];
    let mut dw = vec![0f32; nb];
    for (r, &g) in dy.iter().enumerate().take(w.rows) {
        decode_row(isa, w.ty, w.row(r), &mut codes, &mut dw, 1);
        for b in 0..nb {
            let s = dw[b] * g;
            let c = &codes[b * QK..(b + 1) * QK];
            let o = &mut dx[b * QK..(b + 1) * QK];
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => {
                    // SAFETY: AVX2 present (checked); `c` and `o` hold 256 elements each.
                    unsafe { x86f::axpy256(s, c.as_ptr(), o.as_mut_ptr()) }
                }
                #[cfg(target_arch = "aarch64")]
                Isa::Neon | Isa::NeonDot => {
                    // SAFETY: NEON present (checked); `c` and `o` hold 256 elements each.
                    unsafe { neonf::axpy256(s, c.as_ptr(), o.as_mut_ptr()) }
                }
                _ => {
                    for (o, &c) in o.iter_mut().zip(c) {
                        *o += s * (c as f32 - 1.0);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86f {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    unsafe fn trits8(c: *const u8) -> __m256 {
        let v = _mm_loadl_epi64(c as *const __m128i);
        _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), _mm256_set1_ps(1.0))
    }

    /// Σ (c−1)·x over 256 elements, 8 lanes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot256(c: *const u8, x: *const f32) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for i in (0..256).step_by(8) {
            acc = _mm256_add_ps(acc, _mm256_mul_ps(trits8(c.add(i)), _mm256_loadu_ps(x.add(i))));
        }
        let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps::<1>(h, h));
        _mm_cvtss_f32(h)
    }

    /// o[i] += s·(c[i]−1) over 256 elements.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn axpy256(s: f32, c: *const u8, o: *mut f32) {
        let sv = _mm256_set1_ps(s);
        for i in (0..256).step_by(8) {
            let v = _mm256_add_ps(_mm256_loadu_ps(o.add(i)), _mm256_mul_ps(sv, trits8(c.add(i))));
            _mm256_storeu_ps(o.add(i), v);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neonf {
    use std::arch::aarch64::*;

    /// 16 codes (0..=2) at `c` as the trits −1..=1 in four f32 vectors.
    #[target_feature(enable = "neon")]
    unsafe fn trits16(c: *const u8) -> [float32x4_t; 4] {
        let v = vld1q_u8(c);
        let (lo, hi) = (vmovl_u8(vget_low_u8(v)), vmovl_high_u8(v));
        let one = vdupq_n_f32(1.0);
        let f = |w: uint32x4_t| vsubq_f32(vcvtq_f32_u32(w), one);
        [f(vmovl_u16(vget_low_u16(lo))), f(vmovl_high_u16(lo)), f(vmovl_u16(vget_low_u16(hi))), f(vmovl_high_u16(hi))]
    }

    /// Σ (c−1)·x over 256 elements, 4 lanes.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn dot256(c: *const u8, x: *const f32) -> f32 {
        let mut acc = vdupq_n_f32(0.0);
        for i in (0..256).step_by(16) {
            let t = trits16(c.add(i));
            for (q, tq) in t.iter().enumerate() {
                acc = vaddq_f32(acc, vmulq_f32(*tq, vld1q_f32(x.add(i + 4 * q))));
            }
        }
        vaddvq_f32(acc)
    }

    /// o[i] += s·(c[i]−1) over 256 elements (the scalar path's operations, lane by lane).
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn axpy256(s: f32, c: *const u8, o: *mut f32) {
        let sv = vdupq_n_f32(s);
        for i in (0..256).step_by(16) {
            let t = trits16(c.add(i));
            for (q, tq) in t.iter().enumerate() {
                let p = o.add(i + 4 * q);
                vst1q_f32(p, vaddq_f32(vld1q_f32(p), vmulq_f32(sv, *tq)));
            }
        }
    }
}
