//! Training's gradient through a frozen ternary weight in 16-bit integers, the opt-in fast form
//! of [`crate::out_prod`] for TQ2_0 / TQ1_0 first operands (`trit finetune --ternary-grad i16`,
//! `TRIT_TERNARY_GRAD=i16`): `Y[t, j] = Σ_r W[r, j]·S[t, r]`, `W` `rows` × `k` ternary, `S` the
//! f32 gradient of the projection's `rows` outputs for each of `n` tokens.
//!
//! **Arithmetic.** `W[r, j] = d(r, b)·w(r, j)`, `w ∈ {−1, 0, 1}`, `d(r, b)` the f16 scale of
//! row `r`'s block `b` (the 256 columns `j` is in). For each token `t` and block `b`:
//! `z(r) = d(r, b)·S[t, r]` in f32, `m = max_r |z(r)|`, and `q(r) = round(z(r)·(32767 / m))`
//! (ties to even, an i16; `z` first scaled by 2¹⁰⁰ where `m < 2⁻¹⁰⁰`, exactly, so that
//! `32767 / m` is finite). Then `Y[t, j] = (Σ_r w(r, j)·q(r))·(m / 32767)` (times 2⁻¹⁰⁰ where
//! scaled): the sum is exact in i32 (at most `rows·32767 < 2³¹`, rows ≤ [`Q16_MAX_ROWS`]), so
//! every path — scalar, AVX-512 VNNI, AVX-VNNI — gives the same bits. Against exact arithmetic
//! each output is off by at most `(m / 32767)·0.51·Σ_r |w(r, j)|` plus f32 rounding (the
//! tests state it); a NaN or infinity in a token's `S` makes that token's outputs NaN.
//!
//! **Why.** `vpdpwssd` does 32 multiply-adds of i16 pairs an instruction where the f32 path's
//! `vfmadd` does 16: the same register tile (6 tokens × 64 columns on AVX-512, 6 × 16 on
//! AVX-VNNI) over weight rows taken two at a time. The quantization (one pass over `S` per
//! column block) and the weights' decoding are shared by every token of an item.
//!
//! How close is close enough: the per-token, per-block scale keeps 15 bits of each gradient
//! value relative to the largest in its row and block — finer than bf16's 8, the precision
//! PEFT's mixed-precision training computes these products in, and BitNet's forward pass
//! already rounds its activations to 8 bits.

use crate::formats::block_scale;
use crate::out_prod::{check_buffers, OutProdLayout, Plan};
use crate::{decode_row, Isa, KernelError, Weights, QK};

/// Most weight rows (gradient values summed per output): keeps the i32 sums exact.
pub const Q16_MAX_ROWS: usize = 65535;
/// The largest |q|.
const QMAX: f32 = 32767.0;
/// Tokens per register tile.
const TILE_TOKENS: usize = 6;
/// Weight rows decoded at a time (16 pairs × 256 columns of i16 pairs: 16 KiB).
const CHUNK_ROWS: usize = 64;

/// The paths of this module; `Scalar` is the reference, not a fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Scalar,
    /// AVX2 `vpmaddwd` + `vpaddd`: the AVX-VNNI tile with its one instruction in two, exactly
    /// equal (the products of a weight in {−1, 0, 1} cannot overflow). No faster than the f32
    /// path, so the hook never takes it; it proves the 256-bit tile on CPUs without AVX-VNNI.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn path(isa: Isa) -> Path {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Path::Avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => Path::AvxVnni,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Path::Avx2,
        _ => Path::Scalar,
    }
}

/// Whether `isa` has a fast path here (i16 dot products: AVX-512 VNNI, AVX-VNNI). Elsewhere
/// the f32 path ([`crate::out_prod`]) is as fast, so the hook keeps it.
pub fn has_q16_path(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    return matches!(path(isa), Path::Avx512 | Path::AvxVnni);
    #[cfg(not(target_arch = "x86_64"))]
    return path(isa) != Path::Scalar;
}

/// Buffers one thread reuses from item to item.
#[derive(Default, Debug)]
pub struct Q16Scratch {
    /// d(r, b) for every row.
    d: Vec<f32>,
    /// A token's values when `S` is not contiguous along rows.
    gather: Vec<f32>,
    /// Per token of the item: the output scale m/32767 and 2^-e (see the module docs).
    scale: Vec<f32>,
    unscale: Vec<f32>,
    /// q as i16 pairs (rows 2p, 2p + 1; 0 past the last row): token i's pair p at
    /// `q[i·pairs + p]`.
    q: Vec<u32>,
    /// The i32 sums, token after token, 256 columns each.
    acc: Vec<i32>,
    /// A chunk's weights as i16 pairs: pair p, column c at `w[p·256 + c]`.
    w: Vec<u32>,
    codes: Vec<u8>,
}

/// `Y[t, j] ≈ Σ_r W[r, j]·S[t, r]` as the module docs say, written over all of `Y`'s `n` rows
/// of `k`.
pub fn out_prod_q16(
    isa: Isa,
    w: &Weights<'_>,
    s: &[f32],
    y: &mut [f32],
    lay: OutProdLayout,
) -> Result<(), KernelError> {
    isa.check()?;
    let (rows, k, n) = (w.rows, w.k, lay.n);
    if rows > Q16_MAX_ROWS {
        return Err(KernelError::Shape(format!("{rows} rows: at most {Q16_MAX_ROWS} for i16 gradients")));
    }
    check_buffers(rows, k, lay, s.len(), y.len())?;
    if n == 0 {
        return Ok(());
    }
    let plan = Plan::new(k, n, 1);
    let mut scratch = Q16Scratch::default();
    for item in 0..plan.items() {
        // SAFETY: the checks above bound every read of `s` and write of `y`; the items cover Y.
        unsafe { out_prod_q16_item(isa, w, s.as_ptr(), y.as_mut_ptr(), lay, plan, item, &mut scratch) };
    }
    Ok(())
}

/// Item `item` of `plan` (one 256-column block of `Y` over one token range).
///
/// # Safety
/// `isa` is available, `w.rows` ≤ [`Q16_MAX_ROWS`]; `s` is valid for every read at
/// `t·s_tok + r·s_row` (t < n, r < rows) and `y` for writes of `y[t·ldy ..][..k]` (t < n), by
/// no one else for the item's piece.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn out_prod_q16_item(
    isa: Isa,
    w: &Weights<'_>,
    s: *const f32,
    y: *mut f32,
    lay: OutProdLayout,
    plan: Plan,
    item: usize,
    sc: &mut Q16Scratch,
) {
    let (rows, n) = (w.rows, lay.n);
    debug_assert!(plan.gw == QK && rows <= Q16_MAX_ROWS);
    let (b, tr) = (item / plan.ranges, item % plan.ranges);
    let (t0, t1) = (tr * n / plan.ranges, (tr + 1) * n / plan.ranges);
    let nt = t1 - t0;
    let c0 = b * QK;
    if nt == 0 {
        return;
    }
    if rows == 0 {
        for t in t0..t1 {
            // SAFETY: row t of Y, columns c0 .. c0 + 256 ≤ k (the caller's contract).
            unsafe { std::slice::from_raw_parts_mut(y.add(t * lay.ldy + c0), QK).fill(0.0) };
        }
        return;
    }
    let p = path(isa);
    let bb = w.ty.block_bytes();
    let block = |r: usize| &w.row(r)[b * bb..(b + 1) * bb];
    sc.d.clear();
    sc.d.extend((0..rows).map(|r| block_scale(w.ty, block(r))));
    let pairs = rows.div_ceil(2);
    sc.q.resize(pairs * nt, 0);
    sc.scale.clear();
    sc.unscale.clear();
    for i in 0..nt {
        let at = (t0 + i) * lay.s_tok;
        let sv: &[f32] = if lay.s_row == 1 {
            // SAFETY: token t0 + i's values for rows 0 .. rows, contiguous (the contract).
            unsafe { std::slice::from_raw_parts(s.add(at), rows) }
        } else {
            sc.gather.clear();
            // SAFETY: as above, `s_row` apart.
            sc.gather.extend((0..rows).map(|r| unsafe { *s.add(at + r * lay.s_row) }));
            &sc.gather
        };
        let q = &mut sc.q[i * pairs..(i + 1) * pairs];
        // SAFETY: a u32 holds two i16s (little-endian: the first is its low half), and u32's
        // alignment covers i16's.
        let q = unsafe { std::slice::from_raw_parts_mut(q.as_mut_ptr() as *mut i16, 2 * pairs) };
        let (scale, unscale) = match p {
            // SAFETY: the features match the path.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { quantize_avx512(&sc.d, sv, q) },
            #[cfg(target_arch = "x86_64")]
            Path::AvxVnni | Path::Avx2 => unsafe { quantize_avx2(&sc.d, sv, q) },
            Path::Scalar => quantize(&sc.d, sv, q),
        };
        sc.scale.push(scale);
        sc.unscale.push(unscale);
    }
    sc.acc.resize(nt * QK, 0);
    sc.w.resize(CHUNK_ROWS / 2 * QK, 0);
    sc.codes.resize(2 * QK, 0);
    for r0 in (0..rows).step_by(CHUNK_ROWS) {
        let len = CHUNK_ROWS.min(rows - r0);
        let cp = len.div_ceil(2);
        for pp in 0..cp {
            let (ra, rb) = (r0 + 2 * pp, r0 + 2 * pp + 1);
            let out = &mut sc.w[pp * QK..(pp + 1) * QK];
            #[cfg(target_arch = "x86_64")]
            if w.ty == crate::TernaryType::Tq2_0 && p != Path::Scalar {
                let partner = if rb < rows { block(rb) } else { &TQ2_ZERO_BLOCK[..] };
                let (a, b, o) = (block(ra).as_ptr(), partner.as_ptr(), out.as_mut_ptr());
                // SAFETY: two whole TQ2_0 blocks, 256 outputs; the features match the path.
                unsafe {
                    match p {
                        Path::Avx512 => x86q::tq2_pairs_avx512(a, b, o),
                        _ => x86q::tq2_pairs_avx2(a, b, o),
                    }
                }
                continue;
            }
            let (ca, cb) = sc.codes.split_at_mut(QK);
            decode_row(isa, w.ty, block(ra), ca, &mut [0f32; 1], 1);
            if rb < rows {
                decode_row(isa, w.ty, block(rb), cb, &mut [0f32; 1], 1);
            } else {
                cb.fill(1); // code 1 is the weight 0
            }
            pair_codes(ca, cb, out);
        }
        let first = r0 == 0;
        let mut i = 0;
        while i < nt {
            let tt = TILE_TOKENS.min(nt - i);
            let tile = Tile {
                w: sc.w.as_ptr(),
                pairs: cp,
                q: sc.q.as_ptr().wrapping_add(i * pairs + r0 / 2),
                q_stride: pairs,
                acc: sc.acc.as_mut_ptr().wrapping_add(i * QK),
                first,
            };
            // SAFETY: `w` holds cp pairs × 256, `q` pairs r0/2 .. r0/2 + cp of tokens i .. i + tt,
            // `acc` rows i .. i + tt of 256; the features match the path.
            unsafe { tile.run(p, tt) };
            i += tt;
        }
    }
    for i in 0..nt {
        let (scale, unscale) = (sc.scale[i], sc.unscale[i]);
        // SAFETY: row t0 + i of Y, columns c0 .. c0 + 256 ≤ k (the caller's contract).
        let out = unsafe { std::slice::from_raw_parts_mut(y.add((t0 + i) * lay.ldy + c0), QK) };
        for (o, &a) in out.iter_mut().zip(&sc.acc[i * QK..(i + 1) * QK]) {
            *o = (a as f32 * scale) * unscale;
        }
    }
}

/// One token's `q` (`q[r]` for row r, 0 past the last row) from `d(r)` and its values `sv`,
/// and its `(m / 32767, 2^-e)`: `(NaN, 1)` where a value is NaN or infinite, `(0, 1)` where all
/// are 0. The shared arithmetic: the vector paths compile this same code for their features.
#[inline(always)]
fn quantize(d: &[f32], sv: &[f32], q: &mut [i16]) -> (f32, f32) {
    let rows = sv.len();
    q[rows..].fill(0);
    // |z| as bits: ordered as the values are, and NaN above infinity above every finite one.
    let mut mb = 0u32;
    for (&dd, &x) in d[..rows].iter().zip(sv) {
        mb = mb.max((dd * x).abs().to_bits());
    }
    if mb >= f32::INFINITY.to_bits() || mb == 0 {
        q.fill(0);
        return (if mb == 0 { 0.0 } else { f32::NAN }, 1.0);
    }
    const TINY: f32 = 7.888_609e-31; // 2^-100
    const HUGE: f32 = 1.267_650_6e30; // 2^100
    let m = f32::from_bits(mb);
    let (pre, unscale) = if m < TINY { (HUGE, TINY) } else { (1.0, 1.0) };
    let mm = m * pre;
    let inv = QMAX / mm;
    // v = z·inv rounded to an integer, ties to even, by adding 1.5·2²³: for |v| ≤ 2²² the sum
    // lies in [2²³, 2²⁴), where the float's step is 1, so its bits are 0x4B40_0000 + v. All
    // integer and float arithmetic, so it vectorizes (`round_ties_even` and the float-to-int
    // cast do not). |v| ≤ mm·inv ≤ 32767·(1 + 2⁻²³) rounds to at most 32767: an i16.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    for ((o, &dd), &x) in q[..rows].iter_mut().zip(&d[..rows]).zip(sv) {
        let z = (dd * x) * pre;
        *o = (((z * inv) + ROUND).to_bits() as i32 - ROUND_BITS) as i16;
    }
    (mm / QMAX, unscale)
}

/// A TQ2_0 block of weights 0 (every code 1), the partner of an odd last row.
#[cfg(target_arch = "x86_64")]
static TQ2_ZERO_BLOCK: [u8; 66] = {
    let mut b = [0x55u8; 66];
    b[64] = 0;
    b[65] = 0;
    b
};

/// Two rows' codes (0, 1, 2 for −1, 0, 1) as i16 pairs, column by column.
fn pair_codes(a: &[u8], b: &[u8], out: &mut [u32]) {
    for ((o, &x), &y) in out.iter_mut().zip(&a[..QK]).zip(&b[..QK]) {
        let lo = (x as i32 - 1) as i16 as u16 as u32;
        let hi = (y as i32 - 1) as i16 as u16 as u32;
        *o = lo | (hi << 16);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
unsafe fn quantize_avx512(d: &[f32], sv: &[f32], q: &mut [i16]) -> (f32, f32) {
    quantize(d, sv, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(d: &[f32], sv: &[f32], q: &mut [i16]) -> (f32, f32) {
    quantize(d, sv, q)
}

/// One chunk of weight pairs against up to [`TILE_TOKENS`] tokens, all 256 columns.
struct Tile {
    /// `pairs` × 256 i16 pairs.
    w: *const u32,
    pairs: usize,
    /// Token i's pair p at `q[i·q_stride + p]`.
    q: *const u32,
    q_stride: usize,
    /// Token i's 256 sums at `acc[i·256 ..]`.
    acc: *mut i32,
    first: bool,
}

impl Tile {
    /// `acc[i][c] (= 0 if first) += Σ_p lo(w)·lo(q) + hi(w)·hi(q)` for `tt` tokens.
    ///
    /// # Safety
    /// The pointers cover what the fields say for `tt` tokens; the path's features are there.
    unsafe fn run(&self, p: Path, tt: usize) {
        #[cfg(target_arch = "x86_64")]
        macro_rules! by_tokens {
            ($f:ident) => {
                match tt {
                    1 => self.$f::<1>(),
                    2 => self.$f::<2>(),
                    3 => self.$f::<3>(),
                    4 => self.$f::<4>(),
                    5 => self.$f::<5>(),
                    _ => self.$f::<6>(),
                }
            };
        }
        // SAFETY: the function's contract.
        unsafe {
            match p {
                Path::Scalar => self.scalar(tt),
                #[cfg(target_arch = "x86_64")]
                Path::Avx512 => by_tokens!(avx512),
                #[cfg(target_arch = "x86_64")]
                Path::AvxVnni => by_tokens!(avxvnni),
                #[cfg(target_arch = "x86_64")]
                Path::Avx2 => by_tokens!(avx2),
            }
        }
    }

    /// The reference, one sum at a time.
    unsafe fn scalar(&self, tt: usize) {
        let lo = |v: u32| v as u16 as i16 as i32;
        let hi = |v: u32| (v >> 16) as u16 as i16 as i32;
        for i in 0..tt {
            for c in 0..QK {
                // SAFETY: the caller's contract (see `run`).
                unsafe {
                    let a = self.acc.add(i * QK + c);
                    let mut sum = if self.first { 0 } else { *a };
                    for p in 0..self.pairs {
                        let (wv, qv) = (*self.w.add(p * QK + c), *self.q.add(i * self.q_stride + p));
                        sum += lo(wv) * lo(qv) + hi(wv) * hi(qv);
                    }
                    *a = sum;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86q {
    use std::arch::x86_64::*;

    use super::{Tile, QK};

    /// Two TQ2_0 blocks' weights as i16 pairs (`a`'s low, `b`'s high), column by column:
    /// column 128h + 32l + m is bits 2l, 2l + 1 of code byte 32h + m, minus 1.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn tq2_pairs_avx512(a: *const u8, b: *const u8, out: *mut u32) {
        let (m3, one) = (_mm512_set1_epi32(0x0003_0003), _mm512_set1_epi16(1));
        for h in 0..2 {
            for q in 0..2 {
                let at = 32 * h + 16 * q;
                let lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(a.add(at) as *const __m128i));
                let hi = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.add(at) as *const __m128i));
                let x = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi));
                for l in 0..4 {
                    let c = _mm512_and_si512(_mm512_srlv_epi32(x, _mm512_set1_epi32(2 * l as i32)), m3);
                    _mm512_storeu_si512(out.add(128 * h + 32 * l + 16 * q) as *mut _, _mm512_sub_epi16(c, one));
                }
            }
        }
    }

    /// [`tq2_pairs_avx512`] on 8-lane vectors.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tq2_pairs_avx2(a: *const u8, b: *const u8, out: *mut u32) {
        let (m3, one) = (_mm256_set1_epi32(0x0003_0003), _mm256_set1_epi16(1));
        for h in 0..2 {
            for q in 0..4 {
                let at = 32 * h + 8 * q;
                let lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(a.add(at) as *const __m128i));
                let hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.add(at) as *const __m128i));
                let x = _mm256_or_si256(lo, _mm256_slli_epi32::<16>(hi));
                for l in 0..4 {
                    let c = _mm256_and_si256(_mm256_srlv_epi32(x, _mm256_set1_epi32(2 * l as i32)), m3);
                    _mm256_storeu_si256(out.add(128 * h + 32 * l + 8 * q) as *mut __m256i, _mm256_sub_epi16(c, one));
                }
            }
        }
    }

    impl Tile {
        /// Strips of 64 columns (4 × 16 lanes) × T tokens: 4T accumulators (24 at T = 6), 4
        /// weight loads and T broadcasts per pair of weight rows.
        #[target_feature(enable = "avx512f,avx512vnni")]
        pub(super) unsafe fn avx512<const T: usize>(&self) {
            for c in (0..QK).step_by(64) {
                let mut acc = [[_mm512_setzero_si512(); 4]; T];
                if !self.first {
                    for (t, a) in acc.iter_mut().enumerate() {
                        for (v, av) in a.iter_mut().enumerate() {
                            *av = _mm512_loadu_si512(self.acc.add(t * QK + c + 16 * v) as *const _);
                        }
                    }
                }
                for p in 0..self.pairs {
                    let wr = self.w.add(p * QK + c);
                    let wv = [0, 1, 2, 3].map(|v| _mm512_loadu_si512(wr.add(16 * v) as *const _));
                    for (t, a) in acc.iter_mut().enumerate() {
                        let qv = _mm512_set1_epi32(*self.q.add(t * self.q_stride + p) as i32);
                        for v in 0..4 {
                            a[v] = _mm512_dpwssd_epi32(a[v], wv[v], qv);
                        }
                    }
                }
                for (t, a) in acc.iter().enumerate() {
                    for (v, av) in a.iter().enumerate() {
                        _mm512_storeu_si512(self.acc.add(t * QK + c + 16 * v) as *mut _, *av);
                    }
                }
            }
        }

        /// Strips of 16 columns (2 × 8 lanes) × T tokens: 2T accumulators, 2 weight loads and
        /// T broadcasts per pair of weight rows.
        #[target_feature(enable = "avx2,avxvnni")]
        pub(super) unsafe fn avxvnni<const T: usize>(&self) {
            self.tile256::<T>(|a, w, q| _mm256_dpwssd_avx_epi32(a, w, q))
        }

        /// [`Tile::avxvnni`] with `vpmaddwd` + `vpaddd` for `vpdpwssd`.
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn avx2<const T: usize>(&self) {
            self.tile256::<T>(|a, w, q| _mm256_add_epi32(a, _mm256_madd_epi16(w, q)))
        }

        /// The 256-bit tile, `dp(acc, w, q)` adding two rows' i16 products per lane.
        #[inline(always)]
        unsafe fn tile256<const T: usize>(&self, dp: impl Fn(__m256i, __m256i, __m256i) -> __m256i) {
            for c in (0..QK).step_by(16) {
                let mut acc = [[_mm256_setzero_si256(); 2]; T];
                if !self.first {
                    for (t, a) in acc.iter_mut().enumerate() {
                        for (v, av) in a.iter_mut().enumerate() {
                            *av = _mm256_loadu_si256(self.acc.add(t * QK + c + 8 * v) as *const __m256i);
                        }
                    }
                }
                for p in 0..self.pairs {
                    let wr = self.w.add(p * QK + c);
                    let wv = [0, 1].map(|v| _mm256_loadu_si256(wr.add(8 * v) as *const __m256i));
                    for (t, a) in acc.iter_mut().enumerate() {
                        let qv = _mm256_set1_epi32(*self.q.add(t * self.q_stride + p) as i32);
                        for v in 0..2 {
                            a[v] = dp(a[v], wv[v], qv);
                        }
                    }
                }
                for (t, a) in acc.iter().enumerate() {
                    for (v, av) in a.iter().enumerate() {
                        _mm256_storeu_si256(self.acc.add(t * QK + c + 8 * v) as *mut __m256i, *av);
                    }
                }
            }
        }
    }
}
