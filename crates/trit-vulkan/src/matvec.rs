//! The fast MUL_MAT paths. Up to 8 activation columns (decode): ternary weights times int8
//! activations (`mul_mv_tq.comp`, after `quant_q8.comp`) and contiguous f16 weights
//! (`mul_mv_f16.comp`, the LM head and attention), with subgroup shuffles, several rows per
//! workgroup and wide loads. More columns (prompts), ternary weights: integer tiles
//! (`mul_mmq_tq.comp`), on tensor cores where the device has NVIDIA's cooperative matrices
//! (`mul_mmq_tq_cm.comp`, the same tiles). `encode` falls back to the plain kernels in `ops.rs` when the
//! device lacks subgroups (mat-vec) or the operands are not laid out for these kernels.

use std::sync::atomic::Ordering;

use trit_sys as sys;

use crate::dispatch::{locate, starts_aligned, Bound, Push, Recorder};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::{fits_range, nb, ne, nelements, shape, src, ty, F16, TQ1, TQ2};
use crate::switch::Switch;

/// Rows of A per workgroup (WG / LANES in the kernels).
const ROWS_PER_WG: u64 = 4;
/// Rows and columns of the output tile of `mul_mmq_tq.comp` (the big one: 2x the rows).
const MMQ_TILE: u64 = 64;
/// Form of the rounded activations in `Recorder::rounded`: packed int8 + block scales.
pub(crate) const ROUNDED_Q8: u8 = 1;

/// Ternary prompt products recorded with a cooperative-matrix tile kernel (`_cm`, or the
/// tests' `_emu`) so far in this process.
pub(crate) static COOPMAT_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The cooperative-matrix shape (m, n, k; int8 x int8 -> int32) of a `_cm` variant of
/// `mul_mmq_tq_cm.comp` or `dx_q8.comp`: 16 x 8 x 32, or 16 x 16 x 32 for `_n16_cm`. None for
/// other kernels.
fn cm_shape(name: &str) -> Option<(u32, u32, u32)> {
    if !((name.starts_with("mmq") || name.starts_with("dx_q8")) && name.ends_with("_cm")) {
        return None;
    }
    Some(if name.ends_with("_n16_cm") { (16, 16, 32) } else { (16, 8, 32) })
}

/// Whether the int8 kernels may run on 16 x 16 x 32 fragments for real
/// (TRIT_VULKAN_INT8_N16=1; off by default). On the H200 (2026-12-03) a training run with them
/// first gave a different loss at step 1 (12.997 against 12.994) although the integer sums of
/// both shapes are exact, and no test runs that path for real yet (the op tests emulate it),
/// so it is opt-in until one does.
pub(crate) fn int8_n16_opt_in() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRIT_VULKAN_INT8_N16").is_ok_and(|v| v == "1"))
}

/// Below this many 64 x 64 output tiles a ternary product on tensor cores takes 32 x 64 tiles
/// (`mul_mmq_tq_cm.comp` with SMALL): twice the workgroups, so a product such as attention's
/// K and V over a training window (80 tiles) fills more of a large GPU (H200: 45.3 -> 35.3 µs;
/// at 320 tiles, 2560 x 512 from k = 6912, they were slower: 234.3 -> 251.6 µs).
/// TRIT_VULKAN_MMQ_SMALL_BELOW overrides it (0: never), for A/B runs.
/// `set_mmq_small_below` (tests) overrides both.
fn mmq_small_below() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    match MMQ_SMALL_BELOW.load(Ordering::Relaxed) {
        u64::MAX => *N.get_or_init(|| {
            std::env::var("TRIT_VULKAN_MMQ_SMALL_BELOW").ok().and_then(|v| v.parse().ok()).unwrap_or(160)
        }),
        n => n,
    }
}

/// `mmq_small_below`'s override; u64::MAX: none.
pub(crate) static MMQ_SMALL_BELOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);
/// Ternary products recorded with 32 x 64 tiles so far in this process (tests).
pub(crate) static MMQ_SMALL_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The int8 cooperative-matrix variant of tile kernel `base` (`mul_mmq_tq_cm.comp`,
/// `dx_q8.comp`): under `set_coopmat_emulation` `{base}_emu` / `{base}_n16_emu`; otherwise
/// `{base}_cm` (16 x 8 x 32) where the device lists that shape and its pipeline was built (only
/// with subgroups of 32: `cm_variant_usable`), or, with `int8_n16_opt_in`, `{base}_n16_cm`
/// (16 x 16 x 32) first. None: none applies.
pub(crate) fn int8_cm_variant(gpu: &Gpu, base: &str) -> Option<String> {
    use ash::vk::ComponentTypeNV as C;
    let emu = gpu.limits.coopmat_emu.load(Ordering::Relaxed);
    let name = if emu != 0 {
        format!("{base}{}_emu", if emu == 16 { "_n16" } else { "" })
    } else if gpu.coopmat() {
        let order: &[(&str, u32)] = if int8_n16_opt_in() { &[("_n16_cm", 16), ("_cm", 8)] } else { &[("_cm", 8)] };
        order
            .iter()
            .filter(|&&(_, n)| gpu.has_coopmat_shape(16, n, 32, C::SINT8, C::SINT32))
            .map(|(suffix, _)| format!("{base}{suffix}"))
            .find(|k| gpu.has_pipeline(k))?
    } else {
        return None;
    };
    gpu.has_pipeline(&name).then_some(name)
}

/// The tensor-core kernel for an f16-weight product of more than 8 columns
/// (`mul_mm_f16_cm.comp`, 128 x 64 tiles): `mmt_f16_cm` where the device has f16 16 x 16 x 16
/// cooperative matrices into f32 and subgroups of 32, `mmt_f16_emu` under
/// `set_coopmat_emulation`; None: the FMA kernel (`mmt_f16`, 64 x 64 tiles; also with
/// TRIT_VULKAN_MMT_F16_CM=0, for A/B runs).
pub(crate) fn f16_cm_kernel(gpu: &Gpu) -> Option<&'static str> {
    use ash::vk::ComponentTypeNV as C;
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("TRIT_VULKAN_MMT_F16_CM").is_ok_and(|v| v == "0"));
    let name = if gpu.limits.coopmat_emu.load(Ordering::Relaxed) != 0 {
        "mmt_f16_emu"
    } else if !off
        && gpu.coopmat()
        && gpu.subgroup_size == 32
        && gpu.has_coopmat_shape(16, 16, 16, C::FLOAT16, C::FLOAT32)
    {
        "mmt_f16_cm"
    } else {
        return None;
    };
    let ok = gpu.has_pipeline(name);
    if ok {
        COOPMAT_DISPATCHES.fetch_add(1, Ordering::Relaxed);
    }
    ok.then_some(name)
}

/// f16 products recorded with `mul_mm_f16_cmv.comp` so far in this process (tests).
pub(crate) static F16_VECTOR_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether the f16 tensor-core kernels for aligned operands (`mul_mm_f16_cmv.comp`,
/// `out_prod_f16_cmv.comp`) may run: unless TRIT_VULKAN_F16_CMV=0 (A/B runs).
pub(crate) fn f16_cmv_on() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !*OFF.get_or_init(|| std::env::var("TRIT_VULKAN_F16_CMV").is_ok_and(|v| v == "0"))
}

/// The 128 x 128 form of an f16 tensor-core kernel (`mul_mm_f16_cmv.comp`, for aligned
/// operands contiguous along k), unless TRIT_VULKAN_F16_CMV=0 (A/B runs).
pub(crate) fn f16_cmv_kernel(kernel: &str) -> Option<&'static str> {
    if !f16_cmv_on() {
        return None;
    }
    match kernel {
        "mmt_f16_cm" => Some("mmtv_f16_cm"),
        "mmt_f16_emu" => Some("mmtv_f16_emu"),
        _ => None,
    }
}

/// Whether a kernel variant can be built where the device lists these cooperative-matrix
/// shapes and has this subgroup size: the `_cm` tile kernels need their shape listed and
/// subgroups of 32 (their layout of subgroups over the tile); other kernels are not judged
/// here.
pub(crate) fn cm_variant_usable(name: &str, shapes: &[crate::gpu::CoopMatShape], subgroup_size: u32) -> bool {
    use ash::vk::ComponentTypeNV as C;
    cm_shape(name)
        .is_none_or(|(m, n, k)| subgroup_size == 32 && crate::gpu::lists_shape(shapes, m, n, k, C::SINT8, C::SINT32))
}

/// Record `op` (a MUL_MAT) with a mat-vec kernel if one applies; Ok(false) if not.
pub(crate) fn encode(rec: &mut Recorder, op: *const sys::ggml_tensor) -> Result<bool> {
    encode_scaled(rec, op, None)
}

/// As `encode`; with `scaled` = (mul, s) the product is multiplied by the one-element tensor
/// `s` and stored as `mul` (the MUL node that consumed it). Nothing is recorded when the
/// mat-vec path does not apply (Ok(false)).
pub(crate) fn encode_scaled(
    rec: &mut Recorder,
    op: *const sys::ggml_tensor,
    scaled: Option<(*const sys::ggml_tensor, *const sys::ggml_tensor)>,
) -> Result<bool> {
    encode_fused(rec, op, scaled, None)
}

/// As `encode_scaled`; with `residual` = (add, r) the scaled product plus `r` (same shape and
/// strides as `add`) is stored as `add` (an ADD that consumed the scaled product).
pub(crate) fn encode_fused(
    rec: &mut Recorder,
    op: *const sys::ggml_tensor,
    scaled: Option<(*const sys::ggml_tensor, *const sys::ggml_tensor)>,
    residual: Option<(*const sys::ggml_tensor, *const sys::ggml_tensor)>,
) -> Result<bool> {
    encode_to(rec, op, scaled, residual, None)
}

/// As `encode_fused`; with `to` = (t, strides) the product is stored in `t`'s memory with
/// these element strides per product dimension (a PERMUTE then CONT folded into the store).
pub(crate) fn encode_to(
    rec: &mut Recorder,
    op: *const sys::ggml_tensor,
    scaled: Option<(*const sys::ggml_tensor, *const sys::ggml_tensor)>,
    residual: Option<(*const sys::ggml_tensor, *const sys::ggml_tensor)>,
    to: Option<(*const sys::ggml_tensor, [u32; 4])>,
) -> Result<bool> {
    let gpu = rec.gpu().clone();
    if !gpu.limits.fast_mv.load(Ordering::Relaxed) {
        return Ok(false);
    }
    let (s0, s1) = (crate::ops::src(op, 0), crate::ops::src(op, 1));
    let cols = ne(s1)[1] as u64;
    if !fits_range(&gpu, s0) {
        return Ok(false);
    }
    let nc = if cols == 1 { 1 } else { 8 };
    let dot = if gpu.has_int_dot && gpu.limits.int_dot.load(Ordering::Relaxed) { "_dot" } else { "" };
    if to.is_none() && matches!(ty(s0), TQ1 | TQ2) {
        if let Some(d) = rec.deferred.iter().find(|d| d.out == s1).copied() {
            if encode_norm(rec, op, scaled, residual, &d, dot)? {
                return Ok(true);
            }
        }
    }
    let wide = cols > 8;
    // 128 x 64 tiles (mul_mmq_tq_big.comp) only on request (TRIT_VULKAN_MMQ_BIG=1): on an H100
    // they measured slower than 64 x 64 (pp512 5446 vs 7128 t/s, TQ2_0).
    let big =
        if wide && gpu.limits.mmq_big.load(Ordering::Relaxed) && ne(s0)[1] >= 2048 && cols >= 64 { "b" } else { "" };
    // TRIT_VULKAN_MV_U1=1: mat-vecs with one load in flight per lane (for comparison).
    static U1: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let res = if residual.is_some() { "_res" } else { "" };
    if residual.is_some() && (scaled.is_none() || (!wide && nc != 1)) {
        return Ok(false);
    }
    let u1 = if nc == 1
        && residual.is_none()
        && *U1.get_or_init(|| std::env::var_os("TRIT_VULKAN_MV_U1").is_some_and(|v| v == "1"))
    {
        "_u1"
    } else {
        ""
    };
    let mut kernel = match (ty(s0), wide) {
        (TQ2, false) => format!("mv_tq2_{nc}{u1}{res}{dot}"),
        (TQ1, false) => format!("mv_tq1_{nc}{u1}{res}{dot}"),
        (F16, false) if residual.is_none() && f16_layout_ok(s0, s1) => format!("mv_f16_{nc}"),
        (TQ2, true) => format!("mmq{big}_tq2{res}{dot}"),
        (TQ1, true) => format!("mmq{big}_tq1{res}{dot}"),
        _ => return Ok(false),
    };
    let [_, rows, _, _] = ne(s0);
    let [_, _, b2, b3] = ne(s1);
    let batches = b2 as u64 * b3 as u64;
    let mut small = false;
    if wide {
        // Tensor cores where the device has them (same tiles, so the same workgroup count),
        // in 32-row tiles where 64-row ones would be few.
        let t = if ty(s0) == TQ2 { "tq2" } else { "tq1" };
        let tiles = (rows as u64).div_ceil(MMQ_TILE) * cols.div_ceil(MMQ_TILE) * batches;
        let small_kernel = if big.is_empty() && tiles < mmq_small_below() {
            int8_cm_variant(&gpu, &format!("mmqs_{t}{res}"))
        } else {
            None
        };
        if let Some(k) = small_kernel.or_else(|| int8_cm_variant(&gpu, &format!("mmq{big}_{t}{res}"))) {
            small = k.starts_with("mmqs_");
            if small {
                MMQ_SMALL_DISPATCHES.fetch_add(1, Ordering::Relaxed);
            }
            kernel = k;
            COOPMAT_DISPATCHES.fetch_add(1, Ordering::Relaxed);
        }
    }
    if !gpu.has_pipeline(&kernel) {
        return Ok(false);
    }
    let groups = if wide && !big.is_empty() {
        (rows as u64).div_ceil(2 * MMQ_TILE) * cols.div_ceil(MMQ_TILE) * batches
    } else if wide && small {
        (rows as u64).div_ceil(MMQ_TILE / 2) * cols.div_ceil(MMQ_TILE) * batches
    } else if wide {
        (rows as u64).div_ceil(MMQ_TILE) * cols.div_ceil(MMQ_TILE) * batches
    } else {
        (rows as u64).div_ceil(ROWS_PER_WG) * cols.div_ceil(nc) * batches
    };
    let mut p = Push::default();
    let out = residual.map_or(scaled.map_or(op, |(mul, _)| mul), |(add, _)| add);
    let fifth = match residual {
        Some((_, r)) => Some(rec.bind(r, 4)?),
        None => None,
    };
    (_, p.d_nb) = shape(out, 4);
    let out = match to {
        Some((t, strides)) => {
            p.d_nb = strides;
            t
        }
        None => out,
    };
    let extra = match scaled {
        Some((_, s)) => {
            let sb = rec.bind(s, 4)?;
            p.d_ne = [1, sb.elem_off, fifth.map_or(0, |f| f.elem_off), 0];
            Some(sb)
        }
        None => None,
    };
    p.m0[1] = groups as u32;
    if ty(s0) == F16 {
        // 16-byte units: the kernel reads A as uvec4 (8 halves) and B as vec4.
        let (a, b) = (rec.bind_vec(s0, 16)?, rec.bind_vec(s1, 16)?);
        (p.a_ne, p.a_nb) = shape(s0, 16);
        (p.b_ne, p.b_nb) = shape(s1, 16);
        let d = rec.bind(out, 4)?;
        rec.dispatch_ex(&kernel, a, Some(b), d, extra, false, p, groups)?;
        return Ok(true);
    }
    let nel = nelements(s1);
    let q = rounded_q8(rec, s1)?;
    (p.a_ne, p.a_nb) = shape(s0, 1);
    p.b_ne = ne(s1).map(|x| x as u32);
    p.m1[1] = (nel / 4) as u32;
    let a = rec.bind(s0, 1)?;
    let d = rec.bind(out, 4)?;
    match fifth {
        Some(f) => rec.dispatch5(&kernel, a, Some(q), d, extra, false, f, p, groups)?,
        None => rec.dispatch_ex(&kernel, a, Some(q), d, extra, false, p, groups)?,
    }
    Ok(true)
}

/// The int8 activations (+ block scales) of `s1` for ternary products: quantized once per
/// graph and source tensor (`quant_q8.comp`) unless a fused norm already wrote them.
fn rounded_q8(rec: &mut Recorder, s1: *const sys::ggml_tensor) -> Result<Bound> {
    crate::fuse::materialize(rec, s1)?;
    if let Some(&(_, _, q)) = rec.rounded.iter().find(|(t, form, _)| *t == s1 && *form == ROUNDED_Q8) {
        return Ok(q);
    }
    let nel = nelements(s1);
    let src_b = rec.bind(s1, 4)?;
    let q = rec.rounded_scratch(s1, ROUNDED_Q8, nel + nel / 256 * 4)?;
    let mut pq = Push::default();
    (pq.a_ne, pq.a_nb) = shape(s1, 4);
    let blocks = nel / 256;
    pq.m0[1] = blocks as u32;
    pq.m1[1] = (nel / 4) as u32;
    rec.dispatch("quant_q8", src_b, None, q, pq, blocks)?;
    rec.rounded.push((s1, ROUNDED_Q8, q));
    Ok(q)
}

/// A product and the MUL by its one-element scale that consumes it.
pub(crate) type Scaled = (*const sys::ggml_tensor, *const sys::ggml_tensor);

/// The kernel that computes these 2 or 3 scaled products of one activation column in one
/// dispatch (`MULTI` in mul_mv_tq.comp), if they qualify: ternary weights of one type, K
/// and row size, 2-D; one f32 activation column shared by all; contiguous f32 results; the
/// weights, the results and the scales each in one buffer, spans within the binding range.
/// With `rope` (the first product's ROPE, `fuse::rope_of_first`), the first result goes to
/// the ROPE's memory (contiguous, as many elements).
pub(crate) fn multi_kernel(gpu: &Gpu, group: &[Scaled], rope: Option<*const sys::ggml_tensor>) -> Option<String> {
    if !(2..=3).contains(&group.len()) || !gpu.fast_kernels() {
        return None;
    }
    let (mm0, _) = group[0];
    let (a0, x) = (src(mm0, 0), src(mm0, 1));
    let k = ne(a0)[0];
    let same_alloc = |ts: &mut dyn Iterator<Item = *const sys::ggml_tensor>| -> Option<u64> {
        let mut buf = None;
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for t in ts {
            let (alloc, off) = locate(t).ok()?;
            if buf.is_some_and(|b| b != alloc.buffer) {
                return None;
            }
            buf = Some(alloc.buffer);
            lo = lo.min(off);
            hi = hi.max(off + crate::dispatch::span(t));
        }
        Some(hi - lo)
    };
    let ok = group.iter().all(|&(mm, mul)| {
        let (a, s) = (src(mm, 0), src(mul, 1));
        src(mm, 1) == x
            && ty(a) == ty(a0)
            && matches!(ty(a), TQ1 | TQ2)
            && ne(a)[0] == k
            && ne(a)[2..] == [1, 1]
            && nb(a)[1] == nb(a0)[1]
            && ne(mul) == [ne(a)[1], 1, 1, 1]
            && ty(mul) == crate::ops::F32
            && nb(mul)[0] == 4
            && ty(s) == crate::ops::F32
            && nelements(s) == 1
    }) && ne(x) == [k, 1, 1, 1]
        && ty(x) == crate::ops::F32
        && k % 256 == 0;
    if !ok {
        return None;
    }
    let limit = gpu.max_range() - gpu.min_storage_align - 4;
    let spans = [
        same_alloc(&mut group.iter().map(|g| src(g.0, 0))),
        same_alloc(&mut multi_outs(group, rope).into_iter()),
        same_alloc(&mut group.iter().map(|g| src(g.1, 1))),
    ];
    // SAFETY: rope is a live tensor.
    if rope.is_some_and(|r| {
        ty(r) != crate::ops::F32 || nelements(r) as i64 != ne(group[0].1)[0] || !unsafe { sys::ggml_is_contiguous(r) }
    }) {
        return None;
    }
    if spans.iter().any(|s| s.is_none_or(|s| s > limit)) {
        return None;
    }
    let rows: i64 = group.iter().map(|g| ne(g.1)[0]).sum();
    if rows as u64 >= u32::MAX as u64 / 2 {
        return None;
    }
    let t = if ty(a0) == TQ2 { "tq2" } else { "tq1" };
    let dot = if gpu.has_int_dot && gpu.limits.int_dot.load(Ordering::Relaxed) { "_dot" } else { "" };
    let kernel = format!("mv_{t}_1_multi{dot}");
    gpu.has_pipeline(&kernel).then_some(kernel)
}

/// Bind the memory from the first to the end of the last of `ts` (one allocation, checked by
/// `multi_kernel`) and give each tensor's element offset in that binding.
fn bind_span(rec: &Recorder, ts: &[*const sys::ggml_tensor], elsize: u64) -> Result<(Bound, [u32; 4])> {
    let located = ts.iter().map(|&t| locate(t)).collect::<Result<Vec<_>>>()?;
    let lo = located.iter().map(|l| l.1).min().unwrap_or(0);
    let hi = ts.iter().zip(&located).map(|(&t, l)| l.1 + crate::dispatch::span(t)).max().unwrap_or(lo);
    let b = rec.bind_bytes(located[0].0, lo, hi - lo, elsize)?;
    let mut offs = [0u32; 4];
    for (o, l) in offs.iter_mut().zip(&located) {
        *o = b.elem_off + ((l.1 - lo) / elsize) as u32;
    }
    Ok((b, offs))
}

/// Whether `ts` lie in one allocation within one binding's range (the f32 operands a
/// `NORM` mat-vec reads through one binding), with every offset a multiple of 4 bytes.
fn one_span(gpu: &Gpu, ts: &[*const sys::ggml_tensor]) -> bool {
    let Ok(located) = ts.iter().map(|&t| locate(t)).collect::<Result<Vec<_>>>() else { return false };
    let lo = located.iter().map(|l| l.1).min().unwrap_or(0);
    let hi = ts.iter().zip(&located).map(|(&t, l)| l.1 + crate::dispatch::span(t)).max().unwrap_or(lo);
    located.iter().all(|l| l.0.buffer == located[0].0.buffer && l.1 % 4 == 0)
        && hi - lo <= gpu.max_range() - gpu.min_storage_align - 4
}

/// Rows of A per workgroup of the `NORM` mat-vecs (WG / LANES there).
pub(crate) const NORM_ROWS_PER_WG: u64 = 16;

/// Rows of A per workgroup of the wide `NORM` mat-vecs (`_w`: 1024 invocations).
pub(crate) const WIDE_ROWS_PER_WG: u64 = 32;

/// Workgroups a `NORM` mat-vec launches at most (each computes the norm once, then takes row
/// groups in turn): TRIT_VULKAN_NORM_GROUPS (0: one per row group), default 132 wide ones or
/// 264 of 512 invocations (one or two per streaming multiprocessor of an H200 or H100, the
/// best of 66 / 132 / 264 / one per row group measured there; a device with fewer runs them
/// in waves).
fn norm_groups(row_groups: u64, wide: bool) -> u64 {
    static CAP: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let cap = CAP.get_or_init(|| std::env::var("TRIT_VULKAN_NORM_GROUPS").ok().and_then(|v| v.parse().ok()));
    match cap.unwrap_or(if wide { 132 } else { 264 }) {
        0 => row_groups,
        cap => row_groups.min(cap),
    }
}

/// Whether the wide `NORM` variants are used where the device has them (on unless
/// TRIT_VULKAN_NORM_WIDE=0; `set_wide_norm_mat_vecs`).
pub(crate) static NORM_WIDE: Switch = Switch::new();

pub(crate) fn norm_wide() -> bool {
    NORM_WIDE.get(|| std::env::var("TRIT_VULKAN_NORM_WIDE").map_or(true, |v| v != "0"))
}

/// Whether decode mat-vecs have their weights pulled into L2 beside the stage before them
/// (`prefetch_weights`). On for discrete GPUs unless TRIT_VULKAN_L2_PREFETCH=0 (a CPU's or an
/// integrated GPU's Vulkan would only read the weights twice): +2-5% decode on an H100 (README,
/// decode round 20).
pub(crate) static L2_PREFETCH: Switch = Switch::new();

fn l2_prefetch(gpu: &Gpu) -> bool {
    L2_PREFETCH.get(|| std::env::var("TRIT_VULKAN_L2_PREFETCH").map_or(true, |v| v != "0") && gpu.is_discrete())
}

/// `l2_prefetch` dispatches recorded so far in this process (tests).
pub(crate) static PREFETCH_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Pull the weights of the decode mat-vec about to be recorded (up to three tensors) into the
/// GPU's L2 cache (`l2_prefetch.comp`), where that is on. Recorded before the mat-vec's own
/// dispatch, so before the barrier that waits for its input: the prefetch reads only weights
/// (which nothing writes) and writes nothing, so the hazard check adds no barrier for it and
/// it runs beside the stage before, taking the weights' trip from memory off the chain of
/// dependent stages. `dst` (the mat-vec's output) is bound only as the store the kernel never
/// makes.
fn prefetch_weights(rec: &mut Recorder, weights: &[*const sys::ggml_tensor], dst: Bound) -> Result<()> {
    let gpu = rec.gpu().clone();
    if weights.is_empty() || weights.len() > 3 || !l2_prefetch(&gpu) || !gpu.has_pipeline("l2_prefetch") {
        return Ok(());
    }
    // One binding of 32-bit words (one_span: one buffer, 4-byte offsets, within range).
    if !one_span(&gpu, weights) {
        return Ok(());
    }
    let (a, offs) = bind_span(rec, weights, 4)?;
    let mut p = Push::default();
    let mut sectors = 0u64;
    for (i, &t) in weights.iter().enumerate() {
        let n = (crate::dispatch::span(t) / 4).div_ceil(8);
        p.a_ne[i] = n as u32;
        p.a_nb[i] = offs[i];
        sectors += n;
    }
    p.m1 = [dst.elem_off, 0, 0, 0];
    // 256 invocations of 8 sectors each a workgroup (l2_prefetch.comp's WG and PF).
    let groups = sectors.div_ceil(256 * 8);
    // The hazard check sees each tensor's own bytes, not the span between them.
    let reads = weights.iter().map(|&t| rec.bind(t, 4)).collect::<Result<Vec<_>>>()?;
    rec.dispatch_n_precise("l2_prefetch", &[a, a, dst], (reads, Vec::new()), p, groups)?;
    PREFETCH_DISPATCHES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// `NORM` mat-vecs recorded as their wide variant so far in this process (tests).
pub(crate) static WIDE_NORM_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The variant of `NORM` kernel `name` to record, and its rows per workgroup: the wide one
/// where the device has it and wide ones are on, unless the first product is rotated in the
/// kernel (`rope_dims`) with heads that are not a multiple of its rows.
fn norm_variant(gpu: &Gpu, name: String, rope_dims: Option<u32>) -> (String, u64) {
    let wide = format!("{name}_w");
    if norm_wide() && gpu.has_pipeline(&wide) && rope_dims.is_none_or(|n| n as u64 % WIDE_ROWS_PER_WG == 0) {
        (wide, WIDE_ROWS_PER_WG)
    } else {
        (name, NORM_ROWS_PER_WG)
    }
}

/// Which wide `NORM` mat-vecs a lane count is chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormLanes {
    /// Several products of one input without rope (gate and up).
    Multi = 0,
    /// Q, K, V with Q's (and K's) rotation in the kernel.
    Rope = 1,
    /// One product (the output and down projections).
    One = 2,
}

/// Lanes per row of the wide `NORM` mat-vecs, per `NormLanes` class: 8 by default for gate
/// and up (the `_w8` variants: 128 rows per workgroup, so 2B-4T's 13824 gate/up rows take one
/// round of 108 workgroups; H200, decode round 12: TQ2_0 tg128 482-486 against 434 t/s with
/// 32), 32 (the `_w` variants) for the others; TRIT_VULKAN_NORM_LANES, _QKV and _ONE (or
/// `set_norm_lanes`) choose 8, 16 or 32. 0: not decided yet.
pub(crate) static LANES: [std::sync::atomic::AtomicU32; 3] =
    [std::sync::atomic::AtomicU32::new(0), std::sync::atomic::AtomicU32::new(0), std::sync::atomic::AtomicU32::new(0)];

/// The variable and the default of each `NormLanes` class.
pub(crate) const LANES_ENV: [(&str, u32); 3] =
    [("TRIT_VULKAN_NORM_LANES", 8), ("TRIT_VULKAN_NORM_LANES_QKV", 32), ("TRIT_VULKAN_NORM_LANES_ONE", 32)];

/// 8, 16 or 32 (anything else).
pub(crate) fn valid_lanes(lanes: u32) -> u32 {
    if [8, 16].contains(&lanes) {
        lanes
    } else {
        32
    }
}

fn lanes_of(class: NormLanes) -> u32 {
    let slot = &LANES[class as usize];
    match slot.load(Ordering::Relaxed) {
        0 => {
            let (var, default) = LANES_ENV[class as usize];
            let v = valid_lanes(std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default));
            slot.store(v, Ordering::Relaxed);
            v
        }
        v => v,
    }
}

/// The wide `kernel` (`rows_per_wg` rows per workgroup) with fewer lanes per row where
/// `class`'s lane count asks for them, the device has the variant and, with rope in the
/// kernel, its rows per workgroup divide the head size `rope_dims`.
fn fewer_lanes(gpu: &Gpu, kernel: String, rows_per_wg: u64, class: NormLanes, rope_dims: Option<u32>) -> (String, u64) {
    let lanes = lanes_of(class);
    let rows = WIDE_ROWS_PER_WG * 32 / lanes as u64;
    let narrow = format!("{kernel}{lanes}");
    if rows_per_wg == WIDE_ROWS_PER_WG
        && lanes < 32
        && rope_dims.is_none_or(|n| n as u64 % rows == 0)
        && gpu.has_pipeline(&narrow)
    {
        (narrow, rows)
    } else {
        (kernel, rows_per_wg)
    }
}

/// Wide `NORM` dispatches recorded with fewer lanes per row (`_w16`, `_w8`) so far (tests).
pub(crate) static NARROW_NORM_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Name suffixes of the wide `NORM` variants (build.rs): 32 lanes per row, then 16 and 8.
pub(crate) const WIDE_SUFFIXES: [&str; 3] = ["_w", "_w16", "_w8"];

/// Whether kernel variant `name` (build.rs) is a ternary mat-vec with the norm of its input
/// computed in the kernel (`NORM` in mul_mv_tq.comp).
pub(crate) fn is_norm_mat_vec(name: &str) -> bool {
    name.starts_with("mv_tq") && name.contains("_norm")
}

/// Count a recorded `NORM` dispatch of `kernel` (tests).
fn count_norm_dispatch(kernel: &str) {
    NORM_DISPATCHES.fetch_add(1, Ordering::Relaxed);
    if WIDE_SUFFIXES[1..].iter().any(|w| kernel.ends_with(w)) {
        NARROW_NORM_DISPATCHES.fetch_add(1, Ordering::Relaxed);
    }
    if WIDE_SUFFIXES.iter().any(|w| kernel.ends_with(w)) {
        WIDE_NORM_DISPATCHES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Mat-vecs recorded with the norm of their input computed in the kernel (`NORM`) so far in
/// this process (tests).
pub(crate) static NORM_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The `NORM` variant of mat-vec kernel `base` (`mv_tq2_1`, `mv_tq1_1_res`, ...) for norm
/// `d`, if the device has it: `{base}_norm[r]{dot}`.
fn norm_kernel(gpu: &Gpu, base: &str, d: &crate::fuse::Deferred, dot: &str) -> Option<String> {
    let k = format!("{base}_norm{}{dot}", if d.pre.is_some() { "r" } else { "" });
    gpu.has_pipeline(&k).then_some(k)
}

/// Record the one-column ternary product `op` (scaled, plus a residual, as `encode_fused`)
/// reading the deferred norm `d` with the norm computed in the kernel. Ok(false): it does not
/// apply (nothing recorded; the norm is then recorded on its own).
fn encode_norm(
    rec: &mut Recorder,
    op: *const sys::ggml_tensor,
    scaled: Option<(*const sys::ggml_tensor, *const sys::ggml_tensor)>,
    residual: Option<(*const sys::ggml_tensor, *const sys::ggml_tensor)>,
    d: &crate::fuse::Deferred,
    dot: &str,
) -> Result<bool> {
    let gpu = rec.gpu().clone();
    let (s0, s1) = (src(op, 0), src(op, 1));
    let (x, x2, w) = d.operands();
    let [k, rows, a2, a3] = ne(s0);
    let Some((mul, scale)) = scaled else { return Ok(false) };
    let t = if ty(s0) == TQ2 { "tq2" } else { "tq1" };
    let base = format!("mv_{t}_1{}", if residual.is_some() { "_res" } else { "" });
    let Some(kernel) = norm_kernel(&gpu, &base, d, dot) else { return Ok(false) };
    let out = residual.map_or(mul, |(add, _)| add);
    let acts: Vec<_> = std::iter::once(x).chain(x2).chain(residual.map(|r| r.1)).collect();
    let consts = [scale, w];
    if ne(s1) != [k, 1, 1, 1]
        || [a2, a3] != [1, 1]
        || !fits_range(&gpu, s0)
        || !one_span(&gpu, &acts)
        || !one_span(&gpu, &consts)
    {
        return Ok(false);
    }
    let (act, act_offs) = bind_span(rec, &acts, 4)?;
    let (cw, cw_offs) = bind_span(rec, &consts, 4)?;
    let a = rec.bind(s0, 1)?;
    let dst = rec.bind(out, 4)?;
    let (kernel, rows_per_wg) = norm_variant(&gpu, kernel, None);
    let (kernel, rows_per_wg) = fewer_lanes(&gpu, kernel, rows_per_wg, NormLanes::One, None);
    let groups = (rows as u64).div_ceil(rows_per_wg);
    let mut p = Push::default();
    (p.a_ne, p.a_nb) = shape(s0, 1);
    p.b_ne = [k as u32, 1, 1, 1];
    p.b_nb = [cw_offs[1], x2.map_or(0, |_| act_offs[1]), 0, 0];
    (_, p.d_nb) = shape(out, 4);
    p.d_ne = [1, cw_offs[0], residual.map_or(0, |_| act_offs[acts.len() - 1]), 0];
    let launched = norm_groups(groups, rows_per_wg >= WIDE_ROWS_PER_WG);
    p.m0 = [0, groups as u32, a.elem_off, act_offs[0]];
    p.m1 = [dst.elem_off, crate::ops::param_u32(d.norm, 0), launched as u32, 0];
    let mut reads = vec![a];
    for &t in acts.iter().chain(&consts) {
        reads.push(rec.bind(t, 4)?);
    }
    prefetch_weights(rec, &[s0], dst)?;
    rec.dispatch_n_precise(&kernel, &[a, act, dst, cw], (reads, vec![dst]), p, launched)?;
    count_norm_dispatch(&kernel);
    Ok(true)
}

/// Where the results of a multi-product group go: each product's scale MUL, the first's ROPE
/// instead where it is folded in.
fn multi_outs(group: &[Scaled], rope: Option<*const sys::ggml_tensor>) -> Vec<*const sys::ggml_tensor> {
    let mut outs: Vec<_> = group.iter().map(|g| g.1).collect();
    if let Some(r) = rope {
        outs[0] = r;
    }
    outs
}

/// The KV-cache writes a Q, V, K group folds in (`fuse::kv_writes`): K's ROPE, K's SET_ROWS
/// (through the ROPE's reshape to rows) and V's SET_ROWS.
#[derive(Clone, Copy)]
pub(crate) struct KvWrites {
    pub k_rope: *const sys::ggml_tensor,
    pub k_rows: *const sys::ggml_tensor,
    pub v_rows: *const sys::ggml_tensor,
}

/// A decode attention (`fuse`'s attention unit: KQ MUL_MAT, SOFT_MAX, KQV MUL_MAT, and the
/// tensor the result goes to with its element strides for (dim, token, head)) that the QKV
/// dispatch before it may compute itself (`ATTN` in mul_mv_tq.comp, attn_tail.glsl).
#[derive(Clone, Copy)]
pub(crate) struct AttnTail {
    pub kq: *const sys::ggml_tensor,
    pub sm: *const sys::ggml_tensor,
    pub kqv: *const sys::ggml_tensor,
    pub out: *const sys::ggml_tensor,
    pub strides: [u32; 3],
}

/// Whether QKV dispatches may compute the token's attention (`ATTN`): off by default, as it
/// measured slower than the attention's own dispatch on an H100 (README, decode round 21);
/// TRIT_VULKAN_ATTN_IN_QKV=1 or `set_attn_in_qkv` turn it on.
pub(crate) static ATTN_IN_QKV: Switch = Switch::new();

fn attn_in_qkv() -> bool {
    ATTN_IN_QKV.get(|| std::env::var("TRIT_VULKAN_ATTN_IN_QKV").is_ok_and(|v| v == "1"))
}

/// Attentions computed by QKV dispatches so far in this process (tests).
pub(crate) static ATTN_IN_MULTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The push words and operands of `t` for a QKV dispatch (`kernel`, `rows_per_wg` rows a
/// workgroup) whose Q is `rope`'s result and whose caches are `c`'s: None where attn_tail.glsl
/// does not take it (the host half of the checks it lists).
fn attn_tail_args(
    gpu: &Gpu,
    kernel: &str,
    rows_per_wg: u64,
    rope: *const sys::ggml_tensor,
    c: &KvWrites,
    t: &AttnTail,
) -> Option<[u32; 3]> {
    let (k, q, v, mask) = (src(t.kq, 0), src(t.kq, 1), src(t.kqv, 0), src(t.sm, 1));
    let [d, n_kv, hkv, _] = ne(k);
    let [_, tokens, h, _] = ne(q);
    let g = h / hkv.max(1);
    let wg = if WIDE_SUFFIXES.iter().any(|w| kernel.ends_with(w)) { 1024 } else { 512 };
    let hi = wg / g.max(1);
    let same_data = |a: *const sys::ggml_tensor, b: *const sys::ggml_tensor| {
        // SAFETY: live tensors of the graph being recorded.
        unsafe { !(*a).data.is_null() && (*a).data == (*b).data && (*a).buffer == (*b).buffer }
    };
    let transposed = ne(src(c.v_rows, 0))[0] == 1;
    let v_stride = nb(v)[1] / 2;
    let k_cell = nb(c.k_rows)[1] / 2;
    let shape_ok = tokens == 1
        && d == crate::ops::param_u32(rope, 1) as i64
        && d % 8 == 0
        && d <= 128
        && d as u64 % rows_per_wg == 0
        && n_kv % 8 == 0
        && g >= 1
        && h % hkv == 0
        && g * n_kv <= 2048
        && g * d <= 512
        && g <= 8
        && wg % g == 0
        && wg % (4 * d) == 0
        && (wg / (4 * d) - 1) * g * d <= 2048
        && hi % gpu.subgroup_size as i64 == 0
        && hkv <= crate::attn::SPLIT_COUNTER_BYTES as i64 / 4;
    // Q as the dispatch stores it (heads of d contiguous values), K and V the caches it
    // writes, read from their first cell, 16-byte aligned; one token's mask row; the result
    // heads of d contiguous values.
    let q_ok = same_data(q, rope) && nb(q)[0] == 4 && nb(q)[2] == 4 * d as usize;
    let k_ok = same_data(k, c.k_rows) && nb(k)[1] == nb(c.k_rows)[1] && nb(k)[2] == 2 * d as usize && k_cell % 8 == 0;
    let v_ok =
        transposed && same_data(v, c.v_rows) && nb(v)[0] == 2 && nb(v)[2] == d as usize * nb(v)[1] && v_stride % 8 == 0;
    let mask_ok = !mask.is_null() && ne(mask)[0] >= n_kv;
    let out_ok = t.strides[0] == 1 && t.strides[2] == d as u32;
    let ok = shape_ok && q_ok && k_ok && v_ok && mask_ok && out_ok;
    ok.then(|| [n_kv as u32, v_stride as u32, crate::ops::param_u32(t.sm, 0)])
}

/// Record the scaled products of `group` (accepted by `multi_kernel`, which named `kernel`)
/// as one dispatch over their concatenated rows; with `rope`, the first result rotated into
/// the ROPE's memory: by the dispatch where the device has the `ROPE` kernel and the norm is
/// computed in it, else by the ROPE kernel in place right after. With `cache` (and `rope`),
/// V and K written into the KV cache by the dispatch where the device has the `KV` kernel
/// (and 8 bindings): Ok(true); else V and K are stored as the products' results, Ok(false),
/// and the caller records the cache writes.
pub(crate) fn encode_multi(
    rec: &mut Recorder,
    kernel: &str,
    group: &[Scaled],
    rope: Option<*const sys::ggml_tensor>,
    cache: Option<KvWrites>,
    attn: Option<AttnTail>,
) -> Result<(bool, bool)> {
    let (mm0, _) = group[0];
    let (a0, x) = (src(mm0, 0), src(mm0, 1));
    let weights: Vec<_> = group.iter().map(|g| src(g.0, 0)).collect();
    let outs = multi_outs(group, rope);
    let scales: Vec<_> = group.iter().map(|g| src(g.1, 1)).collect();
    if let Some(d) = rec.deferred.iter().find(|d| d.out == x).copied() {
        if let Some((roped, cached, attended)) = encode_multi_norm(rec, kernel, group, &d, rope, cache, attn)? {
            if !roped {
                if let Some(r) = rope {
                    crate::ops::encode_rope_in_place(rec, r)?;
                }
            }
            return Ok((cached, attended));
        }
    }
    let q = rounded_q8(rec, x)?;
    let (a, a_offs) = bind_span(rec, &weights, 1)?;
    let (d, d_offs) = bind_span(rec, &outs, 4)?;
    let (s, s_offs) = bind_span(rec, &scales, 4)?;
    let mut p = Push::default();
    let rows = group.iter().map(|g| ne(g.1)[0] as u32);
    p.a_ne[0] = ne(a0)[0] as u32;
    for (i, r) in rows.enumerate() {
        p.a_ne[i + 1] = r;
    }
    p.a_nb = [a_offs[0], a_offs[1], a_offs[2], nb(a0)[1] as u32];
    p.b_ne = [ne(x)[0] as u32, 1, 1, 1];
    p.d_ne = [d_offs[0], d_offs[1], d_offs[2], 1];
    p.d_nb = [s_offs[0], s_offs[1], s_offs[2], 0];
    let total: u64 = p.a_ne[1..].iter().map(|&r| r as u64).sum();
    let groups = total.div_ceil(ROWS_PER_WG);
    p.m0[1] = groups as u32;
    p.m1[1] = (nelements(x) / 4) as u32;
    let mut reads = vec![q];
    for &t in weights.iter().chain(&scales) {
        reads.push(rec.bind(t, 1)?);
    }
    let writes = outs.iter().map(|&t| rec.bind(t, 4)).collect::<Result<Vec<_>>>()?;
    rec.dispatch_precise(kernel, a, q, d, Some(s), reads, writes, p, groups)?;
    if let Some(r) = rope {
        crate::ops::encode_rope_in_place(rec, r)?;
    }
    Ok((false, false))
}

/// `encode_multi` reading the deferred norm `d` with the norm computed in the kernel.
/// Ok(None): it does not apply (nothing recorded); Ok(Some((roped, cached, attended))):
/// recorded, with `rope` computed by the dispatch (else the first result is stored unrotated
/// in its memory), `cache` written by it (else V and K are stored as results) and `attn`
/// computed by it (else it is to be recorded at its own place).
fn encode_multi_norm(
    rec: &mut Recorder,
    kernel: &str,
    group: &[Scaled],
    d: &crate::fuse::Deferred,
    rope: Option<*const sys::ggml_tensor>,
    cache: Option<KvWrites>,
    attn: Option<AttnTail>,
) -> Result<Option<(bool, bool, bool)>> {
    let gpu = rec.gpu().clone();
    let (base, dot) = match kernel.strip_suffix("_dot") {
        Some(b) => (b, "_dot"),
        None => (kernel, ""),
    };
    let Some(plain) = norm_kernel(&gpu, base, d, dot) else { return Ok(None) };
    let roped = rope.filter(|_| d.pre.is_none() && gpu.bindings >= 5);
    let rope_kernel = roped.map(|_| format!("{base}_norm_rope{dot}")).filter(|k| gpu.has_pipeline(k));
    let roped = roped.filter(|_| rope_kernel.is_some());
    let kv_kernel = roped.and(cache).map(|_| format!("{base}_norm_rope_kv{dot}"));
    let kv_kernel = kv_kernel.filter(|k| gpu.bindings >= 8 && KV_KERNEL.load(Ordering::Relaxed) && gpu.has_pipeline(k));
    let cache = cache.filter(|_| kv_kernel.is_some());
    let kernel = kv_kernel.or(rope_kernel).unwrap_or(plain);
    let a0 = src(group[0].0, 0);
    let rope_dims = roped.map(|r| crate::ops::param_u32(r, 1));
    let (kernel, rows_per_wg) = norm_variant(&gpu, kernel, rope_dims);
    let (x, x2, w) = d.operands();
    let weights: Vec<_> = group.iter().map(|g| src(g.0, 0)).collect();
    // Writing the cache, only Q's rotation is stored as a result.
    let outs = if cache.is_some() { multi_outs(group, rope)[..1].to_vec() } else { multi_outs(group, rope) };
    let consts: Vec<_> = group.iter().map(|g| src(g.1, 1)).chain(std::iter::once(w)).collect();
    let acts: Vec<_> = std::iter::once(x).chain(x2).collect();
    let idx = cache.map(|c| [src(c.k_rows, 1), src(c.v_rows, 1)]);
    let idx_ok = |i: &[*const sys::ggml_tensor; 2]| one_span(&gpu, i) && i.iter().all(|&t| starts_aligned(t, 8));
    if !one_span(&gpu, &acts) || !one_span(&gpu, &consts) || idx.is_some_and(|i| !idx_ok(&i)) {
        return Ok(None);
    }
    let (act, act_offs) = bind_span(rec, &acts, 4)?;
    let (a, a_offs) = bind_span(rec, &weights, 1)?;
    let (dst, d_offs) = bind_span(rec, &outs, 4)?;
    let (cw, c_offs) = bind_span(rec, &consts, 4)?;
    let mut p = Push::default();
    p.a_ne[0] = ne(a0)[0] as u32;
    for (i, g) in group.iter().enumerate() {
        p.a_ne[i + 1] = ne(g.1)[0] as u32;
    }
    p.a_nb = [a_offs[0], a_offs[1], a_offs[2], nb(a0)[1] as u32];
    p.b_ne = [ne(a0)[0] as u32, 1, 1, 1];
    p.b_nb = [c_offs[group.len()], x2.map_or(0, |_| act_offs[1]), 0, 0];
    p.d_ne = [d_offs[0], d_offs[1], d_offs[2], 1];
    p.d_nb = [c_offs[0], c_offs[1], c_offs[2], 0];
    let total: u64 = p.a_ne[1..].iter().map(|&r| r as u64).sum();
    let class = if roped.is_some() { NormLanes::Rope } else { NormLanes::Multi };
    let (kernel, rows_per_wg) = fewer_lanes(&gpu, kernel, rows_per_wg, class, rope_dims);
    let groups = total.div_ceil(rows_per_wg);
    let mut launched = norm_groups(groups, rows_per_wg >= WIDE_ROWS_PER_WG);
    // The token's attention too, where the `ATTN` variant takes it: one workgroup per row
    // group, so that the products' shared memory is free for the attention (attn_tail.glsl).
    let attn_kernel = kernel.replacen("_norm_rope_kv", "_norm_rope_kv_attn", 1);
    // The mask's row and the result are read from their bindings' first element (whole
    // tensors start at the buffer type's alignment, a multiple of the binding's).
    let starts_binding = |t: *const sys::ggml_tensor| rec.bind(t, 4).is_ok_and(|b| b.elem_off == 0);
    let tail = match (attn, cache, roped) {
        (Some(t), Some(c), Some(r))
            if attn_in_qkv()
                && gpu.bindings >= 11
                && kernel.contains("_norm_rope_kv")
                && gpu.has_pipeline(&attn_kernel)
                && starts_binding(src(t.sm, 1))
                && starts_binding(t.out) =>
        {
            // Every workgroup's rows and the tails read the dispatch's other operands until
            // the last tail is done: the attention's result must not be stored over them
            // (the attention unit itself already checked its K, V, Q and mask).
            let others =
                [x, x2.unwrap_or(std::ptr::null()), c.k_rows, c.v_rows, src(r, 1), src(c.k_rows, 1), src(c.v_rows, 1)];
            let clear = crate::fuse::stored_clear_of(t.out, &others);
            attn_tail_args(&gpu, &kernel, rows_per_wg, r, &c, &t).filter(|_| clear).map(|w| (t, w))
        }
        _ => None,
    };
    let kernel = if tail.is_some() {
        launched = groups;
        attn_kernel
    } else {
        kernel
    };
    p.m0 = [0, groups as u32, 0, act_offs[0]];
    p.m1 = [0, crate::ops::param_u32(d.norm, 0), launched as u32, 0];
    let mut reads = Vec::new();
    for &t in weights.iter().chain(&consts).chain(&acts) {
        reads.push(rec.bind(t, 1)?);
    }
    let mut writes = outs.iter().map(|&t| rec.bind(t, 4)).collect::<Result<Vec<_>>>()?;
    let mut bufs = vec![a, act, dst, cw];
    if let Some(r) = roped {
        // The rotation's parameters as rope.comp takes them (`ops::encode_rope`).
        let pos = rec.bind(src(r, 1), 4)?;
        p.m0[2] = crate::ops::param_u32(r, 1) | crate::ops::param_u32(r, 2) << 16;
        p.m1[3] = pos.elem_off;
        p.b_nb[2] = crate::ops::param_u32(r, 5);
        p.b_nb[3] = crate::ops::param_u32(r, 6);
        p.d_nb[3] = crate::ops::param_u32(r, 8);
        reads.push(pos);
        bufs.push(pos);
        ROPE_IN_MULTI.fetch_add(1, Ordering::Relaxed);
    }
    if let (Some(c), Some(idx)) = (cache, idx) {
        // The cache rows (i64 indices), the caches and their row strides (`KV`).
        let (ids, id_offs) = bind_span(rec, &idx, 8)?;
        let (kc, vc) = (rec.bind(c.k_rows, 2)?, rec.bind(c.v_rows, 2)?);
        let transposed = ne(src(c.v_rows, 0))[0] == 1;
        p.d_ne[1] = vc.elem_off;
        p.d_ne[2] = kc.elem_off;
        p.d_ne[3] = (nb(c.k_rows)[1] / 2) as u32;
        p.b_ne[3] = id_offs[0];
        p.m1[0] = id_offs[1];
        p.b_nb[1] = (nb(c.v_rows)[1] / 2) as u32 | (transposed as u32) << 31;
        for &t in &idx {
            reads.push(rec.bind(t, 8)?);
        }
        writes.extend([kc, vc]);
        bufs.extend([ids, kc, vc]);
        KV_IN_MULTI.fetch_add(1, Ordering::Relaxed);
    }
    let mut attended = false;
    if let Some((t, words)) = tail {
        // The counters from the attention scratch's start.
        let (mask, out) = (rec.bind(src(t.sm, 1), 4)?, rec.bind(t.out, 4)?);
        let cnt = rec.attn_scratch(crate::attn::SPLIT_COUNTER_BYTES)?;
        p.b_ne[0] = words[0];
        p.b_ne[1] = words[1];
        p.b_ne[2] = words[2];
        reads.extend([mask, rec.bind(src(t.kq, 0), 2)?, rec.bind(src(t.kqv, 0), 2)?]);
        writes.extend([out, cnt]);
        bufs.extend([mask, out, cnt]);
        ATTN_IN_MULTI.fetch_add(1, Ordering::Relaxed);
        attended = true;
    }
    prefetch_weights(rec, &weights, dst)?;
    rec.dispatch_n_precise(&kernel, &bufs, (reads, writes), p, launched)?;
    count_norm_dispatch(&kernel);
    Ok(Some((roped.is_some(), cache.is_some(), attended)))
}

/// Whether the QKV products may write the KV cache (`KV`); tests turn it off
/// (`set_kv_in_products`) to take the path of devices without 8 bindings.
pub(crate) static KV_KERNEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// KV-cache writes done by the QKV products (`KV` in mul_mv_tq.comp) so far in this process
/// (tests).
pub(crate) static KV_IN_MULTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Q rotations computed by the QKV products (`ROPE` in mul_mv_tq.comp) so far in this
/// process (tests).
pub(crate) static ROPE_IN_MULTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// f16 rows the f16 mat-vec can read 8 halves at a time, and f32 activations 4 at a time.
fn f16_layout_ok(s0: *const sys::ggml_tensor, s1: *const sys::ggml_tensor) -> bool {
    let (a, b) = (nb(s0), nb(s1));
    ne(s0)[0] % 8 == 0
        && a[0] == 2
        && a[1..].iter().all(|&x| x % 16 == 0)
        && b[0] == 4
        && b[1..].iter().all(|&x| x % 16 == 0)
        && ty(s1) == crate::ops::F32
        && starts_aligned(s0, 16)
        && starts_aligned(s1, 16)
}
