//! Kernel speed at bitnet-b1.58-2B-4T shapes, one thread.
//!
//! `cargo bench -p trit-kernels --features ggml` (the feature adds ggml's own
//! `vec_dot_tq*_q8_K`, called row by row the way ggml-cpu does, as the baseline).
//! Group `weights` (n = 1, decode) reports weight bytes per second (GiB/s); group `ops`
//! (n = 512, prefill) reports 2·rows·k·n operations per second (Gelem/s = GOP/s). Each
//! time converts to the other unit: GOP/s = GB/s × 2·n·k·rows / weight bytes.
//! Group `f16` (n = 1): the f16 output-head mat-vec on a quarter of 2B-4T's head
//! (32064 × 2560, 164 MB: far larger than the caches, as in decode) against ggml's
//! `vec_dot_f16` row by row, in weight GiB/s.
//! Group `q8k`: quantizing 512 activation rows of 2560 to Q8_K (a prompt's input to one
//! product), scalar and vector paths and ggml's reference, in activations per second.
//! Group `out_prod` (with `ggml`): training's input gradient through a frozen TQ2_0 weight,
//! ggml's OUT_PROD in a one-thread ggml graph with trit's hook and with ggml's own code, at the
//! attention-projection and FFN-up shapes for 256 tokens, in multiply-adds per second
//! (Gelem/s; GFLOP/s is twice that): `trit` is the hook's f32 form (ggml's bits), `trit-i16`
//! its i16 form (`TernaryGrad::I16`, the default for training).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use trit_kernels::formats::{pack, quantize_q8k, TernaryType};
use trit_kernels::{mul_mat_q8k, Isa, Weights};

/// (rows, k): attn q/o, ffn down, ffn up/gate, attn k/v.
const SHAPES: [(usize, usize); 4] = [(2560, 2560), (2560, 6912), (6912, 2560), (640, 2560)];

fn data(ty: TernaryType, rows: usize, k: usize, n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut s = 0x1234_5678u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let trits: Vec<i8> = (0..rows * k).map(|_| (next() % 3) as i8 - 1).collect();
    let scales = vec![f16::from_f32(0.02); rows * k / 256];
    let x: Vec<f32> = (0..n * k).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
    (pack(ty, &trits, &scales), quantize_q8k(&x))
}

#[cfg(feature = "ggml")]
fn ggml_mul_mat(ty: TernaryType, w: &[u8], rows: usize, k: usize, act: &[u8], n: usize, out: &mut [f32]) {
    let gt = match ty {
        TernaryType::Tq2_0 => trit_sys::GGML_TYPE_TQ2_0,
        TernaryType::Tq1_0 => trit_sys::GGML_TYPE_TQ1_0,
    };
    // SAFETY: ggml's CPU type traits are a static table; vec_dot reads one row of `k`
    // weights and one Q8_K row, both in bounds here, and writes one float.
    unsafe {
        trit_sys::ggml_cpu_init();
        let vec_dot = (*trit_sys::ggml_get_type_traits_cpu(gt)).vec_dot.unwrap();
        let (wr, ar) = (ty.row_bytes(k), trit_kernels::formats::q8k_row_bytes(k));
        for c in 0..n {
            for r in 0..rows {
                vec_dot(
                    k as i32,
                    out.as_mut_ptr().add(c * rows + r),
                    0,
                    w.as_ptr().add(r * wr) as *const _,
                    0,
                    act.as_ptr().add(c * ar) as *const _,
                    0,
                    1,
                );
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let best = Isa::detect();
    for (group, per_bytes, n) in [("weights", true, 1usize), ("ops", false, 512)] {
        let mut g = c.benchmark_group(group);
        g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        for ty in [TernaryType::Tq2_0, TernaryType::Tq1_0] {
            for (rows, k) in SHAPES {
                {
                    let (w, act) = data(ty, rows, k, n);
                    let weights = Weights::new(ty, &w, rows, k).unwrap();
                    let mut out = vec![0f32; rows * n];
                    g.throughput(if per_bytes {
                        Throughput::Bytes(w.len() as u64)
                    } else {
                        Throughput::Elements((2 * rows * k * n) as u64)
                    });
                    let id = format!("{}/{rows}x{k}/n{n}", ty.name());
                    // The best path, every other SIMD path this CPU has (AVX2 and AVX-VNNI
                    // beside AVX-512, plain NEON beside dotprod), and the scalar reference
                    // for the mat-vec only (it is too slow for the prefill shape).
                    let mut isas = vec![best];
                    isas.extend(Isa::available().into_iter().filter(|&i| i != best && i != Isa::Scalar));
                    if n == 1 && best != Isa::Scalar {
                        isas.push(Isa::Scalar);
                    }
                    for isa in isas {
                        g.bench_with_input(BenchmarkId::new(isa.name(), &id), &n, |b, &n| {
                            b.iter(|| mul_mat_q8k(isa, &weights, black_box(&act), n, &mut out).unwrap())
                        });
                    }
                    #[cfg(feature = "ggml")]
                    g.bench_with_input(BenchmarkId::new("ggml", &id), &n, |b, &n| {
                        b.iter(|| ggml_mul_mat(ty, &w, rows, k, black_box(&act), n, &mut out))
                    });
                }
            }
        }
        g.finish();
    }
}

#[cfg(feature = "ggml")]
fn ggml_f16_matvec(w: &[u16], rows: usize, k: usize, act: &[u16], out: &mut [f32]) {
    // SAFETY: ggml's CPU type traits are a static table; vec_dot_f16 reads one row of `k`
    // f16 weights and `k` f16 activations, both in bounds here, and writes one float.
    unsafe {
        trit_sys::ggml_cpu_init();
        let vec_dot = (*trit_sys::ggml_get_type_traits_cpu(trit_sys::GGML_TYPE_F16)).vec_dot.unwrap();
        for r in 0..rows {
            vec_dot(
                k as i32,
                out.as_mut_ptr().add(r),
                0,
                w.as_ptr().add(r * k) as *const _,
                0,
                act.as_ptr() as *const _,
                0,
                1,
            );
        }
    }
}

fn bench_f16(c: &mut Criterion) {
    use trit_kernels::f16w::{gemv_f16, F16Weights};
    let (rows, k) = (32064, 2560);
    let mut s = 0x2545_f491u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s % 2001) as f32 / 1000.0 - 1.0
    };
    let w: Vec<u16> = (0..rows * k).map(|_| f16::from_f32(next() * 0.05).to_bits()).collect();
    let act: Vec<u16> = (0..k).map(|_| f16::from_f32(next()).to_bits()).collect();
    let weights = F16Weights::new(&w, rows, k).unwrap();
    let mut out = vec![0f32; rows];
    let mut g = c.benchmark_group("f16");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(2 * (rows * k) as u64));
    let id = format!("{rows}x{k}/n1");
    let mut isas = vec![Isa::detect()];
    if isas[0] == Isa::Avx512Vnni {
        isas.push(Isa::Avx2);
    }
    for isa in isas {
        g.bench_with_input(BenchmarkId::new(isa.name(), &id), &(), |b, _| {
            b.iter(|| gemv_f16(isa, &weights, black_box(&act), 1, &mut out).unwrap())
        });
    }
    #[cfg(feature = "ggml")]
    g.bench_with_input(BenchmarkId::new("ggml", &id), &(), |b, _| {
        b.iter(|| ggml_f16_matvec(&w, rows, k, black_box(&act), &mut out))
    });
    g.finish();
}

// ggml's reference Q8_K quantizer (ggml-base; not in the generated bindings).
#[cfg(feature = "ggml")]
extern "C" {
    fn quantize_row_q8_K_ref(x: *const f32, y: *mut std::ffi::c_void, k: i64);
}

fn bench_q8k(c: &mut Criterion) {
    let (n, k) = (512, 2560);
    let mut s = 0x9e37_79b9u32;
    let x: Vec<f32> = (0..n * k)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 20001) as f32 / 1000.0 - 10.0
        })
        .collect();
    let mut out = vec![0u8; n * k / 256 * trit_kernels::formats::Q8_K_BYTES];
    let mut g = c.benchmark_group("q8k");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements((n * k) as u64));
    let id = format!("{n}x{k}");
    g.bench_with_input(BenchmarkId::new("scalar", &id), &(), |b, _| b.iter(|| quantize_q8k(black_box(&x))));
    for isa in Isa::available().into_iter().filter(|&i| trit_kernels::q8k::has_vector_path(i)) {
        g.bench_with_input(BenchmarkId::new(isa.name(), &id), &(), |b, _| {
            b.iter(|| assert!(trit_kernels::q8k::quantize_q8k_into(isa, black_box(&x), &mut out)))
        });
    }
    #[cfg(feature = "ggml")]
    g.bench_with_input(BenchmarkId::new("ggml-ref", &id), &(), |b, _| {
        // SAFETY: the reference writes n·k/256 blocks into `out`.
        b.iter(|| unsafe { quantize_row_q8_K_ref(black_box(x.as_ptr()), out.as_mut_ptr() as *mut _, x.len() as i64) })
    });
    g.finish();
}

/// `ggml_out_prod(W, dYᵀ)` for a TQ2_0 `W` of `rows` × `k` and `n` tokens, in a graph kept
/// for repeated one-thread computes.
#[cfg(feature = "ggml")]
struct OutProdGraph {
    ctx: *mut trit_sys::ggml_context,
    gf: *mut trit_sys::ggml_cgraph,
}

#[cfg(feature = "ggml")]
impl OutProdGraph {
    fn new(w: &[u8], rows: usize, k: usize, n: usize) -> Self {
        let params =
            trit_sys::ggml_init_params { mem_size: 1 << 30, mem_buffer: std::ptr::null_mut(), no_alloc: false };
        // SAFETY: a private context big enough for the tensors and graph; the copies fill the
        // new tensors exactly.
        unsafe {
            let ctx = trit_sys::ggml_init(params);
            assert!(!ctx.is_null());
            let wt = trit_sys::ggml_new_tensor_2d(ctx, trit_sys::GGML_TYPE_TQ2_0, k as i64, rows as i64);
            assert_eq!(trit_sys::ggml_nbytes(wt), w.len());
            std::ptr::copy_nonoverlapping(w.as_ptr(), (*wt).data as *mut u8, w.len());
            let dy = trit_sys::ggml_new_tensor_2d(ctx, trit_sys::GGML_TYPE_F32, rows as i64, n as i64);
            let v = std::slice::from_raw_parts_mut((*dy).data as *mut f32, rows * n);
            for (i, x) in v.iter_mut().enumerate() {
                *x = ((i * 7919) % 2001) as f32 / 1000.0 - 1.0;
            }
            let y = trit_sys::ggml_out_prod(ctx, wt, trit_sys::ggml_transpose(ctx, dy));
            let gf = trit_sys::ggml_new_graph(ctx);
            trit_sys::ggml_build_forward_expand(gf, y);
            OutProdGraph { ctx, gf }
        }
    }

    fn compute(&self) {
        // SAFETY: the graph of this live context.
        assert_eq!(
            unsafe { trit_sys::ggml_graph_compute_with_ctx(self.ctx, self.gf, 1) },
            trit_sys::GGML_STATUS_SUCCESS
        );
    }
}

#[cfg(feature = "ggml")]
impl Drop for OutProdGraph {
    fn drop(&mut self) {
        // SAFETY: the context this value owns, freed once.
        unsafe { trit_sys::ggml_free(self.ctx) };
    }
}

#[cfg(feature = "ggml")]
fn bench_out_prod(c: &mut Criterion) {
    use trit_kernels::ggml::{install, set_ternary_grad, TernaryGrad, TernaryKernels};
    let n = 256;
    let mut g = c.benchmark_group("out_prod");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    for (rows, k) in [(2560, 2560), (6912, 2560)] {
        let (w, _) = data(TernaryType::Tq2_0, rows, k, 1);
        let graph = OutProdGraph::new(&w, rows, k, n);
        g.throughput(Throughput::Elements((rows * k * n) as u64));
        let id = format!("{rows}x{k}/n{n}");
        for which in [TernaryKernels::Trit, TernaryKernels::Ggml] {
            install(which);
            set_ternary_grad(TernaryGrad::F32);
            g.bench_with_input(BenchmarkId::new(which.name(), &id), &(), |b, _| b.iter(|| graph.compute()));
        }
        install(TernaryKernels::Trit);
        set_ternary_grad(TernaryGrad::I16);
        g.bench_with_input(BenchmarkId::new("trit-i16", &id), &(), |b, _| b.iter(|| graph.compute()));
    }
    g.finish();
}

#[cfg(not(feature = "ggml"))]
fn bench_out_prod(_: &mut Criterion) {}

criterion_group!(benches, bench, bench_f16, bench_q8k, bench_out_prod);
criterion_main!(benches);
