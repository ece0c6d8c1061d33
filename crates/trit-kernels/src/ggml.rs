//! Plugging the kernels into ggml's CPU backend.
//!
//! `vendor/patches/0005-cpu-mul-mat-hook.patch` gives ggml-cpu one function pointer per
//! weight type, called from `ggml_compute_forward_mul_mat` on every thread of the op after
//! ggml has converted `src1` to Q8_K (with its own SIMD quantizer, split across threads) and
//! passed the barrier. [`install`] points the TQ1_0 and TQ2_0 entries at [`mul_mat_hook`],
//! which takes its share of weight rows (thread `ith` of `nth`) and runs the tiled kernels.
//! Ops it does not handle (non-2D, non-f32 `src1`, odd strides) return `false` on every
//! thread and ggml computes them as before. The F16 entry points at [`mul_mat_f16_hook`]:
//! f16-weight mat-vecs with few columns (the tied output head at decode), which ggml would
//! otherwise compute one row at a time with `vec_dot_f16`. Training's OUT_PROD (vendor patch
//! 0016) goes to `ggml/out_prod_hook.rs` and [`crate::out_prod`].
//!
//! TQ1_0 weights can also be held re-encoded as TQ2_0 (`shim/cpu_repack.cpp`, the
//! `TRIT_REPACK` extra buffer type, and [`crate::repack`]): llama.cpp's loader places them
//! there while trit's kernels are installed (and `use_extra_bufts`, llama.cpp's `--repack`,
//! is on). The hook recognises that buffer type and runs the TQ2_0 kernels on those rows.

use std::ffi::{c_int, c_void};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use trit_sys as sys;

mod out_prod_hook;
pub use out_prod_hook::{out_prod_hook_runs, out_prod_q16_runs, set_ternary_grad, ternary_grad, TernaryGrad};

use crate::f16w::F16Weights;
use crate::formats::{q8k_row_bytes, TernaryType};
use crate::{mul_mat_rows, stats, Isa, MatVecPrep, Weights};

/// Which code runs ternary MUL_MAT on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TernaryKernels {
    /// trit's kernels (this crate), with the fastest available ISA.
    Trit,
    /// ggml's own `vec_dot_tq*_q8_K`.
    Ggml,
}

impl TernaryKernels {
    pub fn name(self) -> &'static str {
        match self {
            TernaryKernels::Trit => "trit",
            TernaryKernels::Ggml => "ggml",
        }
    }
}

impl FromStr for TernaryKernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "trit" => Ok(TernaryKernels::Trit),
            "ggml" => Ok(TernaryKernels::Ggml),
            _ => Err(format!("unknown ternary kernels '{s}' (trit, ggml)")),
        }
    }
}

static ISA: AtomicU8 = AtomicU8::new(0);

/// `n_blocks` blocks from `src` to `dst` (`shim/cpu_repack.cpp`'s conversions).
type RepackBlocks = unsafe extern "C" fn(src: *const c_void, dst: *mut c_void, n_blocks: usize);

extern "C" {
    // shim/cpu_repack.cpp (compiled by build.rs against trit-sys's llama.cpp copy).
    fn trit_cpu_repack_buffer_type() -> sys::ggml_backend_buffer_type_t;
    fn trit_cpu_repack_register(to_tq2: RepackBlocks, to_tq1: RepackBlocks) -> bool;
    fn trit_cpu_repack_set_accept(accept: bool);
}

/// TQ1_0 → TQ2_0 for the repack buffer's `set_tensor`.
///
/// # Safety
/// `src` holds `n_blocks` TQ1_0 blocks and `dst` room for as many TQ2_0 blocks.
unsafe extern "C" fn repack_to_tq2(src: *const c_void, dst: *mut c_void, n_blocks: usize) {
    // SAFETY: the function's contract.
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts(src as *const u8, n_blocks * crate::formats::TQ1_0_BYTES),
            std::slice::from_raw_parts_mut(dst as *mut u8, n_blocks * crate::formats::TQ2_0_BYTES),
        )
    };
    crate::repack::tq1_to_tq2(s, d);
}

/// TQ2_0 → TQ1_0 for the repack buffer's `get_tensor`.
///
/// # Safety
/// `src` holds `n_blocks` TQ2_0 blocks and `dst` room for as many TQ1_0 blocks.
unsafe extern "C" fn repack_to_tq1(src: *const c_void, dst: *mut c_void, n_blocks: usize) {
    // SAFETY: the function's contract.
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts(src as *const u8, n_blocks * crate::formats::TQ2_0_BYTES),
            std::slice::from_raw_parts_mut(dst as *mut u8, n_blocks * crate::formats::TQ1_0_BYTES),
        )
    };
    crate::repack::tq2_to_tq1(s, d);
}

/// Whether the repack buffer type is among the CPU device's extra buffer types (registered
/// by the first [`install`], which must come before the first model load).
fn repack_registered() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: registration stores two function pointers and appends to ggml-cpu's list.
    *REGISTERED.get_or_init(|| unsafe { trit_cpu_repack_register(repack_to_tq2, repack_to_tq1) })
}

/// The repack buffer type ("TRIT_REPACK"; registered with ggml-cpu on first use): TQ1_0
/// matrices in it hold TQ2_0 blocks, read and written as TQ1_0 through the buffer.
pub fn repack_buffer_type() -> sys::ggml_backend_buffer_type_t {
    repack_registered();
    // SAFETY: returns a static buffer type.
    unsafe { trit_cpu_repack_buffer_type() }
}

/// Whether `t`'s bytes are in the repack buffer type (TQ1_0 weights re-encoded as TQ2_0).
fn is_repacked(t: &sys::ggml_tensor) -> bool {
    // SAFETY: a non-null `buffer` of a live tensor is a live ggml buffer.
    !t.buffer.is_null() && unsafe { (*t.buffer).buft == trit_cpu_repack_buffer_type() }
}

/// The ISA [`install`] detected.
fn isa() -> Isa {
    Isa::ALL[ISA.load(Ordering::Relaxed) as usize]
}

fn isa_code(i: Isa) -> u8 {
    Isa::ALL.iter().position(|&x| x == i).unwrap() as u8
}

/// Route ternary MUL_MAT, few-column F16 MUL_MAT (the output head at decode, attention's
/// per-head products) and training's OUT_PROD (`ggml/out_prod_hook.rs`; `TRIT_OUT_PROD=0` leaves it
/// to ggml) to `which`. Call while no graph is computing (between decodes), and once before
/// the first model load (it registers the repack buffer type then). Returns the ISA the trit
/// kernels use.
///
/// With trit's kernels, TQ1_0 weights of models loaded afterwards go to the repack buffer
/// type; with ggml's they stay as stored, and weights already repacked are still computed
/// (by trit's TQ2_0 kernels: ggml's cannot read them).
pub fn install(which: TernaryKernels) -> Isa {
    let isa = Isa::detect();
    ISA.store(isa_code(isa), Ordering::Relaxed);
    crate::epilogue::set_epilogues(crate::epilogue::epilogues_from_env());
    set_attn_skip(std::env::var("TRIT_ATTN_SKIP").map_or(true, |v| v != "0"));
    let accept = which == TernaryKernels::Trit && repack_registered();
    // SAFETY: stores a flag.
    unsafe { trit_cpu_repack_set_accept(accept) };
    let (tq1_hook, tq2_hook): (sys::ggml_cpu_mul_mat_hook_t, sys::ggml_cpu_mul_mat_hook_t) = match which {
        TernaryKernels::Trit => (Some(mul_mat_hook), Some(mul_mat_hook)),
        TernaryKernels::Ggml => (Some(repacked_only_hook), None),
    };
    let f16_hook: sys::ggml_cpu_mul_mat_hook_t = match which {
        TernaryKernels::Trit => Some(mul_mat_f16_hook),
        TernaryKernels::Ggml => None,
    };
    for (ty, hook) in
        [(sys::GGML_TYPE_TQ1_0, tq1_hook), (sys::GGML_TYPE_TQ2_0, tq2_hook), (sys::GGML_TYPE_F16, f16_hook)]
    {
        // SAFETY: the setter only stores the pointer in ggml-cpu's table; `ty` is in range.
        unsafe { sys::ggml_cpu_set_mul_mat_hook(ty, hook) };
    }
    let q8k_hook: sys::ggml_cpu_quantize_q8_K_hook_t = match which {
        TernaryKernels::Trit if crate::q8k::has_vector_path(isa) => Some(quantize_q8k_hook),
        _ => None,
    };
    // SAFETY: the setter only stores the pointer.
    unsafe { sys::ggml_cpu_set_quantize_q8_K_hook(q8k_hook) };
    let out_prod = which == TernaryKernels::Trit && std::env::var("TRIT_OUT_PROD").map_or(true, |v| v != "0");
    out_prod_hook::install(out_prod, isa);
    let grad = std::env::var("TRIT_TERNARY_GRAD").map_or(Ok(TernaryGrad::I16), |v| v.parse());
    set_ternary_grad(grad.unwrap_or_else(|e| {
        eprintln!("trit: TRIT_TERNARY_GRAD: {e}; using i16");
        TernaryGrad::I16
    }));
    isa
}

/// The Q8_K quantizer ggml-cpu calls while trit's kernels are installed (vendor patch 0012):
/// [`crate::q8k::quantize_q8k_into`], the same bytes as ggml's reference; false (ggml then
/// quantizes the row itself) for what its vector paths do not take.
///
/// # Safety
/// Called by ggml-cpu with `x` holding `k` floats and `y` room for `k / 256` Q8_K blocks.
unsafe extern "C" fn quantize_q8k_hook(x: *const f32, y: *mut c_void, k: i64) -> bool {
    // A `k` that is not whole blocks gets a row length `quantize_q8k_into` rejects.
    let Ok(k) = usize::try_from(k) else { return false };
    if x.is_null() || y.is_null() || !x.is_aligned() {
        return false;
    }
    let isa = isa();
    // SAFETY: the function's contract; Q8_K blocks are 292 bytes, read and written as bytes.
    let (x, out) = unsafe {
        (
            std::slice::from_raw_parts(x, k),
            std::slice::from_raw_parts_mut(y as *mut u8, k / crate::QK * crate::formats::Q8_K_BYTES),
        )
    };
    let done = crate::q8k::quantize_q8k_into(isa, x, out);
    // A load first: threads quantize side by side, and a store (or an atomic add) on every
    // call would bounce the line between their cores.
    if done && !Q8K_HOOK_RAN.load(Ordering::Relaxed) {
        Q8K_HOOK_RAN.store(true, Ordering::Relaxed);
    }
    done
}

static Q8K_HOOK_RAN: AtomicBool = AtomicBool::new(false);

/// Whether [`quantize_q8k_hook`] has quantized a row since the last call, for tests (its
/// bytes equal ggml's, so comparing them cannot show that it ran).
pub fn take_q8k_hook_ran() -> bool {
    Q8K_HOOK_RAN.swap(false, Ordering::Relaxed)
}

/// Whether attention's f16 products leave out the KV positions the mask hides
/// ([`crate::attn_skip`]); [`install`] sets it from TRIT_ATTN_SKIP.
static ATTN_SKIP: AtomicBool = AtomicBool::new(true);

/// Leave out (true, the default) or compute (false; `TRIT_ATTN_SKIP=0`, read by [`install`],
/// for A/B runs) the products of the KV positions attention's mask hides. Either gives the
/// same bits.
pub fn set_attn_skip(on: bool) {
    ATTN_SKIP.store(on, Ordering::Relaxed);
}

fn attn_skip() -> bool {
    ATTN_SKIP.load(Ordering::Relaxed)
}

/// TRIT_F16_CHUNKS_PER_MATRIX=1: a 3-D F16 product's chunks sized for each matrix alone, as
/// before 2026-12-06 (A/B runs).
fn per_matrix_chunks() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRIT_F16_CHUNKS_PER_MATRIX").is_ok_and(|v| v == "1"))
}

/// The TQ1_0 hook while ggml's kernels are chosen: only weights in the repack buffer type,
/// which ggml's TQ1_0 code cannot read.
///
/// # Safety
/// As [`mul_mat_hook`].
unsafe extern "C" fn repacked_only_hook(
    dst: *const sys::ggml_tensor,
    out: *const sys::ggml_tensor,
    src1_q: *const c_void,
    src1_row_size: usize,
    ith: c_int,
    nth: c_int,
    tp: *mut sys::ggml_threadpool,
) -> bool {
    // SAFETY: the hook's contract: `dst` and its sources are live.
    if !is_repacked(unsafe { &*(*dst).src[0] }) {
        return false;
    }
    // SAFETY: the same contract.
    unsafe { mul_mat_hook(dst, out, src1_q, src1_row_size, ith, nth, tp) }
}

/// The hook ggml calls for TQ1_0/TQ2_0 MUL_MAT (see the module docs), writing to `out`: `dst`
/// itself or the last of the elementwise nodes after it ([`crate::epilogue`]).
///
/// # Safety
/// Called by ggml-cpu with a valid MUL_MAT `dst` whose sources are allocated, `out` as the
/// patched hook type describes it, `src1_q` holding `src1`'s rows converted to Q8_K
/// (`src1_row_size` bytes each, contiguous), on each of the op's `nth` threads.
pub unsafe extern "C" fn mul_mat_hook(
    dst: *const sys::ggml_tensor,
    out: *const sys::ggml_tensor,
    src1_q: *const c_void,
    src1_row_size: usize,
    ith: c_int,
    nth: c_int,
    tp: *mut sys::ggml_threadpool,
) -> bool {
    // SAFETY: see the function's contract; ggml keeps these alive for the call.
    let (mm, d) = unsafe { (&*dst, &*out) };
    // SAFETY: the same contract.
    let (s0, s1) = unsafe { (&*mm.src[0], &*mm.src[1]) };
    let stored = match s0.type_ {
        sys::GGML_TYPE_TQ2_0 => TernaryType::Tq2_0,
        sys::GGML_TYPE_TQ1_0 => TernaryType::Tq1_0,
        _ => return false,
    };
    // Weights in the repack buffer are TQ1_0 tensors holding TQ2_0 blocks. Its `supports_op`
    // admits only the shapes checked below (a contiguous 2-D weight, f32 `src1` of one
    // matrix), and ggml's own code cannot read those bytes, so for them this hook must not
    // decline: a shape it cannot take is a bug, reported and aborted (never a wrong result).
    let repacked = is_repacked(s0);
    let ty = if repacked { TernaryType::Tq2_0 } else { stored };
    // Asked for a chain of nodes after the product (`out` is not `dst`), a decline is safe:
    // ggml-cpu then asks for the product alone, which is where the abort applies.
    let decline = || {
        if repacked && std::ptr::eq(mm, d) {
            eprintln!("trit: MUL_MAT on repacked TQ1_0 weights with a shape the kernels cannot take");
            std::process::abort();
        }
        false
    };
    let flat = |t: &sys::ggml_tensor| t.ne[2] == 1 && t.ne[3] == 1;
    if s1.type_ != sys::GGML_TYPE_F32 || !flat(s0) || !flat(s1) || !flat(d) || d.type_ != sys::GGML_TYPE_F32 {
        return decline();
    }
    let (k, rows, n) = (s0.ne[0] as usize, s0.ne[1] as usize, s1.ne[1] as usize);
    // SAFETY: the function's contract.
    let Some(epi) = (unsafe { crate::epilogue::resolve(mm, d, rows, n) }) else { return decline() };
    if rows == 0 || n == 0 {
        return true; // nothing to compute (ggml would loop over nothing too)
    }
    let stride = if repacked { s0.nb[1] / stored.block_bytes() * ty.block_bytes() } else { s0.nb[1] };
    let ldo_bytes = d.nb[1];
    if !k.is_multiple_of(crate::QK)
        || s0.nb[0] != stored.block_bytes()
        || !s0.nb[1].is_multiple_of(stored.block_bytes())
        || src1_row_size != q8k_row_bytes(k)
        || d.nb[0] != 4
        || !ldo_bytes.is_multiple_of(4)
        || ldo_bytes / 4 < rows
        || d.ne[0] as usize != rows
        || d.ne[1] as usize != n
        || nth <= 0
    {
        return decline();
    }
    // SAFETY: ggml's tensor holds `rows` rows of `nb[1]` bytes (in the repack buffer, of
    // `stride` bytes: its allocation is sized for TQ2_0 blocks); the last row needs only
    // its own blocks. The work buffer holds `n` converted rows.
    let (wdata, act) = unsafe {
        (
            std::slice::from_raw_parts(s0.data as *const u8, (rows - 1) * stride + ty.row_bytes(k)),
            std::slice::from_raw_parts(src1_q as *const u8, n * src1_row_size),
        )
    };
    let Ok(w) = Weights::with_stride(ty, wdata, rows, k, stride) else {
        return decline();
    };
    let isa = isa();
    let (ith, nth) = (ith as usize, nth as usize);
    let chunks = if n < 4 {
        // Mat-vec streams the weights once: a few large contiguous chunks per thread keep
        // each thread's prefetch stream inside its own rows; dynamic hand-out still evens
        // out a thread that gets descheduled.
        matvec_chunks(rows, stride, nth)
    } else {
        // Chunks of rows (multiples of the 4-row tile): small enough to balance, at least 4
        // per thread when the matrix allows.
        Chunks::uniform(rows, 16.min(rows.div_ceil(4 * nth).div_ceil(4) * 4).max(4))
    };
    let out = d.data as *mut f32;
    let ldo = ldo_bytes / 4;
    let t0 = stats::start();
    let prep = MatVecPrep::new(isa, &w, act, src1_row_size, n);
    let run = |r| {
        mul_mat_rows(isa, &w, r, act, src1_row_size, n, &prep, |c, r, v| {
            // SAFETY: c < n and r < rows ≤ ldo, inside dst's ne[1]·nb[1] bytes; each chunk
            // of rows is handed to exactly one thread, so writes never overlap.
            unsafe { *out.add(c * ldo + r) = epi.apply(c, r, v) }
        })
    };
    // SAFETY: `tp` is the op's live pool (the hook's contract).
    unsafe { for_each_chunk_index(chunks.count(), ith, nth, tp, |c| run(chunks.range(c))) };
    let kind = if n < 4 { stats::Kind::TernaryMatVec } else { stats::Kind::TernaryMatMat };
    stats::record(t0, kind, ith, nth, rows * ty.row_bytes(k));
    true
}

/// At least this many chunks per thread in mat-vec ops (so a thread that gets descheduled
/// is partly covered by the others). Each chunk is four sequential streams (the 4-row
/// passes' memory order), so fewer, longer chunks keep the prefetchers going longer: on the
/// 2026-12-05 Zen 4 VM (2 threads, 2B-4T TQ2_0 decode, alternating runs) 2 per thread beat
/// 4 in 15 of 17 pairs (+2–5%), 16 lost ~9%, 1 varied most.
const MATVEC_CHUNKS_PER_THREAD: usize = 2;
/// At most this many weight bytes per mat-vec chunk: when the last chunks run, one thread
/// may finish while another still streams one chunk (≈ 40 µs for 1 MiB at 24 GB/s per
/// core); larger matrices (the 657 MB output head) are cut into more chunks instead. Each
/// chunk costs one atomic and one restart of the prefetch stream, negligible at this size.
const MATVEC_CHUNK_BYTES: usize = 1 << 20;

/// An A/B override from the environment: `var` parsed, if within `range`.
fn env_override(var: &str, range: std::ops::RangeInclusive<usize>) -> Option<usize> {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).filter(|n| range.contains(n))
}

/// [`MATVEC_CHUNKS_PER_THREAD`], or TRIT_MATVEC_CHUNKS (1..=64) for A/B runs.
fn chunks_per_thread() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| env_override("TRIT_MATVEC_CHUNKS", 1..=64).unwrap_or(MATVEC_CHUNKS_PER_THREAD))
}

/// [`MATVEC_CHUNK_BYTES`], or TRIT_MATVEC_CHUNK_KIB (64..=2^20) for A/B runs.
fn chunk_bytes() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| env_override("TRIT_MATVEC_CHUNK_KIB", 64..=1 << 20).map_or(MATVEC_CHUNK_BYTES, |k| k << 10))
}

/// Rows per chunk for a mat-vec over `rows` rows of `stride` bytes on `nth` threads: at
/// most `rows / (nth·MATVEC_CHUNKS_PER_THREAD)` and about [`MATVEC_CHUNK_BYTES`], rounded
/// up to a multiple of the 4-row pass and of the rows that make a whole number of 64-byte
/// cache lines (so no line is shared by two threads' chunks when the tensor is
/// line-aligned). Chunks are equal but for the last, so threads get even shares.
pub fn matvec_chunk_rows(rows: usize, stride: usize, nth: usize) -> usize {
    let align = chunk_align(stride);
    let by_threads = rows.div_ceil(nth.max(1) * chunks_per_thread());
    let by_bytes = chunk_bytes() / stride.max(1);
    by_threads.min(by_bytes).div_ceil(align).max(1) * align
}

/// Rows that make whole 64-byte cache lines of `stride`-byte rows and whole 4-row passes.
fn chunk_align(stride: usize) -> usize {
    let line = 64 / gcd(stride, 64);
    4 * line / gcd(4, line)
}

/// A product's rows cut into chunks that threads take one at a time: `n_big` chunks of
/// `big` rows, then the rest in chunks of `small` rows (the last one shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunks {
    rows: usize,
    big: usize,
    n_big: usize,
    small: usize,
}

impl Chunks {
    /// Chunks of `size` rows (the last one shorter).
    pub fn uniform(rows: usize, size: usize) -> Chunks {
        let size = size.max(1);
        Chunks { rows, big: size, n_big: rows / size, small: size }
    }

    /// How many chunks.
    pub fn count(&self) -> usize {
        self.n_big + (self.rows - self.n_big * self.big).div_ceil(self.small)
    }

    /// The rows of chunk `c` (< [`Chunks::count`]).
    pub fn range(&self, c: usize) -> std::ops::Range<usize> {
        let start = if c < self.n_big { c * self.big } else { self.n_big * self.big + (c - self.n_big) * self.small };
        let len = if c < self.n_big { self.big } else { self.small };
        start..(start + len).min(self.rows)
    }
}

/// The chunks of a mat-vec over `rows` rows of `stride` bytes on `nth` threads: chunks of
/// [`matvec_chunk_rows`], or, with TRIT_MATVEC_TAIL=1 (A/B runs), those until the last
/// `2·nth` quarter-size chunks' worth of rows and then quarter-size ones, so that a thread
/// that finishes early waits at most a quarter of a chunk for the others.
pub fn matvec_chunks(rows: usize, stride: usize, nth: usize) -> Chunks {
    matvec_chunks_with(rows, stride, nth, matvec_tail())
}

/// [`matvec_chunks`] with the quarter-size tail or without it.
pub fn matvec_chunks_with(rows: usize, stride: usize, nth: usize, tail: bool) -> Chunks {
    let big = matvec_chunk_rows(rows, stride, nth);
    if !tail {
        return Chunks::uniform(rows, big);
    }
    let align = chunk_align(stride);
    let small = (big / 4).div_ceil(align).max(1) * align;
    let tail_rows = 2 * nth.max(1) * small;
    if small >= big || rows < tail_rows + big {
        return Chunks::uniform(rows, big);
    }
    Chunks { rows, big, n_big: (rows - tail_rows) / big, small }
}

/// TRIT_MATVEC_TAIL=1: mat-vecs end in quarter-size chunks ([`matvec_chunks`]).
fn matvec_tail() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRIT_MATVEC_TAIL").is_ok_and(|v| v == "1"))
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Run `f` on this thread's chunks among `n_chunks`: chunk `ith` first, then whatever
/// ggml's shared counter hands out.
///
/// # Safety
/// `tp` must be the op's live thread pool, its chunk counter set to `nth` before the
/// barrier that precedes the hook (ggml's MUL_MAT does this).
unsafe fn for_each_chunk_index(
    n_chunks: usize,
    ith: usize,
    nth: usize,
    tp: *mut sys::ggml_threadpool,
    mut f: impl FnMut(usize),
) {
    let mut chunk = ith;
    while chunk < n_chunks {
        f(chunk);
        if nth >= n_chunks {
            break;
        }
        // SAFETY: the function's contract; each value the counter returns is one unclaimed chunk.
        chunk = unsafe { sys::ggml_threadpool_chunk_add(tp, 1) } as usize;
    }
}

/// Most activation columns the f16 hook takes: it streams the weights once and reuses each
/// 4-row pass from L1 for every column, which beats ggml only while columns are few
/// (decode; the output head of a prompt, where only the last token's logits are wanted).
/// Larger products go to ggml (llamafile's tinyBLAS).
pub const F16_MAX_COLS: usize = 4;

/// The hook ggml calls for F16-weight MUL_MAT: with at most [`F16_MAX_COLS`] activation
/// columns (ggml has rounded them to f16, as its own F16 path does), trit's f16 mat-vec
/// ([`crate::f16w`]), per matrix where src0 and src1 are 3-D/4-D (ggml's broadcast); anything
/// else returns false on every thread and ggml computes it.
///
/// # Safety
/// As [`mul_mat_hook`], with `src1_q` holding the MUL_MAT's `src1` rows converted to f16.
pub unsafe extern "C" fn mul_mat_f16_hook(
    dst: *const sys::ggml_tensor,
    out: *const sys::ggml_tensor,
    src1_q: *const c_void,
    src1_row_size: usize,
    ith: c_int,
    nth: c_int,
    tp: *mut sys::ggml_threadpool,
) -> bool {
    // SAFETY: see the function's contract; ggml keeps these alive for the call.
    let (mm, out) = unsafe { (&*dst, &*out) };
    // A SOFT_MAX after the product (vendor patch 0015) is a hint: the result goes to `dst`,
    // and the positions its mask hides need no product ([`crate::attn_skip`]).
    let (d, softmax) = if out.op == sys::GGML_OP_SOFT_MAX { (mm, Some(out)) } else { (out, None) };
    // SAFETY: the same contract.
    let (s0, s1) = unsafe { (&*mm.src[0], &*mm.src[1]) };
    if s0.type_ != sys::GGML_TYPE_F16 || s1.type_ != sys::GGML_TYPE_F32 || d.type_ != sys::GGML_TYPE_F32 {
        return false;
    }
    let (k, rows, n) = (s0.ne[0] as usize, s0.ne[1] as usize, s1.ne[1] as usize);
    let (stride, ldo_bytes) = (s0.nb[1], d.nb[1]);
    // 3-D/4-D: one matrix of src0 per (i12, i13) of src1, broadcast as ggml does (attention's
    // K·Q and V·softmax per head, grouped-query heads sharing one K/V head).
    let (ne12, ne13) = (s1.ne[2].max(0) as usize, s1.ne[3].max(0) as usize);
    let (ne02, ne03) = (s0.ne[2].max(0) as usize, s0.ne[3].max(0) as usize);
    if k == 0
        || rows == 0
        || n == 0
        || n > F16_MAX_COLS
        || nth <= 0
        || ne02 == 0
        || ne03 == 0
        || !ne12.is_multiple_of(ne02)
        || !ne13.is_multiple_of(ne03)
        || d.ne[2] as usize != ne12
        || d.ne[3] as usize != ne13
        || s0.nb[0] != 2
        || !stride.is_multiple_of(2)
        || stride / 2 < k
        || !s0.nb[2].is_multiple_of(2)
        || !s0.nb[3].is_multiple_of(2)
        || !(s0.data as usize).is_multiple_of(2)
        || !(src1_q as usize).is_multiple_of(2)
        || src1_row_size != 2 * k
        || d.nb[0] != 4
        || !ldo_bytes.is_multiple_of(4)
        || ldo_bytes / 4 < rows
        || d.ne[0] as usize != rows
        || d.ne[1] as usize != n
        || (ne12 * ne13 > 1 && (d.nb[2] != ldo_bytes * n || d.nb[3] != d.nb[2] * ne12))
    {
        return false;
    }
    // One matrix: the epilogue as for the ternary products; several (attention): none.
    let epi = match ne12 * ne13 {
        // SAFETY: the function's contract.
        1 => unsafe { crate::epilogue::resolve(mm, d, rows, n) },
        _ => std::ptr::eq(mm, d).then_some(crate::epilogue::Epilogue::NONE),
    };
    let Some(epi) = epi else { return false };
    let (r2, r3) = (ne12 / ne02, ne13 / ne03);
    let isa = isa();
    let (ith, nth) = (ith as usize, nth as usize);
    let ldo = ldo_bytes / 4;
    let heads = ne12 * ne13;
    // Attention leaves out what its mask hides: K·Q the hidden positions' rows (they get 0),
    // V·softmax the exact-zero suffix of the softmax rows ([`crate::attn_skip`]).
    let skip = heads > 1 && attn_skip();
    let rows_vis = match softmax {
        // SAFETY: the function's contract (`out` is a live node reading `dst`).
        Some(sm) if skip => unsafe { crate::attn_skip::visible_rows(sm, mm, rows, n, ne12, ne13) },
        _ => rows,
    };
    // SAFETY: the work buffer holds `heads` · n contiguous f16 rows of `k` (checked above).
    let act_of = |m: usize| unsafe { std::slice::from_raw_parts((src1_q as *const u16).add(m * n * k), n * k) };
    let k_of = |m: usize| if skip { crate::attn_skip::nonzero_prefix(act_of(m), k, n) } else { k };
    // Chunks sized over all the op's matrices: attention's per-head products are 20 small
    // matrices (2B-4T: 256 × 128 each at a 256-cell cache), which chunks sized for one matrix
    // cut into 8-row pieces at 16 threads (640 a K·Q product).
    let sized_over = if per_matrix_chunks() { rows_vis } else { rows_vis * heads };
    let chunk_rows = matvec_chunk_rows(sized_over, stride, nth).min(rows_vis);
    let per_matrix = rows_vis.div_ceil(chunk_rows);
    // The activations of the matrix last worked on, widened to f32 once per matrix and thread
    // (one buffer per thread, reused from head to head), and their reduction length.
    let (mut widened_for, mut acts, mut keff) = (None, Vec::new(), k);
    let run = |chunk: usize| {
        let (m, part) = (chunk / per_matrix, chunk % per_matrix);
        let (i12, i13) = (m % ne12, m / ne12);
        let r = part * chunk_rows..((part + 1) * chunk_rows).min(rows_vis);
        // SAFETY: dst is `heads` contiguous matrices of n columns of `ldo` floats (checked).
        let out = unsafe { (d.data as *mut f32).add(m * n * ldo) };
        if part == 0 && rows_vis < rows {
            for c in 0..n {
                // SAFETY: rows ≤ ldo: inside column c of matrix m; no chunk writes these rows.
                unsafe { std::slice::from_raw_parts_mut(out.add(c * ldo + rows_vis), rows - rows_vis).fill(0.0) };
            }
        }
        if widened_for != Some(m) {
            keff = k_of(m);
            crate::f16w::widen_acts_into(act_of(m), keff, k, n, &mut acts);
            widened_for = Some(m);
        }
        // SAFETY: matrix (i12 / r2, i13 / r3) of src0 lies inside ggml's tensor: `rows` rows of
        // `nb[1]` bytes from its offset (2-byte aligned, checked), the last needing only `k`
        // elements.
        let wdata = unsafe {
            let base = (s0.data as *const u8).add((i12 / r2) * s0.nb[2] + (i13 / r3) * s0.nb[3]);
            std::slice::from_raw_parts(base as *const u16, (rows - 1) * (stride / 2) + k)
        };
        let Ok(w) = F16Weights::with_stride(wdata, rows, keff, stride / 2) else { return };
        crate::f16w::gemv_rows(isa, &w, r, &acts, n, |c, r, v| {
            // SAFETY: c < n and r < rows ≤ ldo, inside matrix m of dst; chunks never overlap.
            unsafe { *out.add(c * ldo + r) = epi.apply(c, r, v) }
        })
    };
    let t0 = stats::start();
    // SAFETY: `tp` is the op's live pool (the hook's contract).
    unsafe { for_each_chunk_index(heads * per_matrix, ith, nth, tp, run) };
    let kind = if heads == 1 { stats::Kind::F16MatVec } else { stats::Kind::F16Attention };
    // The weight bytes read (thread 0 counts them; only when stats are on).
    let bytes = if t0.is_some() && ith == 0 { (0..heads).map(|m| rows_vis * k_of(m) * 2).sum() } else { 0 };
    stats::record(t0, kind, ith, nth, bytes);
    F16_HOOK_RUNS.fetch_add(1, Ordering::Relaxed);
    true
}

static F16_HOOK_RUNS: AtomicUsize = AtomicUsize::new(0);

/// How many times (threads × ops) [`mul_mat_f16_hook`] has computed an op in this process,
/// for tests: its results can equal ggml's own bit for bit (same lane structure), so
/// comparing numbers alone cannot show that it ran.
pub fn f16_hook_runs() -> usize {
    F16_HOOK_RUNS.load(Ordering::Relaxed)
}
