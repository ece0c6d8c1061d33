//! Op-by-op comparison of the training ops (ggml's backward graph and ggml-opt's AdamW)
//! against the CPU backend, in the style of `tests/ops.rs`: each case builds a tiny graph on
//! both backends from the same seeded inputs and bounds the NMSE of the Vulkan output.
//! Shapes include odd sizes, broadcasts, transposed (non-contiguous) operands and partial
//! tiles.
//!
//! Needs a Vulkan device (lavapipe in CI). TRIT_VULKAN_OPTIONAL=1 skips, loudly.
// SAFETY (whole file): the builders call ggml constructors on a live no_alloc context with
// shapes that satisfy each constructor's assertions.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use trit_sys as sys;

/// Sums of f32 products in the CPU's order (ascending k), possibly with or without fused
/// multiply-add: only rounding of the last bits differs.
const NMSE_SUM: f64 = 1e-10;
/// Ternary weights dequantise exactly ((code - 1) * d), so OUT_PROD from packed blocks sums
/// the same products as the CPU's dequantised rows.
const NMSE_TQ: f64 = 1e-10;
/// Element-wise f32 ops (test-backend-ops' default).
const NMSE_EW: f64 = 1e-7;
/// Ops with reductions in a different order, exp/log/sqrt or sin/cos.
const NMSE_TR: f64 = 1e-6;

#[test]
fn out_prod_float() {
    let Some((_g, b)) = setup() else { return };
    for t in [F32, F16] {
        // (a = [ne0, K, a2, a3], b = [ne1, K, b2, b3])
        for (a_ne, b_ne) in [
            ([67i64, 45, 1, 1], [33i64, 45, 1, 1]),
            ([16, 512, 1, 1], [2560, 512, 1, 1]), // dB of a LoRA pair: [r, tokens] x [n_out, tokens]
            ([64, 20, 2, 1], [30, 20, 4, 3]),     // broadcast over dims 2 and 3
            ([130, 77, 1, 1], [100, 77, 1, 1]),   // partial tiles in both output dims, k not a multiple of 32
            ([1, 1, 1, 1], [1, 1, 1, 1]),
        ] {
            if t == F16 && a_ne[2] != b_ne[2] {
                continue; // the CPU's f16 OUT_PROD does not broadcast
            }
            check(
                &b,
                &format!("out_prod {} {a_ne:?} {b_ne:?}", tn(t)),
                &|ctx, ins| unsafe {
                    let a = input(ctx, ins, t, &a_ne, Fill::Uniform);
                    let x = input(ctx, ins, F32, &b_ne, Fill::Uniform);
                    sys::ggml_out_prod(ctx, a, x)
                },
                NMSE_SUM,
            );
        }
    }
    // Wide split (128 or more tiles, k >= 512): a partial last slice and partial tiles in both
    // output dims, as for the input gradient through the tied embedding (f16).
    for t in [F16, F32] {
        check(
            &b,
            &format!("out_prod {} wide split: [700, 1100] x [750, 1100]", tn(t)),
            &|ctx, ins| unsafe {
                let a = input(ctx, ins, t, &[700, 1100], Fill::Uniform);
                let x = input(ctx, ins, F32, &[750, 1100], Fill::Uniform);
                sys::ggml_out_prod(ctx, a, x)
            },
            NMSE_SUM,
        );
    }
    // Small k: a LoRA pair's input gradient through A, out_prod(A [n_in, r], dT^T) with dT
    // [r, tokens]; r at and around prod_small_k.comp's bound of 32 (one dispatch up to it, the
    // tiled kernel past it).
    for (n_in, r, tokens) in [(300i64, 16i64, 70i64), (2560, 16, 130), (129, 32, 65), (200, 33, 3)] {
        let before = dispatch_count();
        check(
            &b,
            &format!("out_prod f32 small k: A[{n_in},{r}] dT^T tokens={tokens}"),
            &|ctx, ins| unsafe {
                let a = input(ctx, ins, F32, &[n_in, r], Fill::Uniform);
                let dt = input(ctx, ins, F32, &[r, tokens], Fill::Uniform);
                sys::ggml_out_prod(ctx, a, sys::ggml_transpose(ctx, dt))
            },
            NMSE_SUM,
        );
        if r <= 32 {
            assert_eq!(dispatch_count() - before, 1, "small k r={r}: one dispatch");
        }
    }
    // Split k (few output tiles, long k): the gradient into a LoRA pair's rank-16
    // intermediate, out_prod(B [16, n_out], dY^T [tokens, n_out]); an f16 A and a partial
    // last slice; a broadcast batch of two.
    for (t, r, n_out, tokens, batch) in
        [(F32, 16i64, 3000i64, 100i64, 1i64), (F16, 16, 4131, 70, 1), (F32, 40, 2600, 9, 2)]
    {
        let (before, thin_before) = (dispatch_count(), trit_vulkan::thin_dispatch_count());
        check(
            &b,
            &format!("out_prod {} split k: B[{r},{n_out}] dY^T tokens={tokens} batch={batch}", tn(t)),
            &|ctx, ins| unsafe {
                let a = input(ctx, ins, t, &[r, n_out, batch], Fill::Uniform);
                let dy = input(ctx, ins, F32, &[n_out, tokens, batch], Fill::Uniform);
                sys::ggml_out_prod(ctx, a, sys::ggml_transpose(ctx, dy))
            },
            NMSE_SUM,
        );
        assert_eq!(dispatch_count() - before, 2, "partial sums per k slice, then their sum");
        // f32 with a thin side (r = 16 rows, or 9 tokens): prod_thin.comp's 64 x 16 tiles.
        assert_eq!(trit_vulkan::thin_dispatch_count() - thin_before, u64::from(t == F32), "thin kernel");
    }
    // The skinny gradients of a LoRA pair's own matrices, k = tokens: dA = out_prod(x [n_in,
    // tokens], dT [r, tokens]) is [n_in, r] and dB = out_prod(T [r, tokens], dY [n_out,
    // tokens]) is [r, n_out]; ranks 1, 8 and 16, odd k and partial slices. Split along k
    // from 256 tokens on (partial sums, then their sum), one dispatch below.
    for (r, n, tokens, dispatches) in [
        (1i64, 2560i64, 512i64, 2u64),
        (8, 1000, 300, 2),
        (16, 2560, 512, 2),
        (16, 777, 333, 2),
        (3, 130, 257, 2),
        (16, 500, 100, 1),
    ] {
        for grad_of_a in [true, false] {
            let (before, thin_before) = (dispatch_count(), trit_vulkan::thin_dispatch_count());
            let what = if grad_of_a { "dA" } else { "dB" };
            check(
                &b,
                &format!("out_prod f32 skinny {what}: r={r} n={n} tokens={tokens}"),
                &|ctx, ins| unsafe {
                    let wide = input(ctx, ins, F32, &[n, tokens], Fill::Uniform);
                    let narrow = input(ctx, ins, F32, &[r, tokens], Fill::Uniform);
                    if grad_of_a {
                        sys::ggml_out_prod(ctx, wide, narrow)
                    } else {
                        sys::ggml_out_prod(ctx, narrow, wide)
                    }
                },
                NMSE_SUM,
            );
            assert_eq!(dispatch_count() - before, dispatches, "{what} r={r} n={n} tokens={tokens}");
            assert_eq!(trit_vulkan::thin_dispatch_count() - thin_before, 1, "{what}: the thin kernel");
        }
    }
    // Six split products in one graph, more than the ring of split-k scratch slots holds:
    // the slots are reused, so a later product's partial sums must not overwrite an earlier
    // one's before its sum has read them (independent products, added at the end).
    check(
        &b,
        "out_prod f32 skinny x6 through the split-k scratch ring",
        &|ctx, ins| unsafe {
            let mut acc: *mut sys::ggml_tensor = std::ptr::null_mut();
            for i in 0..6i64 {
                let wide = input(ctx, ins, F32, &[640, 300 - 4 * i], Fill::Uniform);
                let narrow = input(ctx, ins, F32, &[16, 300 - 4 * i], Fill::Uniform);
                let g = sys::ggml_out_prod(ctx, wide, narrow);
                acc = if acc.is_null() { g } else { sys::ggml_add(ctx, acc, g) };
            }
            acc
        },
        NMSE_SUM,
    );
    // f32 MUL_MATs read transposed by the OUT_PROD kernels: a LoRA pair's forward B·u,
    // MUL_MAT(B [r, n_out], u [r, tokens]) from k = r <= 32 (prod_small_k.comp, one dispatch; a
    // broadcast batch, partial tiles), and its A·x, few output rows and a long k (the split
    // OUT_PROD: partial sums per k slice, then their sum).
    for (k, rows, cols, batch, dispatches) in [
        (16i64, 2560i64, 130i64, 1i64, 1u64),
        (4, 70, 33, 2, 1),
        (32, 200, 9, 1, 1),
        (3000, 16, 100, 1, 2),
        (2600, 16, 40, 2, 2),
    ] {
        let (before, thin_before) = (dispatch_count(), trit_vulkan::thin_dispatch_count());
        check(
            &b,
            &format!("mul_mat f32: A[{k},{rows}] x[{k},{cols}] batch={batch}"),
            &|ctx, ins| unsafe {
                let a = input(ctx, ins, F32, &[k, rows, 1], Fill::Uniform);
                let x = input(ctx, ins, F32, &[k, cols, batch], Fill::Uniform);
                sys::ggml_mul_mat(ctx, a, x)
            },
            NMSE_SUM,
        );
        assert_eq!(dispatch_count() - before, dispatches, "mul_mat f32 k={k} rows={rows}");
        assert_eq!(trit_vulkan::thin_dispatch_count() - thin_before, u64::from(k > 32), "mul_mat f32 k={k}: thin");
    }
    // Transposed operands, as the backward graph builds them.
    check(
        &b,
        "out_prod f32 transposed b",
        &|ctx, ins| unsafe {
            let a = input(ctx, ins, F32, &[37, 70], Fill::Uniform);
            let x = input(ctx, ins, F32, &[70, 19], Fill::Uniform);
            sys::ggml_out_prod(ctx, a, sys::ggml_transpose(ctx, x))
        },
        NMSE_SUM,
    );
    check(
        &b,
        "out_prod f32 permuted heads",
        &|ctx, ins| unsafe {
            let a = input(ctx, ins, F32, &[32, 6, 4], Fill::Uniform);
            let x = input(ctx, ins, F32, &[9, 6, 4], Fill::Uniform);
            let ap = sys::ggml_permute(ctx, a, 0, 2, 1, 3);
            let xp = sys::ggml_permute(ctx, x, 0, 2, 1, 3);
            sys::ggml_out_prod(ctx, sys::ggml_cont(ctx, ap), xp)
        },
        NMSE_SUM,
    );
}

#[test]
fn out_prod_ternary_input_gradient() {
    let Some((_g, b)) = setup() else { return };
    // dX = W^T dY for a frozen ternary W of [n_in, n_out]: out_prod(W, transpose(dY)) with dY
    // [n_out, tokens], straight from the packed blocks.
    for t in [TQ2, TQ1] {
        // (1280, 131, 70): five blocks per row (rows not 4-byte aligned for TQ2_0's 66-byte
        // blocks), k not a multiple of the 32-row slices, a partial token tile.
        // (256, 4100, 9): one tile and a long k, split along k.
        // (1280, 600, 450): 160 tiles, a wide split (two slices of 320 and 280 rows of W).
        for (n_in, n_out, tokens) in
            [(256i64, 70i64, 9i64), (768, 33, 40), (512, 256, 1), (1280, 131, 70), (256, 4100, 9), (1280, 600, 450)]
        {
            check(
                &b,
                &format!("out_prod {} W[{n_in},{n_out}] dY^T tokens={tokens}", tn(t)),
                &|ctx, ins| unsafe {
                    let w = input(ctx, ins, t, &[n_in, n_out], Fill::Uniform);
                    let dy = input(ctx, ins, F32, &[n_out, tokens], Fill::Uniform);
                    sys::ggml_out_prod(ctx, w, sys::ggml_transpose(ctx, dy))
                },
                NMSE_TQ,
            );
        }
        check(
            &b,
            &format!("out_prod {} contiguous b, batched", tn(t)),
            &|ctx, ins| unsafe {
                let w = input(ctx, ins, t, &[256, 12, 2], Fill::Uniform);
                let x = input(ctx, ins, F32, &[5, 12, 2], Fill::Uniform);
                sys::ggml_out_prod(ctx, w, x)
            },
            NMSE_TQ,
        );
    }
}

/// The tensor-core OUT_PROD (kernels/out_prod_cm.comp, where the device has
/// VK_NV_cooperative_matrix; elsewhere, lavapipe included, the same cases run the FMA kernel,
/// as the first line printed says). Its f32 operand goes through per-column power-of-two
/// scales and a hi + lo f16 split, so it is held to the f32 kernel's bound at every
/// magnitude: dY scaled by 1e-12, 1 and 1e8 (f16 alone would flush the first to zero and
/// overflow on the last), and columns of mixed magnitudes with a column of zeros (a wrong
/// column's scale shows there). Shapes: a partial token tile, several 128-row tiles of W, a
/// long k split across workgroups, and an f16 A with a partial tile (the tied embedding).
#[test]
fn out_prod_tensor_cores() {
    let Some((_g, b)) = setup() else { return };
    println!("cooperative-matrix shapes (m, n, k, A/B, C/D): {:?}", trit_vulkan::coopmat_shapes());
    // Opt-in (slower than the FMA kernels on an H200): on for this test (the next test's setup
    // turns it off, also after a failed check). Where the device cannot run it the plain
    // kernels are checked.
    trit_vulkan::set_cm_training(true);
    let before = trit_vulkan::cm_training_dispatch_count();
    const MIXED: &[f32] = &[1e-12, 1.0, 3e8, 0.0, 1e-5, 7.0, 2e-30, 1e3, 0.5];
    for t in [TQ2, TQ1, F16] {
        for (n_in, n_out, tokens) in [(256i64, 70i64, 9i64), (2560, 700, 100), (1280, 4100, 70)] {
            for scale in [1e-12f32, 1.0, 1e8] {
                check(
                    &b,
                    &format!("out_prod {} cm W[{n_in},{n_out}] tokens={tokens} dY x {scale:e}", tn(t)),
                    &|ctx, ins| unsafe {
                        let w = input(ctx, ins, t, &[n_in, n_out], Fill::Uniform);
                        let dy = input(ctx, ins, F32, &[n_out, tokens], Fill::Uniform);
                        let dy = sys::ggml_scale(ctx, dy, scale);
                        sys::ggml_out_prod(ctx, w, sys::ggml_transpose(ctx, dy))
                    },
                    NMSE_TQ,
                );
            }
            check(
                &b,
                &format!("out_prod {} cm W[{n_in},{n_out}] tokens={tokens} mixed columns", tn(t)),
                &|ctx, ins| unsafe {
                    let w = input(ctx, ins, t, &[n_in, n_out], Fill::Uniform);
                    let dy = input(ctx, ins, F32, &[n_out, tokens], Fill::Uniform);
                    let m = input(ctx, ins, F32, &[1, tokens], Fill::Values(MIXED));
                    sys::ggml_out_prod(ctx, w, sys::ggml_transpose(ctx, sys::ggml_mul(ctx, dy, m)))
                },
                NMSE_TQ,
            );
        }
    }
    check(
        &b,
        "out_prod f16 cm [700, 1100] x [750, 1100]",
        &|ctx, ins| unsafe {
            let a = input(ctx, ins, F16, &[700, 1100], Fill::Uniform);
            let x = input(ctx, ins, F32, &[750, 1100], Fill::Uniform);
            sys::ggml_out_prod(ctx, a, x)
        },
        NMSE_SUM,
    );
    // An f16 MUL_MAT of 64 or more columns (the tied LM head over a window) takes the same
    // kernel, its operands read transposed. The CPU rounds x to f16 (the tensor-core kernel
    // does not), hence the looser bound.
    for (k, rows, cols, batch) in [(300i64, 700i64, 100i64, 1i64), (256, 130, 64, 2)] {
        check(
            &b,
            &format!("mul_mat f16 cm W[{k},{rows}] x[{k},{cols}] batch={batch}"),
            &|ctx, ins| unsafe {
                let w = input(ctx, ins, F16, &[k, rows, batch], Fill::Uniform);
                let x = input(ctx, ins, F32, &[k, cols, batch], Fill::Uniform);
                sys::ggml_mul_mat(ctx, w, x)
            },
            NMSE_TR,
        );
    }
    let ran = trit_vulkan::cm_training_dispatch_count() - before;
    trit_vulkan::set_cm_training(false);
    println!("tensor-core training products recorded: {ran}");
    if trit_vulkan::cm_training_available() {
        assert!(ran >= 11, "the device has f16 cooperative matrices, yet {ran} products ran on them");
    }
}

/// The f16 OUT_PROD for aligned operands (kernels/out_prod_f16_cmv.comp: the tied LM head's
/// input gradient), emulated on any device and on tensor cores where the device has f16
/// cooperative matrices: held to the f32 kernel's bound at every magnitude of dY (its hi + lo
/// split, as in out_prod_cm.comp) and with mixed columns. Shapes: several tiles of both sides
/// with partial ones, a long k split across workgroups; an unaligned dY (70 rows: a column
/// stride of 280 bytes) must take another kernel.
#[test]
fn out_prod_f16_vector() {
    let Some((_g, b)) = setup() else { return };
    const MIXED: &[f32] = &[1e-12, 1.0, 3e8, 0.0, 1e-5, 7.0, 2e-30, 1e3, 0.5];
    let mut modes = vec![("emulated", 1)];
    if trit_vulkan::cm_training_available() {
        modes.push(("tensor cores", 0));
    } else {
        println!("device: no f16 cooperative matrices for training: emulated only");
    }
    for (mode, emu) in modes {
        trit_vulkan::set_coopmat_emulation(emu);
        for (n_in, n_out, tokens, vector) in
            [(264i64, 704i64, 9i64, true), (2560, 1000, 130, true), (1280, 4104, 70, true), (256, 70, 9, false)]
        {
            for scale in [1e-12f32, 1.0, 1e8] {
                let before = trit_vulkan::f16_out_prod_vector_dispatch_count();
                check(
                    &b,
                    &format!("out_prod f16 ({mode}) W[{n_in},{n_out}] tokens={tokens} dY x {scale:e}"),
                    &|ctx, ins| unsafe {
                        let w = input(ctx, ins, F16, &[n_in, n_out], Fill::Uniform);
                        let dy = input(ctx, ins, F32, &[n_out, tokens], Fill::Uniform);
                        let dy = sys::ggml_scale(ctx, dy, scale);
                        sys::ggml_out_prod(ctx, w, sys::ggml_transpose(ctx, dy))
                    },
                    NMSE_TQ,
                );
                let ran = trit_vulkan::f16_out_prod_vector_dispatch_count() > before;
                assert_eq!(ran, vector, "{mode}: W[{n_in},{n_out}]: out_prod_f16_cmv.comp expected: {vector}");
            }
            check(
                &b,
                &format!("out_prod f16 ({mode}) W[{n_in},{n_out}] tokens={tokens} mixed columns"),
                &|ctx, ins| unsafe {
                    let w = input(ctx, ins, F16, &[n_in, n_out], Fill::Uniform);
                    let dy = input(ctx, ins, F32, &[n_out, tokens], Fill::Uniform);
                    let m = input(ctx, ins, F32, &[1, tokens], Fill::Values(MIXED));
                    sys::ggml_out_prod(ctx, w, sys::ggml_transpose(ctx, sys::ggml_mul(ctx, dy, m)))
                },
                NMSE_TQ,
            );
        }
    }
    trit_vulkan::set_coopmat_emulation(0);
}

/// The int8 input gradient (kernels/dx_q8.comp) holds dY to within 1/64516 of each column's
/// largest |dY x block scale|: for uniform data an NMSE near 3e-10; the bound leaves room for
/// rows whose block scales are well below the column's largest.
const NMSE_Q8: f64 = 1e-8;

/// The ternary input gradient as int8 tensor-core products (kernels/dx_q8.comp): emulated
/// (16 x 8 and 16 x 16 fragments, any device, lavapipe included), then for real where the
/// device has int8 cooperative matrices (elsewhere that pass checks the f32 kernel). Shapes:
/// partial token tiles, k not a multiple of the 64-row steps, five block columns (each tile
/// quantizes against its own block column's scales: the fill gives every block its own
/// scale), a long k split across workgroups, a batched product; dY at 1e-12, 1 and 1e8 and
/// columns of mixed magnitudes with a column of zeros.
#[test]
fn out_prod_int8_tensor_cores() {
    let Some((_g, b)) = setup() else { return };
    const MIXED: &[f32] = &[1e-12, 1.0, 3e8, 0.0, 1e-5, 7.0, 2e-30, 1e3, 0.5];
    trit_vulkan::set_dx_int8(true);
    let mut worst = 0f64;
    // TQ2_0 takes 128-row tiles (`dx_q8pw`) by default; each mode also runs with them off.
    for (emu, wide) in [(8u32, true), (8, false), (16, true), (0, true), (0, false)] {
        trit_vulkan::set_coopmat_emulation(emu);
        trit_vulkan::set_dxq_wide(wide);
        let before = trit_vulkan::dx_int8_dispatch_count();
        let wide_before = trit_vulkan::dx_int8_wide_dispatch_count();
        let mut cases = 0u64;
        for t in [TQ2, TQ1] {
            for (n_in, n_out, tokens) in [(256i64, 70i64, 9i64), (768, 33, 40), (1280, 131, 70), (256, 4100, 9)] {
                for scale in [1e-12f32, 1.0, 1e8] {
                    cases += 1;
                    worst = worst.max(check(
                        &b,
                        &format!(
                            "out_prod {} int8 (emu {emu}) W[{n_in},{n_out}] tokens={tokens} dY x {scale:e}",
                            tn(t)
                        ),
                        &|ctx, ins| unsafe {
                            let w = input(ctx, ins, t, &[n_in, n_out], Fill::Uniform);
                            let dy = input(ctx, ins, F32, &[n_out, tokens], Fill::Uniform);
                            let dy = sys::ggml_scale(ctx, dy, scale);
                            sys::ggml_out_prod(ctx, w, sys::ggml_transpose(ctx, dy))
                        },
                        NMSE_Q8,
                    ));
                }
            }
            // Rows with one scale for all their blocks (BitNet's weights): block columns 1, 3
            // and 4 share block column 0's quantized dY; block column 2 differs in one row and
            // gets its own. A long k (two chunks of the flags) and a batch of two.
            for (n_in, n_out, tokens, batch) in [(1280i64, 300i64, 70i64, 1i64), (768, 40, 9, 2)] {
                cases += 1;
                worst = worst.max(check(
                    &b,
                    &format!(
                        "out_prod {} int8 (emu {emu}) row-scaled W[{n_in},{n_out},{batch}] tokens={tokens}",
                        tn(t)
                    ),
                    &|ctx, ins| unsafe {
                        let w = input(ctx, ins, t, &[n_in, n_out, batch], Fill::RowTernary);
                        let dy = input(ctx, ins, F32, &[n_out, tokens, batch], Fill::Uniform);
                        sys::ggml_out_prod(ctx, w, sys::ggml_transpose(ctx, dy))
                    },
                    NMSE_Q8,
                ));
            }
            cases += 2;
            worst = worst.max(check(
                &b,
                &format!("out_prod {} int8 (emu {emu}) mixed columns", tn(t)),
                &|ctx, ins| unsafe {
                    let w = input(ctx, ins, t, &[512, 200], Fill::Uniform);
                    let dy = input(ctx, ins, F32, &[200, 18], Fill::Uniform);
                    let m = input(ctx, ins, F32, &[1, 18], Fill::Values(MIXED));
                    sys::ggml_out_prod(ctx, w, sys::ggml_transpose(ctx, sys::ggml_mul(ctx, dy, m)))
                },
                NMSE_Q8,
            ));
            worst = worst.max(check(
                &b,
                &format!("out_prod {} int8 (emu {emu}) contiguous b, batched", tn(t)),
                &|ctx, ins| unsafe {
                    let w = input(ctx, ins, t, &[256, 12, 2], Fill::Uniform);
                    let x = input(ctx, ins, F32, &[5, 12, 2], Fill::Uniform);
                    sys::ggml_out_prod(ctx, w, x)
                },
                NMSE_Q8,
            ));
        }
        // A non-finite dY element: its column of dX comes out NaN (never finite and wrong),
        // the other columns as usual; the CPU's column is non-finite too.
        for t in [TQ2, TQ1] {
            cases += 1;
            const INF_AT: &[f32] = &[1.0, 1.0, f32::INFINITY, 1.0];
            let build: Builder = &|ctx, ins| unsafe {
                let w = input(ctx, ins, t, &[512, 70], Fill::Uniform);
                let dy = input(ctx, ins, F32, &[70, 4], Fill::Uniform);
                let m = input(ctx, ins, F32, &[1, 4], Fill::Values(INF_AT));
                sys::ggml_out_prod(ctx, w, sys::ggml_transpose(ctx, sys::ggml_mul(ctx, dy, m)))
            };
            let (got, _) = run(b.vk, build, 7);
            let (want, _) = run(b.cpu, build, 7);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if i / 512 == 2 {
                    assert!(g.is_nan(), "{}: column with an infinite dY element gave {g} at {i}", tn(t));
                } else {
                    assert!(g.is_finite(), "{}: finite column gave {g} at {i}", tn(t));
                    assert!((g - w).abs() <= 1e-3 * w.abs().max(1.0), "{}: {g} vs {w} at {i}", tn(t));
                }
            }
            assert!(want[2 * 512..3 * 512].iter().any(|w| !w.is_finite()), "the CPU's column is finite");
        }
        let ran = trit_vulkan::dx_int8_dispatch_count() - before;
        let ran_wide = trit_vulkan::dx_int8_wide_dispatch_count() - wide_before;
        println!("emulation {emu}, wide {wide}: {ran} of {cases} products on dx_q8, {ran_wide} in 128-row tiles");
        if emu != 0 || trit_vulkan::dx_int8_available() {
            assert_eq!(ran, cases, "dx_q8 should have taken every product (emulation {emu})");
            // Every TQ2_0 case (half of them), and the TQ1_0 ones where our buffers hold TQ1_0
            // weights as TQ2_0 blocks.
            let tq2_cases = if trit_vulkan::tq1_as_tq2() { cases } else { cases / 2 };
            assert_eq!(ran_wide, if wide { tq2_cases } else { 0 }, "128-row tiles (emulation {emu}, wide {wide})");
        } else {
            assert_eq!(ran, 0);
        }
    }
    trit_vulkan::set_dxq_wide(true);
    println!("largest NMSE: {worst:e}");
    trit_vulkan::set_coopmat_emulation(0);
    trit_vulkan::set_dx_int8(false);
}

const ADAMW: &[f32] = &[1e-3, 0.9, 0.999, 1e-8, 0.01, 1.0 / (1.0 - 0.729), 1.0 / (1.0 - 0.997003)];

#[test]
fn adamw_step() {
    let Some((_g, b)) = setup() else { return };
    for ne in [[67i64, 5, 1], [256, 16, 1], [1, 1, 1], [3000, 1, 1]] {
        check(
            &b,
            &format!("opt_step_adamw {ne:?}"),
            &|ctx, ins| unsafe {
                let w = input(ctx, ins, F32, &ne, Fill::Uniform);
                sys::ggml_set_param(w);
                let g = input(ctx, ins, F32, &ne, Fill::Uniform);
                let m = input(ctx, ins, F32, &ne, Fill::Uniform);
                let v = input(ctx, ins, F32, &ne, Fill::Positive);
                let p = input(ctx, ins, F32, &[7], Fill::Values(ADAMW));
                sys::ggml_opt_step_adamw(ctx, w, g, m, v, p)
            },
            NMSE_TR,
        );
    }
}

#[test]
fn cross_entropy_with_masked_rows() {
    let Some((_g, b)) = setup() else { return };
    for (cols, rows) in [(512i64, 256i64), (13, 7), (1000, 3)] {
        check(
            &b,
            &format!("cross_entropy_loss [{cols}, {rows}]"),
            &|ctx, ins| unsafe {
                let logits = input(ctx, ins, F32, &[cols, rows], Fill::Uniform);
                let labels = input(ctx, ins, F32, &[cols, rows], Fill::OneHotMasked(4));
                sys::ggml_cross_entropy_loss(ctx, logits, labels)
            },
            NMSE_TR,
        );
        let back: Builder = &|ctx, ins| unsafe {
            let logits = input(ctx, ins, F32, &[cols, rows], Fill::Uniform);
            let labels = input(ctx, ins, F32, &[cols, rows], Fill::OneHotMasked(4));
            let grad = input(ctx, ins, F32, &[1], Fill::Values(&[0.75]));
            // (the header names the arguments in another order; ggml.c takes the gradient first)
            sys::ggml_cross_entropy_loss_back(ctx, grad, logits, labels)
        };
        check(&b, &format!("cross_entropy_loss_back [{cols}, {rows}]"), back, NMSE_TR);
        // A masked position (all-zero label row) gives exactly zero gradient on both.
        let (got, _) = run(b.vk, back, 7);
        let (want, _) = run(b.cpu, back, 7);
        let c = cols as usize;
        let mut masked = 0;
        for (r, (g, w)) in got.chunks(c).zip(want.chunks(c)).enumerate() {
            if r % 4 == 3 {
                masked += 1;
                assert!(g.iter().all(|&x| x == 0.0), "row {r}: masked row has a non-zero gradient on Vulkan");
                assert!(w.iter().all(|&x| x == 0.0), "row {r}: masked row has a non-zero gradient on the CPU");
            } else {
                assert!(g.iter().any(|&x| x != 0.0), "row {r}: trained row has no gradient");
            }
        }
        assert_eq!(masked, rows as usize / 4);
    }
}

#[test]
fn norm_softmax_rope_backward() {
    let Some((_g, b)) = setup() else { return };
    // (Rows of one element are left out: there the gradient is eps-sized cancellation.)
    for ne in [[67i64, 5, 3], [2560, 2, 1], [5, 1, 1]] {
        check(
            &b,
            &format!("rms_norm_back {ne:?}"),
            &|ctx, ins| unsafe {
                let dz = input(ctx, ins, F32, &ne, Fill::Uniform);
                let x = input(ctx, ins, F32, &ne, Fill::Uniform);
                sys::ggml_rms_norm_back(ctx, dz, x, 1e-5)
            },
            NMSE_TR,
        );
    }
    for (ne, scale) in [([67i64, 5, 3], 1.0f32), ([256, 256, 2], 0.125), ([1, 3, 1], 1.0)] {
        check(
            &b,
            &format!("soft_max_back {ne:?} scale {scale}"),
            &|ctx, ins| unsafe {
                let dy = input(ctx, ins, F32, &ne, Fill::Uniform);
                let x = input(ctx, ins, F32, &ne, Fill::Uniform);
                let y = sys::ggml_soft_max(ctx, x);
                sys::ggml_soft_max_ext_back(ctx, dy, y, scale, 0.0)
            },
            NMSE_TR,
        );
    }
    for (mode, n_dims, ne) in
        [(0, 64, [64i64, 4, 7]), (sys::GGML_ROPE_TYPE_NEOX as i32, 128, [128, 2, 5]), (0, 32, [48, 3, 2])]
    {
        check(
            &b,
            &format!("rope_back mode {mode} n_dims {n_dims} {ne:?}"),
            &|ctx, ins| {
                let dy = input(ctx, ins, F32, &ne, Fill::Uniform);
                let pos = input(ctx, ins, I32, &[ne[2]], Fill::Index(4096));
                rope(ctx, Rope::Back, dy, pos, n_dims, mode, 500000.0)
            },
            NMSE_TR,
        );
    }
    // ROPE_BACK undoes ROPE: rope_back(rope(x)) - x on the device is rounding-sized.
    let (diff, _) = run(
        b.vk,
        &|ctx, ins| unsafe {
            let x = input(ctx, ins, F32, &[64, 4, 7], Fill::Uniform);
            let pos = input(ctx, ins, I32, &[7], Fill::Index(4096));
            let r = rope(ctx, Rope::Forward, x, pos, 64, 0, 10000.0);
            let back = rope(ctx, Rope::Back, r, pos, 64, 0, 10000.0);
            sys::ggml_add(ctx, back, sys::ggml_scale(ctx, x, -1.0))
        },
        7,
    );
    let worst = diff.iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("rope_back(rope(x)) - x: max |diff| {worst:.2e} (bound 1e-5, |x| <= 1)");
    assert!(worst < 1e-5, "ROPE_BACK does not invert ROPE: {worst}");
}

#[test]
fn gradient_plumbing_ops() {
    let Some((_g, b)) = setup() else { return };
    for (big, small) in [([64i64, 6, 4], [64i64, 1, 4]), ([10, 8, 3], [5, 2, 1]), ([7, 3, 2], [7, 3, 2])] {
        check(
            &b,
            &format!("repeat_back {big:?} -> {small:?}"),
            &|ctx, ins| unsafe {
                let a = input(ctx, ins, F32, &big, Fill::Uniform);
                let like = new(ctx, F32, &small);
                sys::ggml_repeat_back(ctx, a, like)
            },
            NMSE_EW,
        );
    }
    check(
        &b,
        "repeat_back of a permuted view",
        &|ctx, ins| unsafe {
            let a = input(ctx, ins, F32, &[16, 6, 4], Fill::Uniform);
            let ap = sys::ggml_permute(ctx, a, 0, 2, 1, 3); // [16, 4, 6]
            let like = new(ctx, F32, &[16, 4, 2]);
            sys::ggml_repeat_back(ctx, ap, like)
        },
        NMSE_EW,
    );
    for (cols, n_idx, rows) in [(256i64, 256i64, 256i64), (67, 9, 5), (3, 1, 40)] {
        check(
            &b,
            &format!("get_rows_back [{cols}, {n_idx}] -> {rows} rows"),
            &|ctx, ins| unsafe {
                let g = input(ctx, ins, F32, &[cols, n_idx], Fill::Uniform);
                let idx = input(ctx, ins, I32, &[n_idx], Fill::Index(rows));
                let like = new(ctx, F32, &[cols, rows]);
                sys::ggml_get_rows_back(ctx, g, idx, like)
            },
            NMSE_EW,
        );
    }
    check(
        &b,
        "acc: a [32, 6] view at row 2 of [32, 10]",
        &|ctx, ins| unsafe {
            let a = input(ctx, ins, F32, &[32, 10], Fill::Uniform);
            let x = input(ctx, ins, F32, &[32, 6], Fill::Uniform);
            sys::ggml_acc(ctx, a, x, (*a).nb[1], (*a).nb[2], (*a).nb[3], 2 * (*a).nb[1])
        },
        NMSE_EW,
    );
    check(
        &b,
        "acc: a head slice (strided) of [64, 4, 3]",
        &|ctx, ins| unsafe {
            let a = input(ctx, ins, F32, &[64, 4, 3], Fill::Uniform);
            let x = input(ctx, ins, F32, &[16, 4, 3], Fill::Uniform);
            sys::ggml_acc(ctx, a, x, (*a).nb[1], (*a).nb[2], (*a).nb[3], 16 * 4)
        },
        NMSE_EW,
    );
    for (cols, rows) in [(512i64, 256i64), (7, 3), (1000, 1)] {
        check(
            &b,
            &format!("argmax [{cols}, {rows}]"),
            &|ctx, ins| unsafe { sys::ggml_argmax(ctx, input(ctx, ins, F32, &[cols, rows], Fill::Uniform)) },
            0.0,
        );
    }
    check(
        &b,
        "count_equal [300, 2]",
        &|ctx, ins| unsafe {
            let x = input(ctx, ins, I32, &[300, 2], Fill::Index(3));
            let y = input(ctx, ins, I32, &[300, 2], Fill::Index(3));
            sys::ggml_count_equal(ctx, x, y)
        },
        0.0,
    );
    check(
        &b,
        "step [67, 5]",
        &|ctx, ins| unsafe { sys::ggml_step(ctx, input(ctx, ins, F32, &[67, 5], Fill::Uniform)) },
        0.0,
    );
}
