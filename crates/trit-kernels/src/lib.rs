//! Ternary CPU kernels for BitNet b1.58 weights (llama.cpp's TQ2_0 and TQ1_0 blocks).
//!
//! * **int8 activations** ([`mul_mat_q8k`]): matrix-vector (decode) and matrix-matrix
//!   (prefill) against Q8_K activations — per-block absmax (one f32 scale per 256 values,
//!   plus the block's sums), exactly what ggml's CPU backend already converts `src1` to for
//!   TQ weights. Using the same activation format means the ggml hook needs no extra work
//!   buffer, ggml's own (threaded, SIMD) quantizer fills it, and the result differs from
//!   ggml's TQ path only by float summation order. A per-token scale would save the
//!   per-block float step but changes the numbers relative to llama.cpp's reference path.
//! * **f32 activations** ([`f32act`]): `y = W·x` and `dx += Wᵀ·dy` for training.
//!
//! Dispatch is at run time ([`Isa::detect`]): AVX-512 VNNI (+BW), AVX-VNNI and AVX2 on x86-64, NEON
//! with the dot-product extension and plain NEON on aarch64, and the portable scalar path,
//! which is the reference. Weights are used as they are stored in the GGUF:
//! each call decodes a tile of 4 rows to 1-byte codes in an L1-sized buffer once and
//! reuses it for every activation column. The one exception is TQ1_0 in ggml graphs:
//! [`repack`] re-encodes its blocks losslessly as TQ2_0 at load time (the `ggml` feature's
//! repack buffer type), because TQ1_0's base-3 digits keep the decode mat-vecs
//! compute-bound where TQ2_0's 2-bit codes stream at memory bandwidth.
//!
//! Shapes: `k` must be a multiple of 256 (a GGUF TQ tensor always is); any number of rows
//! and columns works (partial tiles repeat a valid row/column and drop the result). No
//! alignment is assumed anywhere (all SIMD loads and stores are unaligned).

// Index loops over fixed 4-row / 4-column tiles read closer to the math than iterator chains.
#![allow(clippy::needless_range_loop)]

#[cfg(feature = "ggml")]
mod attn_skip;
#[cfg(feature = "ggml")]
pub mod epilogue;
pub mod f16w;
pub mod f32act;
pub mod formats;
#[cfg(feature = "ggml")]
pub mod ggml;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod out_prod;
pub mod out_prod_q16;
pub mod q8k;
pub mod repack;
mod scalar;
#[cfg(feature = "ggml")]
pub mod stats;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Tests only: allow (default) or forbid the GFNI variant of the AVX-512 TQ2_0 mat-vec, so
/// the shift variant, used on AVX-512 CPUs without GFNI, is tested too. Both give identical
/// results, so flipping it while other threads compute changes no number.
#[doc(hidden)]
pub fn set_gfni_allowed(allowed: bool) {
    #[cfg(target_arch = "x86_64")]
    x86::set_gfni_allowed(allowed);
    let _ = allowed;
}

/// Tests only: allow (default) or forbid F16C in the AVX2 mat-vecs' block-scale
/// conversion, so the software conversion, used on AVX2 CPUs without F16C, is tested too.
/// Both give identical results.
#[doc(hidden)]
pub fn set_f16c_allowed(allowed: bool) {
    #[cfg(target_arch = "x86_64")]
    x86::set_f16c_allowed(allowed);
    let _ = allowed;
}

use std::ops::Range;

use formats::{q8k_row_bytes, Q8_K_BYTES};
pub use formats::{TernaryType, QK};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("k = {0} is not a multiple of 256 (ternary blocks hold 256 weights)")]
    KNotMultipleOf256(usize),
    #[error("{what}: need {need} bytes, got {got}")]
    ShortBuffer { what: &'static str, need: usize, got: usize },
    #[error("{0} is not supported by this CPU")]
    IsaUnavailable(&'static str),
    #[error("bad shape: {0}")]
    Shape(String),
}

/// An instruction-set path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the reference.
    Scalar,
    /// AVX2 (x86-64): `vpmaddubsw` on 32-byte vectors.
    Avx2,
    /// AVX-VNNI (x86-64, VEX-encoded): `vpdpbusd` on 32-byte vectors, for CPUs with VNNI but
    /// without AVX-512 (Intel Alder Lake and later client cores, AMD Zen 5 also has it).
    /// Needs AVX2, F16C and FMA too.
    AvxVnni,
    /// AVX-512 F/BW + VNNI (x86-64): `vpdpbusd` on 64-byte vectors (with AVX2, F16C and FMA,
    /// which every such CPU has; the f16 and scale conversions use them).
    Avx512Vnni,
    /// NEON (aarch64): `smull`/`smlal` into i16 lanes, pairwise-widened once per block.
    Neon,
    /// NEON + the dot-product extension (aarch64, `dotprod`): `sdot` on 16-byte vectors.
    NeonDot,
}

impl Isa {
    /// Every path, each architecture's in ascending order of speed (so the last available
    /// one is the fastest).
    pub const ALL: [Isa; 6] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDot];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDot => "neondot",
        }
    }

    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => {
                std::arch::is_x86_feature_detected!("avxvnni")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("f16c")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("f16c")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => {
                std::arch::is_aarch64_feature_detected!("neon") && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            _ => false,
        }
    }

    /// The paths this CPU can run, reference first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The fastest available path; `TRIT_ISA=scalar|avx2|avxvnni|avx512vnni|neon|neondot` overrides
    /// it (when available).
    pub fn detect() -> Isa {
        if let Ok(want) = std::env::var("TRIT_ISA") {
            if let Some(i) = Isa::ALL.into_iter().find(|i| i.name() == want && i.is_available()) {
                return i;
            }
        }
        *Isa::available().last().unwrap_or(&Isa::Scalar)
    }

    fn check(self) -> Result<(), KernelError> {
        if self.is_available() {
            Ok(())
        } else {
            Err(KernelError::IsaUnavailable(self.name()))
        }
    }
}

/// A ternary weight matrix: `rows` rows of `k` weights, row `r` at `data[r·row_stride..]`.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    pub ty: TernaryType,
    pub data: &'a [u8],
    pub rows: usize,
    pub k: usize,
    pub row_stride: usize,
}

impl<'a> Weights<'a> {
    /// Densely packed rows.
    pub fn new(ty: TernaryType, data: &'a [u8], rows: usize, k: usize) -> Result<Self, KernelError> {
        Self::with_stride(ty, data, rows, k, ty.row_bytes(k))
    }

    pub fn with_stride(
        ty: TernaryType,
        data: &'a [u8],
        rows: usize,
        k: usize,
        row_stride: usize,
    ) -> Result<Self, KernelError> {
        if !k.is_multiple_of(QK) || k == 0 {
            return Err(KernelError::KNotMultipleOf256(k));
        }
        if row_stride < ty.row_bytes(k) {
            return Err(KernelError::Shape(format!("row stride {row_stride} < row size {}", ty.row_bytes(k))));
        }
        let need = if rows == 0 { 0 } else { (rows - 1) * row_stride + ty.row_bytes(k) };
        if data.len() < need {
            return Err(KernelError::ShortBuffer { what: "weights", need, got: data.len() });
        }
        Ok(Weights { ty, data, rows, k, row_stride })
    }

    fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_stride..r * self.row_stride + self.ty.row_bytes(self.k)]
    }
}

/// `out[c·rows + r] = Σ_k W[r,k]·A[c,k]` for `n` Q8_K activation rows packed in `act`
/// (`n·(k/256)·292` bytes). See [`scalar`] for the exact arithmetic.
pub fn mul_mat_q8k(isa: Isa, w: &Weights<'_>, act: &[u8], n: usize, out: &mut [f32]) -> Result<(), KernelError> {
    isa.check()?;
    let rs = q8k_row_bytes(w.k);
    if act.len() < n * rs {
        return Err(KernelError::ShortBuffer { what: "activations", need: n * rs, got: act.len() });
    }
    if out.len() < n * w.rows {
        return Err(KernelError::ShortBuffer { what: "output", need: n * w.rows, got: out.len() });
    }
    let rows = w.rows;
    let prep = MatVecPrep::new(isa, w, act, rs, n);
    mul_mat_rows(isa, w, 0..rows, act, rs, n, &prep, |c, r, v| out[c * rows + r] = v);
    Ok(())
}

/// Rows per tile (decoded together, reused across columns).
const TILE_R: usize = 4;
/// Columns per cache chunk: their activations stay in L2 while the row tiles sweep them.
const CHUNK_C: usize = 64;
/// Decoded codes held at once by the tiled driver (a row block: its tiles are decoded once
/// and reused by every column chunk), at least one tile.
const ROW_BLOCK_BYTES: usize = 128 << 10;

/// What the SIMD kernels read from the activation columns, prepared once per op (and
/// thread) rather than once per chunk of rows or tile: each column's block scales and sums
/// (every SIMD path, mat-vec and tiles), and for the mat-vecs of TQ1_0 (and of TQ2_0 on
/// AVX-512) the rearranged activations. Empty on the scalar path.
pub(crate) struct MatVecPrep {
    cols: Vec<formats::ColSums>,
    #[cfg(target_arch = "x86_64")]
    perm: Vec<Vec<u8>>,
    #[cfg(target_arch = "x86_64")]
    gfni: bool,
}

impl MatVecPrep {
    pub(crate) fn new(isa: Isa, w: &Weights<'_>, act: &[u8], act_stride: usize, n: usize) -> Self {
        let nb = w.k / QK;
        let act_row = |c: usize| &act[c * act_stride..c * act_stride + nb * Q8_K_BYTES];
        // Every SIMD path, mat-vec and tiles, reads each column's block scales and sums here.
        let cols = if isa == Isa::Scalar {
            Vec::new()
        } else {
            (0..n).map(|c| formats::ColSums::new(act_row(c), nb)).collect()
        };
        #[cfg(target_arch = "x86_64")]
        {
            let mut p = MatVecPrep { cols, perm: Vec::new(), gfni: x86::has_gfni() };
            if matvec_path(isa, w.ty, n) {
                if w.ty == TernaryType::Tq1_0 {
                    p.perm = (0..n).map(|c| x86::tq1_perm_acts(act_row(c), nb)).collect();
                } else if isa == Isa::Avx512Vnni {
                    p.perm = (0..n).map(|c| x86::tq2_perm_acts(act_row(c), nb)).collect();
                }
            }
            p
        }
        #[cfg(not(target_arch = "x86_64"))]
        MatVecPrep { cols }
    }
}

/// Whether `n` columns take the register-decoding matrix-vector path on `isa` (both types,
/// every SIMD path).
#[cfg(target_arch = "x86_64")]
fn matvec_path(isa: Isa, _ty: TernaryType, n: usize) -> bool {
    n < 4 && matches!(isa, Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni)
}

/// Whether `n` columns take the register-decoding matrix-vector path on `isa` (both types,
/// both NEON paths).
#[cfg(target_arch = "aarch64")]
fn matvec_path(isa: Isa, _ty: TernaryType, n: usize) -> bool {
    n < 4 && matches!(isa, Isa::Neon | Isa::NeonDot)
}

/// The tiled driver over a range of weight rows; `store(c, r, v)` receives every result.
/// Callers have checked the shapes (`act` holds `n` rows of `act_stride` bytes) and built
/// `prep` from the same weights and activations.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mul_mat_rows(
    isa: Isa,
    w: &Weights<'_>,
    rows: Range<usize>,
    act: &[u8],
    act_stride: usize,
    n: usize,
    prep: &MatVecPrep,
    mut store: impl FnMut(usize, usize, f32),
) {
    let k = w.k;
    let nb = k / QK;
    let arow_len = nb * Q8_K_BYTES;
    let act_row = |c: usize| &act[c * act_stride..c * act_stride + arow_len];
    #[cfg(target_arch = "x86_64")]
    if matvec_path(isa, w.ty, n) {
        // Matrix-vector: decode in registers, no code buffer; each column's block scales and
        // sums (and its rearranged quants, for TQ1_0 and for TQ2_0 on AVX-512) come prepared.
        assert!(prep.cols.len() == n);
        assert!(prep.perm.len() == n || (w.ty == TernaryType::Tq2_0 && isa != Isa::Avx512Vnni));
        // The four rows of a pass are the i-th rows of the range's four quarters, so each is
        // a sequential stream through its quarter, which the hardware prefetchers follow
        // (four adjacent rows per pass were one stream with periodic jumps: 8.9 GB/s against
        // 21.8 on the 2026-12-04 EPYC VM, one thread, a 132 MB TQ2_0 matrix).
        let len = rows.end - rows.start;
        if n == 1 && isa == Isa::Avx512Vnni {
            // One column on AVX-512: all passes of the range in one call.
            let mut out = vec![0f32; len];
            let (data, stride, col) = (w.data, w.row_stride, &prep.cols[0]);
            match w.ty {
                TernaryType::Tq2_0 => {
                    x86::gemv_tq2_range(prep.gfni, data, stride, rows.start, &prep.perm[0], col, nb, &mut out)
                }
                TernaryType::Tq1_0 => x86::gemv_tq1_range(data, stride, rows.start, &prep.perm[0], col, nb, &mut out),
            }
            for (r, &v) in out.iter().enumerate() {
                store(0, rows.start + r, v);
            }
            return;
        }
        let q = len.div_ceil(TILE_R);
        for i in 0..q {
            let idx: [usize; TILE_R] = std::array::from_fn(|j| rows.start + (i + j * q).min(len - 1));
            let rws: [&[u8]; 4] = std::array::from_fn(|j| w.row(idx[j]));
            for c in 0..n {
                let v = match w.ty {
                    TernaryType::Tq2_0 => {
                        let perm = prep.perm.get(c).map_or(&[][..], |p| &p[..]);
                        x86::gemv4_tq2(isa, prep.gfni, rws, act_row(c), perm, &prep.cols[c], nb)
                    }
                    TernaryType::Tq1_0 if isa == Isa::Avx512Vnni => {
                        x86::gemv4_tq1_avx512(rws, act_row(c), &prep.perm[c], &prep.cols[c], nb)
                    }
                    TernaryType::Tq1_0 => x86::gemv4_tq1_256(isa, rws, act_row(c), &prep.perm[c], &prep.cols[c], nb),
                };
                for (j, &v) in v.iter().enumerate() {
                    if i + j * q < len {
                        store(c, idx[j], v);
                    }
                }
            }
        }
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if matvec_path(isa, w.ty, n) {
        // Matrix-vector: decode in registers, each column's block scales and sums prepared.
        assert!(prep.cols.len() == n);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let nr = TILE_R.min(rows.end - r0);
            let rws: [&[u8]; 4] = std::array::from_fn(|i| w.row(r0 + i.min(nr - 1)));
            for c in 0..n {
                let v = neon::gemv4(isa, w.ty, rws, act_row(c), &prep.cols[c], nb);
                for (i, &v) in v.iter().enumerate().take(nr) {
                    store(c, r0 + i, v);
                }
            }
            r0 += nr;
        }
        return;
    }
    // Row blocks of up to ROW_BLOCK_BYTES of decoded codes, each decoded once and then swept
    // by every column chunk (before, each 4-row tile was decoded again for every chunk of
    // 64 columns: 8 times over a 512-token prompt).
    let block_rows = (ROW_BLOCK_BYTES / k / TILE_R).max(1) * TILE_R;
    let tiles_max = block_rows.min(rows.len()).div_ceil(TILE_R);
    // The thread's decode buffers, kept between calls: a prompt's op calls this once per chunk
    // of 16 rows, and allocating and zeroing them each time measured ~2% of prefill.
    TILE_BUFS.with_borrow_mut(|(codes, dw)| {
        if codes.len() < tiles_max * TILE_R * k {
            codes.resize(tiles_max * TILE_R * k, 0);
        }
        if dw.len() < tiles_max * TILE_R * nb {
            dw.resize(tiles_max * TILE_R * nb, 0.0);
        }
        tiled(isa, w, rows, act_row, n, prep, block_rows, codes, dw, &mut store);
    });
}

thread_local! {
    /// [`mul_mat_rows`]' decoded codes and block scales, per thread.
    static TILE_BUFS: std::cell::RefCell<(Vec<u8>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// The tiled path of [`mul_mat_rows`]: row blocks of `block_rows` rows decoded into `codes`
/// and `dw` (large enough for one block), then swept by every chunk of columns.
#[allow(clippy::too_many_arguments)]
fn tiled<'a>(
    isa: Isa,
    w: &Weights<'_>,
    rows: Range<usize>,
    act_row: impl Fn(usize) -> &'a [u8],
    n: usize,
    prep: &MatVecPrep,
    block_rows: usize,
    codes: &mut [u8],
    dw: &mut [f32],
    store: &mut impl FnMut(usize, usize, f32),
) {
    let (k, nb) = (w.k, w.k / QK);
    let mut res = [[0f32; 4]; 4];
    let mut b0 = rows.start;
    while b0 < rows.end {
        let b1 = (b0 + block_rows).min(rows.end);
        let tiles = (b1 - b0).div_ceil(TILE_R);
        // Tile t: its first row and its valid rows (the last repeated past b1).
        let tile_rows = |t: usize| (b0 + t * TILE_R, TILE_R.min(b1 - b0 - t * TILE_R));
        for t in 0..tiles {
            let (r0, nr) = tile_rows(t);
            let (tc, td) = (&mut codes[t * TILE_R * k..], &mut dw[t * TILE_R * nb..]);
            for i in 0..TILE_R {
                let row = w.row(r0 + i.min(nr - 1));
                decode_row(isa, w.ty, row, &mut tc[i * k..(i + 1) * k], &mut td[i..], TILE_R);
            }
        }
        let mut c0 = 0;
        while c0 < n {
            let c1 = (c0 + CHUNK_C).min(n);
            for t in 0..tiles {
                let (r0, nr) = tile_rows(t);
                let tc = &codes[t * TILE_R * k..(t + 1) * TILE_R * k];
                let td = &dw[t * TILE_R * nb..(t + 1) * TILE_R * nb];
                let mut c = c0;
                while c < c1 {
                    let nc = if c1 - c >= 4 { 4 } else { 1 };
                    let at = |j: usize| c + j.min(nc - 1);
                    let acts: [&[u8]; 4] = std::array::from_fn(|j| act_row(at(j)));
                    dot_tile(isa, tc, k, td, &acts[..nc], prep, at, &mut res);
                    for (j, col) in res.iter().enumerate().take(nc) {
                        for (i, &v) in col.iter().enumerate().take(nr) {
                            store(c + j, r0 + i, v);
                        }
                    }
                    c += nc;
                }
            }
            c0 = c1;
        }
        b0 = b1;
    }
}

/// Decode one row into `codes` (`k` bytes) and its block scales into `dw[b·stride]`.
fn decode_row(isa: Isa, ty: TernaryType, row: &[u8], codes: &mut [u8], dw: &mut [f32], stride: usize) {
    match isa {
        Isa::Scalar => scalar::decode_row(ty, row, codes, dw, stride),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => x86::decode_row(ty, row, codes, dw, stride),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => neon::decode_row(ty, row, codes, dw, stride),
        _ => unreachable!("checked by Isa::check"),
    }
}

/// 4 decoded rows × 1 or 4 activation columns; `acts[j]` is column `col(j)`, whose block
/// scales and sums the SIMD paths take from `prep`.
#[allow(clippy::too_many_arguments)]
fn dot_tile(
    isa: Isa,
    codes: &[u8],
    k: usize,
    dw: &[f32],
    acts: &[&[u8]],
    prep: &MatVecPrep,
    col: impl Fn(usize) -> usize,
    out: &mut [[f32; 4]; 4],
) {
    if isa == Isa::Scalar {
        return scalar::dot_tile(codes, k, dw, acts, out);
    }
    let cols: [&formats::ColSums; 4] = std::array::from_fn(|j| &prep.cols[col(j.min(acts.len() - 1))]);
    let cols = &cols[..acts.len()];
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => x86::dot_tile_256(isa, codes, k, dw, acts, cols, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::dot_tile_avx512(codes, k, dw, acts, cols, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => neon::dot_tile(isa, codes, k, dw, acts, cols, out),
        _ => unreachable!("checked by Isa::check"),
    }
}
