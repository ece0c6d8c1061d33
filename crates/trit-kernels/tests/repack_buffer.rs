//! The TQ1_0 repack buffer type (`shim/cpu_repack.cpp`) through ggml's backend API, as
//! llama.cpp uses it: weights written into it as TQ1_0 read back as the same bytes, a
//! MUL_MAT on them in a CPU-backend graph gives exactly what trit's TQ1_0 kernels give on
//! the stored blocks (mat-vec and tiled widths, a ragged 3-thread split) and agrees with
//! ggml's own TQ1_0 kernels, with ggml's kernels installed too (which cannot read the
//! re-encoded blocks, so trit's serve them), and the CPU backend refuses any other op on
//! such a weight.

use trit_kernels::formats::TernaryType;
use trit_kernels::ggml::{install, repack_buffer_type, TernaryKernels};
use trit_kernels::QK;
use trit_sys as sys;

/// The kernel choice is process-wide; the tests here that compute graphs hold this lock.
static KERNEL_CHOICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// ggml's reference TQ1_0 quantizer on ternary-valued floats with per-block scales.
fn tq1_weights(seed: &mut u64, rows: usize, k: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..rows * k).map(|i| (lcg(seed) * 1.5).round() * (0.01 + (i / QK % 7) as f32 * 0.003)).collect();
    let mut q = vec![0u8; rows * TernaryType::Tq1_0.row_bytes(k)];
    // SAFETY: the traits table is static; from_float_ref writes x.len()/256 blocks into `q`.
    unsafe {
        let tr = &*sys::ggml_get_type_traits(sys::GGML_TYPE_TQ1_0);
        (tr.from_float_ref.unwrap())(x.as_ptr(), q.as_mut_ptr() as *mut _, x.len() as i64);
    }
    q
}

/// `W·x` on the CPU backend (`threads` threads), W (`rows × k` TQ1_0 blocks `q`) in a buffer
/// of `buft`, x (`n` columns) and the result in CPU memory. Returns the result and W read
/// back through the buffer.
fn mul_mat(
    buft: sys::ggml_backend_buffer_type_t,
    q: &[u8],
    rows: usize,
    k: usize,
    x: &[f32],
    n: usize,
    threads: i32,
) -> (Vec<f32>, Vec<u8>) {
    // SAFETY: contexts sized for their tensors (no_alloc: data lives in backend buffers of
    // the tensors' sizes); every set/get covers exactly a tensor's bytes; all freed below.
    unsafe {
        let meta = |n_tensors: usize| sys::ggml_init_params {
            mem_size: sys::ggml_tensor_overhead() * n_tensors + sys::ggml_graph_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        };
        let wctx = sys::ggml_init(meta(1));
        let w = sys::ggml_new_tensor_2d(wctx, sys::GGML_TYPE_TQ1_0, k as i64, rows as i64);
        let wbuf = sys::ggml_backend_alloc_ctx_tensors_from_buft(wctx, buft);
        assert!(!wbuf.is_null(), "weight buffer");
        sys::ggml_backend_tensor_set(w, q.as_ptr() as *const _, 0, q.len());
        let mut back = vec![0u8; q.len()];
        sys::ggml_backend_tensor_get(w, back.as_mut_ptr() as *mut _, 0, back.len());

        let gctx = sys::ggml_init(meta(4));
        let xt = sys::ggml_new_tensor_2d(gctx, sys::GGML_TYPE_F32, k as i64, n as i64);
        let y = sys::ggml_mul_mat(gctx, w, xt);
        let gf = sys::ggml_new_graph(gctx);
        sys::ggml_build_forward_expand(gf, y);
        let cpu = sys::ggml_backend_cpu_init();
        sys::ggml_backend_cpu_set_n_threads(cpu, threads);
        assert!(sys::ggml_backend_supports_op(cpu, y), "the CPU backend must take MUL_MAT on this weight");
        let gbuf = sys::ggml_backend_alloc_ctx_tensors_from_buft(gctx, sys::ggml_backend_cpu_buffer_type());
        sys::ggml_backend_tensor_set(xt, x.as_ptr() as *const _, 0, n * k * 4);
        assert_eq!(sys::ggml_backend_graph_compute(cpu, gf), sys::GGML_STATUS_SUCCESS);
        let mut out = vec![0f32; rows * n];
        sys::ggml_backend_tensor_get(y, out.as_mut_ptr() as *mut _, 0, rows * n * 4);
        sys::ggml_backend_free(cpu);
        sys::ggml_backend_buffer_free(gbuf);
        sys::ggml_free(gctx);
        sys::ggml_backend_buffer_free(wbuf);
        sys::ggml_free(wctx);
        (out, back)
    }
}

#[test]
fn repacked_tq1_weights_compute_what_the_stored_ones_do() {
    let _choice = KERNEL_CHOICE.lock().unwrap_or_else(|e| e.into_inner());
    let mut seed = 5;
    let (rows, k) = (37, 1280);
    let q = tq1_weights(&mut seed, rows, k);
    // SAFETY: plain getter of a static buffer type.
    let plain = unsafe { sys::ggml_backend_cpu_buffer_type() };
    for n in [1, 2, 5, 9] {
        let x: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 3.0).collect();
        install(TernaryKernels::Trit);
        let (repacked, back) = mul_mat(repack_buffer_type(), &q, rows, k, &x, n, 3);
        assert_eq!(back, q, "n={n}: the weight read back through the buffer differs from what was written");
        let (stored, _) = mul_mat(plain, &q, rows, k, &x, n, 3);
        assert_eq!(
            repacked, stored,
            "n={n}: TQ2_0 kernels on the re-encoded blocks != TQ1_0 kernels on the stored ones"
        );

        install(TernaryKernels::Ggml);
        let (theirs, _) = mul_mat(plain, &q, rows, k, &x, n, 3);
        let (repacked_g, _) = mul_mat(repack_buffer_type(), &q, rows, k, &x, n, 3);
        install(TernaryKernels::Trit);
        assert_eq!(repacked_g, repacked, "n={n}: repacked weights with ggml's kernels installed");
        let max_abs = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = theirs.iter().zip(&repacked).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // Exact integer block sums on both sides; only the f32 order of the block sums differs.
        assert!(max_abs > 0.1 && diff <= 1e-5 * max_abs, "n={n}: repacked vs ggml's TQ1_0: {diff} (max {max_abs})");
    }
}

#[test]
fn only_mat_mul_reads_a_repacked_weight() {
    // SAFETY: as in `mul_mat`; the op is only checked, never computed.
    unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: sys::ggml_tensor_overhead() * 4,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let w = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_TQ1_0, 256, 8);
        let buf = sys::ggml_backend_alloc_ctx_tensors_from_buft(ctx, repack_buffer_type());
        assert_eq!((*w).buffer, buf);
        // The buffer holds TQ2_0-sized blocks.
        assert_eq!(sys::ggml_backend_buffer_get_alloc_size(buf, w), 8 * 66);
        let ids = sys::ggml_new_tensor_1d(ctx, sys::GGML_TYPE_I32, 2);
        let rows = sys::ggml_get_rows(ctx, w, ids);
        let cpu = sys::ggml_backend_cpu_init();
        assert!(!sys::ggml_backend_supports_op(cpu, rows), "GET_ROWS must be refused on re-encoded weights");
        sys::ggml_backend_free(cpu);
        sys::ggml_backend_buffer_free(buf);
        sys::ggml_free(ctx);
    }
}
