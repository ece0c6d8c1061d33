//! Decode attention's two f16 products through a real ggml graph, as llama.cpp builds them
//! without flash attention (2B-4T's shapes: 20 query heads over 5 K/V heads of 128, a cache of
//! `cells` cells): K·Q (each head's 1 × 128 query against its K/V head's `cells` × 128 keys)
//! and V·P (its 1 × `cells` probabilities against the transposed V cache, 128 × `cells`).
//! Prints µs per op for ggml's kernels and trit's:
//! `cargo run --release -p trit-kernels --features ggml --example attn_f16 -- [threads] [cells] [reps]`.

use std::time::Instant;

use trit_kernels::ggml::{install, TernaryKernels};
use trit_sys as sys;

const HEADS: usize = 20;
const KV_HEADS: usize = 5;
const D: usize = 128;

fn main() {
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (threads, cells, reps) = (arg(1, 2), arg(2, 256), arg(3, 2000));
    let mut seed = 1u64;
    let mut rnd = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    // SAFETY: a private context big enough for the tensors and graphs; every copy stays
    // inside the tensors ggml allocated with these shapes.
    unsafe {
        let params = sys::ggml_init_params { mem_size: 64 << 20, mem_buffer: std::ptr::null_mut(), no_alloc: false };
        let ctx = sys::ggml_init(params);
        assert!(!ctx.is_null());
        // K cache: `cells` rows of KV_HEADS · D; V cache transposed: KV_HEADS · D rows of `cells`.
        let kc = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F16, (KV_HEADS * D) as i64, cells as i64);
        let vc = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F16, cells as i64, (KV_HEADS * D) as i64);
        for t in [kc, vc] {
            let n = sys::ggml_nelements(t) as usize;
            let data = std::slice::from_raw_parts_mut((*t).data as *mut u16, n);
            data.iter_mut().for_each(|v| *v = half::f16::from_f32(rnd()).to_bits());
        }
        let q = sys::ggml_new_tensor_3d(ctx, sys::GGML_TYPE_F32, D as i64, HEADS as i64, 1);
        let p = sys::ggml_new_tensor_3d(ctx, sys::GGML_TYPE_F32, cells as i64, 1, HEADS as i64);
        for t in [q, p] {
            let n = sys::ggml_nelements(t) as usize;
            std::slice::from_raw_parts_mut((*t).data as *mut f32, n).iter_mut().for_each(|v| *v = rnd());
        }
        let k = sys::ggml_view_3d(ctx, kc, D as i64, cells as i64, KV_HEADS as i64, (*kc).nb[1], 2 * D, 0);
        let kq = sys::ggml_mul_mat(ctx, k, sys::ggml_permute(ctx, q, 0, 2, 1, 3));
        let v = sys::ggml_view_3d(ctx, vc, cells as i64, D as i64, KV_HEADS as i64, (*vc).nb[1], (*vc).nb[1] * D, 0);
        let kqv = sys::ggml_mul_mat(ctx, v, p);
        // One thread pool and work buffer for every run, as llama.cpp's CPU backend keeps them.
        let mut tpp = sys::ggml_threadpool_params_default(threads as i32);
        let tp = sys::ggml_threadpool_new(&mut tpp);
        assert!(!tp.is_null());
        for (name, y) in [("K·Q", kq), ("V·P", kqv)] {
            let gf = sys::ggml_new_graph(ctx);
            sys::ggml_build_forward_expand(gf, y);
            let mut plan = sys::ggml_graph_plan(gf, threads as i32, tp);
            let mut work = vec![0u8; plan.work_size];
            plan.work_data = work.as_mut_ptr();
            for which in [TernaryKernels::Ggml, TernaryKernels::Trit] {
                install(which);
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let t0 = Instant::now();
                    for _ in 0..reps {
                        assert_eq!(sys::ggml_graph_compute(gf, &mut plan), sys::GGML_STATUS_SUCCESS);
                    }
                    best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
                }
                println!("{name} {cells} cells, {threads} threads, {}: {:.2} µs", which.name(), best * 1e6);
            }
        }
        sys::ggml_threadpool_free(tp);
        sys::ggml_free(ctx);
    }
}
