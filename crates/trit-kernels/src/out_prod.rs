//! Training's gradient products: `Y[t, j] = Σ_r W[r, j]·S[t, r]` for a TQ2_0, TQ1_0, F16 or
//! F32 first operand `W` (`rows` × `k`) and f32 `S` (`n` × `rows`) — ggml's OUT_PROD, which
//! ggml-opt builds for the input gradient through every frozen projection and the tied LM head
//! (W a weight, `n` tokens) and for the LoRA matrices' gradients (F32, `k` or `n` the rank).
//! Vendor patch 0016 hands it to [`crate::ggml`].
//!
//! **Arithmetic contract.** Every output element is the chain `y = w·s + y` over `r`
//! ascending, starting from 0, each step fused (one rounding, as `fmaf`) or, with
//! `fused = false`, a product rounded and then added — exactly what ggml's own
//! `ggml_vec_mad_f32` (and `_unroll`) does per element with and without FMA, vector lanes
//! and scalar tail alike (the compiler contracts `y += x·v` exactly where FMA is enabled). The
//! weights are dequantized as ggml does (`(code − 1)·d`, f16 → f32), both exact. So every path
//! here (scalar, AVX2 + FMA, AVX-512, NEON) and ggml's OUT_PROD give the same bits.
//!
//! **Why it is faster than ggml's.** ggml walks the weight rows and, for each, adds the row
//! times one `S` value into each token's output row: every multiply-add loads and stores its
//! output (`k` floats per token and weight row). Here a register tile of 6 tokens × 64
//! columns (AVX-512; 6 × 16 on AVX2 and NEON) stays in registers across 32 weight rows, which are
//! dequantized once into an L1-sized buffer and reused by every token of the thread's range.

use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use crate::f16w::F16Weights;
use crate::formats::block_scale;
use crate::{decode_row, Isa, KernelError, Weights, QK};

/// The first operand of [`out_prod`].
#[derive(Clone, Copy, Debug)]
pub enum OutProdWeights<'a> {
    Ternary(Weights<'a>),
    F16(F16Weights<'a>),
    F32(F32Rows<'a>),
}

/// An f32 matrix: `rows` rows of `k` values, row `r` starting at element `r·row_stride`.
#[derive(Clone, Copy, Debug)]
pub struct F32Rows<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub k: usize,
    pub row_stride: usize,
}

impl<'a> F32Rows<'a> {
    pub fn new(data: &'a [f32], rows: usize, k: usize, row_stride: usize) -> Result<Self, KernelError> {
        if row_stride < k {
            return Err(KernelError::Shape(format!("row stride {row_stride} < k {k}")));
        }
        let need = if rows == 0 { 0 } else { (rows - 1) * row_stride + k };
        if data.len() < need {
            return Err(KernelError::ShortBuffer { what: "weights", need, got: data.len() });
        }
        Ok(F32Rows { data, rows, k, row_stride })
    }
}

impl OutProdWeights<'_> {
    pub fn rows(&self) -> usize {
        match self {
            OutProdWeights::Ternary(w) => w.rows,
            OutProdWeights::F16(w) => w.rows,
            OutProdWeights::F32(w) => w.rows,
        }
    }

    pub fn k(&self) -> usize {
        match self {
            OutProdWeights::Ternary(w) => w.k,
            OutProdWeights::F16(w) => w.k,
            OutProdWeights::F32(w) => w.k,
        }
    }

    /// Rows `r0 .. r0 + len`, columns `c0 .. c0 + width` (inside one 256-block for ternary
    /// weights) as f32, row after row, into `buf`.
    fn dequantize(&self, isa: Isa, r0: usize, len: usize, c0: usize, width: usize, buf: &mut [f32]) {
        match self {
            OutProdWeights::Ternary(w) => {
                let (bb, b) = (w.ty.block_bytes(), c0 / QK);
                let at = c0 - b * QK;
                assert!(at + width <= QK && buf.len() >= len * width);
                let mut codes = [0u8; QK];
                for i in 0..len {
                    let blk = &w.row(r0 + i)[b * bb..(b + 1) * bb];
                    let out = &mut buf[i * width..(i + 1) * width];
                    // The values (code − 1)·d, as ggml's dequantization computes them.
                    let d = block_scale(w.ty, blk);
                    let lut = [-d, 0.0 * d, d, 2.0 * d];
                    #[cfg(target_arch = "x86_64")]
                    if w.ty == crate::TernaryType::Tq2_0 && width == QK && isa == Isa::Avx512Vnni {
                        // SAFETY: AVX-512 F present (Isa::Avx512Vnni); `blk` is a whole TQ2_0
                        // block and `out` 256 floats.
                        unsafe { x86o::tq2_block_avx512(blk.as_ptr(), &lut, out.as_mut_ptr()) };
                        continue;
                    }
                    decode_row(isa, w.ty, blk, &mut codes, &mut [0f32; 1], 1);
                    for (o, &c) in out.iter_mut().zip(&codes[at..at + width]) {
                        *o = lut[(c & 3) as usize];
                    }
                }
            }
            OutProdWeights::F16(w) => {
                for i in 0..len {
                    // Exact; `half` converts whole slices with F16C / NEON (as f16w.rs does).
                    let row: &[half::f16] = w.row(r0 + i)[c0..c0 + width].reinterpret_cast();
                    row.convert_to_f32_slice(&mut buf[i * width..(i + 1) * width]);
                }
            }
            OutProdWeights::F32(w) => {
                for i in 0..len {
                    let at = (r0 + i) * w.row_stride + c0;
                    buf[i * width..(i + 1) * width].copy_from_slice(&w.data[at..at + width]);
                }
            }
        }
    }
}

/// Tokens per register tile.
const TILE_TOKENS: usize = 6;
/// Weight rows dequantized at a time (a 32 KiB buffer of 256 columns).
const CHUNK_ROWS: usize = 32;

/// The vector path [`out_prod`] takes on `isa` (the scalar loop where neither applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

fn path(isa: Isa) -> Path {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Path::Avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni if std::arch::is_x86_feature_detected!("fma") => Path::Avx2Fma,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => Path::Neon,
        _ => Path::Scalar,
    }
}

/// Whether [`out_prod`] has a vector path on `isa` (the ggml hook leaves the op to ggml
/// where it has not: the scalar loop is the reference, not a fast path).
pub fn has_vector_path(isa: Isa) -> bool {
    path(isa) != Path::Scalar
}

/// Where `S` and `Y` are: element (t, r) of `S` at `s[t·s_tok + r·s_row]`, row t of `Y` at
/// `y[t·ldy ..][..k]`.
#[derive(Clone, Copy, Debug)]
pub struct OutProdLayout {
    pub n: usize,
    pub s_tok: usize,
    pub s_row: usize,
    pub ldy: usize,
}

/// `Y[t, j] = Σ_r W[r, j]·S[t, r]` (see the module docs for the exact arithmetic), written
/// over all of `Y`'s `n` rows of `k`.
pub fn out_prod(
    isa: Isa,
    w: &OutProdWeights<'_>,
    s: &[f32],
    y: &mut [f32],
    lay: OutProdLayout,
    fused: bool,
) -> Result<(), KernelError> {
    isa.check()?;
    let (k, n) = (w.k(), lay.n);
    check_buffers(w.rows(), k, lay, s.len(), y.len())?;
    if n == 0 {
        return Ok(());
    }
    let plan = Plan::new(k, n, 1);
    let mut buf = Vec::new();
    for item in 0..plan.items() {
        // SAFETY: the checks above bound every read of `s` and write of `y`; the items cover Y.
        unsafe { out_prod_item(isa, w, s.as_ptr(), y.as_mut_ptr(), lay, fused, plan, item, &mut buf) };
    }
    Ok(())
}

/// That `S` (`s_len` values) holds every `(t, r)` of `lay` for `rows` weight rows and `Y`
/// (`y_len`) its `n` rows of `k` (nothing to hold when `n` is 0).
pub(crate) fn check_buffers(
    rows: usize,
    k: usize,
    lay: OutProdLayout,
    s_len: usize,
    y_len: usize,
) -> Result<(), KernelError> {
    let n = lay.n;
    if n == 0 {
        return Ok(());
    }
    let need_y = (n - 1) * lay.ldy + k;
    if lay.ldy < k || y_len < need_y {
        return Err(KernelError::ShortBuffer { what: "output", need: need_y, got: y_len });
    }
    let need_s = if rows == 0 { 0 } else { (n - 1) * lay.s_tok + (rows - 1) * lay.s_row + 1 };
    if s_len < need_s {
        return Err(KernelError::ShortBuffer { what: "input", need: need_s, got: s_len });
    }
    Ok(())
}

/// How one product is cut into work items: column groups (256 columns, 64 where `k` is not a
/// multiple of 256; the last may be narrower) times token ranges.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) gw: usize,
    groups: usize,
    pub(crate) ranges: usize,
}

impl Plan {
    /// Enough items for `parts` parts to get a share each, but token ranges of at least ~48
    /// tokens, over which each dequantized weight is reused.
    pub(crate) fn new(k: usize, n: usize, parts: usize) -> Plan {
        let gw = if k.is_multiple_of(QK) { QK } else { 64 };
        let groups = k.div_ceil(gw).max(1);
        let ranges = (4 * parts).div_ceil(groups).clamp(1, (n / 48).max(1));
        Plan { gw, groups, ranges }
    }

    pub(crate) fn items(&self) -> usize {
        self.groups * self.ranges
    }
}

/// Item `item` of `plan`: one column group of `Y` over one token range (`buf` is scratch).
///
/// # Safety
/// `isa` is available and `w` holds what its fields say; `s` is valid for every read at
/// `t·s_tok + r·s_row` (t < n, r < rows) and `y` for writes of `y[t·ldy ..][..k]` (t < n),
/// by no one else for the item's piece.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn out_prod_item(
    isa: Isa,
    w: &OutProdWeights<'_>,
    s: *const f32,
    y: *mut f32,
    lay: OutProdLayout,
    fused: bool,
    plan: Plan,
    item: usize,
    buf: &mut Vec<f32>,
) {
    let (rows, k, n) = (w.rows(), w.k(), lay.n);
    let Plan { gw, ranges, .. } = plan;
    buf.resize(CHUNK_ROWS * gw, 0.0);
    let (g, tr) = (item / ranges, item % ranges);
    let (t0, t1) = (tr * n / ranges, (tr + 1) * n / ranges);
    let c0 = g * gw;
    let width = gw.min(k - c0);
    if rows == 0 {
        for t in t0..t1 {
            // SAFETY: row t of Y, columns c0 .. c0 + width ≤ k (the caller's contract).
            unsafe { std::slice::from_raw_parts_mut(y.add(t * lay.ldy + c0), width).fill(0.0) };
        }
        return;
    }
    let p = path(isa);
    for r0 in (0..rows).step_by(CHUNK_ROWS) {
        let len = CHUNK_ROWS.min(rows - r0);
        w.dequantize(isa, r0, len, c0, width, buf);
        let first = r0 == 0;
        let mut t = t0;
        while t < t1 {
            let tt = TILE_TOKENS.min(t1 - t);
            let sp = |i: usize| s.wrapping_add((t + i) * lay.s_tok + r0 * lay.s_row);
            let yp = |i: usize| y.wrapping_add((t + i) * lay.ldy + c0);
            let tile = Tile { w: buf.as_ptr(), width, len, s_row: lay.s_row, first };
            // SAFETY: the caller's contract bounds S's and Y's pieces (tokens t .. t + tt, rows
            // r0 .. r0 + len, columns c0 .. c0 + width); `buf` holds len × width values.
            unsafe { tile.run(p, fused, tt, sp, yp) };
            t += tt;
        }
    }
}

/// One chunk of dequantized weight rows against up to [`TILE_TOKENS`] tokens.
struct Tile {
    /// `len` rows of `width` values, row after row.
    w: *const f32,
    width: usize,
    len: usize,
    s_row: usize,
    first: bool,
}

impl Tile {
    /// `Y[t, c] (= 0 if first) += Σ_{i < len} W[i, c]·S[t, i]` for the `tt` tokens whose S
    /// and Y pointers `sp(t)` and `yp(t)` give, over the chunk's `width` columns.
    ///
    /// # Safety
    /// See [`out_prod_item`]; `sp(t)` points at token t's value for the chunk's first row.
    unsafe fn run(
        &self,
        p: Path,
        fused: bool,
        tt: usize,
        sp: impl Fn(usize) -> *const f32,
        yp: impl Fn(usize) -> *mut f32,
    ) {
        let s: [*const f32; TILE_TOKENS] = std::array::from_fn(|i| sp(i.min(tt - 1)));
        let y: [*mut f32; TILE_TOKENS] = std::array::from_fn(|i| yp(i.min(tt - 1)));
        macro_rules! by_tokens {
            ($f:ident) => {
                match (tt, fused) {
                    (1, true) => self.$f::<1, true>(s, y),
                    (2, true) => self.$f::<2, true>(s, y),
                    (3, true) => self.$f::<3, true>(s, y),
                    (4, true) => self.$f::<4, true>(s, y),
                    (5, true) => self.$f::<5, true>(s, y),
                    (_, true) => self.$f::<6, true>(s, y),
                    (1, false) => self.$f::<1, false>(s, y),
                    (2, false) => self.$f::<2, false>(s, y),
                    (3, false) => self.$f::<3, false>(s, y),
                    (4, false) => self.$f::<4, false>(s, y),
                    (5, false) => self.$f::<5, false>(s, y),
                    (_, false) => self.$f::<6, false>(s, y),
                }
            };
        }
        // SAFETY: the function's contract; each path's features were checked by `path`.
        unsafe {
            match p {
                Path::Scalar => self.scalar(tt, fused, s, y),
                #[cfg(target_arch = "x86_64")]
                Path::Avx2Fma => by_tokens!(avx2),
                #[cfg(target_arch = "x86_64")]
                Path::Avx512 => by_tokens!(avx512),
                #[cfg(target_arch = "aarch64")]
                Path::Neon => by_tokens!(neon),
            }
        }
    }

    /// The reference: one element at a time, the same chain.
    unsafe fn scalar(&self, tt: usize, fused: bool, s: [*const f32; TILE_TOKENS], y: [*mut f32; TILE_TOKENS]) {
        for t in 0..tt {
            for c in 0..self.width {
                // SAFETY: the caller's contract (see `run`).
                unsafe {
                    let mut acc = if self.first { 0.0 } else { *y[t].add(c) };
                    for i in 0..self.len {
                        let (wv, sv) = (*self.w.add(i * self.width + c), *s[t].add(i * self.s_row));
                        acc = if fused { wv.mul_add(sv, acc) } else { wv * sv + acc };
                    }
                    *y[t].add(c) = acc;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86o {
    use std::arch::x86_64::*;

    use super::{Tile, TILE_TOKENS};

    /// One TQ2_0 block's 256 values from `lut[code]` (element 128h + 32l + m is bits 2l, 2l + 1
    /// of code byte 32h + m).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tq2_block_avx512(blk: *const u8, lut: &[f32; 4], out: *mut f32) {
        let t = _mm512_castps128_ps512(_mm_loadu_ps(lut.as_ptr()));
        let m3 = _mm512_set1_epi32(3);
        for h in 0..2 {
            for q in 0..2 {
                let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.add(32 * h + 16 * q) as *const __m128i));
                for l in 0..4 {
                    let idx = _mm512_and_si512(_mm512_srlv_epi32(v, _mm512_set1_epi32(2 * l as i32)), m3);
                    _mm512_storeu_ps(out.add(128 * h + 32 * l + 16 * q), _mm512_permutexvar_ps(idx, t));
                }
            }
        }
    }

    impl Tile {
        /// Strips of 16 columns (2 × 8 lanes) × T tokens: 2T accumulators, 2 weight loads
        /// and T broadcasts per weight row; a last strip narrower than 16 through lane masks.
        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn avx2<const T: usize, const FUSED: bool>(
            &self,
            s: [*const f32; TILE_TOKENS],
            y: [*mut f32; TILE_TOKENS],
        ) {
            let width = self.width;
            for c in (0..width).step_by(16) {
                // Lane j of vector v is column c + 8v + j: all-ones where it is < width.
                let m = [0, 1].map(|v| {
                    let left = (width - c).saturating_sub(8 * v).min(8) as i32;
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
                });
                let mut acc = [[_mm256_setzero_ps(); 2]; T];
                if !self.first {
                    for t in 0..T {
                        for v in 0..2 {
                            acc[t][v] = _mm256_maskload_ps(y[t].add(c + 8 * v), m[v]);
                        }
                    }
                }
                for i in 0..self.len {
                    let wr = self.w.add(i * self.width + c);
                    let wv = [0, 1].map(|v| _mm256_maskload_ps(wr.add(8 * v), m[v]));
                    for t in 0..T {
                        let sv = _mm256_broadcast_ss(&*s[t].add(i * self.s_row));
                        for v in 0..2 {
                            acc[t][v] = if FUSED {
                                _mm256_fmadd_ps(wv[v], sv, acc[t][v])
                            } else {
                                _mm256_add_ps(_mm256_mul_ps(wv[v], sv), acc[t][v])
                            };
                        }
                    }
                }
                for t in 0..T {
                    for v in 0..2 {
                        _mm256_maskstore_ps(y[t].add(c + 8 * v), m[v], acc[t][v]);
                    }
                }
            }
        }

        /// Strips of 64 columns (4 × 16 lanes) × T tokens: 4T accumulators (24 at T = 6),
        /// 4 weight loads and T broadcasts per weight row; a last strip narrower than 64
        /// through lane masks.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn avx512<const T: usize, const FUSED: bool>(
            &self,
            s: [*const f32; TILE_TOKENS],
            y: [*mut f32; TILE_TOKENS],
        ) {
            let width = self.width;
            for c in (0..width).step_by(64) {
                // Bit j of mask v is column c + 16v + j: set where it is < width.
                let m = [0, 1, 2, 3].map(|v| {
                    let left = (width - c).saturating_sub(16 * v).min(16);
                    ((1u32 << left) - 1) as __mmask16
                });
                let mut acc = [[_mm512_setzero_ps(); 4]; T];
                if !self.first {
                    for t in 0..T {
                        for v in 0..4 {
                            acc[t][v] = _mm512_maskz_loadu_ps(m[v], y[t].add(c + 16 * v));
                        }
                    }
                }
                for i in 0..self.len {
                    let wr = self.w.add(i * self.width + c);
                    let wv = [0, 1, 2, 3].map(|v| _mm512_maskz_loadu_ps(m[v], wr.add(16 * v)));
                    for t in 0..T {
                        let sv = _mm512_set1_ps(*s[t].add(i * self.s_row));
                        for v in 0..4 {
                            acc[t][v] = if FUSED {
                                _mm512_fmadd_ps(wv[v], sv, acc[t][v])
                            } else {
                                _mm512_add_ps(_mm512_mul_ps(wv[v], sv), acc[t][v])
                            };
                        }
                    }
                }
                for t in 0..T {
                    for v in 0..4 {
                        _mm512_mask_storeu_ps(y[t].add(c + 16 * v), m[v], acc[t][v]);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neono {
    use std::arch::aarch64::*;

    use super::{Tile, TILE_TOKENS};

    impl Tile {
        /// Strips of 16 columns (4 × 4 lanes) × T tokens: 4T accumulators (24 at T = 6), 4
        /// weight loads and T scalar loads (`fmla` by element) per weight row; a last strip
        /// narrower than 16 through a zero-padded copy of its rows and a partial store.
        #[target_feature(enable = "neon")]
        pub(super) unsafe fn neon<const T: usize, const FUSED: bool>(
            &self,
            s: [*const f32; TILE_TOKENS],
            y: [*mut f32; TILE_TOKENS],
        ) {
            let width = self.width;
            for c in (0..width).step_by(16) {
                let cols = (width - c).min(16);
                // Y's piece of the strip, through a 16-wide staging row where it is narrower.
                let mut stage = [[0f32; 16]; T];
                let mut acc = [[vdupq_n_f32(0.0); 4]; T];
                if !self.first {
                    for t in 0..T {
                        std::ptr::copy_nonoverlapping(y[t].add(c), stage[t].as_mut_ptr(), cols);
                        for v in 0..4 {
                            acc[t][v] = vld1q_f32(stage[t].as_ptr().add(4 * v));
                        }
                    }
                }
                let mut wpad = [0f32; 16];
                for i in 0..self.len {
                    let mut wr = self.w.add(i * self.width + c);
                    if cols < 16 {
                        std::ptr::copy_nonoverlapping(wr, wpad.as_mut_ptr(), cols);
                        wr = wpad.as_ptr();
                    }
                    let wv = [0, 1, 2, 3].map(|v| vld1q_f32(wr.add(4 * v)));
                    for t in 0..T {
                        let sv = *s[t].add(i * self.s_row);
                        for v in 0..4 {
                            acc[t][v] = if FUSED {
                                vfmaq_n_f32(acc[t][v], wv[v], sv)
                            } else {
                                vaddq_f32(vmulq_n_f32(wv[v], sv), acc[t][v])
                            };
                        }
                    }
                }
                for t in 0..T {
                    for v in 0..4 {
                        vst1q_f32(stage[t].as_mut_ptr().add(4 * v), acc[t][v]);
                    }
                    std::ptr::copy_nonoverlapping(stage[t].as_ptr(), y[t].add(c), cols);
                }
            }
        }
    }
}
