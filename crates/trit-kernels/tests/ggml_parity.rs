//! Against the pinned ggml itself: its quantizers produce blocks our decoders read back
//! exactly, our Q8_K quantizer matches its own byte for byte, and our products match
//! ggml's `vec_dot_tq*_q8_K` within float-summation tolerance; the installed MUL_MAT hook
//! gives the same numbers through a real ggml graph with several threads.

use trit_kernels::formats::{self, quantize_q8k, TernaryType, Q8_K_BYTES};
use trit_kernels::{mul_mat_q8k, Isa, Weights, QK};
use trit_sys as sys;

/// The kernel choice (`install`) is global to the process and tests run in parallel: the
/// tests that switch it or compute ggml graphs hold this lock, so one's ggml-only run never
/// sees another's hook (a graph whose threads split its rows two different ways leaves some
/// rows unwritten).
static KERNEL_CHOICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kernel_choice() -> std::sync::MutexGuard<'static, ()> {
    KERNEL_CHOICE.lock().unwrap_or_else(|e| e.into_inner())
}

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn gtype(ty: TernaryType) -> sys::ggml_type {
    match ty {
        TernaryType::Tq2_0 => sys::GGML_TYPE_TQ2_0,
        TernaryType::Tq1_0 => sys::GGML_TYPE_TQ1_0,
    }
}

/// ggml's reference quantizer for `ty` on ternary-valued floats.
fn ggml_quantize(ty: TernaryType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / QK * ty.block_bytes()];
    // SAFETY: the traits table is static; from_float_ref writes x.len()/256 blocks into `out`.
    unsafe {
        let tr = &*sys::ggml_get_type_traits(gtype(ty));
        (tr.from_float_ref.unwrap())(x.as_ptr(), out.as_mut_ptr() as *mut _, x.len() as i64);
    }
    out
}

fn ternary_floats(seed: &mut u64, rows: usize, k: usize) -> Vec<f32> {
    (0..rows * k)
        .map(|i| {
            let t = (lcg(seed) * 1.5).round();
            let scale = 0.01 + (i / QK % 7) as f32 * 0.003;
            t * scale
        })
        .collect()
}

#[test]
fn ggml_blocks_decode_to_the_same_values() {
    let mut seed = 7;
    for ty in [TernaryType::Tq2_0, TernaryType::Tq1_0] {
        let x = ternary_floats(&mut seed, 4, 1024);
        let q = ggml_quantize(ty, &x);
        let mut ours = vec![0f32; x.len()];
        let mut theirs = vec![0f32; x.len()];
        for r in 0..4 {
            let row = &q[r * ty.row_bytes(1024)..(r + 1) * ty.row_bytes(1024)];
            formats::dequantize_row(ty, row, &mut ours[r * 1024..(r + 1) * 1024]);
        }
        // SAFETY: to_float reads the blocks and writes x.len() floats.
        unsafe {
            let tr = &*sys::ggml_get_type_traits(gtype(ty));
            (tr.to_float.unwrap())(q.as_ptr() as *const _, theirs.as_mut_ptr(), x.len() as i64);
        }
        assert_eq!(ours, theirs, "{ty:?}");
    }
}

// ggml's reference Q8_K quantizer (ggml-base; not in the generated bindings, whose
// allowlist takes the `ggml_`-prefixed API).
extern "C" {
    fn quantize_row_q8_K_ref(x: *const f32, y: *mut std::ffi::c_void, k: i64);
}

#[test]
fn q8k_quantizer_matches_ggml() {
    let mut seed = 11;
    let x: Vec<f32> = (0..8 * QK).map(|_| lcg(&mut seed) * 3.0).collect();
    let ours = quantize_q8k(&x);
    let mut theirs = vec![0u8; ours.len()];
    // SAFETY: the reference writes 8 Q8_K blocks into `theirs`.
    unsafe { quantize_row_q8_K_ref(x.as_ptr(), theirs.as_mut_ptr() as *mut _, x.len() as i64) };
    assert_eq!(ours, theirs);
}

#[test]
fn products_match_ggml_vec_dot() {
    let mut seed = 13;
    let (rows, k, n) = (9, 2560, 3);
    for ty in [TernaryType::Tq2_0, TernaryType::Tq1_0] {
        let wq = ggml_quantize(ty, &ternary_floats(&mut seed, rows, k));
        let x: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        let act = quantize_q8k(&x);
        let w = Weights::new(ty, &wq, rows, k).unwrap();
        let mut ours = vec![0f32; rows * n];
        mul_mat_q8k(Isa::detect(), &w, &act, n, &mut ours).unwrap();
        for c in 0..n {
            for r in 0..rows {
                let mut theirs = 0f32;
                // SAFETY: ggml_cpu_init fills ggml's fp16 tables (idempotent).
                unsafe { sys::ggml_cpu_init() };
                // SAFETY: vec_dot reads one row of k weights and one Q8_K row, both in bounds.
                unsafe {
                    let vd = (*sys::ggml_get_type_traits_cpu(gtype(ty))).vec_dot.unwrap();
                    vd(
                        k as i32,
                        &mut theirs,
                        0,
                        wq.as_ptr().add(r * ty.row_bytes(k)) as *const _,
                        0,
                        act.as_ptr().add(c * k / QK * Q8_K_BYTES) as *const _,
                        0,
                        1,
                    );
                }
                let o = ours[c * rows + r];
                assert!((o - theirs).abs() <= 1e-4 * (1.0 + theirs.abs()), "{ty:?} r={r} c={c}: {o} vs {theirs}");
            }
        }
    }
}

/// `Σ|w·x|` of one f16 row and column, and how far trit's and ggml's f16 dot products of them
/// may differ: ours is ≤ k/64 + 70 roundings deep; ggml's (4 accumulators over 64-element
/// steps, then its reduction tree and a final f32 rounding) ≤ k/64 + 16.
fn f16_orders_bound(w: &[u16], x: &[u16]) -> (f64, f64) {
    use half::f16;
    let k = w.len();
    let mag: f64 =
        w.iter().zip(x).map(|(&a, &b)| (f16::from_bits(a).to_f64() * f16::from_bits(b).to_f64()).abs()).sum();
    (mag, ((k / 64 + k / 64 + 86) as f64) * f64::powi(2.0, -24) * mag)
}

/// `graph` computed with ggml's own kernels, then with trit's hooks installed (ggml's again
/// afterwards): (ggml's result, the hooked result, how many times the F16 hook ran).
fn ggml_then_hooked(graph: impl Fn() -> Vec<f32>) -> (Vec<f32>, Vec<f32>, usize) {
    ggml_then_hooked_counting(trit_kernels::ggml::f16_hook_runs, graph)
}

/// [`ggml_then_hooked`], counting the runs of the hook whose counter `runs` reads, with the
/// gradient through ternary weights in f32 (ggml's bits; i16 is the default).
fn ggml_then_hooked_counting(runs: fn() -> usize, graph: impl Fn() -> Vec<f32>) -> (Vec<f32>, Vec<f32>, usize) {
    ggml_then_hooked_with(trit_kernels::ggml::TernaryGrad::F32, runs, graph)
}

/// [`ggml_then_hooked_counting`] with training's gradient through ternary weights in `grad`.
fn ggml_then_hooked_with(
    grad: trit_kernels::ggml::TernaryGrad,
    runs: fn() -> usize,
    graph: impl Fn() -> Vec<f32>,
) -> (Vec<f32>, Vec<f32>, usize) {
    use trit_kernels::ggml::{install, set_ternary_grad, TernaryKernels};
    install(TernaryKernels::Ggml);
    let theirs = graph();
    install(TernaryKernels::Trit);
    set_ternary_grad(grad);
    let before = runs();
    let hooked = graph();
    let ran = runs() - before;
    install(TernaryKernels::Ggml);
    (theirs, hooked, ran)
}

/// A fresh ggml context of 64 MiB (tensors, graph and work buffer of one test graph), to be
/// freed with `ggml_free`.
fn graph_context() -> *mut sys::ggml_context {
    let params = sys::ggml_init_params { mem_size: 64 << 20, mem_buffer: std::ptr::null_mut(), no_alloc: false };
    // SAFETY: ggml allocates the context's memory itself.
    let ctx = unsafe { sys::ggml_init(params) };
    assert!(!ctx.is_null());
    ctx
}

/// A graph `build` makes in a fresh context (weights and inputs copied in by it), computed on
/// `threads` threads: the values of the tensor it returns and, for each tensor it lists,
/// whether that one was left unwritten (each is filled with NaN before the compute).
fn ggml_graph_watch(
    threads: i32,
    build: impl FnOnce(*mut sys::ggml_context) -> (*mut sys::ggml_tensor, Vec<*mut sys::ggml_tensor>),
) -> (Vec<f32>, Vec<bool>) {
    // SAFETY: a private context big enough for the tensors, graph and work buffer; `build`
    // copies only inside tensors it made; the watched tensors are F32 tensors of this context.
    unsafe {
        let ctx = graph_context();
        let (y, watch) = build(ctx);
        let floats = |t: *mut sys::ggml_tensor| {
            std::slice::from_raw_parts_mut((*t).data as *mut f32, sys::ggml_nelements(t) as usize)
        };
        for &t in &watch {
            floats(t).fill(f32::NAN);
        }
        let gf = sys::ggml_new_graph(ctx);
        sys::ggml_build_forward_expand(gf, y);
        assert_eq!(sys::ggml_graph_compute_with_ctx(ctx, gf, threads), sys::GGML_STATUS_SUCCESS);
        let out = floats(y).to_vec();
        let untouched = watch.iter().map(|&t| floats(t).iter().all(|v| v.is_nan())).collect();
        sys::ggml_free(ctx);
        (out, untouched)
    }
}

/// An F32 tensor of `ne0` × `ne1` holding `v`.
///
/// # Safety
/// `ctx` is a live context with room for it.
unsafe fn f32_tensor(ctx: *mut sys::ggml_context, ne0: usize, ne1: usize, v: &[f32]) -> *mut sys::ggml_tensor {
    assert_eq!(v.len(), ne0 * ne1);
    // SAFETY: the function's contract; the copy fills the new tensor exactly.
    unsafe {
        let t = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F32, ne0 as i64, ne1 as i64);
        std::ptr::copy_nonoverlapping(v.as_ptr(), (*t).data as *mut f32, v.len());
        t
    }
}

/// A weight tensor of type `wtype`, `rows` × `k`, holding the bytes `w`.
///
/// # Safety
/// `ctx` is a live context with room for it.
unsafe fn weight_tensor(
    ctx: *mut sys::ggml_context,
    wtype: sys::ggml_type,
    w: &[u8],
    rows: usize,
    k: usize,
) -> *mut sys::ggml_tensor {
    // SAFETY: the function's contract; the copy fills the new tensor exactly (checked).
    unsafe {
        let t = sys::ggml_new_tensor_2d(ctx, wtype, k as i64, rows as i64);
        assert_eq!(w.len(), sys::ggml_nbytes(t));
        std::ptr::copy_nonoverlapping(w.as_ptr(), (*t).data as *mut u8, w.len());
        t
    }
}

/// `dst = W·x` through a real ggml graph (weights of type `wtype`, `rows × k`, as the bytes
/// `w`; f32 `x` with `n` columns, its first `n · k` values), computed by ggml-cpu on `threads` threads with whatever
/// MUL_MAT hooks are installed.
fn ggml_graph_mul_mat(
    wtype: sys::ggml_type,
    w: &[u8],
    rows: usize,
    k: usize,
    x: &[f32],
    n: usize,
    threads: i32,
) -> Vec<f32> {
    // SAFETY: tensors of the graph's own context.
    let (out, _) = ggml_graph_watch(threads, |ctx| unsafe {
        (sys::ggml_mul_mat(ctx, weight_tensor(ctx, wtype, w, rows, k), f32_tensor(ctx, k, n, &x[..n * k])), vec![])
    });
    out
}

/// [`ggml_graph_mul_mat`] with F16 weights.
fn ggml_graph_f16_mul_mat(w: &[u16], rows: usize, k: usize, x: &[f32], n: usize, threads: i32) -> Vec<f32> {
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    ggml_graph_mul_mat(sys::GGML_TYPE_F16, &bytes, rows, k, x, n, threads)
}

/// The F16 hook inside a ggml graph: with few columns it runs (its counter moves) and
/// computes exactly what `gemv_f16` computes on ggml's f16-rounded activations, on every row
/// of a ragged 3-thread split; that agrees with ggml's own `vec_dot_f16` within the two
/// summation orders' bounds (on AVX-512 builds the lane structures coincide and the results
/// are equal); with more columns it declines and ggml's result is unchanged.
#[test]
fn f16_hook_in_a_ggml_graph() {
    let _choice = kernel_choice();
    use half::f16;
    use trit_kernels::f16w::{gemv_f16, F16Weights};
    use trit_kernels::ggml::F16_MAX_COLS;

    let mut seed = 17;
    let (rows, k) = (1001, 2560);
    let w: Vec<u16> = (0..rows * k).map(|_| f16::from_f32(lcg(&mut seed) * 0.05).to_bits()).collect();
    for n in [1, 2, F16_MAX_COLS, F16_MAX_COLS + 1] {
        let x: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 3.0).collect();
        let x16: Vec<u16> = x.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
        let (theirs, hooked, ran) = ggml_then_hooked(|| ggml_graph_f16_mul_mat(&w, rows, k, &x, n, 3));
        if n > F16_MAX_COLS {
            assert_eq!(ran, 0, "n={n}: the hook must leave this op to ggml");
            assert_eq!(hooked, theirs, "n={n}: the hook must leave this op to ggml");
            continue;
        }
        assert_eq!(ran, 3, "n={n}: the hook should run on each of the 3 threads");
        let mut ours = vec![0f32; rows * n];
        gemv_f16(Isa::detect(), &F16Weights::new(&w, rows, k).unwrap(), &x16, n, &mut ours).unwrap();
        assert_eq!(hooked, ours, "n={n}: hook result != gemv_f16 on the same f16 activations");
        let mut worst = 0f64;
        for c in 0..n {
            for r in 0..rows {
                let (mag, tol) = f16_orders_bound(&w[r * k..][..k], &x16[c * k..][..k]);
                let (a, b) = (hooked[c * rows + r] as f64, theirs[c * rows + r] as f64);
                assert!((a - b).abs() <= tol, "n={n} r={r} c={c}: trit {a} vs ggml {b} (tol {tol})");
                worst = worst.max((a - b).abs() / mag);
            }
        }
        eprintln!("n={n}: max |trit - ggml| / Σ|w·x| = {worst:.2e}, bitwise equal: {}", hooked == theirs);
    }
}

/// Attention's K and Q in a fresh graph: `rows` cells of an f16 cache (each cell's row
/// `row_stride` halves, its `ne02` heads `k` halves apart, as llama.cpp's K cache) viewed as
/// `[k, rows, ne02]`, and `q` (`[k, heads, n]`) permuted to `[k, n, heads]`.
///
/// # Safety
/// `ctx` is a live context with room for both; `cache` holds `rows · row_stride` halves.
#[allow(clippy::too_many_arguments)]
unsafe fn k_view_and_q(
    ctx: *mut sys::ggml_context,
    cache: &[u16],
    row_stride: usize,
    rows: usize,
    k: usize,
    ne02: usize,
    q: &[f32],
    n: usize,
    heads: usize,
) -> (*mut sys::ggml_tensor, *mut sys::ggml_tensor) {
    // SAFETY: the function's contract; each copy fills its new tensor, the view stays inside.
    unsafe {
        let ct = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F16, row_stride as i64, rows as i64);
        std::ptr::copy_nonoverlapping(cache.as_ptr(), (*ct).data as *mut u16, rows * row_stride);
        let kv = sys::ggml_view_3d(ctx, ct, k as i64, rows as i64, ne02 as i64, 2 * row_stride, 2 * k, 0);
        let qt = sys::ggml_new_tensor_3d(ctx, sys::GGML_TYPE_F32, k as i64, heads as i64, n as i64);
        std::ptr::copy_nonoverlapping(q.as_ptr(), (*qt).data as *mut f32, k * heads * n);
        (kv, sys::ggml_permute(ctx, qt, 0, 2, 1, 3))
    }
}

/// Attention's shapes: a 3-D F16 product per head, src0 a strided view of an f16 cache
/// (`ne02` heads of `rows × k`, rows `row_stride` halves apart, heads `k` halves apart, as
/// llama.cpp's K cache), src1 `q` permuted from `[k, heads, n]` to `[k, n, heads]`, heads
/// broadcast `heads / ne02` to one. Returns dst `[rows, n, heads]`.
#[allow(clippy::too_many_arguments)]
fn ggml_graph_f16_heads(
    cache: &[u16],
    row_stride: usize,
    rows: usize,
    k: usize,
    ne02: usize,
    q: &[f32],
    n: usize,
    heads: usize,
    threads: i32,
) -> Vec<f32> {
    // SAFETY: tensors of the graph's own context; the view stays inside the cache tensor.
    let (out, _) = ggml_graph_watch(threads, |ctx| unsafe {
        let (kv, qp) = k_view_and_q(ctx, cache, row_stride, rows, k, ne02, q, n, heads);
        (sys::ggml_mul_mat(ctx, kv, qp), vec![])
    });
    assert_eq!(out.len(), rows * n * heads);
    out
}

/// The F16 hook on attention's per-head products (K·Q with grouped heads, a strided cache
/// view, permuted Q): it runs on every thread and each head's result is exactly `gemv_f16` of
/// that head's K matrix and f16-rounded Q, and within the two summation orders' bounds of
/// ggml's own `vec_dot_f16`.
#[test]
fn f16_hook_on_attention_heads() {
    let _choice = kernel_choice();
    use half::f16;
    use trit_kernels::f16w::{gemv_f16, F16Weights};

    let mut seed = 29;
    // rows = cache cells, k = head size, ne02 K/V heads, `heads` query heads.
    for (rows, k, ne02, heads, n) in [(256, 128, 5, 20, 1), (37, 64, 2, 2, 3), (130, 200, 1, 3, 2)] {
        let row_stride = k * ne02 + 8;
        let cache: Vec<u16> = (0..rows * row_stride).map(|_| f16::from_f32(lcg(&mut seed)).to_bits()).collect();
        let q: Vec<f32> = (0..k * heads * n).map(|_| lcg(&mut seed) * 2.0).collect();
        let (theirs, hooked, ran) =
            ggml_then_hooked(|| ggml_graph_f16_heads(&cache, row_stride, rows, k, ne02, &q, n, heads, 3));
        assert_eq!(ran, 3, "({rows}, {k}, {ne02}, {heads}, {n}): the hook should run on each of the 3 threads");
        let mut worst = 0f64;
        for h in 0..heads {
            let kv = h / (heads / ne02);
            let w: Vec<u16> = (0..rows).flat_map(|r| cache[r * row_stride + kv * k..][..k].to_vec()).collect();
            // q[h] as n columns: element i of column c is q[(c * heads + h) * k + i].
            let x16: Vec<u16> = (0..n)
                .flat_map(|c| {
                    q[(c * heads + h) * k..][..k].iter().map(|&v| f16::from_f32(v).to_bits()).collect::<Vec<_>>()
                })
                .collect();
            let mut ours = vec![0f32; rows * n];
            gemv_f16(Isa::detect(), &F16Weights::new(&w, rows, k).unwrap(), &x16, n, &mut ours).unwrap();
            let got = &hooked[h * rows * n..][..rows * n];
            assert_eq!(got, &ours[..], "head {h}: hook result != gemv_f16 on the same f16 activations");
            for c in 0..n {
                for r in 0..rows {
                    let (mag, tol) = f16_orders_bound(&w[r * k..][..k], &x16[c * k..][..k]);
                    let (a, b) = (got[c * rows + r] as f64, theirs[h * rows * n + c * rows + r] as f64);
                    assert!((a - b).abs() <= tol, "head {h} r={r} c={c}: trit {a} vs ggml {b} (tol {tol})");
                    worst = worst.max((a - b).abs() / mag.max(f64::MIN_POSITIVE));
                }
            }
        }
        eprintln!("({rows}, {k}, {ne02}, {heads}, {n}): max |trit - ggml| / Σ|w·x| = {worst:.2e}");
    }
}

/// Mat-vec chunks: whole cache lines, multiples of the 4-row pass, at least 2 per thread,
/// at most about 1 MiB, covering every row.
#[test]
fn matvec_chunks() {
    use trit_kernels::ggml::matvec_chunk_rows;
    for (rows, stride, nth) in
        [(2560, 660, 2), (6912, 660, 2), (2560, 1782, 3), (640, 660, 8), (128256, 5120, 2), (5, 66, 4)]
    {
        let c = matvec_chunk_rows(rows, stride, nth);
        assert!(c.is_multiple_of(4) && (c * stride).is_multiple_of(64), "{rows}x{stride}: {c}");
        if rows >= 64 * nth * 2 {
            assert!(rows.div_ceil(c) >= nth * 2, "{rows}x{stride}/{nth}: {c} rows per chunk");
        }
        assert!(c * stride <= (1 << 20) + 64 * stride, "{rows}x{stride}: {c} rows per chunk");
    }
    assert_eq!(matvec_chunk_rows(2560, 660, 2), 640);
    assert_eq!(matvec_chunk_rows(128256, 5120, 2), 204);
}

/// The chunk plans cover every row once, in order: uniform ones, and mat-vec plans with and
/// without the quarter-size tail (whose small chunks are whole lines and passes too, and
/// hold the last `2·nth` quarter chunks' worth of rows).
#[test]
fn chunk_plans_cover_every_row_once() {
    use trit_kernels::ggml::{matvec_chunk_rows, matvec_chunks_with, Chunks};
    let covers = |c: &Chunks, rows: usize| {
        let mut next = 0;
        for i in 0..c.count() {
            let r = c.range(i);
            assert_eq!(r.start, next, "{c:?}: chunk {i}");
            assert!(!r.is_empty(), "{c:?}: chunk {i} empty");
            next = r.end;
        }
        assert_eq!(next, rows, "{c:?}");
    };
    for (rows, size) in [(0, 4), (5, 4), (16, 16), (17, 16), (2560, 640)] {
        covers(&Chunks::uniform(rows, size), rows);
    }
    for (rows, stride, nth) in [
        (2560, 660, 2),
        (6912, 660, 2),
        (2560, 660, 16),
        (6912, 1782, 16),
        (640, 660, 8),
        (128256, 5120, 16),
        (5, 66, 4),
    ] {
        let plain = matvec_chunks_with(rows, stride, nth, false);
        covers(&plain, rows);
        assert_eq!(plain, Chunks::uniform(rows, matvec_chunk_rows(rows, stride, nth)));
        let tailed = matvec_chunks_with(rows, stride, nth, true);
        covers(&tailed, rows);
        let last = tailed.range(tailed.count() - 1);
        let first = tailed.range(0);
        if tailed != plain {
            let small = tailed.range(tailed.count() - 2).len();
            assert!(small * 4 <= first.len() + 64 && (small * stride).is_multiple_of(64) && small.is_multiple_of(4));
            assert!(rows - tailed.range(tailed.count() - 2 * nth).start >= 2 * nth * small - small);
        }
        assert!(last.end == rows);
    }
    // 2 threads, a 2B-4T attention projection: 3 chunks of 640 rows, then 4 of 160.
    let c = matvec_chunks_with(2560, 660, 2, true);
    assert_eq!((c.count(), c.range(2), c.range(3), c.range(6)), (7, 1280..1920, 1920..2080, 2400..2560));
}

/// vendor/patches/0006: a row times a 1-element tensor (BitNet's per-tensor scales) through
/// ggml-cpu's MUL, on several threads, is the exact elementwise product.
#[test]
fn scalar_broadcast_mul_is_exact() {
    let _choice = kernel_choice();
    let mut seed = 23;
    let (k, n) = (2560, 3);
    let x: Vec<f32> = (0..k * n).map(|_| lcg(&mut seed) * 7.0).collect();
    let s = 0.0123f32;
    // SAFETY: tensors of the graph's own context.
    let (out, _) = ggml_graph_watch(2, |ctx| unsafe {
        (sys::ggml_mul(ctx, f32_tensor(ctx, k, n, &x), f32_tensor(ctx, 1, 1, &[s])), vec![])
    });
    let want: Vec<f32> = x.iter().map(|&v| v * s).collect();
    assert_eq!(out, want);
}

/// TRIT_KERNEL_STATS: each hooked op counted once (not once a thread) with the weight bytes
/// it read, under the right kind, with some time; ops left to ggml, and ops while recording
/// is off, not at all.
#[test]
fn kernel_stats_count_each_op_once() {
    let _choice = kernel_choice();
    use trit_kernels::ggml::{install, TernaryKernels};
    use trit_kernels::stats::{self, Kind};
    let mut seed = 29;
    let (rows, k) = (300, 512);
    let w16: Vec<u16> = (0..rows * k).map(|_| half::f16::from_f32(lcg(&mut seed) * 0.05).to_bits()).collect();
    let wq = ggml_quantize(TernaryType::Tq2_0, &ternary_floats(&mut seed, rows, k));
    let x: Vec<f32> = (0..8 * k).map(|_| lcg(&mut seed)).collect();
    let kinds = |v: Vec<stats::KernelTime>| {
        v.into_iter().filter(|t| t.ops > 0).map(|t| (t.kind, t.ops, t.bytes, t.secs > 0.0)).collect::<Vec<_>>()
    };

    install(TernaryKernels::Trit);
    stats::enable(true);
    stats::take();
    ggml_graph_f16_mul_mat(&w16, rows, k, &x, 1, 3);
    assert_eq!(kinds(stats::take()), [(Kind::F16MatVec, 1, (rows * k * 2) as u64, true)]);
    ggml_graph_f16_mul_mat(&w16, rows, k, &x, 5, 3); // more columns than the hook takes
    assert_eq!(kinds(stats::take()), []);
    let tq_bytes = (rows * TernaryType::Tq2_0.row_bytes(k)) as u64;
    ggml_graph_mul_mat(sys::GGML_TYPE_TQ2_0, &wq, rows, k, &x, 1, 3);
    ggml_graph_mul_mat(sys::GGML_TYPE_TQ2_0, &wq, rows, k, &x, 2, 2);
    assert_eq!(kinds(stats::take()), [(Kind::TernaryMatVec, 2, 2 * tq_bytes, true)]);
    ggml_graph_mul_mat(sys::GGML_TYPE_TQ2_0, &wq, rows, k, &x, 8, 3);
    assert_eq!(kinds(stats::take()), [(Kind::TernaryMatMat, 1, tq_bytes, true)]);
    stats::enable(false);
    ggml_graph_mul_mat(sys::GGML_TYPE_TQ2_0, &wq, rows, k, &x, 1, 3);
    assert_eq!(kinds(stats::take()), []);
    install(TernaryKernels::Ggml);
    stats::enable(true);
    ggml_graph_mul_mat(sys::GGML_TYPE_TQ2_0, &wq, rows, k, &x, 1, 3);
    assert_eq!(kinds(stats::take()), [], "ggml's own kernels are not trit's to count");
    stats::enable(false);
}

/// vendor/patches/0012: with trit's kernels installed, ggml-cpu's Q8_K conversion (what every
/// TQ1_0/TQ2_0 MUL_MAT quantizes its activations with) runs trit's vector quantizer where
/// the CPU has one, and writes the bytes ggml's reference writes; a row with a NaN is left
/// to ggml (same bytes again); with ggml's kernels the hook is gone.
#[test]
fn q8k_hook_matches_ggml_reference() {
    let _choice = kernel_choice();
    use trit_kernels::ggml::{install, take_q8k_hook_ran, TernaryKernels};
    let mut seed = 31;
    // SAFETY: ggml_cpu_init fills ggml's tables (idempotent).
    unsafe { sys::ggml_cpu_init() };
    let convert = |x: &[f32], reference: bool| {
        let mut out = vec![0u8; x.len() / QK * Q8_K_BYTES];
        // SAFETY: static traits tables; each function writes x.len()/256 blocks into `out`.
        unsafe {
            if reference {
                quantize_row_q8_K_ref(x.as_ptr(), out.as_mut_ptr() as *mut _, x.len() as i64);
            } else {
                (*sys::ggml_get_type_traits_cpu(sys::GGML_TYPE_Q8_K)).from_float.unwrap()(
                    x.as_ptr(),
                    out.as_mut_ptr() as *mut _,
                    x.len() as i64,
                );
            }
        }
        out
    };
    let isa = install(TernaryKernels::Trit);
    let vector = trit_kernels::q8k::has_vector_path(isa);
    for nb in [1, 10, 27] {
        let mut x: Vec<f32> = (0..nb * QK).map(|i| lcg(&mut seed) * (1 + i % 7) as f32).collect();
        x[..QK].iter_mut().step_by(3).for_each(|v| *v = 0.0);
        take_q8k_hook_ran();
        assert_eq!(convert(&x, false), convert(&x, true), "{nb} blocks: hooked conversion != ggml's reference");
        assert_eq!(take_q8k_hook_ran(), vector, "{nb} blocks: the hook should run iff {isa:?} has a vector path");
        x[nb * QK - 1] = f32::NAN;
        assert_eq!(convert(&x, false), convert(&x, true), "{nb} blocks with a NaN");
        assert!(!take_q8k_hook_ran(), "a row with a NaN is ggml's");
    }
    install(TernaryKernels::Ggml);
    let x: Vec<f32> = (0..2 * QK).map(|_| lcg(&mut seed)).collect();
    take_q8k_hook_ran();
    assert_eq!(convert(&x, false), convert(&x, true));
    assert!(!take_q8k_hook_ran(), "ggml's kernels: no hook");
}

/// `W·x · s` through a real ggml graph as llama.cpp builds BitNet's projections: a MUL_MAT,
/// then a MUL by a one-element F32 tensor `s`; `x` has `n` columns in each of `batches`
/// matrices. Returns the MUL's result and whether the MUL_MAT's own tensor was left
/// unwritten (it is filled with NaN first): so it is when the hook wrote the scaled product
/// straight to the MUL (vendor patch 0013).
#[allow(clippy::too_many_arguments)]
fn ggml_graph_scaled_mul_mat(
    wtype: sys::ggml_type,
    w: &[u8],
    rows: usize,
    k: usize,
    x: &[f32],
    n: usize,
    batches: usize,
    s: f32,
    threads: i32,
) -> (Vec<f32>, bool) {
    // SAFETY: tensors of the graph's own context; the copy fills the new tensor exactly.
    let (out, untouched) = ggml_graph_watch(threads, |ctx| unsafe {
        let xt = sys::ggml_new_tensor_3d(ctx, sys::GGML_TYPE_F32, k as i64, n as i64, batches as i64);
        std::ptr::copy_nonoverlapping(x.as_ptr(), (*xt).data as *mut f32, n * k * batches);
        let mm = sys::ggml_mul_mat(ctx, weight_tensor(ctx, wtype, w, rows, k), xt);
        (sys::ggml_mul(ctx, mm, f32_tensor(ctx, 1, 1, &[s])), vec![mm])
    });
    (out, untouched[0])
}

/// vendor/patches/0013: with trit's kernels, a ternary (or f16) MUL_MAT followed by the MUL by
/// its weight scale runs as one op: the hook writes `product · s` to the MUL, bit for bit
/// what the separate product times `s` gives, and the product's own tensor is never written;
/// with the fusion switched off the hook takes the plain product and ggml the MUL. Where the
/// hook declines (a batched `src1` for the ternary hook) ggml computes the product
/// and the MUL as before, on 1 and 3 threads; with ggml's kernels nothing is fused.
#[test]
fn weight_scale_fused_into_the_product() {
    let _choice = kernel_choice();
    use trit_kernels::epilogue::{set_epilogues, Epilogues};
    use trit_kernels::ggml::{install, TernaryKernels};
    use trit_kernels::stats;
    // Ops trit's hooks computed (kernel stats, on for this test).
    let stats_ops = || stats::take().iter().map(|t| t.ops).sum::<u64>();
    stats::enable(true);
    let mut seed = 37;
    let (rows, k, s) = (300, 512, 0.0173f32);
    let wq = ggml_quantize(TernaryType::Tq2_0, &ternary_floats(&mut seed, rows, k));
    let w16: Vec<u8> =
        (0..rows * k).flat_map(|_| half::f16::from_f32(lcg(&mut seed) * 0.05).to_bits().to_le_bytes()).collect();
    let x: Vec<f32> = (0..8 * 2 * k).map(|_| lcg(&mut seed) * 2.0).collect();
    let scaled = |v: Vec<f32>| v.into_iter().map(|p| p * s).collect::<Vec<_>>();
    for (wtype, w) in [(sys::GGML_TYPE_TQ2_0, &wq), (sys::GGML_TYPE_F16, &w16)] {
        let columns: &[usize] = if wtype == sys::GGML_TYPE_F16 { &[1, 2] } else { &[1, 2, 8] };
        for &n in columns {
            for threads in [1, 3] {
                let what = format!("type {wtype} n={n} threads={threads}");
                let x = &x[..n * k];
                install(TernaryKernels::Trit);
                let separate = scaled(ggml_graph_mul_mat(wtype, w, rows, k, x, n, threads));
                let (fused, untouched) = ggml_graph_scaled_mul_mat(wtype, w, rows, k, x, n, 1, s, threads);
                assert!(untouched, "{what}: the product should have gone straight to the MUL");
                assert_eq!(fused, separate, "{what}: fused result != product · s");
                set_epilogues(Epilogues::None);
                stats_ops();
                let (unfused, untouched) = ggml_graph_scaled_mul_mat(wtype, w, rows, k, x, n, 1, s, threads);
                assert_eq!(stats_ops(), 1, "{what}: the plain product should still be trit's");
                set_epilogues(Epilogues::default());
                assert!(!untouched, "{what}: with the fusion off the product is stored");
                assert_eq!(unfused, separate, "{what}: unfused result != product · s");
                install(TernaryKernels::Ggml);
                let (theirs, untouched) = ggml_graph_scaled_mul_mat(wtype, w, rows, k, x, n, 1, s, threads);
                assert!(!untouched, "{what}: ggml's kernels are not fused");
                for (i, (a, b)) in fused.iter().zip(&theirs).enumerate() {
                    assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{what} [{i}]: trit {a} vs ggml {b}");
                }
            }
        }
    }
    // A batched src1: the ternary hook declines, ggml computes product and MUL itself.
    for threads in [1, 3] {
        install(TernaryKernels::Ggml);
        let (theirs, _) = ggml_graph_scaled_mul_mat(sys::GGML_TYPE_TQ2_0, &wq, rows, k, &x, 2, 2, s, threads);
        install(TernaryKernels::Trit);
        let (declined, untouched) = ggml_graph_scaled_mul_mat(sys::GGML_TYPE_TQ2_0, &wq, rows, k, &x, 2, 2, s, threads);
        install(TernaryKernels::Ggml);
        assert!(!untouched, "threads={threads}: a declined product is computed by ggml");
        assert_eq!(declined, theirs, "threads={threads}: declined fusion != ggml's product and MUL");
        assert!(declined.iter().all(|v| v.is_finite()));
    }
    stats::enable(false);
}

/// vendor/patches/0013's epilogues, on BitNet's two other chains through real ggml graphs:
/// the output/down projection (product · scale + residual) and the FFN (relu(gate · s)² ·
/// (up · s)). With trit's kernels the result is bit for bit what the separate nodes give on the
/// plain products, for mat-vecs (1, 2 columns) and a prompt's mat-mat (8), on 1 and 3 threads;
/// which intermediate tensors stay unwritten shows how much of each chain the hook took: all
/// of it for mat-vecs, the scale alone for mat-mats and with `Epilogues::Scale`, none with
/// `Epilogues::None`. ggml's own kernels agree within float tolerance.
#[test]
fn epilogue_chains_match_separate_nodes() {
    let _choice = kernel_choice();
    use trit_kernels::epilogue::{set_epilogues, Epilogues};
    use trit_kernels::ggml::{install, TernaryKernels};
    let mut seed = 41;
    let (rows, k) = (300, 512);
    let [wo, wg, wu] = [0; 3].map(|_| ggml_quantize(TernaryType::Tq2_0, &ternary_floats(&mut seed, rows, k)));
    let (so, sg, su) = (0.0173f32, 0.81f32, 1.37f32);
    let x: Vec<f32> = (0..8 * k).map(|_| lcg(&mut seed) * 2.0).collect();
    let res: Vec<f32> = (0..8 * rows).map(|_| lcg(&mut seed) * 5.0).collect();
    let relu = |v: f32| if v > 0.0 { v } else { 0.0 };
    for kernels in [TernaryKernels::Trit, TernaryKernels::Ggml] {
        install(kernels);
        for n in [1, 2, 8] {
            let (x, res) = (&x[..n * k], &res[..n * rows]);
            for threads in [1, 3] {
                let plain = |w: &[u8]| ggml_graph_mul_mat(sys::GGML_TYPE_TQ2_0, w, rows, k, x, n, threads);
                let (po, pg, pu) = (plain(&wo), plain(&wg), plain(&wu));
                let want_res: Vec<f32> = po.iter().zip(res).map(|(p, r)| p * so + r).collect();
                let want_ffn: Vec<f32> =
                    pg.iter().zip(&pu).map(|(g, u)| relu(g * sg) * relu(g * sg) * (u * su)).collect();
                let modes: &[Epilogues] = match kernels {
                    TernaryKernels::Trit => &[Epilogues::All, Epilogues::Scale, Epilogues::None],
                    TernaryKernels::Ggml => &[Epilogues::All],
                };
                for &mode in modes {
                    set_epilogues(mode);
                    let what = format!("{kernels:?} {mode:?} n={n} threads={threads}");
                    // SAFETY (both builds): tensors of the graph's own context.
                    let (y, untouched) = ggml_graph_watch(threads, |ctx| unsafe {
                        let mm = sys::ggml_mul_mat(
                            ctx,
                            weight_tensor(ctx, sys::GGML_TYPE_TQ2_0, &wo, rows, k),
                            f32_tensor(ctx, k, n, x),
                        );
                        let scaled = sys::ggml_mul(ctx, mm, f32_tensor(ctx, 1, 1, &[so]));
                        (sys::ggml_add(ctx, scaled, f32_tensor(ctx, rows, n, res)), vec![mm, scaled])
                    });
                    let (f, ffn_untouched) = ggml_graph_watch(threads, |ctx| unsafe {
                        let xt = f32_tensor(ctx, k, n, x);
                        let mg = sys::ggml_mul_mat(ctx, weight_tensor(ctx, sys::GGML_TYPE_TQ2_0, &wg, rows, k), xt);
                        let gs = sys::ggml_mul(ctx, mg, f32_tensor(ctx, 1, 1, &[sg]));
                        let gr = sys::ggml_relu(ctx, gs);
                        let g2 = sys::ggml_sqr(ctx, gr);
                        let mu = sys::ggml_mul_mat(ctx, weight_tensor(ctx, sys::GGML_TYPE_TQ2_0, &wu, rows, k), xt);
                        let us = sys::ggml_mul(ctx, mu, f32_tensor(ctx, 1, 1, &[su]));
                        (sys::ggml_mul(ctx, g2, us), vec![mg, gs, gr, g2, mu, us])
                    });
                    let (taken_res, taken_ffn): (&[bool], &[bool]) = match (kernels, mode) {
                        (TernaryKernels::Ggml, _) | (_, Epilogues::None) => (&[false; 2], &[false; 6]),
                        (_, Epilogues::All) if n < 4 => (&[true, true], &[true, true, true, false, true, true]),
                        _ => (&[true, false], &[true, false, false, false, true, false]),
                    };
                    assert_eq!(untouched, taken_res, "{what}: residual chain, intermediates left unwritten");
                    assert_eq!(ffn_untouched, taken_ffn, "{what}: FFN chains, intermediates left unwritten");
                    assert_eq!(y, want_res, "{what}: product · scale + residual");
                    assert_eq!(f, want_ffn, "{what}: relu(gate · s)² · (up · s)");
                }
                set_epilogues(Epilogues::default());
            }
        }
    }
    install(TernaryKernels::Ggml);
}

/// Vendor patch 0014 (SOFT_MAX's rows of all heads shared among the threads): attention's
/// decode shape (one query row for each of 20 heads, a causal mask, a scale) and a prefill
/// shape (4 rows for each of 6 heads) through a real ggml graph give bit for bit the same on 1, 2, 3, 4 and
/// 16 threads (so every row is computed once, as one thread computes it), each row within
/// 1e-6 of a float64 softmax.
#[test]
fn soft_max_rows_of_all_heads() {
    let mut seed = 77;
    for (n_kv, rows, heads) in [(256, 1, 20), (37, 4, 6)] {
        let x: Vec<f32> = (0..n_kv * rows * heads).map(|_| lcg(&mut seed) * 6.0).collect();
        // Causal: row r sees the first n_kv - rows + r + 1 positions.
        let mask: Vec<f32> = (0..n_kv * rows)
            .map(|i| if i % n_kv <= n_kv - rows + i / n_kv { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        let scale = 0.125f32;
        let run = |threads: i32| {
            // SAFETY: tensors of the graph's own context.
            ggml_graph_watch(threads, |ctx| unsafe {
                let a = sys::ggml_new_tensor_3d(ctx, sys::GGML_TYPE_F32, n_kv as i64, rows as i64, heads as i64);
                std::ptr::copy_nonoverlapping(x.as_ptr(), (*a).data as *mut f32, x.len());
                let m = f32_tensor(ctx, n_kv, rows, &mask);
                let y = sys::ggml_soft_max_ext(ctx, a, m, scale, 0.0);
                (y, vec![y]) // filled with NaN first: a row left unwritten fails below
            })
            .0
        };
        let one = run(1);
        for t in [2, 3, 4, 16] {
            assert!(run(t) == one, "{n_kv}x{rows}x{heads}: {t} threads differ from 1");
        }
        for (row, (xr, yr)) in x.chunks(n_kv).zip(one.chunks(n_kv)).enumerate() {
            let mr = &mask[row % rows * n_kv..][..n_kv];
            let z: Vec<f64> = xr.iter().zip(mr).map(|(&v, &m)| v as f64 * scale as f64 + m as f64).collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            for (&y, v) in yr.iter().zip(&z) {
                let want = (v - max).exp() / sum;
                assert!((y as f64 - want).abs() <= 1e-6 * want.max(1e-3), "row {row}: {y} vs {want}");
            }
        }
    }
}

/// Attention as llama.cpp builds it without flash attention, on f16 K and transposed V caches
/// of `n_kv` cells, `ne02` KV heads shared by `heads` query heads, `n` query tokens: K·Q, the
/// masked SOFT_MAX, V·softmax. `hidden(t, i)` says whether the mask hides cell `i` from token
/// `t` (an F32 or F16 mask). Returns (softmax, attention output).
#[allow(clippy::too_many_arguments)]
fn ggml_graph_attention(
    kc: &[u16],
    vc: &[u16],
    n_kv: usize,
    k: usize,
    ne02: usize,
    q: &[f32],
    n: usize,
    heads: usize,
    hidden: impl Fn(usize, usize) -> bool,
    mask_type: sys::ggml_type,
    threads: i32,
) -> (Vec<f32>, Vec<f32>) {
    let mask: Vec<f32> =
        (0..n * n_kv).map(|j| if hidden(j / n_kv, j % n_kv) { f32::NEG_INFINITY } else { 0.0 }).collect();
    // SAFETY: tensors of the graph's own context, copied in whole; the views stay inside the
    // caches; both results are read before the context is freed.
    unsafe {
        let ctx = graph_context();
        let (kv, qp) = k_view_and_q(ctx, kc, k * ne02, n_kv, k, ne02, q, n, heads);
        // V transposed, as llama.cpp's cache without flash attention: one row of n_kv cells
        // per (head, dimension).
        let vt = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F16, n_kv as i64, (k * ne02) as i64);
        std::ptr::copy_nonoverlapping(vc.as_ptr(), (*vt).data as *mut u16, vc.len());
        let vv = sys::ggml_view_3d(ctx, vt, n_kv as i64, k as i64, ne02 as i64, 2 * n_kv, 2 * n_kv * k, 0);
        let kq = sys::ggml_mul_mat(ctx, kv, qp);
        let m = if mask_type == sys::GGML_TYPE_F16 {
            let m16 = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F16, n_kv as i64, n as i64);
            let bits: Vec<u16> = mask.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
            std::ptr::copy_nonoverlapping(bits.as_ptr(), (*m16).data as *mut u16, bits.len());
            m16
        } else {
            f32_tensor(ctx, n_kv, n, &mask)
        };
        let sm = sys::ggml_soft_max_ext(ctx, kq, m, 0.088, 0.0);
        let y = sys::ggml_mul_mat(ctx, vv, sm);
        let gf = sys::ggml_new_graph(ctx);
        sys::ggml_build_forward_expand(gf, y);
        assert_eq!(sys::ggml_graph_compute_with_ctx(ctx, gf, threads), sys::GGML_STATUS_SUCCESS);
        let read = |t: *mut sys::ggml_tensor| {
            std::slice::from_raw_parts((*t).data as *const f32, sys::ggml_nelements(t) as usize).to_vec()
        };
        let out = (read(sm), read(y));
        sys::ggml_free(ctx);
        out
    }
}

/// Attention leaves out the KV cells its mask hides (vendor patch 0015 hands K·Q's SOFT_MAX to
/// the F16 hook; V·softmax skips the softmax rows' zero suffix in 64-cell steps), without
/// changing a bit: on 2B-4T's decode shape (1 token, 20 heads on 5, 256 cells of which 45 are
/// visible) and a 3-token prefix-causal one, with F32 and F16 masks, on 1, 2, 3 and 16 threads,
/// softmax and output equal those computed over every cell (`set_attn_skip(false)`); with NaN
/// in every K row no token sees and in the V cells past the last 64-cell step, they are still
/// equal (so those were not read), where computing every cell gives NaN; and both are within
/// float tolerance of ggml's own kernels. Hiding one visible cell too many fails it.
#[test]
fn attention_skips_hidden_positions() {
    let _choice = kernel_choice();
    use half::f16;
    use trit_kernels::ggml::{install, set_attn_skip, TernaryKernels};
    let mut seed = 91;
    for (n_kv, k, ne02, heads, n, seen) in [(256, 128, 5, 20, 1, 45), (256, 64, 2, 4, 3, 130), (96, 32, 1, 2, 2, 7)] {
        // Token t sees cells 0..seen + t: the cells from `vis` on are hidden from every token.
        let hidden = |t: usize, i: usize| i >= seen + t;
        let vis = seen + n - 1;
        let kc: Vec<u16> = (0..n_kv * k * ne02).map(|_| f16::from_f32(lcg(&mut seed)).to_bits()).collect();
        let vc: Vec<u16> = (0..n_kv * k * ne02).map(|_| f16::from_f32(lcg(&mut seed)).to_bits()).collect();
        let q: Vec<f32> = (0..k * heads * n).map(|_| lcg(&mut seed) * 2.0).collect();
        // NaN in the K rows of hidden cells and in the V cells past the last 64-cell step.
        let nan = f16::NAN.to_bits();
        let mut kn = kc.clone();
        kn[vis * k * ne02..].fill(nan);
        let mut vn = vc.clone();
        let vstep = vis.div_ceil(64) * 64;
        for row in vn.chunks_mut(n_kv) {
            row[vstep.min(n_kv)..].fill(nan);
        }
        for mask_type in [sys::GGML_TYPE_F32, sys::GGML_TYPE_F16] {
            let run = |kc: &[u16], vc: &[u16], threads: i32| {
                ggml_graph_attention(kc, vc, n_kv, k, ne02, &q, n, heads, hidden, mask_type, threads)
            };
            install(TernaryKernels::Ggml);
            let (sm_ggml, y_ggml) = run(&kc, &vc, 2);
            install(TernaryKernels::Trit);
            set_attn_skip(false);
            let (sm_all, y_all) = run(&kc, &vc, 3);
            let (_, y_all_nan) = run(&kn, &vn, 3);
            set_attn_skip(true);
            let tag = format!("n_kv {n_kv}, {heads} heads on {ne02}, {n} tokens, mask type {mask_type}");
            assert!(
                vstep >= n_kv || y_all_nan.iter().any(|v| v.is_nan()),
                "{tag}: NaN cells should poison the full product"
            );
            for threads in [1, 2, 3, 16] {
                let (sm, y) = run(&kc, &vc, threads);
                assert!(sm == sm_all && y == y_all, "{tag}, {threads} threads: skipping changed the result");
                let (sm, y) = run(&kn, &vn, threads);
                assert!(sm == sm_all && y == y_all, "{tag}, {threads} threads: hidden cells were read");
            }
            install(TernaryKernels::Ggml);
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
            assert!(close(&sm_all, &sm_ggml) && close(&y_all, &y_ggml), "{tag}: trit's attention far from ggml's");
            assert!(sm_all.iter().enumerate().all(|(j, &p)| !hidden(j / n_kv % n, j % n_kv) || p == 0.0));
        }
    }
}

/// `ggml_out_prod(W, Sᵀ)` through a real ggml graph, as ggml-opt builds a frozen weight's
/// input gradient (`S` = the output gradient, `n` tokens × `rows`, viewed transposed), or
/// with `S` given already as `[n, rows]` (`transposed` false): the `[k, n]` result.
#[allow(clippy::too_many_arguments)]
fn ggml_graph_out_prod(
    wtype: sys::ggml_type,
    w: &[u8],
    rows: usize,
    k: usize,
    s: &[f32],
    n: usize,
    transposed: bool,
    threads: i32,
) -> Vec<f32> {
    // SAFETY: tensors of the graph's own context.
    let (out, _) = ggml_graph_watch(threads, |ctx| unsafe {
        let wt = weight_tensor(ctx, wtype, w, rows, k);
        let st = if transposed {
            sys::ggml_transpose(ctx, f32_tensor(ctx, rows, n, s))
        } else {
            let mut st = vec![0f32; n * rows];
            for t in 0..n {
                for r in 0..rows {
                    st[r * n + t] = s[t * rows + r];
                }
            }
            f32_tensor(ctx, n, rows, &st)
        };
        (sys::ggml_out_prod(ctx, wt, st), vec![])
    });
    out
}

/// Training's OUT_PROD: through a frozen TQ2_0, TQ1_0 or F16 weight, and the LoRA matrices'
/// F32 gradient products (the rank as `k` or as the token count). With trit's kernels
/// installed the hook runs (on every thread) and its result equals ggml's own bit for bit —
/// ggml's vector lanes and its scalar tails (`k` = 8, 100) alike — over odd token counts, row
/// counts that leave partial chunks, both layouts of the gradient and 1, 3 and 16 threads.
/// Both agree with a float64 product.
#[test]
fn out_prod_hook_matches_ggml() {
    let _choice = kernel_choice();
    use half::f16;
    use trit_kernels::ggml::out_prod_hook_runs;
    let mut seed = 23;
    let cases: [(sys::ggml_type, usize, usize, usize); 9] = [
        (sys::GGML_TYPE_TQ2_0, 512, 45, 13),
        (sys::GGML_TYPE_TQ1_0, 768, 70, 7),
        (sys::GGML_TYPE_TQ2_0, 256, 1, 1),
        (sys::GGML_TYPE_F16, 320, 33, 50),
        (sys::GGML_TYPE_F16, 2560, 64, 9),
        (sys::GGML_TYPE_F16, 100, 10, 3),
        (sys::GGML_TYPE_F32, 8, 300, 40),
        (sys::GGML_TYPE_F32, 640, 40, 8),
        (sys::GGML_TYPE_F32, 100, 7, 20),
    ];
    for (i, &(wtype, k, rows, n)) in cases.iter().enumerate() {
        let (w, wv): (Vec<u8>, Vec<f64>) = if wtype == sys::GGML_TYPE_F32 {
            let f: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed)).collect();
            (f.iter().flat_map(|v| v.to_le_bytes()).collect(), f.iter().map(|&v| v as f64).collect())
        } else if wtype == sys::GGML_TYPE_F16 {
            let h: Vec<f16> = (0..rows * k).map(|_| f16::from_f32(lcg(&mut seed) * 0.05)).collect();
            (h.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(), h.iter().map(|v| v.to_f64()).collect())
        } else {
            let ty = if wtype == sys::GGML_TYPE_TQ2_0 { TernaryType::Tq2_0 } else { TernaryType::Tq1_0 };
            let x = ternary_floats(&mut seed, rows, k);
            let q = ggml_quantize(ty, &x);
            let mut back = vec![0f32; rows * k];
            for r in 0..rows {
                formats::dequantize_row(ty, &q[r * ty.row_bytes(k)..][..ty.row_bytes(k)], &mut back[r * k..][..k]);
            }
            (q, back.iter().map(|&v| v as f64).collect())
        };
        let s: Vec<f32> = (0..n * rows).map(|_| lcg(&mut seed) * 2.0).collect();
        for threads in [1, 3, 16] {
            for transposed in [true, false] {
                let graph = || ggml_graph_out_prod(wtype, &w, rows, k, &s, n, transposed, threads);
                let (theirs, hooked, ran) = ggml_then_hooked_counting(out_prod_hook_runs, graph);
                let what = format!("case {i} (k={k} rows={rows} n={n}) threads={threads} transposed={transposed}");
                assert_eq!(ran, threads as usize, "{what}: the hook should run on every thread");
                assert_eq!(hooked.len(), k * n);
                let same = hooked.iter().zip(&theirs).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{what}: trit's OUT_PROD differs from ggml's");
                for t in 0..n {
                    for j in (0..k).step_by(7) {
                        let terms = (0..rows).map(|r| wv[r * k + j] * s[t * rows + r] as f64);
                        let (exact, mag) = terms.fold((0f64, 0f64), |(e, m), v| (e + v, m + v.abs()));
                        let tol = (rows as f64 + 2.0) * f64::powi(2.0, -24) * mag + 1e-30;
                        assert!((hooked[t * k + j] as f64 - exact).abs() <= tol, "{what} t={t} j={j}");
                    }
                }
            }
        }
    }
}

/// `TernaryGrad::I16` through a real ggml graph: the hook runs the i16 path on every thread
/// (where the CPU has it; the f32 path, ggml's bits, elsewhere) and each output is within the
/// `out_prod_q16` bound of float64 — `(m/32767)·0.51·nnz`, `m` the token's largest
/// `|d(r, b)·S[t, r]|` in the column's block — for TQ2_0 and TQ1_0, odd row counts, both
/// gradient layouts and 1, 3 and 16 threads. It differs from ggml's f32 result (so it ran).
#[test]
fn out_prod_hook_i16_gradients() {
    let _choice = kernel_choice();
    use trit_kernels::ggml::{out_prod_q16_runs, TernaryGrad};
    use trit_kernels::out_prod_q16::has_q16_path;
    let q16 = has_q16_path(Isa::detect());
    let mut seed = 31;
    for (ty, k, rows, n) in
        [(TernaryType::Tq2_0, 512, 45, 13), (TernaryType::Tq1_0, 768, 70, 7), (TernaryType::Tq2_0, 256, 3, 50)]
    {
        let x = ternary_floats(&mut seed, rows, k);
        let q = ggml_quantize(ty, &x);
        let rb = ty.row_bytes(k);
        let mut back = vec![0f32; rows * k];
        for r in 0..rows {
            formats::dequantize_row(ty, &q[r * rb..][..rb], &mut back[r * k..][..k]);
        }
        let d = |r: usize, b: usize| formats::block_scale(ty, &q[r * rb + b * ty.block_bytes()..]);
        let s: Vec<f32> = (0..n * rows).map(|_| lcg(&mut seed) * 2.0).collect();
        for threads in [1, 3, 16] {
            for transposed in [true, false] {
                let graph = || ggml_graph_out_prod(gtype(ty), &q, rows, k, &s, n, transposed, threads);
                let (theirs, ours, ran) = ggml_then_hooked_with(TernaryGrad::I16, out_prod_q16_runs, graph);
                let what = format!("{ty:?} k={k} rows={rows} n={n} threads={threads} transposed={transposed}");
                if !q16 {
                    assert_eq!(ran, 0, "{what}");
                    assert!(ours.iter().zip(&theirs).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
                    continue;
                }
                assert_eq!(ran, threads as usize, "{what}: the i16 path should run on every thread");
                assert!(ours.iter().zip(&theirs).any(|(a, b)| a != b), "{what}: the same bits as ggml's f32");
                for t in 0..n {
                    for j in 0..k {
                        let b = j / QK;
                        let m = (0..rows).map(|r| (d(r, b) * s[t * rows + r]).abs()).fold(0f32, f32::max) as f64;
                        let nnz = (0..rows).filter(|&r| back[r * k + j] != 0.0).count() as f64;
                        let terms = (0..rows).map(|r| back[r * k + j] as f64 * s[t * rows + r] as f64);
                        let (exact, mag) = terms.fold((0f64, 0f64), |(e, a), v| (e + v, a + v.abs()));
                        let tol = m / 32767.0 * 0.51 * nnz + f64::powi(2.0, -22) * (mag + exact.abs()) + 1e-30;
                        let got = ours[t * k + j] as f64;
                        assert!((got - exact).abs() <= tol, "{what} t={t} j={j}: {got} vs {exact} (tol {tol})");
                    }
                }
            }
        }
    }
}

/// The batched OUT_PROD of attention's gradients: f32 (and f16) per-head matrices, the f32
/// first operand shared by groups of heads (grouped-query attention), the second a transposed
/// view, as ggml-opt builds them: the hook runs and equals ggml's own bit for bit.
#[test]
fn out_prod_hook_batched_heads() {
    let _choice = kernel_choice();
    use half::f16;
    use trit_kernels::ggml::out_prod_hook_runs;
    let mut seed = 29;
    // (k, rows, n, heads of the first operand, heads)
    for (k, rows, n, h0, h) in [(128, 40, 10, 2, 4), (64, 33, 7, 3, 3), (96, 5, 60, 1, 2), (256, 64, 50, 4, 4)] {
        // ggml's F16 OUT_PROD does not broadcast (it asserts equal head counts).
        let types: &[sys::ggml_type] =
            if h0 == h { &[sys::GGML_TYPE_F32, sys::GGML_TYPE_F16] } else { &[sys::GGML_TYPE_F32] };
        for &wtype in types {
            let a: Vec<f32> = (0..k * rows * h0).map(|_| lcg(&mut seed)).collect();
            let a =
                if wtype == sys::GGML_TYPE_F16 { a.iter().map(|&v| f16::from_f32(v).to_f32()).collect() } else { a };
            let b: Vec<f32> = (0..rows * n * h).map(|_| lcg(&mut seed)).collect();
            for threads in [1, 3, 16] {
                let graph = || {
                    // SAFETY: tensors of the graph's own context.
                    let (out, _) = ggml_graph_watch(threads, |ctx| unsafe {
                        let at = sys::ggml_new_tensor_3d(ctx, wtype, k as i64, rows as i64, h0 as i64);
                        if wtype == sys::GGML_TYPE_F16 {
                            let halves: Vec<u16> = a.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
                            std::ptr::copy_nonoverlapping(halves.as_ptr(), (*at).data as *mut u16, halves.len());
                        } else {
                            std::ptr::copy_nonoverlapping(a.as_ptr(), (*at).data as *mut f32, a.len());
                        }
                        let bt = sys::ggml_new_tensor_3d(ctx, sys::GGML_TYPE_F32, rows as i64, n as i64, h as i64);
                        std::ptr::copy_nonoverlapping(b.as_ptr(), (*bt).data as *mut f32, b.len());
                        (sys::ggml_out_prod(ctx, at, sys::ggml_transpose(ctx, bt)), vec![])
                    });
                    out
                };
                let (theirs, hooked, ran) = ggml_then_hooked_counting(out_prod_hook_runs, graph);
                let what = format!("k={k} rows={rows} n={n} heads {h0}/{h} type {wtype} threads={threads}");
                assert_eq!(ran, threads as usize, "{what}: the hook should run on every thread");
                assert_eq!(hooked.len(), k * n * h);
                assert!(hooked.iter().all(|v| v.is_finite()), "{what}: unwritten output");
                let same = hooked.iter().zip(&theirs).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{what}: trit's OUT_PROD differs from ggml's");
                // Spot check against float64: head m reads operand head m / (h / h0).
                for m in 0..h {
                    let (t, j) = (n / 2, k - 1);
                    let terms = (0..rows).map(|r| {
                        a[(m / (h / h0)) * rows * k + r * k + j] as f64 * b[m * rows * n + t * rows + r] as f64
                    });
                    let (exact, mag) = terms.fold((0f64, 0f64), |(e, mm), v| (e + v, mm + v.abs()));
                    let got = hooked[m * n * k + t * k + j] as f64;
                    assert!(
                        (got - exact).abs() <= (rows as f64 + 2.0) * f64::powi(2.0, -24) * mag + 1e-30,
                        "{what} head {m}"
                    );
                }
            }
        }
    }
}
