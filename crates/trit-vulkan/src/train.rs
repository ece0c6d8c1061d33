//! The ops of a training step (ggml's backward graph and ggml-opt's AdamW): which of them
//! the backend runs and how each is recorded. A child of `ops` (it uses its tensor
//! accessors); `ops::supports` / `ops::encode` hand these ops here first.
//!
//! OUT_PROD with a TQ2_0 / TQ1_0 first operand is the input gradient through a frozen
//! ternary weight, `dX = Wᵀ·dY`, computed from the packed blocks (kernels/out_prod.comp).

use trit_sys as sys;

use super::{
    contiguous, elsize, fits_range, groups_for, nb, ne, nelements, op_of, param_f32, param_u32, shape, src, ty,
};
use super::{F16, F32, I32, I64, TQ1, TQ2};
use crate::dispatch::{Bound, Push, Recorder};
use crate::error::Result;
use crate::gpu::Gpu;

fn rows(t: *const sys::ggml_tensor) -> u64 {
    nelements(t) / ne(t)[0].max(1) as u64
}

fn same_shape(a: *const sys::ggml_tensor, b: *const sys::ggml_tensor) -> bool {
    ne(a) == ne(b)
}

fn is_step(op: *const sys::ggml_tensor) -> bool {
    // SAFETY: op is a live UNARY node.
    op_of(op) == sys::GGML_OP_UNARY && unsafe { sys::ggml_get_unary_op(op) } == sys::GGML_UNARY_OP_STEP
}

/// Whether `op` is one of the training ops this module decides.
pub(super) fn handles(op: *const sys::ggml_tensor) -> bool {
    matches!(
        op_of(op),
        sys::GGML_OP_OUT_PROD
            | sys::GGML_OP_OPT_STEP_ADAMW
            | sys::GGML_OP_CROSS_ENTROPY_LOSS
            | sys::GGML_OP_CROSS_ENTROPY_LOSS_BACK
            | sys::GGML_OP_RMS_NORM_BACK
            | sys::GGML_OP_SOFT_MAX_BACK
            | sys::GGML_OP_ROPE_BACK
            | sys::GGML_OP_REPEAT_BACK
            | sys::GGML_OP_GET_ROWS_BACK
            | sys::GGML_OP_ACC
            | sys::GGML_OP_ARGMAX
            | sys::GGML_OP_COUNT_EQUAL
    ) || is_step(op)
        || narrow_mul_mat(op)
        || small_k(op)
}

/// The most k of `prod_small_k.comp`.
const SMALL_K: i64 = 32;

/// An f32 OUT_PROD, or f32 MUL_MAT of more than 8 columns, whose k is at most `SMALL_K`: a
/// LoRA pair's input gradient through A and its forward B·u (k = the rank). They write far
/// more than they read; `prod_small_k.comp` computes them without shared memory or a split.
/// TRIT_VULKAN_SMALL_K=0 keeps both on the tiled kernels, `out_prod` takes only OUT_PROD (A/B).
fn small_k(op: *const sys::ggml_tensor) -> bool {
    static MODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let mode = MODE.get_or_init(|| std::env::var("TRIT_VULKAN_SMALL_K").unwrap_or_default());
    if mode == "0" || out_prod_4x4() {
        return false;
    }
    let (s0, s1) = (src(op, 0), src(op, 1));
    let f32s = !s0.is_null() && !s1.is_null() && ty(s0) == F32 && ty(s1) == F32 && ty(op) == F32;
    match op_of(op) {
        sys::GGML_OP_OUT_PROD => f32s && ne(s0)[1] <= SMALL_K,
        sys::GGML_OP_MUL_MAT => f32s && ne(s0)[0] <= SMALL_K && ne(s1)[1] > 8 && mode != "out_prod",
        _ => false,
    }
}

/// `prod_small_k.comp` for `op` (OUT_PROD operands, or MUL_MAT's read transposed, in `p`).
fn record_small_k(rec: &mut Recorder, op: *const sys::ggml_tensor, a: Bound, b: Bound, mut p: Push) -> Result<()> {
    let groups = out_prod_tiles(op);
    p.m0[1] = groups as u32;
    let d = rec.bind(op, 4)?;
    rec.dispatch("prod_small_k_f32", a, Some(b), d, p, groups)
}

/// The most output columns (or rows) of `prod_thin.comp`'s thin side.
const THIN_MAX: i64 = 32;

/// An f32 OUT_PROD, or f32 MUL_MAT of more than 8 columns, with at most `THIN_MAX` output
/// rows (or, OUT_PROD only, columns) and k past `SMALL_K`: the products of a LoRA pair that
/// read a wide operand and write a rank-wide result (the forward A·x, the gradient into the
/// rank-r intermediate, the gradients of A and B). `prod_thin.comp` tiles them 64 x 16
/// instead of 64 x 64. TRIT_VULKAN_THIN=0 keeps them on `out_prod.comp` (A/B).
fn thin(op: *const sys::ggml_tensor) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var("TRIT_VULKAN_THIN").is_ok_and(|v| v == "0")) || out_prod_4x4() || small_k(op) {
        return false;
    }
    let (s0, s1) = (src(op, 0), src(op, 1));
    if s0.is_null() || s1.is_null() || ty(s0) != F32 || ty(s1) != F32 || ty(op) != F32 {
        return false;
    }
    let d = ne(op);
    match op_of(op) {
        sys::GGML_OP_OUT_PROD => ne(s0)[1] > SMALL_K && (d[0] <= THIN_MAX || d[1] <= THIN_MAX),
        sys::GGML_OP_MUL_MAT => ne(s0)[0] > SMALL_K && d[0] <= THIN_MAX && ne(s1)[1] > 8,
        _ => false,
    }
}

/// Output tiles (64 wide x 16 thin) of `prod_thin.comp`: the thin side is dst's first
/// dimension where that is at most `THIN_MAX`, as the kernel decides.
fn thin_tiles(op: *const sys::ggml_tensor) -> u64 {
    let [n0, n1, n2, n3] = ne(op).map(|x| x as u64);
    let (wide, narrow) = if n0 <= THIN_MAX as u64 { (n1, n0) } else { (n0, n1) };
    wide.div_ceil(64) * narrow.div_ceil(16) * n2 * n3
}

/// Thin products recorded with `prod_thin.comp` so far in this process (tests).
pub(crate) static THIN_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Workgroups a thin product's split along k aims at (four per SM of an H100/H200), and the
/// least k of a slice; TRIT_VULKAN_THIN_GROUPS overrides the first (0: no split), for A/B runs.
fn thin_groups() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::env::var("TRIT_VULKAN_THIN_GROUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(528))
}
const THIN_MIN_K: u64 = 64;

/// (slices, k per slice) of a thin product: about `thin_groups()` workgroups, slices of at
/// least `THIN_MIN_K`, partial sums of at most `SPLIT_MAX_BYTES`.
fn thin_split(k: u64, tiles: u64, n: u64) -> (u64, u64) {
    let target = thin_groups();
    if tiles == 0 || tiles >= target || k < 2 * THIN_MIN_K {
        return (1, k);
    }
    let want = target.div_ceil(tiles).min(k / THIN_MIN_K).min(SPLIT_MAX_BYTES / (n * 4).max(1));
    if want < 2 {
        return (1, k);
    }
    let len = k.div_ceil(want).next_multiple_of(32);
    (k.div_ceil(len), len)
}

/// An f32 MUL_MAT with an output of few tiles and a long k — a LoRA pair's `A·x` (16 rows of
/// output, k = n_in) — is the OUT_PROD of its operands read transposed; recorded by the
/// OUT_PROD kernel, it gets the split along k (`out_prod_split`) where 64 x 64 product tiles
/// would leave the GPU nearly idle (8 workgroups for 16 x 512).
fn narrow_mul_mat(op: *const sys::ggml_tensor) -> bool {
    if op_of(op) != sys::GGML_OP_MUL_MAT {
        return false;
    }
    let (s0, s1) = (src(op, 0), src(op, 1));
    ty(s0) == F32
        && ty(s1) == F32
        && ty(op) == F32
        && ne(s1)[1] > 8
        && (thin(op) || split(ne(s0)[0] as u64, out_prod_tiles(op), nelements(op)).0 > 1)
}

/// Row-wise kernels read elements of a row contiguously.
fn rows_contiguous(t: *const sys::ggml_tensor) -> bool {
    nb(t)[0] == 4
}

pub(super) fn supports(gpu: &Gpu, op: *const sys::ggml_tensor) -> bool {
    let (s0, s1, s2) = (src(op, 0), src(op, 1), src(op, 2));
    let f32s = |ts: &[*const sys::ggml_tensor]| ts.iter().all(|&t| !t.is_null() && ty(t) == F32);
    match op_of(op) {
        sys::GGML_OP_OUT_PROD => {
            let (a, b, d) = (ne(s0), ne(s1), ne(op));
            let a_ok = match ty(s0) {
                F32 | F16 => true,
                TQ1 | TQ2 => {
                    a[0] % 256 == 0 && nb(s0)[0] == super::type_size(ty(s0)) && crate::weight_store::layout_ok(s0)
                }
                _ => false,
            };
            a_ok && f32s(&[s1, op])
                && d[0] == a[0]
                && d[1] == b[0]
                && a[1] == b[1]
                && d[2] == b[2]
                && d[3] == b[3]
                && a[2] > 0
                && a[3] > 0
                && b[2] % a[2] == 0
                && b[3] % a[3] == 0
        }
        sys::GGML_OP_OPT_STEP_ADAMW => {
            let (g, m, v, p) = (s1, s2, src(op, 3), src(op, 4));
            f32s(&[s0, g, m, v, p])
                && [s0, g, m, v].iter().all(|&t| contiguous(t) && same_shape(t, s0) && fits_range(gpu, t))
                && nelements(p) == 7
                && contiguous(p)
        }
        sys::GGML_OP_CROSS_ENTROPY_LOSS => {
            f32s(&[s0, s1, op])
                && same_shape(s0, s1)
                && nelements(op) == 1
                && rows_contiguous(s0)
                && rows_contiguous(s1)
                && rows(s0) < u32::MAX as u64 / 2
        }
        sys::GGML_OP_CROSS_ENTROPY_LOSS_BACK => {
            f32s(&[s0, s1, s2, op])
                && nelements(s0) == 1
                && same_shape(s1, s2)
                && same_shape(s1, op)
                && fits_range(gpu, s2)
                && [s1, s2, op].iter().all(|&t| rows_contiguous(t))
        }
        sys::GGML_OP_RMS_NORM_BACK => f32s(&[s0, s1, op]) && same_shape(s0, s1) && same_shape(s0, op),
        sys::GGML_OP_SOFT_MAX_BACK => {
            f32s(&[s0, s1, op]) && same_shape(s0, s1) && same_shape(s0, op) && param_f32(op, 1) == 0.0
        }
        sys::GGML_OP_ROPE_BACK => {
            let mode = param_u32(op, 2);
            let n_dims = param_u32(op, 1) as i64;
            f32s(&[s0, op])
                && ty(s1) == I32
                && s2.is_null()
                && (mode == 0 || mode == sys::GGML_ROPE_TYPE_NEOX)
                && param_f32(op, 7) == 0.0
                && n_dims % 2 == 0
                && n_dims <= ne(s0)[0]
                && ne(s0)[0] % 2 == 0
                && ne(op) == ne(s0)
        }
        sys::GGML_OP_REPEAT_BACK => f32s(&[s0, op]) && super::can_repeat(op, s0),
        sys::GGML_OP_GET_ROWS_BACK => {
            f32s(&[s0, op])
                && ty(s1) == I32
                && ne(s0)[2] == 1
                && ne(s0)[3] == 1
                && ne(op)[2] == 1
                && ne(op)[3] == 1
                && ne(s1)[1] == 1
                && ne(s1)[0] == ne(s0)[1]
                && ne(op)[0] == ne(s0)[0]
        }
        sys::GGML_OP_ACC => {
            f32s(&[s0, s1, op])
                && contiguous(s0)
                && contiguous(op)
                && same_shape(s0, op)
                && (0..4).all(|i| param_u32(op, i) % 4 == 0)
        }
        sys::GGML_OP_ARGMAX => f32s(&[s0]) && ty(op) == I32 && ne(s0)[2] == 1 && ne(s0)[3] == 1,
        sys::GGML_OP_COUNT_EQUAL => {
            ty(s0) == I32 && ty(s1) == I32 && ty(op) == I64 && same_shape(s0, s1) && nb(op)[0] == 8
        }
        sys::GGML_OP_MUL_MAT => fits_range(gpu, s0), // narrow_mul_mat
        sys::GGML_OP_UNARY => f32s(&[s0, op]),       // STEP
        _ => false,
    }
}

/// Output tiles (64 x 64) of an OUT_PROD.
fn out_prod_tiles(op: *const sys::ggml_tensor) -> u64 {
    let [n0, n1, n2, n3] = ne(op).map(|x| x as u64);
    n0.div_ceil(64) * n1.div_ceil(64) * n2 * n3
}

/// Below this many output tiles (less than one workgroup per SM of an H100) an OUT_PROD
/// with a long enough k is split along k.
const SPLIT_BELOW_TILES: u64 = 128;
/// Workgroups a split aims at (two per SM of an H100), the least k a slice gets (four of
/// the kernel's 32-row k steps), and the most bytes of partial sums.
const SPLIT_TARGET_GROUPS: u64 = 256;
const SPLIT_MIN_K: u64 = 128;
const SPLIT_MAX_BYTES: u64 = 4 << 20;

/// (slices, k per slice) of an OUT_PROD: (1, K) unless its output has few tiles and k is
/// long. The skinny products of a LoRA pair are all such: the gradient into its rank-r
/// intermediate (`[r, tokens]` summed over every output feature: 8 tiles at r = 16 and 512
/// tokens, k = n_out), the forward `A·x` (the same shape, k = n_in, as `narrow_mul_mat`),
/// and the gradients of A and B (`[n_in, r]` / `[r, n_out]`: 40 tiles for 2560 features,
/// k = tokens), which as 40 workgroups of k = 512 each left most of the GPU idle. Each
/// slice writes partial sums to scratch; `split_sum_f32` adds them in slice order.
///
/// A wide OUT_PROD (up to `wave_groups()` tiles, k >= 512) is split too, into as many slices
/// as bring it near that many workgroups: the ternary input gradient `dX = Wᵀ·dY` of a
/// 2560-feature input at 512 tokens is 320 tiles, 1.2 rounds of the H100's ~264 resident
/// workgroups (two per SM), so its second round ran 56 workgroups on 132 SMs.
fn out_prod_split(gpu: &Gpu, op: *const sys::ggml_tensor) -> (u64, u64) {
    let mm = op_of(op) == sys::GGML_OP_MUL_MAT;
    let (k, n) = (ne(src(op, 0))[usize::from(!mm)] as u64, nelements(op));
    if thin(op) {
        return thin_split(k, thin_tiles(op), n);
    }
    if let Some(kernel) = dx_q8_kernel(gpu, op) {
        return wave_split(k, dxq_tiles(op, &kernel), n, dxq_groups());
    }
    if f16v_kernel(gpu, op).is_some() {
        return wave_split(k, f16v_tiles(op), n, cm_groups());
    }
    if cm_kernel(gpu, op).is_some() {
        return wave_split(k, cm_tiles(op), n, cm_groups());
    }
    let tiles = out_prod_tiles(op);
    if mm {
        return split(k, tiles, n);
    }
    match split(k, tiles, n) {
        (1, _) => wave_split(k, tiles, n, wave_groups()),
        s => s,
    }
}

/// The tensor-core OUT_PROD kernel (kernels/out_prod_cm.comp) for this node, where the device
/// has VK_NV_cooperative_matrix with 16 x 16 x 16 f16 products into f32 and subgroups of 32:
/// a frozen TQ2_0 / TQ1_0 / f16 weight's input gradient (OUT_PROD), and an f16 weight's
/// product with 64 or more columns (MUL_MAT, read transposed: the tied LM head of a training
/// window). Not with TRIT_VULKAN_OUT_PROD_4X4=1 (an A/B of the FMA kernels) or after
/// `set_coopmat(false)`; only where `set_cm_training(true)` or TRIT_VULKAN_CM_TRAIN=1 asked for it.
fn cm_kernel(gpu: &Gpu, op: *const sys::ggml_tensor) -> Option<&'static str> {
    if !gpu.limits.cm_train.load(std::sync::atomic::Ordering::Relaxed) || out_prod_4x4() || !cm_device(gpu) {
        return None;
    }
    let (s0, s1) = (src(op, 0), src(op, 1));
    let name = match (op_of(op), ty(s0)) {
        (sys::GGML_OP_OUT_PROD, TQ2) => "out_prod_tq2_cm",
        (sys::GGML_OP_OUT_PROD, TQ1) => "out_prod_tq1_cm",
        (sys::GGML_OP_OUT_PROD, F16) => "out_prod_f16_cm",
        (sys::GGML_OP_MUL_MAT, F16) if ty(s1) == F32 && ty(op) == F32 && ne(s1)[1] >= 64 && ne(s0)[1] >= 128 => {
            "out_prod_f16_cm"
        }
        _ => return None,
    };
    gpu.has_pipeline(name).then_some(name)
}

/// The f16 OUT_PROD on tensor cores for aligned operands (kernels/out_prod_f16_cmv.comp, on
/// by default: the tied LM head's input gradient): `out_prod_f16v_cm` where `cm_device`,
/// `out_prod_f16v_emu` under `set_coopmat_emulation` (tests). None where the operands do not
/// suit it — i0's count, k and A's k stride multiples of 8, A contiguous along i0 and B along
/// k, B's other strides multiples of 16 bytes, both 16-byte aligned, each within one
/// binding — with TRIT_VULKAN_OUT_PROD_4X4=1, or with TRIT_VULKAN_F16_CMV=0.
fn f16v_kernel(gpu: &Gpu, op: *const sys::ggml_tensor) -> Option<&'static str> {
    let (s0, s1) = (src(op, 0), src(op, 1));
    if op_of(op) != sys::GGML_OP_OUT_PROD || ty(s0) != F16 || ty(s1) != F32 || ty(op) != F32 || out_prod_4x4() {
        return None;
    }
    let name = if gpu.limits.coopmat_emu.load(std::sync::atomic::Ordering::Relaxed) != 0 {
        "out_prod_f16v_emu"
    } else if cm_device(gpu) {
        "out_prod_f16v_cm"
    } else {
        return None;
    };
    if !crate::matvec::f16_cmv_on() {
        return None;
    }
    let (na, nbb) = (nb(s0), nb(s1));
    let ok = ne(op)[0] % 8 == 0
        && ne(s0)[1] % 8 == 0
        && na[0] == 2
        && na[1..].iter().all(|s| s % 16 == 0)
        && nbb[1] == 4
        && [nbb[0], nbb[2], nbb[3]].iter().all(|s| s % 16 == 0)
        && crate::dispatch::starts_aligned(s0, 16)
        && crate::dispatch::starts_aligned(s1, 16)
        && fits_range(gpu, s0)
        && fits_range(gpu, s1);
    (ok && gpu.has_pipeline(name)).then_some(name)
}

/// Output tiles of `out_prod_f16_cmv.comp` (128 x 64).
fn f16v_tiles(op: *const sys::ggml_tensor) -> u64 {
    let [n0, n1, n2, n3] = ne(op).map(|x| x as u64);
    n0.div_ceil(128) * n1.div_ceil(64) * n2 * n3
}

/// f16 OUT_PRODs recorded with `out_prod_f16_cmv.comp` so far in this process (tests).
pub(crate) static F16V_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `out_prod_f16_cmv.comp`: the column scales of `b` (from `b` bound as f32 elements), then
/// the product with both operands bound in 16-byte units.
fn record_out_prod_f16v(rec: &mut Recorder, op: *const sys::ggml_tensor, name: &str, b: Bound, p: Push) -> Result<()> {
    let scales = column_scales(rec, op, b, p)?;
    let (a16, b16) = (rec.bind_vec(src(op, 0), 16)?, rec.bind_vec(src(op, 1), 16)?);
    F16V_DISPATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    record_out_prod(rec, op, name, a16, b16, Some(scales), f16v_tiles(op), p)
}

/// What the tensor-core OUT_PROD needs of the device: cooperative matrices on (not
/// `set_coopmat(false)`), f16 16 x 16 x 16 products into f32, subgroups of 32.
fn cm_device(gpu: &Gpu) -> bool {
    use ash::vk::ComponentTypeNV as C;
    gpu.coopmat() && gpu.subgroup_size == 32 && gpu.has_coopmat_shape(16, 16, 16, C::FLOAT16, C::FLOAT32)
}

/// Whether this device can run training's tensor-core kernel at all (whether it is asked for
/// or not): `cm_device` and its pipelines.
pub(crate) fn cm_available(gpu: &Gpu) -> bool {
    cm_device(gpu) && gpu.has_pipeline("out_prod_tq2_cm")
}

/// Training products recorded with the tensor-core kernel so far in this process (tests).
pub(crate) static CM_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An f16 MUL_MAT the tensor-core kernel takes (`cm_kernel`): handled by this module.
pub(super) fn mul_mat_cm(gpu: &Gpu, op: *const sys::ggml_tensor) -> bool {
    op_of(op) == sys::GGML_OP_MUL_MAT && cm_kernel(gpu, op).is_some()
}

/// The int8 tensor-core kernel (kernels/dx_q8.comp) for a frozen TQ2_0 / TQ1_0 weight's input
/// gradient (OUT_PROD), where the device has int8 16 x 8 x 32 or 16 x 16 x 32 cooperative
/// matrices and subgroups of 32 and `set_dx_int8` is on (the default; TRIT_VULKAN_DX_Q8=0);
/// under `set_coopmat_emulation` its `_emu` twin on any device. dY goes in as two int8 parts
/// per column (~15 bits of the column's largest element), so it is close to, not equal to,
/// the f32 sums of `out_prod.comp`.
fn dx_q8_kernel(gpu: &Gpu, op: *const sys::ggml_tensor) -> Option<String> {
    use std::sync::atomic::Ordering::Relaxed;
    if op_of(op) != sys::GGML_OP_OUT_PROD || !gpu.limits.dx_q8.load(Relaxed) || out_prod_4x4() {
        return None;
    }
    let t = match ty(src(op, 0)) {
        TQ2 => "tq2",
        TQ1 => "tq1",
        _ => return None,
    };
    let form = if dxq_prequant(op) { "dx_q8p" } else { "dx_q8" };
    if form == "dx_q8p" && t == "tq2" && ne(op)[0] % 128 == 0 && dxq_wide() {
        if let Some(k) = crate::matvec::int8_cm_variant(gpu, "dx_q8pw_tq2") {
            return Some(k);
        }
    }
    crate::matvec::int8_cm_variant(gpu, &format!("{form}_{t}"))
}

/// Whether the int8 input gradient of a TQ2_0 weight with dY quantized beforehand takes
/// 128-row tiles (`dx_q8.comp` WIDE, `dx_q8pw_*`) where its rows allow: unless
/// TRIT_VULKAN_DXQ_WIDE=0 (A/B runs) or `set_dxq_wide(false)` (tests).
fn dxq_wide() -> bool {
    DXQ_WIDE.get(|| !std::env::var("TRIT_VULKAN_DXQ_WIDE").is_ok_and(|v| v == "0"))
}

/// Int8 input gradients recorded with 128-row tiles so far in this process (tests).
pub(crate) static DXQ_WIDE_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `dxq_wide`'s switch (`set_dxq_wide`).
pub(crate) static DXQ_WIDE: crate::switch::Switch = crate::switch::Switch::new();

/// Output tiles of the int8 input gradient's kernel: 128 x 64 for `dx_q8pw_*`, else 64 x 64.
fn dxq_tiles(op: *const sys::ggml_tensor, kernel: &str) -> u64 {
    let [n0, n1, n2, n3] = ne(op).map(|x| x as u64);
    let rows = if kernel.starts_with("dx_q8pw_") { 128 } else { 64 };
    n0.div_ceil(rows) * n1.div_ceil(64) * n2 * n3
}

/// The most bytes of quantized dY (`DxqParts::bytes`) the int8 input gradient quantizes
/// beforehand (`dx_q8p`); past it the product quantizes as it goes (`dx_q8`), as it does
/// with TRIT_VULKAN_DXQ_PREQ=0 (A/B).
const DXQ_MAX_BYTES: u64 = 256 << 20;

/// Whether the int8 input gradient `op` quantizes dY beforehand (`dx_q8_quant`, then
/// `dx_q8p_*`), once per column and block column of W, instead of once per output tile.
fn dxq_prequant(op: *const sys::ggml_tensor) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !*OFF.get_or_init(|| std::env::var("TRIT_VULKAN_DXQ_PREQ").is_ok_and(|v| v == "0"))
        && DxqParts::of(op).bytes() <= DXQ_MAX_BYTES
}

/// Where the quantized form of an int8 input gradient's dY lives in its scratch slot: W's
/// block scales as f32 and, after them (from word `dsw`, rounded up to 64 words), per chunk
/// of 256 rows and block column whether its scales are block column 0's
/// (`dx_q8_dgatherf_*`, `chunks` of them per block column); then per column and block column
/// of W the largest |dY * block scale| (`words` f32, padded to 256 bytes), then the hi and lo
/// int8 parts of every (column, block column), `kw` words each (`dx_q8_quant`). Every part
/// and the slot start at multiples of 256 bytes: `dx_q8.comp` reads the maxima without an
/// element offset.
struct DxqParts {
    block_scales: u64,
    chunks: u64,
    items: u64,
    words: u64,
    kw: u64,
}

impl DxqParts {
    fn of(op: *const sys::ggml_tensor) -> Self {
        let items = dxq_scales(op);
        let [n0, k, a2, a3] = ne(src(op, 0)).map(|x| x as u64);
        let dsw = dxq_block_scales(op).next_multiple_of(64);
        let chunks = k.div_ceil(256);
        Self {
            block_scales: ((dsw + a2 * a3 * (n0 / 256) * chunks) * 4).next_multiple_of(256),
            chunks,
            items,
            words: (items * 4).next_multiple_of(256) / 4,
            kw: k.div_ceil(16) * 4,
        }
    }

    /// Bytes of the column maxima and the int8 parts (one binding of `dx_q8_quant`).
    fn quant_bytes(&self) -> u64 {
        (self.words + self.items * 2 * self.kw) * 4
    }

    /// The slot: a multiple of 256 bytes, so the next slot (and what follows the ring)
    /// starts aligned too.
    fn bytes(&self) -> u64 {
        (self.block_scales + self.quant_bytes()).next_multiple_of(256)
    }
}

/// Bytes of the int8 input gradient's slot (`Recorder::dxq_scratch`) this node needs: 0
/// unless it quantizes dY beforehand.
pub(super) fn dxq_slot_bytes(gpu: &Gpu, op: *const sys::ggml_tensor) -> u64 {
    match op_of(op) {
        sys::GGML_OP_OUT_PROD if dx_q8_kernel(gpu, op).is_some() && dxq_prequant(op) => DxqParts::of(op).bytes(),
        _ => 0,
    }
}

/// Whether this device runs `dx_q8.comp` on its tensor cores (not emulated) when asked: a
/// `_cm` variant was built (its shape listed, subgroups of 32: `cm_variant_usable`).
pub(crate) fn dx_q8_available(gpu: &Gpu) -> bool {
    gpu.coopmat()
        && (gpu.has_pipeline("dx_q8_tq2_cm")
            || (crate::matvec::int8_n16_opt_in() && gpu.has_pipeline("dx_q8_tq2_n16_cm")))
}

/// Ternary input gradients recorded with `dx_q8.comp` so far in this process (tests).
pub(crate) static DXQ_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Workgroups the int8 input gradient's split along k aims at (as `wave_groups` for the FMA
/// kernel, whose 64 x 64 tiles it shares); TRIT_VULKAN_DXQ_SPLIT_GROUPS overrides it (0: no
/// split), for A/B runs.
fn dxq_groups() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::env::var("TRIT_VULKAN_DXQ_SPLIT_GROUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(660))
}

/// The per-column scales of `dx_q8.comp`: one per column and block column of W (blocks of
/// 256 along its rows).
fn dxq_scales(op: *const sys::ggml_tensor) -> u64 {
    columns(op) * (ne(src(op, 0))[0] as u64 / 256)
}

/// W's block scales as f32, one row of k per block column and batch of W (dx_q8_scale.comp).
fn dxq_block_scales(op: *const sys::ggml_tensor) -> u64 {
    let [n0, k, a2, a3] = ne(src(op, 0)).map(|x| x as u64);
    n0 / 256 * k * a2 * a3
}

/// Output tiles (128 x 128) of the tensor-core OUT_PROD.
fn cm_tiles(op: *const sys::ggml_tensor) -> u64 {
    let [n0, n1, n2, n3] = ne(op).map(|x| x as u64);
    n0.div_ceil(128) * n1.div_ceil(128) * n2 * n3
}

/// Columns (i1, i2, i3) of an OUT_PROD: the per-column scales of its f32 operand.
fn columns(op: *const sys::ggml_tensor) -> u64 {
    let [_, n1, n2, n3] = ne(op).map(|x| x as u64);
    n1 * n2 * n3
}

/// Workgroups the tensor-core OUT_PROD's split along k aims at: 528, four per SM of an
/// H100/H200 (a 128 x 128 tile's workgroup: 256 invocations, 38 KiB of shared memory). TRIT_VULKAN_CM_SPLIT_GROUPS
/// overrides it (0: no split), for A/B runs.
fn cm_groups() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::env::var("TRIT_VULKAN_CM_SPLIT_GROUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(528))
}

/// The least k of a slice of a wide split, and the most bytes of its partial sums (a slot of
/// the ring: 4 of them are reserved for the graph).
const WAVE_MIN_K: u64 = 256;
const WAVE_MAX_BYTES: u64 = 32 << 20;

/// Workgroups a wide OUT_PROD's split aims at: 660 (5 per SM of an H100) splits the 320-tile
/// products in two. Measured on the H100 (one call, `TRIT_VULKAN_PROFILE=1`): `out_prod_tq2`
/// 517.6 µs a call unsplit, 470.5 at 1056 (3 slices), 453.4 at both 660 and 1320 (4 slices,
/// and 2 for the 864-tile products), where 660 adds the fewest `split_sum_f32` dispatches.
/// TRIT_VULKAN_SPLIT_GROUPS overrides it (0: no wide split), for A/B runs.
fn wave_groups() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::env::var("TRIT_VULKAN_SPLIT_GROUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(660))
}

/// (slices, k per slice) of a wide product: `target / tiles` rounded, slices of at least
/// `WAVE_MIN_K`, partial sums of at most `WAVE_MAX_BYTES`.
fn wave_split(k: u64, tiles: u64, n: u64, target: u64) -> (u64, u64) {
    if tiles == 0 || tiles >= target || k < 2 * WAVE_MIN_K {
        return (1, k);
    }
    let want = ((target + tiles / 2) / tiles).min(k / WAVE_MIN_K).min(WAVE_MAX_BYTES / (n * 4).max(1));
    if want < 2 {
        return (1, k);
    }
    let len = k.div_ceil(want).next_multiple_of(32);
    (k.div_ceil(len), len)
}

/// (slices, k per slice) for a product of `tiles` output tiles, `n` outputs and depth `k`.
fn split(k: u64, tiles: u64, n: u64) -> (u64, u64) {
    if tiles >= SPLIT_BELOW_TILES || k < 2 * SPLIT_MIN_K {
        return (1, k);
    }
    let by_bytes = (SPLIT_MAX_BYTES / (n * 4).max(1)).max(1);
    let want = SPLIT_TARGET_GROUPS.div_ceil(tiles).min(k / SPLIT_MIN_K).min(by_bytes);
    if want < 2 {
        return (1, k);
    }
    let len = k.div_ceil(want).next_multiple_of(32);
    (k.div_ceil(len), len)
}

/// Scratch bytes `encode` takes for this node outside the split-k ring (per-row losses of
/// CROSS_ENTROPY_LOSS, column scales of a tensor-core OUT_PROD).
pub(super) fn scratch_bytes(gpu: &Gpu, op: *const sys::ggml_tensor, align: u64) -> u64 {
    match op_of(op) {
        sys::GGML_OP_CROSS_ENTROPY_LOSS => (rows(src(op, 0)) * 4).next_multiple_of(align.max(256)),
        sys::GGML_OP_OUT_PROD if dx_q8_kernel(gpu, op).is_some() && dxq_prequant(op) => 0,
        sys::GGML_OP_OUT_PROD if dx_q8_kernel(gpu, op).is_some() => {
            (dxq_scales(op) * 4).next_multiple_of(align.max(256))
                + (dxq_block_scales(op) * 4).next_multiple_of(align.max(256))
        }
        sys::GGML_OP_OUT_PROD | sys::GGML_OP_MUL_MAT
            if cm_kernel(gpu, op).is_some() || f16v_kernel(gpu, op).is_some() =>
        {
            (columns(op) * 4).next_multiple_of(align.max(256))
        }
        _ => 0,
    }
}

/// Bytes of partial sums of a split OUT_PROD (or narrow MUL_MAT): a slot of the ring
/// `Recorder::split_scratch` hands out.
pub(super) fn split_scratch_bytes(gpu: &Gpu, op: *const sys::ggml_tensor, align: u64) -> u64 {
    if !matches!(op_of(op), sys::GGML_OP_OUT_PROD | sys::GGML_OP_MUL_MAT) || nelements(op) == 0 {
        return 0;
    }
    match out_prod_split(gpu, op) {
        (1, _) => 0,
        (slices, _) => (slices * nelements(op) * 4).next_multiple_of(align.max(256)),
    }
}

/// TRIT_VULKAN_OUT_PROD_4X4=1: OUT_PROD in its earlier 4 x 4-per-invocation layout (A/B).
fn out_prod_4x4() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRIT_VULKAN_OUT_PROD_4X4").is_ok_and(|v| v == "1"))
}

/// The OUT_PROD kernel over operands `a`, `b` (shapes in `p`) into `op`, `tiles` output
/// tiles, split along k through scratch where `out_prod_split` says so. `scales`: the
/// tensor-core kernels' column scales (binding 3).
#[allow(clippy::too_many_arguments)]
fn record_out_prod(
    rec: &mut Recorder,
    op: *const sys::ggml_tensor,
    name: &str,
    a: Bound,
    b: Bound,
    scales: Option<Bound>,
    tiles: u64,
    mut p: Push,
) -> Result<()> {
    let (slices, len) = out_prod_split(rec.gpu(), op);
    let groups = tiles * slices;
    let with_layout;
    let name = if out_prod_4x4() {
        with_layout = format!("{name}_4x4");
        with_layout.as_str()
    } else {
        name
    };
    p.m0[1] = groups as u32;
    let d = rec.bind(op, 4)?;
    if slices == 1 {
        return rec.dispatch_ex(name, a, Some(b), d, scales, false, p, groups);
    }
    let n = nelements(op);
    p.m1[1] = slices as u32;
    p.m1[2] = len as u32;
    p.m1[3] = n as u32;
    let part = rec.split_scratch(slices * n * 4)?;
    rec.dispatch_ex(name, a, Some(b), part, scales, false, p, groups)?;
    let mut ps = Push::default();
    (ps.d_ne, ps.d_nb) = shape(op, 4);
    ps.m0[1] = n as u32;
    ps.m1[1] = slices as u32;
    ps.m1[3] = n as u32;
    rec.dispatch("split_sum_f32", part, None, d, ps, groups_for(n, 256))
}

/// The power-of-two scale of every column of `b` (shape in `p`) for the tensor-core OUT_PRODs'
/// hi + lo split (col_scale.comp), in scratch that `scratch_bytes` reserved.
fn column_scales(rec: &mut Recorder, op: *const sys::ggml_tensor, b: Bound, p: Push) -> Result<Bound> {
    let cols = columns(op);
    let scales = rec.scratch(cols * 4)?;
    let mut ps = Push::default();
    (ps.b_ne, ps.b_nb) = (p.b_ne, p.b_nb);
    ps.m0[1] = cols as u32;
    rec.dispatch("col_scale_f32", b, Some(b), scales, ps, cols)?;
    Ok(scales)
}

/// The tensor-core OUT_PROD: the column scales of `b`, then the product.
fn record_out_prod_cm(
    rec: &mut Recorder,
    op: *const sys::ggml_tensor,
    name: &str,
    a: Bound,
    b: Bound,
    p: Push,
) -> Result<()> {
    let scales = column_scales(rec, op, b, p)?;
    CM_DISPATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    record_out_prod(rec, op, name, a, b, Some(scales), cm_tiles(op), p)
}

/// The int8 tensor-core input gradient: W's block scales gathered as f32, per column and
/// block column of W the largest |dY * block scale| (both dx_q8_scale.comp), then the product
/// (dx_q8.comp).
fn record_dx_q8(
    rec: &mut Recorder,
    op: *const sys::ggml_tensor,
    name: &str,
    a: Bound,
    b: Bound,
    p: Push,
) -> Result<()> {
    let n = dxq_block_scales(op);
    let items = dxq_scales(op);
    let tq = if ty(src(op, 0)) == TQ2 { "tq2" } else { "tq1" };
    let mut ps = p;
    DXQ_DISPATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if dxq_prequant(op) {
        let parts = DxqParts::of(op);
        let at = rec.dxq_scratch(parts.bytes())?;
        let block_scales = rec.scratch_at(at, parts.block_scales, 4)?;
        let q_at = at + parts.block_scales;
        // one workgroup per chunk of 256 rows and block column
        let groups = n / (ne(src(op, 0))[1] as u64).max(1) * parts.chunks;
        ps.m0[1] = groups as u32;
        rec.dispatch(&format!("dx_q8_dgatherf_{tq}"), a, None, block_scales, ps, groups)?;
        let quant = rec.scratch_at(q_at, parts.quant_bytes(), 4)?;
        ps.m0[1] = items as u32;
        ps.m1[2] = parts.words as u32;
        rec.dispatch("dx_q8_quant", block_scales, Some(b), quant, ps, items)?;
        let scales = rec.scratch_at(q_at, items * 4, 4)?;
        let bq = rec.scratch_at(q_at + parts.words * 4, parts.items * 2 * parts.kw * 4, 16)?;
        if name.starts_with("dx_q8pw_") {
            DXQ_WIDE_DISPATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        return record_out_prod(rec, op, name, a, bq, Some(scales), dxq_tiles(op, name), p);
    }
    let scales = rec.scratch(items * 4)?;
    let block_scales = rec.scratch(n * 4)?;
    ps.m0[1] = n as u32;
    rec.dispatch(&format!("dx_q8_dgather_{tq}"), a, None, block_scales, ps, groups_for(n, 256))?;
    ps.m0[1] = items as u32;
    rec.dispatch("dx_q8_colmax", block_scales, Some(b), scales, ps, items)?;
    record_out_prod(rec, op, name, a, b, Some(scales), out_prod_tiles(op), p)
}

pub(super) fn encode(rec: &mut Recorder, op: *const sys::ggml_tensor) -> Result<()> {
    let (s0, s1, s2) = (src(op, 0), src(op, 1), src(op, 2));
    let mut p = Push::default();
    match op_of(op) {
        sys::GGML_OP_OUT_PROD => {
            let (name, a_el) = match ty(s0) {
                F32 => ("out_prod_f32", 4),
                F16 => ("out_prod_f16", 2),
                TQ2 => ("out_prod_tq2", 1),
                _ => ("out_prod_tq1", 1),
            };
            (p.a_ne, p.a_nb) = shape(s0, a_el);
            (p.b_ne, p.b_nb) = shape(s1, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            let (a, b) = (rec.bind(s0, a_el)?, rec.bind(s1, 4)?);
            if small_k(op) {
                return record_small_k(rec, op, a, b, p);
            }
            if thin(op) {
                THIN_DISPATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return record_out_prod(rec, op, "prod_thin_f32", a, b, None, thin_tiles(op), p);
            }
            if let Some(k) = dx_q8_kernel(rec.gpu(), op) {
                return record_dx_q8(rec, op, &k, a, b, p);
            }
            if let Some(k) = f16v_kernel(rec.gpu(), op) {
                return record_out_prod_f16v(rec, op, k, b, p);
            }
            match cm_kernel(rec.gpu(), op) {
                Some(cm) => record_out_prod_cm(rec, op, cm, a, b, p),
                None => record_out_prod(rec, op, name, a, b, None, out_prod_tiles(op), p),
            }
        }
        sys::GGML_OP_MUL_MAT => {
            // dst[r, c] = sum_k s0[k, r] s1[k, c]: OUT_PROD's A[i0 = r, k] and B[i1 = c, k] are
            // s0 and s1 with their first two strides swapped.
            let swap = |(n, s): ([u32; 4], [u32; 4])| ([n[1], n[0], n[2], n[3]], [s[1], s[0], s[2], s[3]]);
            let a_el = if ty(s0) == F16 { 2 } else { 4 };
            (p.a_ne, p.a_nb) = swap(shape(s0, a_el));
            (p.b_ne, p.b_nb) = swap(shape(s1, 4));
            (p.d_ne, p.d_nb) = shape(op, 4);
            let (a, b) = (rec.bind(s0, a_el)?, rec.bind(s1, 4)?);
            if small_k(op) {
                return record_small_k(rec, op, a, b, p);
            }
            if thin(op) {
                THIN_DISPATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return record_out_prod(rec, op, "prod_thin_f32", a, b, None, thin_tiles(op), p);
            }
            match cm_kernel(rec.gpu(), op) {
                Some(cm) => record_out_prod_cm(rec, op, cm, a, b, p),
                None => record_out_prod(rec, op, "out_prod_f32", a, b, None, out_prod_tiles(op), p),
            }
        }
        sys::GGML_OP_OPT_STEP_ADAMW => {
            let bufs = [
                rec.bind(s0, 4)?,
                rec.bind(s1, 4)?,
                rec.bind(s2, 4)?,
                rec.bind(src(op, 3), 4)?,
                rec.bind(src(op, 4), 4)?,
            ];
            let n = nelements(s0);
            p.m0[1] = n as u32;
            p.m0[2] = bufs[0].elem_off;
            p.m0[3] = bufs[1].elem_off;
            p.m1[0] = bufs[2].elem_off;
            p.m1[1] = bufs[3].elem_off;
            p.m1[2] = bufs[4].elem_off;
            rec.dispatch_n("adamw_f32", &bufs, &[true, false, true, true, false], p, groups_for(n, 256))
        }
        sys::GGML_OP_CROSS_ENTROPY_LOSS => {
            let nr = rows(s0);
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.b_ne, p.b_nb) = shape(s1, 4);
            p.m0[1] = nr as u32;
            let (a, b) = (rec.bind(s0, 4)?, rec.bind(s1, 4)?);
            let per_row = rec.scratch(nr * 4)?;
            rec.dispatch("ce_rows_f32", a, Some(b), per_row, p, nr)?;
            let mut ps = Push::default();
            ps.m0[1] = nr as u32;
            let d = rec.bind(op, 4)?;
            rec.dispatch("ce_sum_f32", per_row, None, d, ps, 1)
        }
        sys::GGML_OP_CROSS_ENTROPY_LOSS_BACK => {
            // Bindings: grad, logits, dst, labels (see kernels/cross_entropy.comp).
            let bufs = [rec.bind(s0, 4)?, rec.bind(s1, 4)?, rec.bind(op, 4)?, rec.bind(s2, 4)?];
            let nr = rows(s1);
            p.a_ne = shape(s1, 4).0;
            p.a_nb = shape(s2, 4).1;
            (p.b_ne, p.b_nb) = shape(s1, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            p.m0[1] = nr as u32;
            p.m0[2] = bufs[0].elem_off;
            p.m0[3] = bufs[1].elem_off;
            p.m1[0] = bufs[2].elem_off;
            p.m1[1] = bufs[3].elem_off;
            rec.dispatch_n("ce_back_f32", &bufs, &[false, false, true, false], p, nr)
        }
        kind @ (sys::GGML_OP_RMS_NORM_BACK | sys::GGML_OP_SOFT_MAX_BACK) => {
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.b_ne, p.b_nb) = shape(s1, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            p.m1[1] = param_u32(op, 0);
            let nr = rows(s0);
            p.m0[1] = nr as u32;
            let name = if kind == sys::GGML_OP_RMS_NORM_BACK { "rms_norm_back_f32" } else { "soft_max_back_f32" };
            let (a, b, d) = (rec.bind(s0, 4)?, rec.bind(s1, 4)?, rec.bind(op, 4)?);
            rec.dispatch(name, a, Some(b), d, p, nr)
        }
        // As ROPE (kernels/rope.comp), rotating by -theta.
        sys::GGML_OP_ROPE_BACK => super::encode_rope(rec, op, "rope_back_f32"),
        sys::GGML_OP_REPEAT_BACK => {
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            let n = nelements(op);
            p.m0[1] = n as u32;
            let (a, d) = (rec.bind(s0, 4)?, rec.bind(op, 4)?);
            rec.dispatch("repeat_back_f32", a, None, d, p, groups_for(n, 256))
        }
        sys::GGML_OP_GET_ROWS_BACK => {
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.b_ne, p.b_nb) = shape(s1, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            let n = nelements(op);
            p.m0[1] = n as u32;
            let (a, b, d) = (rec.bind(s0, 4)?, rec.bind(s1, 4)?, rec.bind(op, 4)?);
            rec.dispatch("get_rows_back_f32", a, Some(b), d, p, groups_for(n, 256))
        }
        sys::GGML_OP_ACC => {
            let d = rec.bind(op, 4)?;
            // SAFETY: live tensors; only their data pointers are compared.
            let in_place = unsafe { (*op).data == (*s0).data };
            if !in_place {
                let mut pc = Push::default();
                (pc.a_ne, pc.a_nb) = shape(s0, 4);
                (pc.d_ne, pc.d_nb) = shape(op, 4);
                pc.m0[1] = nelements(op) as u32;
                let groups = crate::ops::unary_fast(&mut pc, s0, op);
                let a = rec.bind(s0, 4)?;
                rec.dispatch("cpy_f32_f32", a, None, d, pc, groups)?;
            }
            (p.a_ne, p.a_nb) = shape(s1, 4);
            p.m1[1] = param_u32(op, 0) / 4;
            p.m1[2] = param_u32(op, 1) / 4;
            p.b_nb[0] = param_u32(op, 2) / 4;
            p.m1[3] = param_u32(op, 3) / 4;
            let n = nelements(s1);
            p.m0[1] = n as u32;
            let a = rec.bind(s1, 4)?;
            rec.dispatch("acc_add_f32", a, None, d, p, groups_for(n, 256))
        }
        sys::GGML_OP_ARGMAX => {
            (p.a_ne, p.a_nb) = shape(s0, 4);
            let nr = ne(s0)[1] as u64;
            p.m0[1] = nr as u32;
            let (a, d) = (rec.bind(s0, 4)?, rec.bind(op, 4)?);
            rec.dispatch("argmax_f32", a, None, d, p, nr)
        }
        sys::GGML_OP_COUNT_EQUAL => {
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.b_ne, p.b_nb) = shape(s1, 4);
            p.m0[1] = nelements(s0) as u32;
            let (a, b, d) = (rec.bind(s0, 4)?, rec.bind(s1, 4)?, rec.bind(op, 4)?);
            rec.dispatch("count_equal_i32", a, Some(b), d, p, 1)
        }
        _ => {
            // STEP
            let (ea, ed) = (elsize(ty(s0)).unwrap_or(4), elsize(ty(op)).unwrap_or(4));
            (p.a_ne, p.a_nb) = shape(s0, ea);
            (p.d_ne, p.d_nb) = shape(op, ed);
            p.m0[1] = nelements(op) as u32;
            let groups = crate::ops::unary_fast(&mut p, s0, op);
            let (a, d) = (rec.bind(s0, ea)?, rec.bind(op, ed)?);
            rec.dispatch("step_f32", a, None, d, p, groups)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wave_split;

    #[test]
    fn wave_split_fills_rounds() {
        // dX of a 2560-feature input at 512 tokens: 320 tiles.
        assert_eq!(wave_split(2560, 320, 2560 * 512, 1056), (3, 864));
        assert_eq!(wave_split(6912, 320, 2560 * 512, 1320), (4, 1728));
        assert_eq!(wave_split(2560, 320, 2560 * 512, 660), (2, 1280));
        // 864 tiles (6912 features) are near the target already; 1320 halves k.
        assert_eq!(wave_split(2560, 864, 6912 * 512, 1056), (1, 2560));
        assert_eq!(wave_split(2560, 864, 6912 * 512, 1320), (2, 1280));
        // Off, short k, slices of at least 256 rows, the partial-sum cap.
        assert_eq!(wave_split(2560, 320, 2560 * 512, 0), (1, 2560));
        assert_eq!(wave_split(500, 320, 2560 * 512, 1056), (1, 500));
        assert_eq!(wave_split(640, 320, 2560 * 512, 1056), (2, 320));
        assert_eq!(wave_split(1 << 17, 320, 2560 * 512, 4000), (6, 21856));
        // Every slice but the last is `len` long and they cover k.
        for (k, tiles, n, g) in
            [(1100u64, 132u64, 525_000u64, 1056u64), (600, 160, 576_000, 1056), (6912, 500, 1 << 20, 2000)]
        {
            let (s, len) = wave_split(k, tiles, n, g);
            assert!(s >= 2 && len % 32 == 0 && (s - 1) * len < k && s * len >= k, "{k} {tiles}: {s} x {len}");
        }
    }
}
