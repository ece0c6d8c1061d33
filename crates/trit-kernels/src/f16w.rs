//! f16 weights × f16-rounded activations, for few activation columns (decode): the tied
//! output head of BitNet models (token_embd, 128256 × 2560 f16 in 2B-4T) is about half of
//! the bytes a token reads, so its mat-vec has to stream at memory speed.
//!
//! ggml computes an F16 MUL_MAT by rounding the f32 activations to f16 and taking f16·f16
//! dot products with f32 accumulation; the ggml hook hands us those same f16 activations,
//! so the only difference from ggml's own `vec_dot_f16` is the order of the f32 additions.
//!
//! **Arithmetic contract (why SIMD equals scalar exactly).** A product of two f16 values is
//! exact in f32 (11 × 11 significant bits ≤ 24, exponents far inside f32's range), so a
//! fused multiply-add equals a multiply then an add. Per row: 64 f32 lanes, lane `j`
//! accumulating `acc[j] = acc[j] + w[64c+j]·a[64c+j]` for `c = 0, 1, …` in order; then the
//! fixed tree `j + 32 → j`, `j + 16 → j`, …, `1 → 0`; then the tail (`k mod 64` elements)
//! added one by one. AVX-512 keeps the 64 lanes in four registers, AVX2 in eight, NEON in
//! sixteen (widening with `fcvtl`), the scalar path in an array: every path performs
//! exactly the same roundings, so results are bitwise equal. (64 lanes = four independent FMA chains per row, enough to keep one
//! core's loads in flight while it streams a single row at a time.)
//!
//! Error bound: each result is a sum of at most `k/64 + 6 + 63` rounded additions along any
//! path, so `|result − exact| ≤ (k/64 + 70)·2⁻²⁴·Σ|w·a|` (exact = the float64 product of
//! the same f16 values).
//!
//! Memory order: with one activation column on AVX-512, four rows at a time, the i-th row
//! of each quarter of the range (four sequential streams; 8–15% more GB/s than one stream
//! over 2B-4T's head on a 2-core Zen 4, 2026-12-05); otherwise one row at a time, front to
//! back. No software prefetch by default ([`PF_ELEMS`]).

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use crate::{Isa, KernelError};

/// Software prefetch distance, in f16 elements ahead of the loads; 0: none. On the
/// 2026-11-25 EPYC dev VM (2 threads over 2B-4T's head) 4 KB measured best among 0, 2, 4, 8
/// and 16 KB; on the 2026-12-04 one (Zen 4) none was much faster: 24.2 against 18.4 GB/s on
/// one thread, 32.7 against 21.9 on two (ggml's `vec_dot_f16`: 27.3 and 31.5), so none now.
/// (x86 only: the aarch64 path has no software prefetch.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const PF_ELEMS: usize = 0;

/// An f16 weight matrix: `rows` rows of `k` values (f16 bit patterns), row `r` starting at
/// element `r·row_stride`.
#[derive(Clone, Copy, Debug)]
pub struct F16Weights<'a> {
    pub data: &'a [u16],
    pub rows: usize,
    pub k: usize,
    pub row_stride: usize,
}

impl<'a> F16Weights<'a> {
    pub fn new(data: &'a [u16], rows: usize, k: usize) -> Result<Self, KernelError> {
        Self::with_stride(data, rows, k, k)
    }

    pub fn with_stride(data: &'a [u16], rows: usize, k: usize, row_stride: usize) -> Result<Self, KernelError> {
        if k == 0 {
            return Err(KernelError::Shape("k = 0".into()));
        }
        if row_stride < k {
            return Err(KernelError::Shape(format!("row stride {row_stride} < k {k}")));
        }
        let need = if rows == 0 { 0 } else { (rows - 1) * row_stride + k };
        if data.len() < need {
            return Err(KernelError::ShortBuffer { what: "weights", need, got: data.len() });
        }
        Ok(F16Weights { data, rows, k, row_stride })
    }

    pub(crate) fn row(&self, r: usize) -> &'a [u16] {
        &self.data[r * self.row_stride..r * self.row_stride + self.k]
    }
}

/// `out[c·rows + r] = Σ_i W[r,i]·A[c,i]` for `n` f16 activation rows of `k` values
/// (`act[c·k..]`). See the module docs for the exact arithmetic.
pub fn gemv_f16(isa: Isa, w: &F16Weights<'_>, act: &[u16], n: usize, out: &mut [f32]) -> Result<(), KernelError> {
    isa.check()?;
    if act.len() < n * w.k {
        return Err(KernelError::ShortBuffer { what: "activations", need: n * w.k, got: act.len() });
    }
    if out.len() < n * w.rows {
        return Err(KernelError::ShortBuffer { what: "output", need: n * w.rows, got: out.len() });
    }
    let acts = widen_acts(act, w.k, w.k, n);
    let rows = w.rows;
    gemv_rows(isa, w, 0..rows, &acts, n, |c, r, v| out[c * rows + r] = v);
    Ok(())
}

/// f16 activation rows (`stride` elements apart) as f32, `k` per row, densely packed.
pub(crate) fn widen_acts(act: &[u16], k: usize, stride: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::new();
    widen_acts_into(act, k, stride, n, &mut out);
    out
}

/// [`widen_acts`] into `out` (resized to `n * k`; its allocation reused).
pub(crate) fn widen_acts_into(act: &[u16], k: usize, stride: usize, n: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(n * k, 0.0);
    for c in 0..n {
        // Exact (every f16 is an f32); `half` converts whole slices with F16C / NEON.
        let src: &[f16] = act[c * stride..c * stride + k].reinterpret_cast();
        src.convert_to_f32_slice(&mut out[c * k..(c + 1) * k]);
    }
}

/// The ISA the f16 kernels actually use for `isa` (AVX2 needs F16C too).
fn effective(isa: Isa) -> Isa {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && !std::arch::is_x86_feature_detected!("f16c") {
        return Isa::Scalar;
    }
    isa
}

/// Rows `rows` of `w` against the `n` f32 activation rows in `acts` (`k` each, values
/// exactly representable in f16); `store(c, r, v)` receives every result.
pub(crate) fn gemv_rows(
    isa: Isa,
    w: &F16Weights<'_>,
    rows: std::ops::Range<usize>,
    acts: &[f32],
    n: usize,
    mut store: impl FnMut(usize, usize, f32),
) {
    let isa = effective(isa);
    let k = w.k;
    assert!(acts.len() >= n * k && rows.end <= w.rows);
    // One column (decode): four rows at a time, the i-th of each quarter of `rows`, where the
    // ISA has a four-row kernel; the rows the quarters leave (at most 3) one by one below.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut rows = rows;
    #[cfg(target_arch = "x86_64")]
    if n == 1 && rows.len() >= 4 && crate::x86::has_dot4_f16(isa) && quarters_enabled() {
        let (q, first) = (rows.len() / 4, rows.start);
        let w0 = &w.data[first * w.row_stride..];
        crate::x86::dot4_f16_quarters(w0, w.row_stride, q, &acts[..k], |r, v| store(0, first + r, v));
        rows.start += 4 * q;
    }
    for r in rows {
        let wr = w.row(r);
        for c in 0..n {
            let a = &acts[c * k..(c + 1) * k];
            let v = match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => crate::x86::dot_f16(isa, wr, a, PF_ELEMS),
                #[cfg(target_arch = "aarch64")]
                Isa::Neon | Isa::NeonDot => crate::neon::dot_f16(wr, a),
                _ => dot_scalar(wr, a),
            };
            store(c, r, v);
        }
    }
}

/// TRIT_F16_QUARTERS=0 turns the four-row one-column kernel off (A/B runs).
#[cfg(target_arch = "x86_64")]
fn quarters_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRIT_F16_QUARTERS").map_or(true, |v| v != "0"))
}

/// The reference: the 64-lane contract of the module docs.
pub(crate) fn dot_scalar(w: &[u16], a: &[f32]) -> f32 {
    let k = a.len();
    let k64 = k / 64 * 64;
    let mut acc = [0f32; 64];
    for c in (0..k64).step_by(64) {
        for j in 0..64 {
            acc[j] += f16::from_bits(w[c + j]).to_f32() * a[c + j];
        }
    }
    let mut s = reduce64(acc);
    for i in k64..k {
        s += f16::from_bits(w[i]).to_f32() * a[i];
    }
    s
}

/// The contract's tree: `j + 32 → j`, `j + 16 → j`, …, `1 → 0`.
fn reduce64(mut acc: [f32; 64]) -> f32 {
    for half in [32, 16, 8, 4, 2, 1] {
        for j in 0..half {
            acc[j] += acc[j + half];
        }
    }
    acc[0]
}
