//! Op-by-op comparison against the CPU backend, in the manner of llama.cpp's
//! test-backend-ops: each case builds a tiny graph on both backends from the same seeded
//! inputs and bounds the NMSE of the Vulkan output. Shapes include odd sizes, broadcasts,
//! permuted/transposed (non-contiguous) operands and partial tiles.
//!
//! Needs a Vulkan device (lavapipe in CI). TRIT_VULKAN_OPTIONAL=1 skips, loudly.
// SAFETY (whole file): the builders call ggml constructors on a live no_alloc context with
// shapes that satisfy each constructor's assertions.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use trit_sys as sys;
use trit_vulkan::NormLanes;

/// Float matrix products: f32 accumulation in a different order than the CPU, which also
/// rounds f16-weight activations to f16: test-backend-ops uses 5e-4 for MUL_MAT.
const NMSE_MM: f64 = 5e-4;
/// Ternary products round activations exactly as the CPU's Q8_K does, so only the f32
/// summation order differs.
const NMSE_TQ: f64 = 1e-9;
/// Element-wise f32 ops (test-backend-ops' default).
const NMSE_EW: f64 = 1e-7;
/// Ops with transcendental functions (exp, sin/cos) or f16 rounding.
const NMSE_TR: f64 = 1e-6;

/// common::setup, plus the product kernels at their defaults (some cases switch them).
fn setup() -> Option<(std::sync::MutexGuard<'static, ()>, Backends)> {
    let s = common::setup()?;
    trit_vulkan::set_mat_vec_kernels(true, true);
    trit_vulkan::set_mmq_big_tiles(false);
    trit_vulkan::set_coopmat_emulation(0);
    trit_vulkan::set_attn_chunk(32);
    for class in [NormLanes::Multi, NormLanes::Rope, NormLanes::One] {
        trit_vulkan::set_norm_lanes(class, trit_vulkan::default_norm_lanes(class));
    }
    Some(s)
}

fn mul_mat_case(b: &Backends, wt: sys::ggml_type, k: i64, rows: i64, cols: i64, batch: [i64; 2], bcast: [i64; 2]) {
    let name = format!("mul_mat {} k={k} rows={rows} cols={cols} batch={batch:?} bcast={bcast:?}", unsafe {
        std::ffi::CStr::from_ptr(sys::ggml_type_name(wt)).to_string_lossy()
    });
    check(
        b,
        &name,
        &|ctx, ins| {
            let a = input(ctx, ins, wt, &[k, rows, batch[0], batch[1]], Fill::Uniform);
            let x = input(ctx, ins, F32, &[k, cols, batch[0] * bcast[0], batch[1] * bcast[1]], Fill::Uniform);
            unsafe { sys::ggml_mul_mat(ctx, a, x) }
        },
        if matches!(wt, TQ1 | TQ2) { NMSE_TQ } else { NMSE_MM },
    );
}

#[test]
fn mul_mat_ternary() {
    let Some((_g, b)) = setup() else { return };
    for wt in [TQ2, TQ1] {
        for &(k, rows, cols) in &[
            (256, 1, 1),
            (256, 33, 1),
            (512, 7, 3),
            (768, 17, 9),
            (256, 5, 16),
            (1024, 64, 1),
            (256, 128, 9),
            (256, 128, 1),
            (512, 70, 33),
            (256, 130, 65),
            (768, 64, 64),
        ] {
            mul_mat_case(&b, wt, k, rows, cols, [1, 1], [1, 1]);
        }
    }
}

#[test]
fn mul_mat_float() {
    let Some((_g, b)) = setup() else { return };
    for wt in [F32, F16] {
        for &(k, rows, cols) in
            &[(1, 1, 1), (67, 33, 1), (128, 16, 13), (200, 9, 8), (33, 3, 17), (100, 70, 66), (64, 64, 64)]
        {
            mul_mat_case(&b, wt, k, rows, cols, [1, 1], [1, 1]);
        }
        mul_mat_case(&b, wt, 64, 10, 5, [2, 1], [2, 1]);
        mul_mat_case(&b, wt, 32, 7, 3, [2, 3], [1, 2]);
        mul_mat_case(&b, wt, 40, 9, 20, [2, 3], [2, 1]);
    }
}

/// The decode-shaped products (up to 8 columns) through each mat-vec path the device has:
/// subgroup kernels with and without the int8 dot product, and the plain kernels (and the
/// prompt-shaped ternary products through the integer tile kernel, or the plain one). Row counts
/// that leave a workgroup part empty, K that is not a multiple of the lanes' stride, odd
/// column counts, broadcast batches, and f16 shapes that must fall back (K % 8 != 0).
#[test]
fn mul_mat_vec_paths() {
    let Some((_g, b)) = setup() else { return };
    let (subgroups, dot) = trit_vulkan::mat_vec_features();
    println!("device: subgroup mat-vec kernels {subgroups}, int8 dot product {dot}");
    println!("device: cooperative-matrix shapes (m, n, k, A/B, C/D) {:?}", trit_vulkan::coopmat_shapes());
    for (fast, int_dot) in [(true, true), (true, false), (false, false)] {
        trit_vulkan::set_mat_vec_kernels(fast, int_dot);
        println!("-- subgroup kernels {fast}, int dot {int_dot}");
        for wt in [TQ2, TQ1] {
            for &(k, rows, cols) in
                &[(256, 1, 1), (256, 5, 1), (768, 130, 1), (2560, 67, 1), (512, 9, 2), (1024, 33, 7), (256, 4, 8)]
            {
                mul_mat_case(&b, wt, k, rows, cols, [1, 1], [1, 1]);
            }
            mul_mat_case(&b, wt, 512, 11, 3, [2, 3], [1, 2]);
            // Prompt-shaped: the integer tile kernel, partial tiles in both directions.
            mul_mat_case(&b, wt, 512, 70, 33, [1, 1], [1, 1]);
            mul_mat_case(&b, wt, 768, 130, 65, [1, 1], [1, 1]);
            mul_mat_case(&b, wt, 256, 20, 17, [2, 3], [1, 2]);
            // Big tiles (>= 2048 rows, >= 64 columns), partial in both directions.
            for big in [false, true] {
                trit_vulkan::set_mmq_big_tiles(big);
                mul_mat_case(&b, wt, 512, 2100, 70, [1, 1], [1, 1]);
                mul_mat_case(&b, wt, 256, 2048, 64, [1, 2], [1, 1]);
            }
            trit_vulkan::set_mmq_big_tiles(false);
        }
        for &(k, rows, cols) in &[(8, 1, 1), (64, 5, 1), (2560, 67, 1), (136, 9, 8), (100, 7, 1), (72, 13, 3)] {
            mul_mat_case(&b, F16, k, rows, cols, [1, 1], [1, 1]);
        }
        mul_mat_case(&b, F16, 64, 10, 1, [2, 1], [2, 1]);
        mul_mat_case(&b, F16, 32, 7, 3, [2, 3], [1, 2]);
        // Decode attention: KQ over a permuted f16 cache, KQV over the transposed V view.
        let (hd, n_kv, n_head_kv, n_head) = (64, 48, 2, 4);
        check(
            &b,
            "mul_mat kq decode (permuted f16 K, 1 token)",
            &|ctx, ins| unsafe {
                let k = input(ctx, ins, F16, &[hd, n_head_kv, n_kv], Fill::Uniform);
                let q = input(ctx, ins, F32, &[hd, n_head, 1], Fill::Uniform);
                sys::ggml_mul_mat(ctx, sys::ggml_permute(ctx, k, 0, 2, 1, 3), sys::ggml_permute(ctx, q, 0, 2, 1, 3))
            },
            NMSE_MM,
        );
        check(
            &b,
            "mul_mat kqv decode (f16 V-transposed view, 1 token)",
            &|ctx, ins| unsafe {
                let v = input(ctx, ins, F16, &[64, hd, n_head_kv], Fill::Uniform);
                let vv = sys::ggml_view_3d(ctx, v, n_kv, hd, n_head_kv, (*v).nb[1], (*v).nb[2], 0);
                let p = input(ctx, ins, F32, &[n_kv, 1, n_head], Fill::Uniform);
                sys::ggml_mul_mat(ctx, vv, p)
            },
            NMSE_MM,
        );
    }
    trit_vulkan::set_mat_vec_kernels(true, true);
}

/// Prompt-shaped ternary products through the cooperative-matrix tile kernel
/// (`mul_mmq_tq_cm.comp`): with its matrix instructions emulated (`_emu`, 16 x 8 and 16 x 16
/// fragments, every device), and
/// on tensor cores where the device lists the shapes (`_cm`). Both tiles (64 x 64 and, big,
/// 128 x 64), partial in rows and columns, one to five 256-blocks (K = 256, 768, 1280: an
/// odd number of blocks, each two K steps of the kernel), broadcast batches, and the fused
/// scale + residual. Each case must have taken the path (a cooperative-matrix dispatch).
#[test]
fn mul_mat_coopmat_paths() {
    let Some((_g, b)) = setup() else { return };
    let shapes = trit_vulkan::coopmat_shapes();
    println!("device: cooperative-matrix shapes (m, n, k, A/B, C/D) {shapes:?}");
    // 16 x 16 x 32 for real only where opted in (TRIT_VULKAN_INT8_N16=1, not yet verified)
    let tensor_cores = shapes.contains(&(16, 8, 32, 3, 5))
        || (trit_vulkan::int8_n16_enabled() && shapes.contains(&(16, 16, 32, 3, 5)));
    let mut modes = vec![("emulated 16x8", 8), ("emulated 16x16", 16)];
    if tensor_cores {
        modes.push(("tensor cores", 0));
    } else {
        println!("device: no int8 cooperative-matrix shape of the `_cm` kernels: emulated only");
    }
    for (mode, emu) in modes {
        trit_vulkan::set_coopmat_emulation(emu);
        // 64-row tiles, 32-row tiles (SMALL, forced for every shape), 128-row tiles.
        for (big, small) in [(false, false), (false, true), (true, false)] {
            trit_vulkan::set_mmq_big_tiles(big);
            trit_vulkan::set_mmq_small_below(if small { 1 << 40 } else { 0 });
            println!("-- {mode}, big tiles {big}, small tiles {small}");
            for wt in [TQ2, TQ1] {
                for &(k, rows, cols, batch, bcast) in &[
                    (256i64, 20i64, 17i64, [2i64, 3i64], [1i64, 2i64]),
                    (768, 70, 33, [1, 1], [1, 1]),
                    (1280, 130, 65, [1, 1], [1, 1]),
                    (256, 64, 64, [1, 1], [1, 1]),
                    (512, 2100, 70, [1, 1], [1, 1]),
                    (768, 2048, 128, [1, 2], [1, 1]),
                    (256, 200, 9, [1, 1], [1, 1]),
                ] {
                    let before = trit_vulkan::coopmat_dispatch_count();
                    let small_before = trit_vulkan::mmq_small_dispatch_count();
                    mul_mat_case(&b, wt, k, rows, cols, batch, bcast);
                    assert!(
                        trit_vulkan::coopmat_dispatch_count() > before,
                        "{mode}: not the cooperative-matrix kernel"
                    );
                    assert_eq!(
                        trit_vulkan::mmq_small_dispatch_count() > small_before,
                        small,
                        "{mode}: 32-row tiles expected: {small}"
                    );
                }
            }
            if trit_vulkan::has_fifth_binding() {
                let (k, rows, cols) = if big { (512i64, 2100i64, 70i64) } else { (768, 70, 20) };
                let before = trit_vulkan::coopmat_dispatch_count();
                check(
                    &b,
                    &format!("mul_mat tq1 * scale + residual ({mode}), rows={rows} cols={cols}"),
                    &|ctx, ins| unsafe {
                        let x = input(ctx, ins, F32, &[k, cols], Fill::Uniform);
                        let a = input(ctx, ins, TQ1, &[k, rows], Fill::Uniform);
                        let s = input(ctx, ins, F32, &[1], Fill::Uniform);
                        let r = input(ctx, ins, F32, &[rows, cols], Fill::Uniform);
                        sys::ggml_add(ctx, sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, a, x), s), r)
                    },
                    NMSE_TQ,
                );
                assert!(trit_vulkan::coopmat_dispatch_count() > before, "{mode}: fused product not cooperative");
            }
        }
    }
    trit_vulkan::set_coopmat_emulation(0);
    trit_vulkan::set_mmq_big_tiles(false);
    trit_vulkan::set_mmq_small_below(u64::MAX);
}

/// f16-weight products of more than 8 columns on tensor cores (kernels/mul_mm_f16_cm.comp:
/// 128 x 64 tiles, f16 16 x 16 x 16 into f32; mul_mm_f16_cmv.comp: 128 x 128 tiles for
/// aligned operands), emulated on any device and for real where the
/// device lists that shape. Activations are rounded to f16 as the CPU rounds them, so only
/// the order of the f32 sums differs: held to 1e-6, not the f16 path's general 5e-4. Shapes:
/// k not a multiple of the 32-wide slices (and odd), partial row and column tiles,
/// broadcast batches, a permuted weight (rows strided), an LM-head-like product.
#[test]
fn mul_mat_f16_tensor_cores() {
    let Some((_g, b)) = setup() else { return };
    let real = trit_vulkan::coopmat_shapes().contains(&(16, 16, 16, 0, 1));
    let mut modes = vec![("emulated", 1)];
    if real {
        modes.push(("tensor cores", 0));
    } else {
        println!("device: no f16 16x16x16 cooperative matrices: emulated only");
    }
    for (mode, emu) in modes {
        trit_vulkan::set_coopmat_emulation(emu);
        // The last field: whether the shape suits mul_mm_f16_cmv.comp (k a multiple of 8,
        // rows 16-byte aligned): k not a multiple of its 32-wide slices, partial tiles of both
        // sides, batches; the others take mul_mm_f16_cm.comp.
        for &(k, rows, cols, batch, bcast, vector) in &[
            (64i64, 20i64, 9i64, [1i64, 1i64], [1i64, 1i64], true),
            (301, 130, 70, [1, 1], [1, 1], false),
            (256, 128, 64, [2, 3], [1, 2], true),
            (2560, 1000, 130, [1, 1], [1, 1], true),
            (33, 257, 65, [2, 1], [2, 1], false),
            (40, 300, 260, [2, 1], [1, 1], true),
        ] {
            let before = trit_vulkan::coopmat_dispatch_count();
            let vector_before = trit_vulkan::f16_vector_dispatch_count();
            check(
                &b,
                &format!("mul_mat f16 ({mode}) k={k} rows={rows} cols={cols} batch={batch:?} bcast={bcast:?}"),
                &|ctx, ins| unsafe {
                    let a = input(ctx, ins, F16, &[k, rows, batch[0], batch[1]], Fill::Uniform);
                    let x = input(ctx, ins, F32, &[k, cols, batch[0] * bcast[0], batch[1] * bcast[1]], Fill::Uniform);
                    sys::ggml_mul_mat(ctx, a, x)
                },
                NMSE_TR,
            );
            assert!(trit_vulkan::coopmat_dispatch_count() > before, "{mode}: not the tensor-core kernel");
            assert_eq!(
                trit_vulkan::f16_vector_dispatch_count() > vector_before,
                vector,
                "{mode}: k={k} rows={rows}: mul_mm_f16_cmv.comp expected: {vector}"
            );
        }
        let before = trit_vulkan::coopmat_dispatch_count();
        check(
            &b,
            &format!("mul_mat f16 ({mode}) permuted weight (attention's K)"),
            &|ctx, ins| unsafe {
                let a = input(ctx, ins, F16, &[40, 3, 70], Fill::Uniform);
                let x = input(ctx, ins, F32, &[40, 20, 3], Fill::Uniform);
                sys::ggml_mul_mat(ctx, sys::ggml_permute(ctx, a, 0, 2, 1, 3), x)
            },
            NMSE_TR,
        );
        assert!(trit_vulkan::coopmat_dispatch_count() > before, "{mode}: not the tensor-core kernel");
    }
    trit_vulkan::set_coopmat_emulation(0);
}

#[test]
fn mul_mat_attention_views() {
    let Some((_g, b)) = setup() else { return };
    let (hd, n_kv, n_head_kv, n_head, n_tok) = (64, 37, 2, 4, 5);
    // KQ: permuted f16 K cache view x permuted f32 Q.
    check(
        &b,
        "mul_mat kq (permuted f16 K, permuted f32 Q)",
        &|ctx, ins| unsafe {
            let k = input(ctx, ins, F16, &[hd, n_head_kv, n_kv], Fill::Uniform);
            let q = input(ctx, ins, F32, &[hd, n_head, n_tok], Fill::Uniform);
            let kp = sys::ggml_permute(ctx, k, 0, 2, 1, 3);
            let qp = sys::ggml_permute(ctx, q, 0, 2, 1, 3);
            sys::ggml_mul_mat(ctx, kp, qp)
        },
        NMSE_MM,
    );
    // KQV: transposed f16 V view x f32 probabilities.
    check(
        &b,
        "mul_mat kqv (f16 V-transposed cache view)",
        &|ctx, ins| unsafe {
            // The cache stores V transposed, [kv_size, hd, n_head_kv]; attention views n_kv of it.
            let kv_size = 64;
            let v = input(ctx, ins, F16, &[kv_size, hd, n_head_kv], Fill::Uniform);
            let vv = sys::ggml_view_3d(ctx, v, n_kv, hd, n_head_kv, (*v).nb[1], (*v).nb[2], 0);
            let p = input(ctx, ins, F32, &[n_kv, n_tok, n_head], Fill::Uniform);
            sys::ggml_mul_mat(ctx, vv, p)
        },
        NMSE_MM,
    );
}

#[test]
fn rows_ops() {
    let Some((_g, b)) = setup() else { return };
    for ty in [F32, F16] {
        check(
            &b,
            &format!("get_rows {} [33,50] idx[7]", tn(ty)),
            &|ctx, ins| unsafe {
                let a = input(ctx, ins, ty, &[33, 50], Fill::Uniform);
                let i = input(ctx, ins, I32, &[7], Fill::Index(50));
                sys::ggml_get_rows(ctx, a, i)
            },
            NMSE_EW,
        );
        check(
            &b,
            &format!("get_rows {} [16,10,3] idx[4,3]", tn(ty)),
            &|ctx, ins| unsafe {
                let a = input(ctx, ins, ty, &[16, 10, 3], Fill::Uniform);
                let i = input(ctx, ins, I32, &[4, 3], Fill::Index(10));
                sys::ggml_get_rows(ctx, a, i)
            },
            NMSE_EW,
        );
    }
    for (dt, it) in [(F16, I64), (F32, I64), (F16, I32), (F32, I32)] {
        check(
            &b,
            &format!("set_rows dst {} idx {} [64,40] <- [64,5]", tn(dt), tn(it)),
            &|ctx, ins| unsafe {
                let dst = input(ctx, ins, dt, &[64, 40], Fill::Uniform);
                let src = input(ctx, ins, F32, &[64, 5], Fill::Uniform);
                let idx = input(ctx, ins, it, &[5], Fill::Distinct(40));
                sys::ggml_set_rows(ctx, dst, src, idx)
            },
            NMSE_TR,
        );
    }
    check(
        &b,
        "set_rows f16 [8,12,3] <- [8,4,3] idx[4,1] (broadcast idx)",
        &|ctx, ins| unsafe {
            let dst = input(ctx, ins, F16, &[8, 12, 3], Fill::Uniform);
            let src = input(ctx, ins, F32, &[8, 4, 3], Fill::Uniform);
            let idx = input(ctx, ins, I64, &[4, 1], Fill::Distinct(12));
            sys::ggml_set_rows(ctx, dst, src, idx)
        },
        NMSE_TR,
    );
}

#[test]
fn norm_binary_scale() {
    let Some((_g, b)) = setup() else { return };
    for ne in [[67i64, 5, 3], [2560, 2, 1], [1, 1, 1]] {
        check(
            &b,
            &format!("rms_norm {ne:?}"),
            &|ctx, ins| unsafe { sys::ggml_rms_norm(ctx, input(ctx, ins, F32, &ne, Fill::Uniform), 1e-5) },
            NMSE_TR,
        );
    }
    for (name, add) in [("add", true), ("mul", false)] {
        for (a_ne, b_ne) in [
            ([67i64, 5, 3], [67i64, 5, 3]),
            ([67, 5, 3], [67, 1, 3]),
            ([67, 5, 3], [67, 1, 1]),
            ([16, 4, 2], [1, 4, 1]),
            // contiguous, past one workgroup's 1024 elements: same shape, one element, one row
            ([1500, 3, 1], [1500, 3, 1]),
            ([300, 7, 3], [1, 1, 1]),
            ([2100, 5, 1], [2100, 1, 1]),
        ] {
            check(
                &b,
                &format!("{name} {a_ne:?} {b_ne:?}"),
                &|ctx, ins| unsafe {
                    let x = input(ctx, ins, F32, &a_ne, Fill::Uniform);
                    let y = input(ctx, ins, F32, &b_ne, Fill::Uniform);
                    if add {
                        sys::ggml_add(ctx, x, y)
                    } else {
                        sys::ggml_mul(ctx, x, y)
                    }
                },
                NMSE_EW,
            );
        }
        check(
            &b,
            &format!("{name} strided src0 view"),
            &|ctx, ins| unsafe {
                let x = input(ctx, ins, F32, &[19, 13], Fill::Uniform);
                let y = input(ctx, ins, F32, &[11, 1], Fill::Uniform);
                let xv = sys::ggml_view_2d(ctx, x, 11, 12, (*x).nb[1], (*x).nb[1] + 8);
                if add {
                    sys::ggml_add(ctx, xv, y)
                } else {
                    sys::ggml_mul(ctx, xv, y)
                }
            },
            NMSE_EW,
        );
    }
    check(
        &b,
        "scale 0.37",
        &|ctx, ins| unsafe { sys::ggml_scale(ctx, input(ctx, ins, F32, &[67, 9], Fill::Uniform), 0.37) },
        NMSE_EW,
    );
    check(
        &b,
        "scale 0.37, 3 workgroups and a part",
        &|ctx, ins| unsafe { sys::ggml_scale(ctx, input(ctx, ins, F32, &[1500, 3], Fill::Uniform), 0.37) },
        NMSE_EW,
    );
    check(
        &b,
        "scale_bias 2.0 -0.5",
        &|ctx, ins| unsafe { sys::ggml_scale_bias(ctx, input(ctx, ins, F32, &[67, 9], Fill::Uniform), 2.0, -0.5) },
        NMSE_EW,
    );
}

#[test]
fn copies() {
    let Some((_g, b)) = setup() else { return };
    for (st, dt) in [(F32, F32), (F32, F16), (F16, F32), (F16, F16)] {
        check(
            &b,
            &format!("cpy {}->{} [33,7,3]", tn(st), tn(dt)),
            &|ctx, ins| unsafe {
                let s = input(ctx, ins, st, &[33, 7, 3], Fill::Uniform);
                let d = input(ctx, ins, dt, &[33, 7, 3], Fill::Uniform);
                sys::ggml_cpy(ctx, s, d)
            },
            NMSE_TR,
        );
        check(
            &b,
            &format!("cpy {}->{} transposed src into reshaped dst", tn(st), tn(dt)),
            &|ctx, ins| unsafe {
                let s = input(ctx, ins, st, &[12, 5], Fill::Uniform);
                let d = input(ctx, ins, dt, &[60], Fill::Uniform);
                sys::ggml_cpy(ctx, sys::ggml_transpose(ctx, s), d)
            },
            NMSE_TR,
        );
    }
    check(
        &b,
        "cont of permuted f32 [8,5,3]",
        &|ctx, ins| unsafe {
            sys::ggml_cont(ctx, sys::ggml_permute(ctx, input(ctx, ins, F32, &[8, 5, 3], Fill::Uniform), 2, 0, 1, 3))
        },
        NMSE_EW,
    );
    check(
        &b,
        "dup f16 [19,4]",
        &|ctx, ins| unsafe { sys::ggml_dup(ctx, input(ctx, ins, F16, &[19, 4], Fill::Uniform)) },
        NMSE_EW,
    );
}

#[test]
fn rope_softmax() {
    let Some((_g, b)) = setup() else { return };
    for (mode, n_dims) in
        [(sys::GGML_ROPE_TYPE_NEOX as i32, 64), (sys::GGML_ROPE_TYPE_NEOX as i32, 32), (0, 64), (0, 16)]
    {
        check(
            &b,
            &format!("rope mode={mode} n_dims={n_dims} [64,4,7]"),
            &|ctx, ins| {
                let x = input(ctx, ins, F32, &[64, 4, 7], Fill::Uniform);
                let pos = input(ctx, ins, I32, &[7], Fill::Index(300));
                rope(ctx, Rope::Forward, x, pos, n_dims, mode, 500000.0)
            },
            NMSE_TR,
        );
    }
    // In place (ggml-alloc does this when the input dies here): every element pair must be
    // read before it is written.
    check(
        &b,
        "rope NEOX in place [128,8,9]",
        &|ctx, ins| {
            let x = input(ctx, ins, F32, &[128, 8, 9], Fill::Uniform);
            let pos = input(ctx, ins, I32, &[9], Fill::Index(300));
            let mode = sys::GGML_ROPE_TYPE_NEOX as i32;
            rope(ctx, Rope::InPlace, x, pos, 128, mode, 500000.0)
        },
        NMSE_TR,
    );
    for (name, mask_ty) in [("f16 mask", Some(F16)), ("f32 mask", Some(F32)), ("no mask", None)] {
        check(
            &b,
            &format!("soft_max {name} [37,5,4] scale 0.125"),
            &|ctx, ins| unsafe {
                let x = input(ctx, ins, F32, &[37, 5, 4], Fill::Uniform);
                let m = mask_ty.map_or(std::ptr::null_mut(), |t| input(ctx, ins, t, &[37, 5], Fill::Causal));
                sys::ggml_soft_max_ext(ctx, x, m, 0.125, 0.0)
            },
            NMSE_TR,
        );
    }
    check(
        &b,
        "soft_max [600,3] (row longer than a workgroup)",
        &|ctx, ins| unsafe {
            sys::ggml_soft_max_ext(ctx, input(ctx, ins, F32, &[600, 3], Fill::Uniform), std::ptr::null_mut(), 3.0, 0.0)
        },
        NMSE_TR,
    );
}

#[test]
fn activations() {
    let Some((_g, b)) = setup() else { return };
    type Act = unsafe extern "C" fn(*mut sys::ggml_context, T) -> T;
    for (name, f) in [("relu", sys::ggml_relu as Act), ("sqr", sys::ggml_sqr as Act), ("silu", sys::ggml_silu as Act)] {
        check(
            &b,
            &format!("{name} [67,9]"),
            &|ctx, ins| unsafe { f(ctx, input(ctx, ins, F32, &[67, 9], Fill::Uniform)) },
            NMSE_TR,
        );
    }
    check(
        &b,
        "relu of a strided view at an offset",
        &|ctx, ins| unsafe {
            let x = input(ctx, ins, F32, &[7, 11], Fill::Uniform);
            sys::ggml_relu(ctx, sys::ggml_view_2d(ctx, x, 5, 9, (*x).nb[1], 2 * (*x).nb[1] + 4))
        },
        NMSE_EW,
    );
    type Glu2 = unsafe extern "C" fn(*mut sys::ggml_context, T, T) -> T;
    for (name, f) in [("swiglu_split", sys::ggml_swiglu_split as Glu2), ("reglu_split", sys::ggml_reglu_split as Glu2)]
    {
        check(
            &b,
            &format!("{name} [70,6]"),
            &|ctx, ins| unsafe {
                f(ctx, input(ctx, ins, F32, &[70, 6], Fill::Uniform), input(ctx, ins, F32, &[70, 6], Fill::Uniform))
            },
            NMSE_TR,
        );
    }
    type Glu1 = unsafe extern "C" fn(*mut sys::ggml_context, T) -> T;
    for (name, f) in [
        ("swiglu", sys::ggml_swiglu as Glu1),
        ("swiglu_swapped", sys::ggml_swiglu_swapped as Glu1),
        ("reglu", sys::ggml_reglu as Glu1),
    ] {
        check(
            &b,
            &format!("{name} [70,6]"),
            &|ctx, ins| unsafe { f(ctx, input(ctx, ins, F32, &[70, 6], Fill::Uniform)) },
            NMSE_TR,
        );
    }
}

/// Tiny limits force the tiling paths: dispatches split at 2 workgroups, weights split into
/// row tiles of a 4 KiB storage range.
#[test]
fn tiling_with_low_limits() {
    let Some((_g, b)) = setup() else { return };
    // Untiled, a 200-row mat-vec is one dispatch.
    let before = dispatch_count();
    mul_mat_case(&b, TQ2, 256, 200, 1, [1, 1], [1, 1]);
    assert_eq!(dispatch_count() - before, 2, "activation rounding + one product dispatch without tiling");
    trit_vulkan::set_limits(Some(2), Some(4096));
    let before = dispatch_count();
    mul_mat_case(&b, TQ2, 256, 200, 1, [1, 1], [1, 1]);
    // 200 x 66 bytes = 13200 > 4096: 4 row tiles of <= 61 rows, each split into <= 2-workgroup dispatches.
    let n = dispatch_count() - before;
    assert!(n >= 100, "expected >= 100 tiled dispatches, got {n}");
    for wt in [TQ2, TQ1, F16] {
        // 200 rows of a 256-wide weight: 10-13 KiB (TQ), 100 KiB (f16) > 4 KiB.
        mul_mat_case(&b, wt, 256, 200, 1, [1, 1], [1, 1]);
        mul_mat_case(&b, wt, 256, 100, 3, [1, 1], [1, 1]);
    }
    // The 64x64-tile kernel over weight row tiles: 400 x 66 bytes > 16 KiB.
    trit_vulkan::set_limits(Some(3), Some(16384));
    for wt in [TQ2, TQ1] {
        mul_mat_case(&b, wt, 256, 400, 9, [1, 1], [1, 1]);
    }
    trit_vulkan::set_limits(Some(2), Some(4096));
    check(
        &b,
        "add [30,20] with 2-workgroup dispatch tiles",
        &|ctx, ins| unsafe {
            sys::ggml_add(
                ctx,
                input(ctx, ins, F32, &[30, 20], Fill::Uniform),
                input(ctx, ins, F32, &[30, 1], Fill::Uniform),
            )
        },
        NMSE_EW,
    );
    check(
        &b,
        "rms_norm [40,9] with 2-workgroup dispatch tiles",
        &|ctx, ins| unsafe { sys::ggml_rms_norm(ctx, input(ctx, ins, F32, &[40, 9], Fill::Uniform), 1e-6) },
        NMSE_TR,
    );
    // Split attention (160 workgroups) in dispatch tiles of 2: the last workgroup of each row
    // may be in another tile than the others.
    let shape =
        Attention { tokens: 1, hd: 128, heads: 20, hkv: 5, n_kv: 256, mask_rows: 1, perm: true, kq_again: false };
    trit_vulkan::set_limits(Some(2), None);
    let split = trit_vulkan::attn_split_dispatch_count();
    check(&b, "split attention in 2-workgroup tiles", &|ctx, ins| attention_graph(ctx, ins, shape), NMSE_TR);
    assert_eq!(trit_vulkan::attn_split_dispatch_count() - split, 1, "split attention under tiles");
    // Under a 4 KiB storage range its scratch does not fit one binding: not split.
    trit_vulkan::set_limits(Some(2), Some(4096));
    let small = Attention { hd: 16, heads: 2, hkv: 1, n_kv: 16, ..shape };
    let split = trit_vulkan::attn_split_dispatch_count();
    check(&b, "attention under a 4 KiB range", &|ctx, ins| attention_graph(ctx, ins, small), NMSE_TR);
    assert_eq!(trit_vulkan::attn_split_dispatch_count(), split, "split attention under a 4 KiB range");
    // An element-wise operand over the range limit is refused (the CPU runs it).
    let dev = vulkan_device().unwrap();
    let refused = unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: 16 * sys::ggml_tensor_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let x = new(ctx, F32, &[4096]);
        let r = !sys::ggml_backend_dev_supports_op(dev, sys::ggml_add(ctx, x, x));
        sys::ggml_free(ctx);
        r
    };
    trit_vulkan::set_limits(None, None);
    assert!(refused, "ADD of 16 KiB operands must be refused under a 4 KiB storage range");
}

#[test]
fn staging_copies() {
    let Some((_g, b)) = setup() else { return };
    trit_vulkan::set_force_staging(true);
    mul_mat_case(&b, TQ2, 512, 9, 2, [1, 1], [1, 1]);
    check(
        &b,
        "set_rows f16 through staging",
        &|ctx, ins| unsafe {
            let dst = input(ctx, ins, F16, &[32, 10], Fill::Uniform);
            let src = input(ctx, ins, F32, &[32, 3], Fill::Uniform);
            let idx = input(ctx, ins, I64, &[3], Fill::Distinct(10));
            sys::ggml_set_rows(ctx, dst, src, idx)
        },
        NMSE_TR,
    );
    trit_vulkan::set_force_staging(false);
}

/// scripts/test.sh runs these tests again with LP_NATIVE_VECTOR_WIDTH=128 and =512, which give
/// lavapipe subgroups of 4 and 16 lanes (vector width / 32). With 4, narrower than the `NORM`
/// mat-vecs need (8), they must be left out; otherwise present. Fails if the setting did not
/// take, so those passes cannot quietly test the usual path again.
#[test]
fn norm_mat_vecs_follow_the_subgroup_size() {
    let Some((_g, _b)) = setup() else { return };
    let info = trit_vulkan::info().unwrap_or_default();
    let width = std::env::var("LP_NATIVE_VECTOR_WIDTH").ok();
    println!("{info}: NORM mat-vecs {}", trit_vulkan::has_norm_mat_vecs());
    if info.contains("llvmpipe") {
        if let Some(w) = &width {
            assert!(info.contains(&format!("{w} bits")), "LP_NATIVE_VECTOR_WIDTH={w} did not take: {info}");
        }
        let narrow = width.as_deref() == Some("128");
        assert_eq!(trit_vulkan::has_norm_mat_vecs(), !narrow, "LP_NATIVE_VECTOR_WIDTH={width:?}");
    }
}

#[test]
fn supports_op_refuses_the_unimplemented() {
    let Some((_g, _b)) = setup() else { return };
    let dev = vulkan_device().unwrap();
    unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: 32 * sys::ggml_tensor_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let q4 = new(ctx, sys::GGML_TYPE_Q4_0, &[256, 4]);
        let x = new(ctx, F32, &[256, 2]);
        let tq = new(ctx, TQ2, &[256, 4]);
        let x16 = new(ctx, F16, &[256, 2]);
        let mask = new(ctx, F16, &[256, 2]);
        let yes = |t| sys::ggml_backend_dev_supports_op(dev, t);
        assert!(
            yes(sys::ggml_mul_mat(ctx, tq, x)),
            "TQ2_0 x f32 must be supported (weights go on the device only then)"
        );
        assert!(!yes(sys::ggml_mul_mat(ctx, q4, x)), "Q4_0 has no kernel");
        assert!(!yes(sys::ggml_mul_mat(ctx, tq, x16)), "f16 activations have no kernel");
        assert!(!yes(sys::ggml_soft_max_ext(ctx, x, mask, 1.0, 8.0)), "ALiBi (max_bias) has no kernel");
        assert!(!yes(sys::ggml_gelu(ctx, x)), "GELU has no kernel");
        assert!(!yes(sys::ggml_norm(ctx, x, 1e-5)), "NORM has no kernel");
        assert!(yes(sys::ggml_transpose(ctx, x)), "views are no-ops");
        sys::ggml_free(ctx);
    }
}

#[test]
fn oversized_allocation_fails_cleanly() {
    let Some((_g, _b)) = setup() else { return };
    let dev = vulkan_device().unwrap();
    unsafe {
        let buft = sys::ggml_backend_dev_buffer_type(dev);
        let max = sys::ggml_backend_buft_get_max_size(buft);
        let buf = sys::ggml_backend_buft_alloc_buffer(buft, max.saturating_add(4096));
        assert!(buf.is_null(), "allocating more than maxMemoryAllocationSize ({max}) must fail with NULL, not crash");
        let ok = sys::ggml_backend_buft_alloc_buffer(buft, 1 << 20);
        assert!(!ok.is_null());
        sys::ggml_backend_buffer_free(ok);
    }
}

#[test]
fn memory_is_reported() {
    let Some((_g, _b)) = setup() else { return };
    let dev = vulkan_device().unwrap();
    let (mut free, mut total) = (0usize, 0usize);
    unsafe { sys::ggml_backend_dev_memory(dev, &mut free, &mut total) };
    assert!(total > 0 && free <= total, "free {free} total {total}");
    println!("{}", trit_vulkan::info().unwrap());
}

/// Two ternary products of one input (as Q/K/V or gate/up) share its rounded activations.
#[test]
fn ternary_shared_input() {
    let Some((_g, b)) = setup() else { return };
    let before = dispatch_count();
    check(
        &b,
        "tq2(x) + tq1(x), shared rounded input",
        &|ctx, ins| unsafe {
            let x = input(ctx, ins, F32, &[512, 3], Fill::Uniform);
            let w1 = input(ctx, ins, TQ2, &[512, 40], Fill::Uniform);
            let w2 = input(ctx, ins, TQ1, &[512, 40], Fill::Uniform);
            sys::ggml_add(ctx, sys::ggml_mul_mat(ctx, w1, x), sys::ggml_mul_mat(ctx, w2, x))
        },
        NMSE_TQ,
    );
    // One rounding, two products, one add.
    assert_eq!(dispatch_count() - before, 4);
}

/// A BitNet FFN-like chain: ULP-level differences upstream of a ternary product can flip a
/// Q8_K rounding, so the chain checks that the whole path stays close to the CPU.
#[test]
fn ternary_chain() {
    let Some((_g, b)) = setup() else { return };
    for (k, f) in [(256i64, 512i64), (512, 768)] {
        check(
            &b,
            &format!("chain rms_norm>mul>tq2>relu>sqr>rms_norm>tq2 k={k} ff={f}"),
            &|ctx, ins| unsafe {
                let x = input(ctx, ins, F32, &[k, 5], Fill::Uniform);
                let w = input(ctx, ins, F32, &[k], Fill::Uniform);
                let up = input(ctx, ins, TQ2, &[k, f], Fill::Uniform);
                let down = input(ctx, ins, TQ2, &[f, k], Fill::Uniform);
                let h = sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, x, 1e-5), w);
                let h = sys::ggml_sqr(ctx, sys::ggml_relu(ctx, sys::ggml_mul_mat(ctx, up, h)));
                sys::ggml_mul_mat(ctx, down, sys::ggml_rms_norm(ctx, h, 1e-5))
            },
            1e-6,
        );
    }
}

/// BitNet's `build_norm` and `build_lora_mm` pairs run fused: RMS_NORM then MUL by the norm
/// weight, and a decode-shaped ternary/f16 product then MUL by a one-element scale. Results
/// stay as exact as unfused; the dispatch count shows the fusion happened.
#[test]
fn fused_norm_and_scaled_products() {
    let Some((_g, b)) = setup() else { return };
    let (subgroups, _) = trit_vulkan::mat_vec_features();
    // 8704 = 34 blocks: more blocks per row than the fused norm has lane clusters (32 on a
    // 32-wide subgroup), so it loops. 8192: the longest input of the norm inside the product
    // (the wide variant where the device has it; on 32-wide subgroups the 512-invocation
    // variant takes it in two rounds).
    for (wt, k, rows, cols) in [
        (TQ2, 512i64, 37i64, 1i64),
        (TQ1, 768, 20, 3),
        (TQ2, 8704, 5, 2),
        (TQ2, 8192, 7, 1),
        (TQ2, 256, 40, 8),
        (TQ1, 256, 40, 9),
        (F16, 256, 9, 1),
    ] {
        let before = dispatch_count();
        check(
            &b,
            &format!("rms_norm*w > mul_mat {} * scale, cols={cols}", tn(wt)),
            &|ctx, ins| unsafe {
                let x = input(ctx, ins, F32, &[k, cols], Fill::Uniform);
                let w = input(ctx, ins, F32, &[k], Fill::Uniform);
                let a = input(ctx, ins, wt, &[k, rows], Fill::Uniform);
                let s = input(ctx, ins, F32, &[1], Fill::Uniform);
                let h = sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, x, 1e-6), w);
                sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, a, h), s)
            },
            if wt == F16 { NMSE_MM } else { NMSE_TQ },
        );
        // Fused: norm*w (quantizing its output for a ternary product), product*scale;
        // unfused it would be 2 (f16) or 3 (ternary) more. One ternary column: one dispatch,
        // the norm inside the product (up to 32 blocks), where the device has those kernels
        // (subgroups of 8 lanes or more).
        let inside = trit_vulkan::has_norm_mat_vecs();
        let want = if cols == 1 && wt != F16 && k <= 8192 && inside { 1 } else { 2 };
        if subgroups {
            assert_eq!(dispatch_count() - before, want, "{}", tn(wt));
        }
    }
    // The ReLU² gate: RELU, SQR, MUL in one dispatch.
    let before = dispatch_count();
    check(
        &b,
        "relu > sqr > mul (ReLU^2 gate)",
        &|ctx, ins| unsafe {
            let g = input(ctx, ins, F32, &[300, 3], Fill::Uniform);
            let u = input(ctx, ins, F32, &[300, 3], Fill::Uniform);
            sys::ggml_mul(ctx, sys::ggml_sqr(ctx, sys::ggml_relu(ctx, g)), u)
        },
        NMSE_EW,
    );
    assert_eq!(dispatch_count() - before, 1);
    check(
        &b,
        "relu > sqr > mul, relu used twice (not fused)",
        &|ctx, ins| unsafe {
            let g = input(ctx, ins, F32, &[300, 3], Fill::Uniform);
            let u = input(ctx, ins, F32, &[300, 3], Fill::Uniform);
            let r = sys::ggml_relu(ctx, g);
            sys::ggml_add(ctx, sys::ggml_mul(ctx, sys::ggml_sqr(ctx, r), u), r)
        },
        NMSE_EW,
    );
    // As llama.cpp orders it: the ReLU² gate, then the up projection, then the MUL: RELU and
    // SQR fuse; the MUL stays.
    let before = dispatch_count();
    check(
        &b,
        "relu > sqr (ReLU^2), up, mul",
        &|ctx, ins| unsafe {
            let g = input(ctx, ins, F32, &[300, 3], Fill::Uniform);
            let u = input(ctx, ins, F32, &[300, 3], Fill::Uniform);
            let r = sys::ggml_sqr(ctx, sys::ggml_relu(ctx, g));
            sys::ggml_mul(ctx, r, sys::ggml_scale(ctx, u, 0.5))
        },
        NMSE_EW,
    );
    assert_eq!(dispatch_count() - before, 3);
    // Scaled product plus residual (attention output, FFN down), decode- and prompt-shaped;
    // and gate*up before the sub-norm: with binding 4 (five storage buffers), one dispatch
    // fewer each.
    for (k, rows, cols, big) in [(512i64, 40i64, 1i64, false), (256, 70, 20, false), (512, 2100, 70, true)] {
        trit_vulkan::set_mmq_big_tiles(big);
        let before = dispatch_count();
        check(
            &b,
            &format!("mul_mat tq2 * scale + residual, rows={rows} cols={cols}"),
            &|ctx, ins| unsafe {
                let x = input(ctx, ins, F32, &[k, cols], Fill::Uniform);
                let a = input(ctx, ins, TQ2, &[k, rows], Fill::Uniform);
                let s = input(ctx, ins, F32, &[1], Fill::Uniform);
                let r = input(ctx, ins, F32, &[rows, cols], Fill::Uniform);
                sys::ggml_add(ctx, sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, a, x), s), r)
            },
            NMSE_TQ,
        );
        if subgroups && trit_vulkan::has_fifth_binding() {
            assert_eq!(dispatch_count() - before, 2);
        }
    }
    for (k, cols) in [(512i64, 1i64), (768, 5)] {
        let before = dispatch_count();
        check(
            &b,
            &format!("rms_norm(g*u)*w > mul_mat tq1, k={k} cols={cols}"),
            &|ctx, ins| unsafe {
                let g = input(ctx, ins, F32, &[k, cols], Fill::Uniform);
                let u = input(ctx, ins, F32, &[k, cols], Fill::Uniform);
                let w = input(ctx, ins, F32, &[k], Fill::Uniform);
                let a = input(ctx, ins, TQ1, &[k, 33], Fill::Uniform);
                let h = sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, sys::ggml_mul(ctx, g, u), 1e-6), w);
                sys::ggml_mul_mat(ctx, a, h)
            },
            NMSE_TQ,
        );
        if subgroups && trit_vulkan::has_fifth_binding() {
            assert_eq!(dispatch_count() - before, 2);
        }
    }
    // A product with a second user is not fused (its unscaled value is needed too).
    check(
        &b,
        "mul_mat tq2 * scale + mul_mat (two users)",
        &|ctx, ins| unsafe {
            let x = input(ctx, ins, F32, &[256, 1], Fill::Uniform);
            let a = input(ctx, ins, TQ2, &[256, 8], Fill::Uniform);
            let s = input(ctx, ins, F32, &[1], Fill::Uniform);
            let m = sys::ggml_mul_mat(ctx, a, x);
            sys::ggml_add(ctx, sys::ggml_mul(ctx, m, s), m)
        },
        NMSE_TQ,
    );
}

/// A graph of more dispatches than one submitted chunk (the recorder submits a graph in
/// pieces while recording the rest): a dependent chain of 200 ops stays exact.
#[test]
fn long_graph_in_chunks() {
    let Some((_g, b)) = setup() else { return };
    let before = dispatch_count();
    check(
        &b,
        "200-op dependent chain (several submitted chunks)",
        &|ctx, ins| unsafe {
            let mut x = input(ctx, ins, F32, &[1000, 3], Fill::Uniform);
            let y = input(ctx, ins, F32, &[1000, 1], Fill::Uniform);
            for i in 0..200 {
                x = if i % 3 == 2 { sys::ggml_scale(ctx, x, 0.5) } else { sys::ggml_add(ctx, x, y) };
            }
            x
        },
        NMSE_EW,
    );
    assert!(dispatch_count() - before >= 200);
}

/// A norm quantized once for several scaled ternary products (as Q, K, V read attn_norm).
#[test]
fn fused_norm_shared_by_products() {
    let Some((_g, b)) = setup() else { return };
    check(
        &b,
        "rms_norm*w > 3 x (mul_mat tq2 * scale) + f32 product",
        &|ctx, ins| unsafe {
            let x = input(ctx, ins, F32, &[256, 8], Fill::Uniform);
            let w = input(ctx, ins, F32, &[256], Fill::Uniform);
            let h = sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, x, 1e-5), w);
            let mut out: *mut sys::ggml_tensor = std::ptr::null_mut();
            for rows in [128i64, 128, 128] {
                let a = input(ctx, ins, TQ2, &[256, rows], Fill::Uniform);
                let s = input(ctx, ins, F32, &[1], Fill::Uniform);
                let y = sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, a, h), s);
                out = if out.is_null() { y } else { sys::ggml_add(ctx, out, y) };
            }
            // The norm's float output is read too (an f32 product).
            let f = input(ctx, ins, F32, &[256, 128], Fill::Uniform);
            sys::ggml_add(ctx, sys::ggml_mul_mat(ctx, f, h), out)
        },
        NMSE_TQ,
    );
}

/// Two fused, quantizing norms in one graph, each feeding ternary products (a layer's
/// attention and FFN halves).
#[test]
fn fused_norms_in_sequence() {
    let Some((_g, b)) = setup() else { return };
    for cols in [1i64, 8, 9] {
        check(
            &b,
            &format!("x > norm > tq2 > +x > norm > tq2, cols={cols}"),
            &|ctx, ins| unsafe {
                let x = input(ctx, ins, F32, &[256, cols], Fill::Uniform);
                let w1 = input(ctx, ins, F32, &[256], Fill::Uniform);
                let w2 = input(ctx, ins, F32, &[256], Fill::Uniform);
                let a1 = input(ctx, ins, TQ2, &[256, 256], Fill::Uniform);
                let a2 = input(ctx, ins, TQ2, &[256, 512], Fill::Uniform);
                let h = sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, x, 1e-5), w1);
                let y = sys::ggml_add(ctx, sys::ggml_mul_mat(ctx, a1, h), x);
                let h2 = sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, y, 1e-5), w2);
                sys::ggml_mul_mat(ctx, a2, h2)
            },
            NMSE_TQ,
        );
    }
}

/// The fused norm in place (ggml-alloc reuses a single-use input for the norm and its MUL):
/// its quantized output must come from the normalized values, not the overwritten input.
#[test]
fn fused_norm_in_place() {
    let Some((_g, b)) = setup() else { return };
    for cols in [1i64, 12] {
        check(
            &b,
            &format!("rms_norm_inplace > mul_inplace > tq2 (+ gate*up form), cols={cols}"),
            &|ctx, ins| unsafe {
                let x = input(ctx, ins, F32, &[512, cols], Fill::Uniform);
                let w = input(ctx, ins, F32, &[512], Fill::Uniform);
                let a = input(ctx, ins, TQ2, &[512, 64], Fill::Uniform);
                let h = sys::ggml_mul_inplace(ctx, sys::ggml_rms_norm_inplace(ctx, x, 1e-5), w);
                let g = input(ctx, ins, F32, &[512, cols], Fill::Uniform);
                let u = input(ctx, ins, F32, &[512, cols], Fill::Uniform);
                let m = sys::ggml_mul_inplace(ctx, g, u);
                let h2 = sys::ggml_mul_inplace(ctx, sys::ggml_rms_norm_inplace(ctx, m, 1e-5), w);
                sys::ggml_add(ctx, sys::ggml_mul_mat(ctx, a, h), sys::ggml_mul_mat(ctx, a, h2))
            },
            NMSE_TQ,
        );
    }
}

/// The norm's fused quantization gives the same bits as quantizing its stored output
/// separately (a graph split between backends must not change results): the same graph
/// with the product reading a reshaped view of the norm (not fused) must agree exactly.
#[test]
fn fused_quantization_is_bit_identical() {
    let Some((_g, b)) = setup() else { return };
    let mut bad = 0;
    for (k, cols, seed) in [(256i64, 11i64, 7u64), (512, 1, 8), (768, 5, 9), (256, 1, 7)] {
        let graph = |view: bool| {
            move |ctx: Ctx, ins: &mut Vec<(T, Fill)>| unsafe {
                let x = input(ctx, ins, F32, &[k, cols], Fill::Uniform);
                let w = input(ctx, ins, F32, &[k], Fill::Uniform);
                let a = input(ctx, ins, TQ2, &[k, 48], Fill::Uniform);
                let h = sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, x, 1e-5), w);
                let h = if view { sys::ggml_reshape_2d(ctx, h, k, cols) } else { h };
                sys::ggml_mul_mat(ctx, a, h)
            }
        };
        let (fused, _) = run(b.vk, &graph(false), seed);
        let (separate, _) = run(b.vk, &graph(true), seed);
        let diff = fused.iter().zip(&separate).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        println!("k={k} cols={cols}: {diff} of {} outputs differ", fused.len());
        bad += diff;
    }
    assert_eq!(bad, 0);
}

/// Independent products recorded by dependency level: the same results as in ggml's order,
/// with fewer barriers (ggml's order interleaves each product with its dependent scale).
/// Odd row counts, a shared rounded input, and a product of the float output too.
#[test]
fn level_order_saves_barriers() {
    let Some((_g, b)) = setup() else { return };
    let build: Builder = &|ctx, ins| unsafe {
        let x = input(ctx, ins, F32, &[512, 1], Fill::Uniform);
        let mut outs = Vec::new();
        for ty in [TQ2, TQ1, TQ2] {
            let w = input(ctx, ins, ty, &[512, 37], Fill::Uniform);
            let y = sys::ggml_scale(ctx, sys::ggml_mul_mat(ctx, w, x), 0.75);
            outs.push(sys::ggml_relu(ctx, y));
        }
        let f = input(ctx, ins, F32, &[512, 37], Fill::Uniform);
        let z = sys::ggml_scale(ctx, sys::ggml_mul_mat(ctx, f, x), 0.5);
        sys::ggml_add(ctx, sys::ggml_add(ctx, sys::ggml_add(ctx, outs[0], outs[1]), outs[2]), z)
    };
    let mut barriers = Vec::new();
    for on in [false, true] {
        trit_vulkan::set_reorder(on);
        let before = trit_vulkan::barrier_count();
        check(&b, &format!("3 x relu(scale(tq(x))) + scale(f32(x)), reorder={on}"), build, 1e-6);
        barriers.push(trit_vulkan::barrier_count() - before);
    }
    trit_vulkan::set_reorder(false);
    assert!(barriers[1] < barriers[0], "barriers in ggml's order / by level: {barriers:?}");
}

/// BitNet's FFN in llama.cpp's node order: gate product and scale, RELU, SQR, up product
/// and scale, gate * up, sub-norm, weight, down product. RELU and SQR fold into the
/// sub-norm kernel (no relu_sqr dispatch) where they have no other use; with another use
/// of the SQR they run as before. Decode and odd column counts.
#[test]
fn relu_sqr_folded_into_sub_norm() {
    let Some((_g, b)) = setup() else { return };
    for (cols, extra_use) in [(1i64, false), (3, false), (1, true)] {
        let build: Builder = &|ctx, ins| unsafe {
            let (k, f) = (256i64, 512i64);
            let h = input(ctx, ins, F32, &[k, cols], Fill::Uniform);
            let wg = input(ctx, ins, TQ2, &[k, f], Fill::Uniform);
            let wu = input(ctx, ins, TQ2, &[k, f], Fill::Uniform);
            let wd = input(ctx, ins, TQ2, &[f, k], Fill::Uniform);
            let (sg, su) = (input(ctx, ins, F32, &[1], Fill::Uniform), input(ctx, ins, F32, &[1], Fill::Uniform));
            let nw = input(ctx, ins, F32, &[f], Fill::Uniform);
            let gate = sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, wg, h), sg);
            let sq = sys::ggml_sqr(ctx, sys::ggml_relu(ctx, gate));
            let up = sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, wu, h), su);
            let m = sys::ggml_mul(ctx, sq, up);
            let y = sys::ggml_mul_mat(ctx, wd, sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, m, 1e-5), nw));
            if extra_use {
                sys::ggml_add(ctx, y, sys::ggml_view_2d(ctx, sq, k, cols, (*sq).nb[1], 0))
            } else {
                y
            }
        };
        let before = dispatch_count();
        check(&b, &format!("ffn relu^2 into sub-norm cols={cols} extra_use={extra_use}"), build, 1e-6);
        let n = dispatch_count() - before;
        if !extra_use {
            // Rounding of h, gate, up (one dispatch for one column: sibling products),
            // sub-norm (with ReLU^2), down.
            assert_eq!(n, if cols == 1 { 4 } else { 5 }, "dispatches");
        }
    }
}

/// A BitNet layer at decode (one column): each norm read only by ternary products is computed
/// inside them (`NORM` in mul_mv_tq.comp): Q, K, V from attn_norm in one dispatch, the
/// output projection from the attention sub-norm (+ residual), gate and up from ffn_norm,
/// down from the ReLU^2 sub-norm (+ residual). Against the CPU, and against the norms
/// recorded on their own (NMSE <= 1e-12); TQ2_0 and TQ1_0, with and without the packed dot product;
/// widths of 3, 10 and 27 blocks (several rounds of a workgroup's clusters on 32-wide
/// subgroups). A prompt-shaped graph (3 columns) keeps its norm kernels.
#[test]
fn norms_computed_in_mat_vecs() {
    let Some((_g, b)) = setup() else { return };
    let (subgroups, has_dot) = trit_vulkan::mat_vec_features();
    for (wt, dim, ffn, cols, dot) in [
        (TQ2, 768i64, 1280i64, 1i64, true),
        (TQ1, 768, 1280, 1, true),
        (TQ2, 2560, 6912, 1, true),
        (TQ2, 768, 1280, 1, false),
        (TQ2, 768, 1280, 3, true),
    ] {
        trit_vulkan::set_mat_vec_kernels(true, dot);
        let build: Builder = &|ctx, ins| unsafe {
            let x = input(ctx, ins, F32, &[dim, cols], Fill::Uniform);
            let scaled = |ctx, ins: &mut Vec<(T, Fill)>, rows: i64, k: i64, h: T| {
                let a = input(ctx, ins, wt, &[k, rows], Fill::Uniform);
                let s = input(ctx, ins, F32, &[1], Fill::Uniform);
                sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, a, h), s)
            };
            let norm = |ctx, ins: &mut Vec<(T, Fill)>, t: T, k: i64| {
                let w = input(ctx, ins, F32, &[k], Fill::Uniform);
                sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, t, 1e-5), w)
            };
            let h = norm(ctx, ins, x, dim);
            let (q, k, v) =
                (scaled(ctx, ins, dim, dim, h), scaled(ctx, ins, dim, dim, h), scaled(ctx, ins, dim, dim, h));
            // (MULs: an ADD would take K and V as product + residual; the SCALE keeps the
            // second MUL out of the norm, as attention's output is.)
            let attn = sys::ggml_scale(ctx, sys::ggml_mul(ctx, sys::ggml_mul(ctx, q, k), v), 0.5);
            let h1 = norm(ctx, ins, attn, dim);
            let o = sys::ggml_add(ctx, scaled(ctx, ins, dim, dim, h1), x);
            let h2 = norm(ctx, ins, o, dim);
            let gate = scaled(ctx, ins, ffn, dim, h2);
            let sq = sys::ggml_sqr(ctx, sys::ggml_relu(ctx, gate));
            let up = scaled(ctx, ins, ffn, dim, h2);
            let m = norm(ctx, ins, sys::ggml_mul(ctx, sq, up), ffn);
            sys::ggml_add(ctx, scaled(ctx, ins, dim, ffn, m), o)
        };
        let name = format!("bitnet layer {} dim={dim} ffn={ffn} cols={cols} dot={dot}", tn(wt));
        let (d0, n0) = (dispatch_count(), trit_vulkan::norm_mat_vec_dispatch_count());
        check(&b, &name, build, NMSE_TQ);
        let (dispatches, in_kernel) = (dispatch_count() - d0, trit_vulkan::norm_mat_vec_dispatch_count() - n0);
        println!("{name}: {dispatches} dispatches, {in_kernel} with the norm inside");
        if subgroups && (has_dot || !dot) {
            // QKV, 2 MULs, SCALE, output projection, gate/up, down; the four norms inside
            // them. With 3 columns: the four norms, 2 MULs, SCALE, 7 products and the two
            // residual ADDs (no fused residual for several columns).
            // Without the `NORM` kernels (subgroups narrower than 8): the four norms on their own.
            let want = match (cols, trit_vulkan::has_norm_mat_vecs()) {
                (1, true) => (7, 4),
                (1, false) => (11, 0),
                _ => (16, 0),
            };
            assert_eq!((dispatches, in_kernel), want, "{name}");
        }
        // The default (wide variants where the device has them: lavapipe and the H200 do; 8
        // lanes per row for products without rope), the 512-invocation variants, the separate
        // norm kernels.
        println!("{name}: wide variants on this device: {}", trit_vulkan::has_wide_norm_mat_vecs());
        let mut runs = Vec::new();
        for (on, wide) in [(true, true), (true, false), (false, true)] {
            trit_vulkan::set_norm_in_mat_vec(on);
            trit_vulkan::set_wide_norm_mat_vecs(wide);
            let w0 = trit_vulkan::wide_norm_mat_vec_dispatch_count();
            runs.push(run(b.vk, build, 5).0);
            let wide_ran = trit_vulkan::wide_norm_mat_vec_dispatch_count() > w0;
            let expect = on && wide && trit_vulkan::has_wide_norm_mat_vecs() && cols == 1;
            assert_eq!(wide_ran, expect, "{name}: wide variants ran (norm inside {on}, wide {wide})");
        }
        trit_vulkan::set_norm_in_mat_vec(true);
        trit_vulkan::set_wide_norm_mat_vecs(true);
        // The products of one input without rope with 32 and 16 lanes per row (`_w`, `_w16`;
        // the runs above used the default, 8: `_w8`).
        for lanes in [32, 16, 8] {
            trit_vulkan::set_norm_lanes(NormLanes::Multi, lanes);
            let n0 = trit_vulkan::narrow_norm_mat_vec_dispatch_count();
            if lanes != 8 {
                runs.push(run(b.vk, build, 5).0);
            } else {
                run(b.vk, build, 5);
            }
            let ran = trit_vulkan::narrow_norm_mat_vec_dispatch_count() - n0;
            // Q, K, V (no rope here) and gate, up, with fewer than 32 lanes; and the output and
            // down projections where their default has fewer.
            let one = u64::from(trit_vulkan::default_norm_lanes(NormLanes::One) < 32);
            let expect =
                (2 * u64::from(lanes < 32) + 2 * one) * u64::from(trit_vulkan::has_wide_norm_mat_vecs() && cols == 1);
            assert_eq!(ran, expect, "{name}: products with {lanes} lanes per row ran");
        }
        trit_vulkan::set_norm_lanes(NormLanes::Multi, trit_vulkan::default_norm_lanes(NormLanes::Multi));
        // The single products (output and down projections) with 32, 16 and 8 lanes per row.
        for lanes in [32, 16, 8] {
            trit_vulkan::set_norm_lanes(NormLanes::One, lanes);
            let n0 = trit_vulkan::narrow_norm_mat_vec_dispatch_count();
            runs.push(run(b.vk, build, 5).0);
            let ran = trit_vulkan::narrow_norm_mat_vec_dispatch_count() - n0;
            // The output and down projections, and QKV and gate/up at the multi default.
            let multi = u64::from(trit_vulkan::default_norm_lanes(NormLanes::Multi) < 32);
            let one = u64::from(lanes < 32);
            let expect = (2 * multi + 2 * one) * u64::from(trit_vulkan::has_wide_norm_mat_vecs() && cols == 1);
            assert_eq!(ran, expect, "{name}: single products with {lanes} lanes per row ran");
        }
        trit_vulkan::set_norm_lanes(NormLanes::One, trit_vulkan::default_norm_lanes(NormLanes::One));
        // The weights pulled into L2 beside the stage before each product (`l2_prefetch`, on
        // by default on discrete GPUs, forced both ways here): one prefetch a `NORM` product,
        // not one barrier more, and the same bits as without.
        let mut barriers_by_prefetch = Vec::new();
        for on in [false, true] {
            trit_vulkan::set_l2_prefetch(on);
            let (p0, b0, n0) = (
                trit_vulkan::l2_prefetch_dispatch_count(),
                trit_vulkan::barrier_count(),
                trit_vulkan::norm_mat_vec_dispatch_count(),
            );
            let out = run(b.vk, build, 5).0;
            let (prefetches, barriers, norm_products) = (
                trit_vulkan::l2_prefetch_dispatch_count() - p0,
                trit_vulkan::barrier_count() - b0,
                trit_vulkan::norm_mat_vec_dispatch_count() - n0,
            );
            println!("{name}: L2 prefetch {on}: {prefetches} prefetches, {barriers} barriers");
            assert_eq!(prefetches, if on { norm_products } else { 0 }, "{name}: prefetches (on: {on})");
            runs.push(out);
            barriers_by_prefetch.push(barriers);
        }
        assert_eq!(barriers_by_prefetch[0], barriers_by_prefetch[1], "{name}: barriers without / with the L2 prefetch");
        trit_vulkan::reset_l2_prefetch();
        // The int8 activations are those of the separate norm kernels (the same operations in
        // the same order); the products' f32 sums may still round differently in a kernel the
        // driver compiled differently (on lavapipe they are identical; on the H200 not all).
        for (i, what) in [
            (1, "the 512-invocation variants"),
            (2, "the separate norms"),
            (3, "32 lanes per row for QKV and gate/up"),
            (4, "16 lanes per row for QKV and gate/up"),
            (5, "32 lanes per row for the output and down projections"),
            (6, "16 lanes per row for the output and down projections"),
            (7, "8 lanes per row for the output and down projections"),
            (8, "the L2 prefetch off"),
            (9, "the L2 prefetch on"),
        ] {
            let diff = runs[0].iter().zip(&runs[i]).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            let e = nmse(&runs[0], &runs[i]);
            println!("{name}: {diff} of {} outputs differ from {what} in their bits, nmse {e:.3e}", runs[0].len());
            assert!(e <= 1e-12, "{name}: NMSE {e:.3e} against {what}");
        }
    }
    trit_vulkan::set_mat_vec_kernels(true, true);
}

/// Attention's KQV product, PERMUTE(0, 2, 1, 3) and CONT back to rows (llama.cpp's graph
/// without flash attention): the product stores straight into the CONT's memory. Decode
/// (one query row) and several rows, odd head counts; also with the product used again
/// (then not folded).
#[test]
fn permuted_product_into_cont() {
    let Some((_g, b)) = setup() else { return };
    for (tokens, heads, extra_use) in [(1i64, 5i64, false), (3, 3, false), (1, 4, true)] {
        let build: Builder = &|ctx, ins| unsafe {
            let (hd, kv) = (64i64, 40i64);
            let v = input(ctx, ins, F16, &[kv, hd, heads], Fill::Uniform);
            let kq = input(ctx, ins, F32, &[kv, tokens, heads], Fill::Uniform);
            let kqv = sys::ggml_mul_mat(ctx, v, kq);
            let cur = sys::ggml_cont_2d(ctx, sys::ggml_permute(ctx, kqv, 0, 2, 1, 3), hd * heads, tokens);
            if extra_use {
                let flat = sys::ggml_reshape_2d(ctx, sys::ggml_cont(ctx, kqv), hd * heads, tokens);
                sys::ggml_add(ctx, cur, flat)
            } else {
                sys::ggml_scale(ctx, cur, 1.0)
            }
        };
        let before = dispatch_count();
        check(&b, &format!("kqv permute cont tokens={tokens} heads={heads} extra_use={extra_use}"), build, NMSE_MM);
        if !extra_use {
            // The product (into the CONT's memory) and the SCALE.
            assert_eq!(dispatch_count() - before, 2, "dispatches");
        }
    }
}

/// Q, V and K of a decode token as llama.cpp's layer computes them: RMS_NORM of the input
/// times its weight, three scaled ternary products of it (`build_lora_mm`), Q's and K's
/// rotations (`hd`-wide heads, position < 4000, base 500000).
struct Qkv {
    q: T,
    rq: T,
    v: T,
    rk: T,
}

/// See [`Qkv`]. SAFETY: `ctx` is a live context.
unsafe fn qkv_rotated(
    ctx: Ctx,
    ins: &mut Vec<(T, Fill)>,
    wt: sys::ggml_type,
    hd: i64,
    heads: i64,
    kv_heads: i64,
    mode: i32,
) -> Qkv {
    let dim = hd * heads;
    // SAFETY: tensors of a live context.
    unsafe {
        let x = input(ctx, ins, F32, &[dim], Fill::Uniform);
        let w = input(ctx, ins, F32, &[dim], Fill::Uniform);
        let h = sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, x, 1e-5), w);
        let pos = input(ctx, ins, I32, &[1], Fill::Index(4000));
        let scaled = |ins: &mut Vec<(T, Fill)>, rows: i64| {
            let a = input(ctx, ins, wt, &[dim, rows], Fill::Uniform);
            let s = input(ctx, ins, F32, &[1], Fill::Uniform);
            sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, a, h), s)
        };
        let q = scaled(ins, dim);
        let rq = rope(ctx, Rope::Forward, sys::ggml_reshape_3d(ctx, q, hd, heads, 1), pos, hd as i32, mode, 500000.0);
        let v = scaled(ins, hd * kv_heads);
        let k = scaled(ins, hd * kv_heads);
        let rk =
            rope(ctx, Rope::Forward, sys::ggml_reshape_3d(ctx, k, hd, kv_heads, 1), pos, hd as i32, mode, 500000.0);
        Qkv { q, rq, v, rk }
    }
}

/// Q's rotation computed by the QKV products (llama.cpp's order: Q, its RESHAPE and ROPE,
/// then V and K, K's ROPE): one dispatch for the three products and Q's rotation, with the
/// attention norm inside it, where the device has the kernels; both rope modes, grouped
/// heads, both weight types. With K's rotation and V written into f16 KV caches (K as rows,
/// V as rows or transposed, one element per row, as llama.cpp without flash attention):
/// the same dispatch writes the caches where the device has 8 bindings. Also with Q read by
/// something else besides its ROPE (then not folded), which must stay correct. The caches
/// are checked whole through products that read them. The fallbacks (no `KV` kernel, the
/// 512-invocation variants instead of the wide ones, no norm inside the products) give the
/// same results as the default path (NMSE ≤ 1e-12). Bound as rotations' (NMSE_TR: positions
/// up to 4000 make the GPU's and the CPU's sin and cos differ in their last bits).
#[test]
fn rope_in_qkv_products() {
    let Some((_g, b)) = setup() else { return };
    let (subgroups, _) = trit_vulkan::mat_vec_features();
    let neox = sys::GGML_ROPE_TYPE_NEOX as i32;
    // (weights, head size, Q heads, KV heads, rope mode, Q read again, KV cache: 0 none, 1
    // rows, 2 V transposed)
    for (wt, hd, heads, kv_heads, mode, again, cache) in [
        (TQ2, 128i64, 4i64, 2i64, neox, false, 0),
        (TQ1, 64, 4, 4, 0, false, 0),
        (TQ2, 128, 20, 5, neox, false, 0),
        (TQ2, 64, 4, 2, neox, true, 0),
        (TQ2, 128, 4, 2, neox, false, 2),
        (TQ1, 64, 4, 4, 0, false, 1),
        (TQ2, 128, 20, 5, neox, false, 2),
    ] {
        let dim = hd * heads;
        let kv_dim = hd * kv_heads;
        let build: Builder = &|ctx, ins| unsafe {
            let Qkv { q, rq, v, rk } = qkv_rotated(ctx, ins, wt, hd, heads, kv_heads, mode);
            let rq = sys::ggml_reshape_1d(ctx, rq, dim);
            let rq = if again { sys::ggml_add(ctx, rq, q) } else { rq };
            if cache == 0 {
                // Q's rotation (plus Q itself where it is read again), plus V and K's rotation
                // broadcast over the Q heads of each KV head.
                let kv = sys::ggml_add(ctx, sys::ggml_reshape_1d(ctx, rk, kv_dim), v);
                return sys::ggml_add(ctx, rq, kv);
            }
            // The caches (`cells` cells), written at distinct rows, then read whole by
            // products with random vectors; Q's rotation plus both, broadcast.
            let cells = 32i64;
            let kc = input(ctx, ins, F16, &[kv_dim, cells], Fill::Uniform);
            let k_ids = input(ctx, ins, I64, &[1], Fill::Distinct(cells));
            let kc = sys::ggml_set_rows(ctx, kc, sys::ggml_reshape_2d(ctx, rk, kv_dim, 1), k_ids);
            let vc = if cache == 1 {
                let vc = input(ctx, ins, F16, &[kv_dim, cells], Fill::Uniform);
                let v_ids = input(ctx, ins, I64, &[1], Fill::Distinct(cells));
                let vc = sys::ggml_set_rows(ctx, vc, sys::ggml_reshape_2d(ctx, v, kv_dim, 1), v_ids);
                sys::ggml_reshape_2d(ctx, vc, kv_dim, cells)
            } else {
                let vc = input(ctx, ins, F16, &[1, kv_dim * cells], Fill::Uniform);
                let v_ids = input(ctx, ins, I64, &[kv_dim], Fill::Distinct(kv_dim * cells));
                let vc = sys::ggml_set_rows(ctx, vc, sys::ggml_reshape_2d(ctx, v, 1, kv_dim), v_ids);
                sys::ggml_reshape_2d(ctx, vc, kv_dim, cells)
            };
            let u = input(ctx, ins, F32, &[kv_dim, 1], Fill::Uniform);
            let both = sys::ggml_add(ctx, sys::ggml_mul_mat(ctx, kc, u), sys::ggml_mul_mat(ctx, vc, u));
            sys::ggml_add(ctx, rq, sys::ggml_reshape_1d(ctx, both, cells))
        };
        let name = format!(
            "q/k/v products, q rope {} hd={hd} heads={heads}/{kv_heads} mode={mode} again={again} cache={cache}",
            tn(wt)
        );
        let (d0, r0, k0) =
            (dispatch_count(), trit_vulkan::rope_in_products_count(), trit_vulkan::kv_in_products_count());
        check(&b, &name, build, NMSE_TR);
        let (dispatches, roped, cached) = (
            dispatch_count() - d0,
            trit_vulkan::rope_in_products_count() - r0,
            trit_vulkan::kv_in_products_count() - k0,
        );
        println!("{name}: {dispatches} dispatches, {roped} rotations and {cached} cache writes in the products");
        // The paths of devices without the `KV` kernel (the cache writes as kernels of their
        // own, recorded at the products' place) and without the norm inside the products (Q
        // stored unrotated into the ROPE's memory, then rotated in place): the same results.
        let mut runs = Vec::new();
        for (norm_in, kv_in, wide) in
            [(true, true, true), (true, false, true), (false, true, true), (true, true, false)]
        {
            trit_vulkan::set_norm_in_mat_vec(norm_in);
            trit_vulkan::set_kv_in_products(kv_in);
            trit_vulkan::set_wide_norm_mat_vecs(wide);
            let (r0, k0) = (trit_vulkan::rope_in_products_count(), trit_vulkan::kv_in_products_count());
            runs.push(run(b.vk, build, 5).0);
            // The fallbacks really ran: no cache writes in the products without `KV` or the
            // norm inside them, no rotation in them without the norm inside.
            if !norm_in {
                assert_eq!(trit_vulkan::rope_in_products_count(), r0, "{name}: rotated without the norm inside");
            }
            if !(norm_in && kv_in) {
                assert_eq!(trit_vulkan::kv_in_products_count(), k0, "{name}: cache written on a fallback path");
            }
        }
        trit_vulkan::set_norm_in_mat_vec(true);
        trit_vulkan::set_kv_in_products(true);
        trit_vulkan::set_wide_norm_mat_vecs(true);
        // The default path with 32, 16 and 8 lanes per row for the products with rope (64 or
        // 128 rows per workgroup where they divide the head size, else 32).
        for lanes in [32i64, 16, 8] {
            trit_vulkan::set_norm_lanes(NormLanes::Rope, lanes as u32);
            let n0 = trit_vulkan::narrow_norm_mat_vec_dispatch_count();
            runs.push(run(b.vk, build, 5).0);
            let ran = trit_vulkan::narrow_norm_mat_vec_dispatch_count() - n0;
            let narrow = if roped > 0 {
                lanes < 32 && hd % (1024 / lanes) == 0
            } else {
                trit_vulkan::default_norm_lanes(NormLanes::Multi) < 32
            };
            let expect = u64::from(narrow && trit_vulkan::has_wide_norm_mat_vecs());
            assert_eq!(ran, expect, "{name}: products with {lanes} lanes per row ran");
        }
        trit_vulkan::set_norm_lanes(NormLanes::Rope, trit_vulkan::default_norm_lanes(NormLanes::Rope));
        for (i, other) in runs.iter().enumerate().skip(1) {
            let e = nmse(&runs[0], other);
            println!("{name}: path {i} against the default: nmse {e:.3e}");
            // Other lane counts sum a row's f32 partial products in another order, which can
            // move a value stored in the f16 caches by one step (3e-12 seen on lavapipe).
            let bound = if i < 4 { 1e-12 } else { NMSE_TQ };
            assert!(e <= bound, "{name}: path {i}: NMSE {e:.3e} against the default path");
        }
        if subgroups && !trit_vulkan::has_norm_mat_vecs() {
            // Subgroups narrower than 8: no `NORM` kernels, so nothing rotated or cached in
            // the products.
            assert_eq!((roped, cached), (0, 0), "{name}");
        } else if subgroups {
            // Without caches: QKV with the norm and Q's rotation, K's rotation, two ADDs; Q
            // read again: QKV, Q's ROPE, K's rotation, three ADDs.
            // With the caches and 8 bindings: QKV writing the caches, the two products reading
            // them, two ADDs.
            let want = match (cache, again) {
                (0, true) => (6, 0, 0),
                (0, false) => (4, 1, 0),
                _ => (5, 1, 1),
            };
            if cache == 0 || trit_vulkan::storage_bindings() >= 8 {
                assert_eq!((dispatches, roped, cached), want, "{name}");
            }
        }
    }
}

/// Decode attention computed by the QKV products themselves (`ATTN`, attn_tail.glsl): a
/// decode layer from the attention norm to the attention's result as llama.cpp builds it —
/// the norm, Q, V and K as scaled ternary products, Q's and K's rotations, K and V written
/// into f16 caches at one cell (V transposed: element r of a cell at r * cells + cell), then
/// KQ over the caches' first n_kv cells (the new cell among them), SOFT_MAX with mask and
/// scale, KQV, PERMUTE and CONT. The group's last workgroup reads the K and V rows the other
/// workgroups of the dispatch wrote, so a wrong order shows in the result. Grouped heads
/// (2B-4T's 20 / 5 at 256 cells), masked cells (a mask of 8 rows: row 0 masks the last 7),
/// a shorter head, one query head per KV head, the new cell first and last; and a shape the
/// tail does not take (8 query heads of 128 per KV head: Q does not fit its shared memory),
/// which must stay correct with the attention a dispatch of its own. Against the CPU (the ternary bound, as the products'), and against the same
/// graph with the attention as its own dispatch (`set_attn_in_qkv(false)`).
#[test]
fn attention_in_qkv_products() {
    let Some((_g, b)) = setup() else { return };
    let neox = sys::GGML_ROPE_TYPE_NEOX as i32;
    // Off by default (slower on an H100 so far): on for this test, the default again after.
    trit_vulkan::set_attn_in_qkv(true);
    // (head size, Q heads, KV heads, cells, n_kv, cell written, mask rows, tail expected
    // where the device has the `ATTN` kernel)
    for (hd, heads, kv_heads, cells, n_kv, cell, mask_rows, tail) in [
        (128i64, 20i64, 5i64, 256i64, 256i64, 37i64, 1i64, true),
        (128, 4, 1, 64, 48, 5, 8, true),
        (64, 8, 2, 48, 40, 39, 1, true),
        (128, 8, 2, 40, 40, 0, 1, true),
        (128, 4, 4, 32, 32, 3, 1, true),
        (128, 16, 2, 64, 64, 3, 1, false),
    ] {
        let dim = hd * heads;
        let kv_dim = hd * kv_heads;
        let build: Builder = &|ctx, ins| unsafe {
            let Qkv { rq, v, rk, .. } = qkv_rotated(ctx, ins, TQ2, hd, heads, kv_heads, neox);
            let kc = input(ctx, ins, F16, &[kv_dim, cells], Fill::Uniform);
            let k_ids = input(ctx, ins, I64, &[1], Fill::Ramp(cell, 0));
            let kc = sys::ggml_set_rows(ctx, kc, sys::ggml_reshape_2d(ctx, rk, kv_dim, 1), k_ids);
            let vc = input(ctx, ins, F16, &[1, kv_dim * cells], Fill::Uniform);
            let v_ids = input(ctx, ins, I64, &[kv_dim], Fill::Ramp(cell, cells));
            let vc = sys::ggml_set_rows(ctx, vc, sys::ggml_reshape_2d(ctx, v, 1, kv_dim), v_ids);
            // The attention over the caches' first n_kv cells, as llama.cpp views them.
            let kv = sys::ggml_view_3d(ctx, kc, hd, kv_heads, n_kv, 2 * hd as usize, (*kc).nb[1], 0);
            let vv = sys::ggml_view_3d(ctx, vc, n_kv, hd, kv_heads, 2 * cells as usize, 2 * (hd * cells) as usize, 0);
            let mask = input(ctx, ins, F32, &[n_kv, mask_rows], Fill::Causal);
            let kq =
                sys::ggml_mul_mat(ctx, sys::ggml_permute(ctx, kv, 0, 2, 1, 3), sys::ggml_permute(ctx, rq, 0, 2, 1, 3));
            let sm = sys::ggml_soft_max_ext(ctx, kq, mask, 1.0 / (hd as f32).sqrt(), 0.0);
            let kqv = sys::ggml_mul_mat(ctx, vv, sm);
            let cur = sys::ggml_cont_2d(ctx, sys::ggml_permute(ctx, kqv, 0, 2, 1, 3), dim, 1);
            // Q's rotation read first, so that the graph computes Q first, as llama.cpp's does.
            sys::ggml_add(ctx, sys::ggml_reshape_2d(ctx, rq, dim, 1), cur)
        };
        let name = format!("attention in QKV hd={hd} heads={heads}/{kv_heads} cells={cells} n_kv={n_kv} cell={cell}");
        let (d0, a0) = (dispatch_count(), trit_vulkan::attn_in_products_count());
        check(&b, &name, build, NMSE_TR);
        let (dispatches, attended) = (dispatch_count() - d0, trit_vulkan::attn_in_products_count() - a0);
        println!("{name}: {dispatches} dispatches, {attended} attentions in the products");
        trit_vulkan::set_attn_in_qkv(false);
        let (d1, a1) = (dispatch_count(), trit_vulkan::attn_in_products_count());
        let (own, _) = run(b.vk, build, 5);
        let apart = dispatch_count() - d1;
        assert_eq!(trit_vulkan::attn_in_products_count(), a1, "{name}: attention in the products while off");
        trit_vulkan::set_attn_in_qkv(true);
        let (again, _) = run(b.vk, build, 5);
        // The same Q, K and V either way; the attention's sums in another order.
        let e = nmse(&own, &again);
        println!("{name}: fused against the attention's own dispatch: nmse {e:.3e}");
        assert!(e <= 1e-9, "{name}: NMSE {e:.3e} between the two paths");
        let has_kernel = trit_vulkan::storage_bindings() >= 11 && trit_vulkan::has_norm_mat_vecs();
        if has_kernel && tail {
            assert_eq!(attended, 1, "{name}: attention not computed by the products");
            assert_eq!(apart, dispatches + 1, "{name}: dispatches with the attention apart");
        } else if !tail {
            assert_eq!(attended, 0, "{name}: the tail took a shape it does not take");
        }
    }
    trit_vulkan::reset_attn_in_qkv();
}

/// K's rotation, reshape to rows and SET_ROWS into an f16 cache by i64 indices (llama.cpp's
/// KV write): one kernel. Decode and several tokens, both rope modes, partial rotation, odd
/// head counts; the whole cache is compared (rows not written keep their values).
#[test]
fn rope_into_cache_rows() {
    let Some((_g, b)) = setup() else { return };
    for (tokens, heads, mode, n_dims) in
        [(1i64, 3i64, 0, 64), (5, 2, sys::GGML_ROPE_TYPE_NEOX as i32, 64), (3, 5, sys::GGML_ROPE_TYPE_NEOX as i32, 32)]
    {
        let build: Builder = &|ctx, ins| unsafe {
            let hd = 64i64;
            let cache = input(ctx, ins, F16, &[hd * heads, 37], Fill::Uniform);
            let x = input(ctx, ins, F32, &[hd, heads, tokens], Fill::Uniform);
            let pos = input(ctx, ins, I32, &[tokens], Fill::Index(300));
            let idx = input(ctx, ins, I64, &[tokens], Fill::Distinct(37));
            let r = rope(ctx, Rope::Forward, x, pos, n_dims, mode, 500000.0);
            // llama.cpp views the rotated K as rows; a reshape works the same.
            let rows = if tokens == 5 {
                sys::ggml_reshape_2d(ctx, r, hd * heads, tokens)
            } else {
                sys::ggml_view_2d(ctx, r, hd * heads, tokens, (*r).nb[2], 0)
            };
            sys::ggml_set_rows(ctx, cache, rows, idx)
        };
        let before = dispatch_count();
        check(
            &b,
            &format!("rope > set_rows f16 tokens={tokens} heads={heads} mode={mode} n_dims={n_dims}"),
            build,
            NMSE_TR,
        );
        assert_eq!(dispatch_count() - before, 1, "dispatches");
    }
}

/// The shape of a decode attention chain (`attention_graph`).
#[derive(Clone, Copy)]
struct Attention {
    tokens: i64,
    hd: i64,
    heads: i64,
    hkv: i64,
    n_kv: i64,
    mask_rows: i64,
    perm: bool,
    kq_again: bool,
}

/// Decode attention as llama.cpp builds it without flash attention (K cache view, KQ,
/// SOFT_MAX with mask and scale, KQV of the transposed V view, optionally PERMUTE and CONT
/// back to rows), then a SCALE by 1; with `kq_again` KQ is also added to the result.
fn attention_graph(ctx: Ctx, ins: &mut Vec<(T, Fill)>, a: Attention) -> T {
    let Attention { tokens, hd, heads, hkv, n_kv, mask_rows, perm, kq_again } = a;
    // SAFETY: tensors of a live context.
    unsafe {
        // llama.cpp's cache holds a multiple of 256 cells; rows stay 16-byte aligned.
        let kv_size = (n_kv + 7) / 8 * 8 + 8;
        let kc = input(ctx, ins, F16, &[hd * hkv, kv_size], Fill::Uniform);
        let k = sys::ggml_view_3d(ctx, kc, hd, hkv, n_kv, (*kc).nb[0] * hd as usize, (*kc).nb[1], 0);
        let q = input(ctx, ins, F32, &[hd, heads, tokens], Fill::Uniform);
        let mask = input(ctx, ins, F32, &[n_kv, mask_rows], Fill::Causal);
        let vc = input(ctx, ins, F16, &[kv_size, hd, hkv], Fill::Uniform);
        let v = sys::ggml_view_3d(ctx, vc, n_kv, hd, hkv, (*vc).nb[1], (*vc).nb[2], 0);
        let kq = sys::ggml_mul_mat(ctx, sys::ggml_permute(ctx, k, 0, 2, 1, 3), sys::ggml_permute(ctx, q, 0, 2, 1, 3));
        let sm = sys::ggml_soft_max_ext(ctx, kq, mask, 1.0 / (hd as f32).sqrt(), 0.0);
        let kqv = sys::ggml_mul_mat(ctx, v, sm);
        let cur = if perm {
            sys::ggml_cont_2d(ctx, sys::ggml_permute(ctx, kqv, 0, 2, 1, 3), hd * heads, tokens)
        } else {
            kqv
        };
        let out = sys::ggml_scale(ctx, cur, 1.0);
        if kq_again {
            // n_kv = hd here, so KQ has as many elements as the output.
            sys::ggml_add(ctx, out, sys::ggml_reshape_2d(ctx, kq, hd * heads, tokens))
        } else {
            out
        }
    }
}

/// Decode attention as llama.cpp builds it without flash attention — KQ of the permuted f16
/// K cache view and permuted Q, SOFT_MAX with mask and scale, KQV of the transposed f16 V
/// view, PERMUTE and CONT back to rows — is one dispatch: `attn_split.comp` (the keys of a
/// row split over workgroups of 32 or 64 keys and more, their partial sums combined by the
/// last) and `attn_decode.comp` (one workgroup per row and head, `set_attn_chunk(0)`).
/// Grouped and plain heads, odd head counts, caches longer than a workgroup, a padded mask,
/// the form without PERMUTE/CONT, a cache too long for the one-workgroup kernel (split only),
/// a prompt of 8 rows whose partials would overflow the split kernel's scratch at 32 chunks
/// (fewer, longer chunks); and the shapes left to the separate kernels (n_kv not a multiple
/// of 8, head size over 128, KQ used again), which must stay correct.
/// Bound 1e-6 (as other ops with exp and f16 rounding): the CPU rounds Q and the
/// probabilities to f16 for its products; the one-workgroup kernel does the same, the split
/// kernel rounds Q only (its probabilities are known after the combine), and the GPU's exp
/// and summation order differ.
#[test]
fn decode_attention_in_one_dispatch() {
    let Some((_g, b)) = setup() else { return };
    // (tokens, head dim, heads, kv heads, n_kv, mask rows, permute+cont, KQ used again, fused)
    let cases = [
        (1i64, 64i64, 4i64, 2i64, 40i64, 1i64, true, false, true),
        (1, 128, 20, 5, 256, 32, true, false, true),
        (3, 40, 6, 3, 1000, 3, true, false, true),
        (2, 64, 3, 1, 296, 8, false, false, true),
        (1, 72, 4, 4, 3000, 1, true, false, true),
        (1, 128, 4, 2, 5000, 1, true, false, true),
        (8, 128, 32, 8, 4096, 8, true, false, true),
        (1, 64, 4, 2, 37, 1, true, false, false),
        (1, 256, 2, 1, 64, 1, true, false, false),
        (1, 64, 4, 2, 64, 1, true, true, false),
    ];
    for chunk in [32u32, 64, 0] {
        trit_vulkan::set_attn_chunk(chunk);
        for (tokens, hd, heads, hkv, n_kv, mask_rows, perm, kq_again, fused) in cases {
            // The one-workgroup kernel keeps at most 3584 scores in shared memory.
            let fused = fused && (chunk > 0 || n_kv <= 3584);
            let shape = Attention { tokens, hd, heads, hkv, n_kv, mask_rows, perm, kq_again };
            let build: Builder = &|ctx, ins| attention_graph(ctx, ins, shape);
            let name =
                format!("attention chunk={chunk} tokens={tokens} hd={hd} heads={heads}/{hkv} n_kv={n_kv} perm={perm}");
            let (before, split_before) = (dispatch_count(), trit_vulkan::attn_split_dispatch_count());
            check(&b, &name, build, NMSE_TR);
            let n = dispatch_count() - before;
            let split = trit_vulkan::attn_split_dispatch_count() - split_before;
            if fused {
                // The attention kernel and the SCALE.
                assert_eq!(n, 2, "{name}: dispatches");
                assert_eq!(split, u64::from(chunk > 0), "{name}: split kernel dispatches");
            } else {
                assert!(n > 2, "{name}: fused although it should not be");
            }
        }
    }
    trit_vulkan::set_attn_chunk(32);
}

/// Scaled ternary products of one activation column (Q, K, V or gate, up: `build_lora_mm`'s
/// MUL_MAT then MUL by a one-element scale) run as one dispatch over their concatenated rows,
/// each row with its own weights, scale and result. Three products of different row counts
/// (Q twice K's rows, as in grouped-query attention; odd counts, partial workgroups) and two
/// (gate, up), both ternary types. Bound: the ternary bound (same integer sums as the CPU).
#[test]
fn sibling_products_in_one_dispatch() {
    let Some((_g, b)) = setup() else { return };
    for (wt, k, r, three) in [(TQ2, 512i64, 37i64, true), (TQ1, 768, 64, true), (TQ2, 256, 130, false)] {
        let build: Builder = &|ctx, ins| unsafe {
            let x = input(ctx, ins, F32, &[k, 1], Fill::Uniform);
            let scaled = |ins: &mut Vec<_>, rows: i64| {
                let w = input(ctx, ins, wt, &[k, rows], Fill::Uniform);
                let s = input(ctx, ins, F32, &[1], Fill::Uniform);
                sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, w, x), s)
            };
            if three {
                let q = scaled(ins, 2 * r);
                let kk = scaled(ins, r);
                let qk = sys::ggml_add(ctx, sys::ggml_reshape_2d(ctx, q, r, 2), kk);
                sys::ggml_add(ctx, qk, scaled(ins, r))
            } else {
                let gate = scaled(ins, r);
                sys::ggml_mul(ctx, sys::ggml_sqr(ctx, sys::ggml_relu(ctx, gate)), scaled(ins, r))
            }
        };
        let name = format!("scaled {} products {} k={k} rows={r}", if three { 3 } else { 2 }, tn(wt));
        let before = dispatch_count();
        check(&b, &name, build, NMSE_TQ);
        // Rounding x, the products, then two ADDs or RELU+SQR and the MUL.
        assert_eq!(dispatch_count() - before, 4, "{name}: dispatches");
    }
}

/// A graph computed again unchanged (a decode step: same nodes, shapes and addresses, new
/// input data) is replayed from the command buffers recorded the first time, and the
/// replay reads the new inputs: three rounds of fresh data (cache, query, mask, activations)
/// match the CPU each time, rounds 2 and 3 without recording. A new graph is recorded.
#[test]
fn unchanged_graph_is_replayed() {
    use rand::{rngs::StdRng, SeedableRng};
    let Some((_g, b)) = setup() else { return };
    let (hd, heads, hkv, n_kv, ff) = (64i64, 4i64, 2i64, 37i64, 256i64);
    // Attention (one dispatch) plus gate/up (one dispatch), ReLU² times up, summed.
    let build = |ctx: Ctx, ins: &mut Vec<(T, Fill)>| unsafe {
        let kc = input(ctx, ins, F16, &[hd * hkv, n_kv], Fill::Uniform);
        let k = sys::ggml_view_3d(ctx, kc, hd, hkv, n_kv, (*kc).nb[0] * hd as usize, (*kc).nb[1], 0);
        let q = input(ctx, ins, F32, &[hd, heads, 1], Fill::Uniform);
        let mask = input(ctx, ins, F32, &[n_kv, 1], Fill::Causal);
        let v = input(ctx, ins, F16, &[n_kv, hd, hkv], Fill::Uniform);
        let kq = sys::ggml_mul_mat(ctx, sys::ggml_permute(ctx, k, 0, 2, 1, 3), sys::ggml_permute(ctx, q, 0, 2, 1, 3));
        let sm = sys::ggml_soft_max_ext(ctx, kq, mask, 0.125, 0.0);
        let kqv = sys::ggml_mul_mat(ctx, v, sm);
        let attn = sys::ggml_cont_2d(ctx, sys::ggml_permute(ctx, kqv, 0, 2, 1, 3), hd * heads, 1);
        let x = input(ctx, ins, F32, &[ff, 1], Fill::Uniform);
        let scaled = |ins: &mut Vec<(T, Fill)>| {
            let w = input(ctx, ins, TQ2, &[ff, hd * heads], Fill::Uniform);
            let s = input(ctx, ins, F32, &[1], Fill::Uniform);
            sys::ggml_mul(ctx, sys::ggml_mul_mat(ctx, w, x), s)
        };
        let gate = scaled(ins);
        let ffn = sys::ggml_mul(ctx, sys::ggml_sqr(ctx, sys::ggml_relu(ctx, gate)), scaled(ins));
        sys::ggml_add(ctx, attn, ffn)
    };
    // Three rounds of inputs on one graph per backend; outputs per round. `staged`: whether
    // the last rounds' buffer was ours and not mapped.
    let staged = std::cell::Cell::new(false);
    let rounds = |backend: sys::ggml_backend_t| -> Vec<Vec<f32>> {
        unsafe {
            let ctx = sys::ggml_init(sys::ggml_init_params {
                mem_size: 128 * sys::ggml_tensor_overhead() + sys::ggml_graph_overhead(),
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            });
            let mut ins = Vec::new();
            let out = build(ctx, &mut ins);
            // A graph output, as llama.cpp flags its logits: on unmapped memory its bytes are
            // copied to host memory at the end of the graph and reads are served from there.
            sys::ggml_set_output(out);
            let gf = sys::ggml_new_graph(ctx);
            sys::ggml_build_forward_expand(gf, out);
            let buf = sys::ggml_backend_alloc_ctx_tensors(ctx, backend);
            assert!(!buf.is_null());
            staged.set(!trit_vulkan::buffer_is_mapped(buf));
            let n = sys::ggml_nelements(out) as usize;
            let mut outs = Vec::new();
            for round in 0..3u64 {
                let mut rng = StdRng::seed_from_u64(100 + round);
                for &(t, f) in &ins {
                    fill_tensor(t, f, &mut rng);
                }
                assert_eq!(sys::ggml_backend_graph_compute(backend, gf), sys::GGML_STATUS_SUCCESS);
                // A part first (the second half), then all of it.
                let mut part = vec![0f32; n - n / 2];
                sys::ggml_backend_tensor_get(out, part.as_mut_ptr() as *mut _, (n / 2) * 4, part.len() * 4);
                let mut v = vec![0f32; n];
                sys::ggml_backend_tensor_get(out, v.as_mut_ptr() as *mut _, 0, v.len() * 4);
                assert_eq!(part[..], v[n / 2..], "round {round}: a part read after the graph");
                outs.push(v);
            }
            // Written after the graph: reads see the new bytes, not the graph's copy.
            let fresh: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            sys::ggml_backend_tensor_set(out, fresh.as_ptr() as *const _, 0, n * 4);
            let mut v = vec![0f32; n];
            sys::ggml_backend_tensor_get(out, v.as_mut_ptr() as *mut _, 0, n * 4);
            assert_eq!(v, fresh, "a read after a write");
            sys::ggml_backend_buffer_free(buf);
            sys::ggml_free(ctx);
            outs
        }
    };
    let want = rounds(b.cpu);
    assert!(nmse(&want[0], &want[1]) > 1e-3, "the rounds' inputs differ");
    // Mapped buffers (lavapipe's default) and staged ones (a discrete GPU's: the new inputs
    // are deferred uploads that must reach the GPU before the replayed commands run).
    // The second with the replays' fence polled (`set_spin_wait`; by default not on lavapipe):
    // the third round's replay, which has the second's time to go by, polls.
    for (staging, spin) in [(false, false), (true, true)] {
        trit_vulkan::set_force_staging(staging);
        trit_vulkan::set_spin_wait(Some(spin));
        let polled = trit_vulkan::polled_wait_count();
        let replays = trit_vulkan::replay_count();
        let by_split = trit_vulkan::same_split_replay_count();
        let served = trit_vulkan::output_copy_reads();
        let got = rounds(b.vk);
        assert_eq!(trit_vulkan::replay_count() - replays, 2, "rounds 2 and 3 replayed");
        assert_eq!(trit_vulkan::polled_wait_count() - polled, u64::from(spin), "replays that polled their fence");
        // Computed without ggml's scheduler: every replay compared the tensor structs.
        assert_eq!(trit_vulkan::same_split_replay_count(), by_split, "replayed by a scheduler split outside one");
        // Staged (forced, or a discrete GPU's memory, which is never mapped): both reads of
        // each round (recorded and replayed) from the output copy; mapped memory is read
        // directly.
        assert!(staged.get() || !staging, "a buffer allocated under forced staging is mapped");
        let want_served = if staged.get() && trit_vulkan::output_copies_enabled() { 6 } else { 0 };
        assert_eq!(trit_vulkan::output_copy_reads() - served, want_served, "reads served by output copies");
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            let e = nmse(g, w);
            println!("replay round {r}, staging {staging}: nmse={e:.3e} (bound 1e-6)");
            assert!(e <= 1e-6, "round {r}, staging {staging}: NMSE {e:.3e}");
        }
    }
    trit_vulkan::set_force_staging(false);
    trit_vulkan::set_spin_wait(None);
    // A new graph (other tensors, other buffer) is recorded, not replayed.
    let replays = trit_vulkan::replay_count();
    check(&b, "replay: a new graph is recorded", &|ctx, ins| build(ctx, ins), 1e-6);
    assert_eq!(trit_vulkan::replay_count(), replays);
}

/// A fused unit must not store its result over memory one of its inputs occupies: ggml-alloc
/// gives a chain's last result memory freed by an earlier node of it (in llama.cpp's graph
/// with a non-transposed V cache, `kqv_out` may take the transposed copy of V's memory, dead
/// after the KQV product). Node by node that is fine; inside one dispatch, workgroups that
/// have finished would overwrite V while others still read it (seen as run-to-run
/// differences on lavapipe). Here the attention's result is placed over V on purpose, then
/// the product + permute + copy alone (attention fusion off); both must match the CPU.
#[test]
fn fused_result_not_stored_over_its_inputs() {
    use rand::{rngs::StdRng, SeedableRng};
    let Some((_g, b)) = setup() else { return };
    let (hd, heads, hkv, n_kv) = (64i64, 4i64, 2i64, 64i64);
    // The whole attention chain, or (`attn` false) only its last product of given
    // probabilities, permuted and copied. Returns the result and V.
    let build = |ctx: Ctx, ins: &mut Vec<(T, Fill)>, attn: bool| unsafe {
        let v = input(ctx, ins, F16, &[n_kv, hd, hkv], Fill::Uniform);
        let probs = if attn {
            let q = input(ctx, ins, F32, &[hd, heads, 1], Fill::Uniform);
            let k = input(ctx, ins, F16, &[hd, n_kv, hkv], Fill::Uniform);
            let mask = input(ctx, ins, F32, &[n_kv, 1], Fill::Causal);
            let kq = sys::ggml_mul_mat(ctx, k, sys::ggml_permute(ctx, q, 0, 2, 1, 3));
            sys::ggml_soft_max_ext(ctx, kq, mask, 0.125, 0.0)
        } else {
            input(ctx, ins, F32, &[n_kv, 1, heads], Fill::Positive)
        };
        let kqv = sys::ggml_mul_mat(ctx, v, probs);
        let out = sys::ggml_cont_2d(ctx, sys::ggml_permute(ctx, kqv, 0, 2, 1, 3), hd * heads, 1);
        (out, v)
    };
    // SAFETY: standard ggml usage; tensors placed inside the buffer, every object freed.
    let got = |attn: bool| unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: 64 * sys::ggml_tensor_overhead() + sys::ggml_graph_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let mut ins = Vec::new();
        let (out, v) = build(ctx, &mut ins, attn);
        let gf = sys::ggml_new_graph(ctx);
        sys::ggml_build_forward_expand(gf, out);
        let buf = sys::ggml_backend_buft_alloc_buffer(sys::ggml_backend_get_default_buffer_type(b.vk), 1 << 20);
        assert!(!buf.is_null());
        let base = sys::ggml_backend_buffer_get_base(buf) as *mut u8;
        // Every tensor in its own 64 KiB slot, but the result in V's.
        let mut slot = 0usize;
        let n = sys::ggml_graph_n_nodes(gf);
        let mut place = |t: T| {
            if (*t).data.is_null() && (*t).view_src.is_null() {
                let at = if t == out {
                    0
                } else {
                    65536 * {
                        slot += 1;
                        slot
                    }
                };
                assert!(sys::ggml_nbytes(t) <= 65536);
                assert_eq!(sys::ggml_backend_tensor_alloc(buf, t, base.add(at) as *mut _), sys::GGML_STATUS_SUCCESS);
            } else if (*t).data.is_null() {
                assert_eq!(sys::ggml_backend_view_init(t), sys::GGML_STATUS_SUCCESS);
            }
        };
        assert_eq!(sys::ggml_backend_tensor_alloc(buf, v, base as *mut _), sys::GGML_STATUS_SUCCESS);
        for i in 0..n {
            let t = sys::ggml_graph_node(gf, i);
            for &s in &(*t).src {
                if !s.is_null() {
                    place(s);
                }
            }
            place(t);
        }
        assert_eq!((*out).data, (*v).data, "the result is placed over V");
        let mut rng = StdRng::seed_from_u64(7);
        for &(t, f) in &ins {
            fill_tensor(t, f, &mut rng);
        }
        assert_eq!(sys::ggml_backend_graph_compute(b.vk, gf), sys::GGML_STATUS_SUCCESS);
        let mut got = vec![0f32; sys::ggml_nelements(out) as usize];
        sys::ggml_backend_tensor_get(out, got.as_mut_ptr() as *mut _, 0, got.len() * 4);
        sys::ggml_backend_buffer_free(buf);
        sys::ggml_free(ctx);
        got
    };
    for (attn, what) in [(true, "attention chain"), (false, "product, permute and copy")] {
        let (want, _) = run(b.cpu, &|ctx, ins| build(ctx, ins, attn).0, 7);
        let e = nmse(&got(attn), &want);
        println!("{what}, result over V: nmse={e:.3e} (bound {NMSE_TR:.0e})");
        assert!(e <= NMSE_TR, "{what}, result placed over V: NMSE {e:.3e}");
    }
}

/// The graph of one scheduler split on Vulkan, `out = a + b` or `a * b` (a and b inputs, so
/// the scheduler keeps them on the CPU and copies them in), built in `mem`: a graph built
/// again there has the same tensor addresses.
///
/// # Safety
/// `mem` outlives the returned context, which the caller frees.
unsafe fn split_graph_in(
    mem: &mut [u8],
    sched: sys::ggml_backend_sched_t,
    vk: sys::ggml_backend_t,
    n: usize,
    mul: bool,
) -> (*mut sys::ggml_context, *mut sys::ggml_cgraph, [*mut sys::ggml_tensor; 3]) {
    unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: mem.len(),
            mem_buffer: mem.as_mut_ptr() as *mut _,
            no_alloc: true,
        });
        let a = sys::ggml_new_tensor_1d(ctx, F32, n as i64);
        let b = sys::ggml_new_tensor_1d(ctx, F32, n as i64);
        sys::ggml_set_input(a);
        sys::ggml_set_input(b);
        let out = if mul { sys::ggml_mul(ctx, a, b) } else { sys::ggml_add(ctx, a, b) };
        sys::ggml_set_output(out);
        let gf = sys::ggml_new_graph(ctx);
        sys::ggml_build_forward_expand(gf, out);
        sys::ggml_backend_sched_set_tensor_backend(sched, out, vk);
        (ctx, gf, [a, b, out])
    }
}

/// llama.cpp computes the same scheduler split for every decode token while it reuses its
/// graph; the scheduler's split epoch (patch 0011) then says the graph is unchanged and the
/// tensor structs are not compared. A graph rebuilt at the same addresses with another op is
/// split again (new epoch), compared, and recorded anew — not replayed — and the same graph
/// rebuilt is compared and replayed. Every round's result is checked exactly.
#[test]
fn replay_by_scheduler_split() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let Some((_g, b)) = setup() else { return };
    let n = 1000usize;
    // SAFETY: standard ggml usage; the contexts live in `mem`, freed before it.
    unsafe {
        let mut mem = vec![0u8; 16 * sys::ggml_tensor_overhead() + sys::ggml_graph_overhead()];
        let mut backends = [b.vk, b.cpu];
        let sched = sys::ggml_backend_sched_new(backends.as_mut_ptr(), std::ptr::null_mut(), 2, 64, false, false);
        let round = |gf: *mut sys::ggml_cgraph, t: [*mut sys::ggml_tensor; 3], mul: bool, seed: u64| {
            let mut rng = StdRng::seed_from_u64(seed);
            let x: [Vec<f32>; 2] = std::array::from_fn(|_| (0..n).map(|_| rng.gen_range(-4.0f32..4.0)).collect());
            for (tensor, v) in t.iter().zip(&x) {
                sys::ggml_backend_tensor_set(*tensor, v.as_ptr() as *const _, 0, n * 4);
            }
            assert_eq!(sys::ggml_backend_sched_graph_compute(sched, gf), sys::GGML_STATUS_SUCCESS);
            let mut got = vec![0f32; n];
            sys::ggml_backend_tensor_get(t[2], got.as_mut_ptr() as *mut _, 0, n * 4);
            for i in 0..n {
                let want = if mul { x[0][i] * x[1][i] } else { x[0][i] + x[1][i] };
                assert_eq!(got[i], want, "seed {seed}, element {i} (mul: {mul})");
            }
        };
        let counts = || (trit_vulkan::replay_count(), trit_vulkan::same_split_replay_count());
        let delta = |c0: (u64, u64)| {
            let c = counts();
            (c.0 - c0.0, c.1 - c0.1)
        };

        let (ctx, gf, t) = split_graph_in(&mut mem, sched, b.vk, n, false);
        assert!(sys::ggml_backend_sched_alloc_graph(sched, gf));
        let c0 = counts();
        round(gf, t, false, 1);
        assert_eq!(delta(c0), (0, 0), "the first round is recorded");
        round(gf, t, false, 2);
        round(gf, t, false, 3);
        assert_eq!(delta(c0), (2, 2), "rounds 2 and 3: the same split, replayed without comparing");

        // The scheduler reset, the old graph freed and a MUL (or ADD) graph built in the same
        // memory (same addresses, checked) and split anew. (A graph is split once: splitting
        // rewires its nodes' sources to the scheduler's copies.)
        let mut rebuild = |old: *mut sys::ggml_context, mul: bool| {
            sys::ggml_backend_sched_reset(sched);
            sys::ggml_free(old);
            let (ctx, gf2, t2) = split_graph_in(&mut mem, sched, b.vk, n, mul);
            assert_eq!((gf2, t2), (gf, t), "the rebuilt graph has the same addresses");
            assert!(sys::ggml_backend_sched_alloc_graph(sched, gf2));
            ctx
        };

        // Another op at the same addresses.
        let ctx = rebuild(ctx, true);
        let c0 = counts();
        round(gf, t, true, 4);
        assert_eq!(delta(c0), (0, 0), "a changed graph at the same addresses is recorded, not replayed");
        round(gf, t, true, 5);
        assert_eq!(delta(c0), (1, 1), "then replayed by its split");

        // The same graph built again (as llama.cpp does when it does not reuse its graph):
        // compared, equal, replayed.
        let ctx = rebuild(ctx, true);
        let c0 = counts();
        round(gf, t, true, 6);
        assert_eq!(delta(c0), (1, 0), "a new split of the same graph: compared, then replayed");
        round(gf, t, true, 7);
        assert_eq!(delta(c0), (2, 1), "and then replayed by its split");

        sys::ggml_backend_sched_free(sched);
        sys::ggml_free(ctx);
    }
}

/// A fusable RELU, SQR pair whose RELU is read again in a later split of the scheduler's graph
/// (a CPU node in between, as the embedding lookup recomputed under gradient checkpointing):
/// the split the Vulkan backend sees has one use of the RELU, the whole graph two. The pair
/// must not fuse (fused, the RELU's result is never stored and the later read gets garbage).
#[test]
fn fusion_sees_uses_in_later_splits() {
    let Some((_g, b)) = setup() else { return };
    let n = 4096usize;
    let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    // SAFETY: standard ggml usage; every object is freed before returning.
    let got = unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: 64 * sys::ggml_tensor_overhead() + sys::ggml_graph_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let g = sys::ggml_new_tensor_1d(ctx, F32, n as i64);
        sys::ggml_set_input(g);
        let r = sys::ggml_relu(ctx, g);
        let s = sys::ggml_sqr(ctx, r);
        let c = sys::ggml_scale(ctx, s, 0.5); // on the CPU: the graph splits here
        let out = sys::ggml_add(ctx, c, r); // back on Vulkan, reading the RELU
        sys::ggml_set_output(out);
        let gf = sys::ggml_new_graph(ctx);
        sys::ggml_build_forward_expand(gf, out);
        let mut backends = [b.vk, b.cpu];
        let sched = sys::ggml_backend_sched_new(backends.as_mut_ptr(), std::ptr::null_mut(), 2, 64, false, false);
        for t in [r, s, out] {
            sys::ggml_backend_sched_set_tensor_backend(sched, t, b.vk);
        }
        sys::ggml_backend_sched_set_tensor_backend(sched, c, b.cpu);
        assert!(sys::ggml_backend_sched_alloc_graph(sched, gf), "scheduler allocation failed");
        assert!(sys::ggml_backend_sched_get_n_splits(sched) >= 3, "the graph did not split around the CPU node");
        sys::ggml_backend_tensor_set(g, x.as_ptr() as *const _, 0, n * 4);
        assert_eq!(sys::ggml_backend_sched_graph_compute(sched, gf), sys::GGML_STATUS_SUCCESS);
        let mut got = vec![0f32; n];
        sys::ggml_backend_tensor_get(out, got.as_mut_ptr() as *mut _, 0, n * 4);
        sys::ggml_backend_sched_free(sched);
        sys::ggml_free(ctx);
        got
    };
    for (i, (&v, &xi)) in got.iter().zip(&x).enumerate() {
        let r = xi.max(0.0);
        let want = 0.5 * r * r + r;
        assert!((v - want).abs() <= 1e-6 * want.abs().max(1.0), "element {i}: {v} != {want} (x = {xi})");
    }
}
