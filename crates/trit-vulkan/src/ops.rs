//! Which ggml ops the backend runs (`supports`) and how each is recorded (`encode`). The two
//! must agree: `supports` answers true only for what `encode` implements.

use trit_sys as sys;

use crate::dispatch::{locate, span, starts_aligned, Push, Recorder};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

#[path = "train.rs"]
pub(crate) mod train;

pub(crate) const F32: sys::ggml_type = sys::GGML_TYPE_F32;
pub(crate) const F16: sys::ggml_type = sys::GGML_TYPE_F16;
pub(crate) const I32: sys::ggml_type = sys::GGML_TYPE_I32;
const I64: sys::ggml_type = sys::GGML_TYPE_I64;
pub(crate) const TQ1: sys::ggml_type = sys::GGML_TYPE_TQ1_0;
pub(crate) const TQ2: sys::ggml_type = sys::GGML_TYPE_TQ2_0;

/// Ops that only reinterpret memory: nothing to record.
pub(crate) fn is_noop(op: sys::ggml_op) -> bool {
    matches!(
        op,
        sys::GGML_OP_NONE | sys::GGML_OP_VIEW | sys::GGML_OP_RESHAPE | sys::GGML_OP_PERMUTE | sys::GGML_OP_TRANSPOSE
    )
}

fn elsize(t: sys::ggml_type) -> Option<u64> {
    match t {
        F32 | I32 => Some(4),
        F16 => Some(2),
        I64 => Some(8),
        _ => None,
    }
}

// Accessors for live graph tensors: `supports_op` and `graph_compute` only ever hand us
// tensors of a live ggml graph, and the ggml helpers called here only read them.
/// The type of `t`'s bytes as the kernels read them: TQ2_0 for a TQ1_0 tensor our buffers
/// hold re-encoded (`weight_store`).
pub(crate) fn ty(t: *const sys::ggml_tensor) -> sys::ggml_type {
    // SAFETY: t is a live tensor (see above).
    let raw = unsafe { (*t).type_ };
    if raw == TQ1 && crate::weight_store::is_stored(t) {
        TQ2
    } else {
        raw
    }
}
pub(crate) fn ne(t: *const sys::ggml_tensor) -> [i64; 4] {
    // SAFETY: t is a live tensor.
    unsafe { (*t).ne }
}
/// `t`'s strides in bytes as the kernels read them (the split layout's for a ternary tensor in
/// our buffers, `weight_store`).
pub(crate) fn nb(t: *const sys::ggml_tensor) -> [usize; 4] {
    // SAFETY: t is a live tensor.
    let raw = unsafe { (*t).nb };
    if crate::weight_store::is_stored(t) {
        [0, 1, 2, 3].map(|i| crate::weight_store::stride(t, i, raw[i] as u64) as usize)
    } else {
        raw
    }
}
pub(crate) fn src(t: *const sys::ggml_tensor, i: usize) -> *const sys::ggml_tensor {
    // SAFETY: t is a live tensor; i < 10 at every call site.
    unsafe { (*t).src[i] }
}
pub(crate) fn param_u32(t: *const sys::ggml_tensor, i: usize) -> u32 {
    // SAFETY: t is a live tensor; i < 16 at every call site.
    unsafe { (*t).op_params[i] as u32 }
}
pub(crate) fn param_f32(t: *const sys::ggml_tensor, i: usize) -> f32 {
    f32::from_bits(param_u32(t, i))
}
/// `t`'s name.
pub(crate) fn tensor_name(t: *const sys::ggml_tensor) -> String {
    // SAFETY: t is a live tensor; its name is NUL-terminated within the array.
    unsafe { std::ffi::CStr::from_ptr((*t).name.as_ptr()) }.to_string_lossy().into_owned()
}
pub(crate) fn op_of(t: *const sys::ggml_tensor) -> sys::ggml_op {
    // SAFETY: t is a live tensor.
    unsafe { (*t).op }
}
fn type_size(t: sys::ggml_type) -> usize {
    // SAFETY: pure function of a valid type id.
    unsafe { sys::ggml_type_size(t) }
}
fn row_size(t: sys::ggml_type, n: i64) -> u64 {
    // SAFETY: pure function of a valid type id and a row length.
    unsafe { sys::ggml_row_size(t, n) as u64 }
}
fn can_repeat(a: *const sys::ggml_tensor, b: *const sys::ggml_tensor) -> bool {
    // SAFETY: both are live tensors; ggml only reads their shapes.
    unsafe { sys::ggml_can_repeat(a, b) }
}
fn contiguous(t: *const sys::ggml_tensor) -> bool {
    // SAFETY: t is a live tensor.
    unsafe { sys::ggml_is_contiguous(t) }
}
fn unary_op(t: *const sys::ggml_tensor) -> sys::ggml_unary_op {
    // SAFETY: t is a live UNARY node.
    unsafe { sys::ggml_get_unary_op(t) }
}
fn glu_op(t: *const sys::ggml_tensor) -> sys::ggml_glu_op {
    // SAFETY: t is a live GLU node.
    unsafe { sys::ggml_get_glu_op(t) }
}
pub(crate) fn nelements(t: *const sys::ggml_tensor) -> u64 {
    ne(t).iter().map(|&n| n.max(0) as u64).product()
}

/// (ne, nb in units of `el` bytes) as the kernels take them.
pub(crate) fn shape(t: *const sys::ggml_tensor, el: u64) -> ([u32; 4], [u32; 4]) {
    let (n, b) = (ne(t), nb(t));
    (n.map(|x| x as u32), b.map(|x| (x as u64 / el) as u32))
}

/// Everything a kernel indexes must fit u32 arithmetic.
fn fits_u32(t: *const sys::ggml_tensor) -> bool {
    let limit = u32::MAX as u64 / 2;
    nelements(t) < limit && span(t) < limit
}

/// Operand fits in one descriptor range (with room for the offset alignment slack).
pub(crate) fn fits_range(gpu: &Gpu, t: *const sys::ggml_tensor) -> bool {
    span(t) + gpu.min_storage_align + 4 <= gpu.max_range()
}

/// Whether an f16 product `a` (weights) x `b` (f32) suits `mul_mm_f16_cmv.comp`: k a multiple
/// of 8, both operands contiguous along k with every other stride a multiple of 16 bytes,
/// both 16-byte aligned in memory, and `a` within one binding.
fn f16_vector_ready(gpu: &Gpu, a: *const sys::ggml_tensor, b: *const sys::ggml_tensor) -> bool {
    let (na, nbb) = (nb(a), nb(b));
    ne(a)[0] % 8 == 0
        && na[0] == 2
        && nbb[0] == 4
        && na[1..].iter().chain(&nbb[1..]).all(|s| s % 16 == 0)
        && starts_aligned(a, 16)
        && starts_aligned(b, 16)
        && fits_range(gpu, a)
}

/// Nodes matched by `TRIT_VULKAN_DISABLE_OPS` are left to the CPU: a comma-separated list
/// of ggml op names (`ROPE`), optionally with a node-name prefix (`MUL_MAT:node_1`,
/// `MUL:Qcur`). For bisecting numerical differences against the CPU.
fn disabled(op: *const sys::ggml_tensor) -> bool {
    static LIST: std::sync::OnceLock<Vec<(String, Option<String>)>> = std::sync::OnceLock::new();
    let list = LIST.get_or_init(|| {
        std::env::var("TRIT_VULKAN_DISABLE_OPS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| match s.split_once(':') {
                        Some((o, n)) => (o.to_ascii_uppercase(), Some(n.to_string())),
                        None => (s.to_ascii_uppercase(), None),
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    if list.is_empty() {
        return false;
    }
    // SAFETY: op is live; ggml_op_desc returns a static string.
    let kind = unsafe { std::ffi::CStr::from_ptr(sys::ggml_op_desc(op)) }.to_string_lossy().to_ascii_uppercase();
    let name = tensor_name(op);
    list.iter().any(|(o, n)| *o == kind && n.as_ref().is_none_or(|n| name.starts_with(n.as_str())))
}

pub(crate) fn supports(gpu: &Gpu, op: *const sys::ggml_tensor) -> bool {
    let kind = op_of(op);
    if is_noop(kind) {
        return true;
    }
    if disabled(op) {
        return false;
    }
    let s0 = src(op, 0);
    let s1 = src(op, 1);
    let mut operands = vec![op];
    for i in 0..3 {
        let s = src(op, i);
        if !s.is_null() {
            operands.push(s);
        }
    }
    if operands.iter().any(|&t| !fits_u32(t)) {
        return false;
    }
    // Every operand but a MUL_MAT weight (tiled by rows) must fit one binding.
    let weight = if kind == sys::GGML_OP_MUL_MAT { s0 } else { std::ptr::null() };
    if operands.iter().any(|&t| t != weight && !fits_range(gpu, t)) {
        return false;
    }
    match kind {
        _ if train::handles(op) => train::supports(gpu, op),
        sys::GGML_OP_MUL_MAT => {
            let (a, b) = (ne(s0), ne(s1));
            let t0 = ty(s0);
            let type_ok = match t0 {
                F32 | F16 => true,
                TQ1 | TQ2 => a[0] % 256 == 0 && nb(s0)[0] == type_size(t0) && crate::weight_store::layout_ok(s0),
                _ => false,
            };
            if !type_ok || ty(s1) != F32 || ty(op) != F32 || b[2] % a[2] != 0 || b[3] % a[3] != 0 {
                return false;
            }
            if !fits_range(gpu, s0) {
                // Row tiles: only for plain 2-D weights whose single row fits.
                let row = row_size(t0, a[0]);
                return a[2] == 1 && a[3] == 1 && row + gpu.min_storage_align + 4 <= gpu.max_range();
            }
            true
        }
        sys::GGML_OP_GET_ROWS => matches!(ty(s0), F32 | F16) && ty(s1) == I32 && ty(op) == F32,
        sys::GGML_OP_SET_ROWS => {
            ty(s0) == F32
                && matches!(ty(s1), I32 | I64)
                && matches!(ty(op), F32 | F16)
                && nb(op)[0] as u64 == elsize(ty(op)).unwrap_or(0)
        }
        sys::GGML_OP_RMS_NORM => ty(s0) == F32 && ty(op) == F32,
        sys::GGML_OP_ADD | sys::GGML_OP_MUL => ty(s0) == F32 && ty(s1) == F32 && ty(op) == F32 && can_repeat(s1, s0),
        sys::GGML_OP_SCALE | sys::GGML_OP_SQR => ty(s0) == F32 && ty(op) == F32,
        sys::GGML_OP_CPY | sys::GGML_OP_CONT | sys::GGML_OP_DUP => {
            matches!(ty(s0), F32 | F16) && matches!(ty(op), F32 | F16) && nelements(s0) == nelements(op)
        }
        sys::GGML_OP_UNARY => {
            let u = unary_op(op);
            matches!(u, sys::GGML_UNARY_OP_RELU | sys::GGML_UNARY_OP_SILU) && ty(s0) == F32 && ty(op) == F32
        }
        sys::GGML_OP_GLU => {
            let g = glu_op(op);
            matches!(g, sys::GGML_GLU_OP_SWIGLU | sys::GGML_GLU_OP_REGLU)
                && ty(s0) == F32
                && ty(op) == F32
                && contiguous(s0)
                && contiguous(op)
                && (s1.is_null() || (ty(s1) == F32 && contiguous(s1)))
        }
        sys::GGML_OP_SOFT_MAX => {
            ty(s0) == F32
                && ty(op) == F32
                && (s1.is_null() || matches!(ty(s1), F32 | F16))
                && src(op, 2).is_null()
                && param_f32(op, 1) == 0.0
        }
        sys::GGML_OP_ROPE => {
            let mode = param_u32(op, 2);
            let n_dims = param_u32(op, 1) as i64;
            ty(s0) == F32
                && ty(op) == F32
                && ty(s1) == I32
                && src(op, 2).is_null()
                && (mode == 0 || mode == sys::GGML_ROPE_TYPE_NEOX)
                && param_f32(op, 7) == 0.0
                && n_dims % 2 == 0
                && n_dims <= ne(s0)[0]
                && ne(s0)[0] % 2 == 0
                && ne(op) == ne(s0)
        }
        _ => false,
    }
}

/// Scratch layout of a whole graph recorded as `units` (`schedule::order`, recording order).
/// The rounded activations of ternary MUL_MATs are one region per source tensor, as
/// `Recorder::rounded` shares them (Q, K and V read one; gate and up one), in the form the
/// product reads them: packed int8 + scales (1 + 4/256 bytes an element) where the mat-vec /
/// integer-tile path applies (`matvec::encode_fused`), plus f32 (4 bytes) where the plain
/// kernel might be used instead. (Counting 4 bytes per product reserved 1.3 GiB for a
/// 2B-shaped training step that uses 0.23 GiB.) A region is live from the first unit that
/// touches it (a product of it, or the fused norm that produces it quantized) to the last;
/// `scratch::place` lets regions of disjoint lives share memory. Split-k partial sums go to
/// a ring of `SPLIT_RING` slots of the largest one's size, at the start, then the int8 input
/// gradient's quantized operands in a ring of `DXQ_RING` (`train::dxq_slot_bytes`); other per-node
/// scratch (`train::scratch_bytes`) after the rounded pool.
pub(crate) fn graph_scratch(
    gpu: &Gpu,
    graph: *mut sys::ggml_cgraph,
    units: &[(i32, i32)],
    align: u64,
) -> crate::scratch::Layout {
    use crate::scratch::{Life, Rounded};
    let node = |i: i32| {
        // SAFETY: callers pass 0 <= i < n_nodes of the live graph.
        unsafe { sys::ggml_graph_node(graph, i) as *const sys::ggml_tensor }
    };
    let ternary =
        |op: *const sys::ggml_tensor| op_of(op) == sys::GGML_OP_MUL_MAT && matches!(ty(src(op, 0)), TQ1 | TQ2);
    // SAFETY: graph is a live ggml graph.
    let n = unsafe { sys::ggml_graph_n_nodes(graph) };
    let fast = gpu.limits.fast_mv.load(std::sync::atomic::Ordering::Relaxed);
    // (source tensor, elements, whether the f32 form may be needed too)
    let mut rounded: Vec<(*const sys::ggml_tensor, u64, bool)> = Vec::new();
    let mut index: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut other = 0;
    let mut slot = 0;
    let mut dxq_slot = 0;
    for i in 0..n {
        let op = node(i);
        if ternary(op) {
            let (s0, s1) = (src(op, 0), src(op, 1));
            let f32_too = nelements(op) > 0 && !(fast && fits_range(gpu, s0));
            match index.get(&(s1 as usize)) {
                Some(&k) => rounded[k].2 |= f32_too,
                None => {
                    index.insert(s1 as usize, rounded.len());
                    rounded.push((s1, nelements(s1), f32_too));
                }
            }
        } else {
            other += train::scratch_bytes(gpu, op, align);
            slot = slot.max(train::split_scratch_bytes(gpu, op, align));
            dxq_slot = dxq_slot.max(train::dxq_slot_bytes(gpu, op));
        }
    }
    // Lives in recording units: a unit touches a region if it holds a product of the
    // region's tensor or produces that tensor (a fused norm may write it quantized).
    let mut span: Vec<(usize, usize)> = vec![(usize::MAX, 0); rounded.len()];
    for (pos, &(first, k)) in units.iter().enumerate() {
        for j in first..first + k {
            let t = node(j);
            let mut touch = |x: *const sys::ggml_tensor| {
                if let Some(&r) = index.get(&(x as usize)) {
                    span[r] = (span[r].0.min(pos), span[r].1.max(pos));
                }
            };
            if ternary(t) {
                touch(src(t, 1));
            }
            touch(t);
        }
    }
    let unit = align.max(256);
    let reuse = crate::scratch::reuse();
    let mut lives = Vec::with_capacity(rounded.len());
    let mut sizes = Vec::with_capacity(rounded.len());
    for (r, &(_, nel, f32_too)) in rounded.iter().enumerate() {
        let q8 = (nel + nel / 256 * 4).next_multiple_of(unit);
        let f = if f32_too { (nel * 4).next_multiple_of(unit) } else { 0 };
        let (first, last) = match span[r] {
            (a, b) if reuse && a <= b => (a, b),
            _ => (0, usize::MAX),
        };
        lives.push(Life { first, last, bytes: q8 + f });
        sizes.push((q8, f));
    }
    let (offsets, pool) = crate::scratch::place(&lives, unit);
    let ring = crate::scratch::ring_bytes(slot, dxq_slot);
    let rounded = rounded
        .iter()
        .zip(offsets.iter().zip(&sizes))
        .map(|(&(tensor, nel, _), (&off, &(q8, f)))| Rounded {
            tensor,
            q8: ring + off,
            q8_bytes: nel + nel / 256 * 4,
            f32: (f > 0).then_some((ring + off + q8, nel * 4)),
        })
        .collect();
    crate::scratch::Layout {
        bytes: ring + pool + other,
        split_slot: slot,
        dxq_slot,
        rounded,
        bump_start: ring + pool,
        unshared: lives.iter().map(|l| l.bytes).sum(),
    }
}

fn groups_for(items: u64, per: u64) -> u64 {
    items.div_ceil(per)
}

/// Sets binary.comp's P0 for dst = s0 op s1 where all three are contiguous (its path without
/// index arithmetic, four elements per invocation): 1 (s1 as large as dst), 2 (one element) or
/// 3 (one row of ne0, repeated); 0 (any strides) otherwise. The workgroups for dst.
pub(crate) fn binary_fast(
    p: &mut Push,
    s0: *const sys::ggml_tensor,
    s1: *const sys::ggml_tensor,
    op: *const sys::ggml_tensor,
) -> u64 {
    let mode = if !(contiguous(s0) && contiguous(s1) && contiguous(op)) || ne(s0) != ne(op) {
        0
    } else if ne(s1) == ne(op) {
        1
    } else if nelements(s1) == 1 {
        2
    } else if ne(s1)[0] == ne(op)[0] && nelements(s1) == ne(op)[0] as u64 {
        3
    } else {
        0
    };
    p.m1[1] = mode;
    nelements(op).div_ceil(if mode == 0 { 256 } else { 1024 })
}

/// Sets unary.comp's P2 where `s0` and `op` are contiguous with as many elements (its path
/// without index arithmetic, four elements per invocation); the workgroups for `n` elements.
pub(crate) fn unary_fast(p: &mut Push, s0: *const sys::ggml_tensor, op: *const sys::ggml_tensor) -> u64 {
    let n = nelements(op);
    if contiguous(s0) && contiguous(op) && nelements(s0) == n {
        p.m1[3] = 1;
        n.div_ceil(1024)
    } else {
        n.div_ceil(256)
    }
}

fn fail(op: *const sys::ggml_tensor, why: &str) -> Error {
    Error::Unsupported { node: String::new(), op: format!("op {}", op_of(op)), why: why.to_string() }
}

/// ROPE (kernel `rope_f32`) and its backward ROPE_BACK (`rope_back_f32`, the inverse
/// rotation) take the same operands and op params (kernels/rope.comp).
pub(crate) fn encode_rope(rec: &mut Recorder, op: *const sys::ggml_tensor, kernel: &str) -> Result<()> {
    encode_rope_from(rec, op, src(op, 0), kernel)
}

/// ROPE `op` computed in place on its own memory, which holds its input (a multi-product
/// group stored the unrotated Q there: `matvec::encode_multi`). rope.comp reads both values
/// of a pair before writing them, so in place is safe.
pub(crate) fn encode_rope_in_place(rec: &mut Recorder, op: *const sys::ggml_tensor) -> Result<()> {
    encode_rope_from(rec, op, op, "rope_f32")
}

/// `encode_rope` reading the rotation's input from `x` (src0, or `op` itself in place).
fn encode_rope_from(
    rec: &mut Recorder,
    op: *const sys::ggml_tensor,
    x: *const sys::ggml_tensor,
    kernel: &str,
) -> Result<()> {
    let pos = src(op, 1);
    let mut p = Push::default();
    (p.a_ne, p.a_nb) = shape(x, 4);
    (p.d_ne, p.d_nb) = shape(op, 4);
    rope_params(&mut p, op, pos);
    let n = nelements(x) / 2; // element pairs
    p.m0[1] = n as u32;
    let (a, b, d) = (rec.bind(x, 4)?, rec.bind(pos, 4)?, rec.bind(op, 4)?);
    rec.dispatch(kernel, a, Some(b), d, p, groups_for(n, 256))
}

/// The positions' shape (`pos`, in b_ne / b_nb) and ROPE `op`'s parameters where rope.comp
/// takes them: P0 n_dims, P1 mode, P2 freq_base, b_nb.y freq_scale, b_nb.z attn_factor.
pub(crate) fn rope_params(p: &mut Push, op: *const sys::ggml_tensor, pos: *const sys::ggml_tensor) {
    (p.b_ne, p.b_nb) = shape(pos, 4);
    p.m1[1] = param_u32(op, 1);
    p.m1[2] = param_u32(op, 2);
    p.m1[3] = param_u32(op, 5);
    p.b_nb[1] = param_u32(op, 6);
    p.b_nb[2] = param_u32(op, 8);
}

/// Record the dispatches of one graph node.
pub(crate) fn encode(rec: &mut Recorder, op: *const sys::ggml_tensor) -> Result<()> {
    let kind = op_of(op);
    if is_noop(kind) || nelements(op) == 0 {
        return Ok(());
    }
    let s0 = src(op, 0);
    let s1 = src(op, 1);
    let trained = train::handles(op) || train::mul_mat_cm(rec.gpu(), op);
    if !rec.deferred.is_empty() && (trained || kind != sys::GGML_OP_MUL_MAT) {
        // A norm left to its mat-vecs (`fuse::Deferred`) that this op reads after all.
        for k in 0..sys::GGML_MAX_SRC as usize {
            crate::fuse::materialize(rec, src(op, k))?;
        }
    }
    if trained {
        return train::encode(rec, op);
    }
    let mut p = Push::default();
    match kind {
        sys::GGML_OP_MUL_MAT => {
            if crate::matvec::encode(rec, op)? {
                return Ok(());
            }
            crate::fuse::materialize(rec, s1)?;
            let t0 = ty(s0);
            let (name, a_el) = match t0 {
                F32 => ("f32", 4),
                F16 => ("f16", 2),
                TQ2 => ("tq2", 1),
                TQ1 => ("tq1", 1),
                _ => return Err(fail(op, "weight type")),
            };
            // 1 column: mat-vec; up to 8: one weight row x 8 columns per workgroup; more:
            // 64x64 tiles through shared memory.
            let cols = ne(s1)[1] as u64;
            let tiled = cols > 8;
            // f16 weights over many columns: 128-row tiles on tensor cores where the device has them.
            let f16_cm = if t0 == F16 && tiled { crate::matvec::f16_cm_kernel(rec.gpu()) } else { None };
            // Aligned operands contiguous along k: the 128 x 128 form with 16-byte loads.
            let f16_cm = f16_cm.map(|k| match crate::matvec::f16_cmv_kernel(k) {
                Some(v) if rec.gpu().has_pipeline(v) && f16_vector_ready(rec.gpu(), s0, s1) => v,
                _ => k,
            });
            let vector = f16_cm.is_some_and(|k| k.starts_with("mmtv_"));
            if vector {
                crate::matvec::F16_VECTOR_DISPATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let tile_rows = if f16_cm.is_some() { 128 } else { 64 };
            let tile_cols = if vector { 128 } else { 64 };
            let kernel = match (cols, f16_cm) {
                (_, Some(k)) => k.to_string(),
                (1, _) => format!("mm_{name}_1"),
                (2..=8, _) => format!("mm_{name}_8"),
                _ => format!("mmt_{name}"),
            };
            (p.a_ne, p.a_nb) = shape(s0, a_el);
            (p.b_ne, p.b_nb) = shape(s1, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            let b = if a_el == 1 {
                // Ternary weights: round the activations as the CPU backend does (Q8_K), so
                // results match it; the product then reads them contiguous from scratch.
                // A tensor's data cannot change between its uses inside one graph (ggml-alloc
                // only reuses memory after the last use), so its rounding is reused.
                let q = match rec.rounded.iter().find(|(t, form, _)| *t == s1 && *form == 0) {
                    Some(&(_, _, q)) => q,
                    None => {
                        let src_b = rec.bind(s1, 4)?;
                        let q = rec.rounded_scratch(s1, 0, nelements(s1) * 4)?;
                        let mut pq = Push::default();
                        (pq.a_ne, pq.a_nb) = (p.b_ne, p.b_nb);
                        let blocks = nelements(s1) / 256;
                        pq.m0[1] = blocks as u32;
                        rec.dispatch("quant_q8k", src_b, None, q, pq, blocks)?;
                        rec.rounded.push((s1, 0, q));
                        q
                    }
                };
                let [k, c, b2, _] = p.b_ne;
                p.b_nb = [1, k, k * c, k * c * b2];
                q
            } else if vector {
                rec.bind_vec(s1, 16)?
            } else {
                rec.bind(s1, 4)?
            };
            let [_, rows, _, _] = ne(s0);
            let [_, _, b2, b3] = ne(s1);
            let batches = b2 as u64 * b3 as u64;
            // Workgroups for `nr` weight rows.
            let groups_for_rows = |nr: u64| {
                if tiled {
                    nr.div_ceil(tile_rows) * cols.div_ceil(tile_cols) * batches
                } else {
                    nr * cols.div_ceil(if cols == 1 { 1 } else { 8 }) * batches
                }
            };
            let gpu = rec.gpu().clone();
            if fits_range(&gpu, s0) {
                let a = if vector { rec.bind_vec(s0, 16)? } else { rec.bind(s0, a_el)? };
                let d = rec.bind(op, 4)?;
                let groups = groups_for_rows(rows as u64);
                p.m0[1] = groups as u32;
                return rec.dispatch(&kernel, a, Some(b), d, p, groups);
            }
            // Tiles of weight rows, each within maxStorageBufferRange.
            let row_stride = nb(s0)[1] as u64;
            let row_bytes = row_size(t0, ne(s0)[0]);
            let budget = gpu.max_range() - gpu.min_storage_align - 4;
            let per_tile = ((budget.saturating_sub(row_bytes)) / row_stride + 1).min(rows as u64);
            let (a_alloc, a_off) = locate(s0)?;
            let (d_alloc, d_off) = locate(op)?;
            let d_span = span(op);
            let mut r0 = 0u64;
            while r0 < rows as u64 {
                let nr = per_tile.min(rows as u64 - r0);
                let a = rec.bind_bytes(a_alloc, a_off + r0 * row_stride, (nr - 1) * row_stride + row_bytes, a_el)?;
                let d = rec.bind_bytes(d_alloc, d_off + r0 * 4, d_span - r0 * 4, 4)?;
                let mut pt = p;
                pt.a_ne[1] = nr as u32;
                let groups = groups_for_rows(nr);
                pt.m0[1] = groups as u32;
                rec.dispatch(&kernel, a, Some(b), d, pt, groups)?;
                r0 += nr;
            }
            Ok(())
        }
        sys::GGML_OP_ADD | sys::GGML_OP_MUL => {
            let kernel = if kind == sys::GGML_OP_ADD { "add_f32" } else { "mul_f32" };
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.b_ne, p.b_nb) = shape(s1, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            p.m0[1] = nelements(op) as u32;
            let groups = binary_fast(&mut p, s0, s1, op);
            let (a, b, d) = (rec.bind(s0, 4)?, rec.bind(s1, 4)?, rec.bind(op, 4)?);
            rec.dispatch(kernel, a, Some(b), d, p, groups)
        }
        sys::GGML_OP_SCALE
        | sys::GGML_OP_SQR
        | sys::GGML_OP_UNARY
        | sys::GGML_OP_CPY
        | sys::GGML_OP_CONT
        | sys::GGML_OP_DUP => {
            let kernel = match kind {
                sys::GGML_OP_SCALE => {
                    p.m1[1] = param_u32(op, 0);
                    p.m1[2] = param_u32(op, 1);
                    "scale_f32".to_string()
                }
                sys::GGML_OP_SQR => "sqr_f32".to_string(),
                sys::GGML_OP_UNARY => match unary_op(op) {
                    sys::GGML_UNARY_OP_RELU => "relu_f32".to_string(),
                    sys::GGML_UNARY_OP_SILU => "silu_f32".to_string(),
                    _ => return Err(fail(op, "unary op")),
                },
                _ => {
                    let n = |t| if t == F16 { "f16" } else { "f32" };
                    format!("cpy_{}_{}", n(ty(s0)), n(ty(op)))
                }
            };
            let (ea, ed) = (elsize(ty(s0)).unwrap_or(4), elsize(ty(op)).unwrap_or(4));
            (p.a_ne, p.a_nb) = shape(s0, ea);
            (p.d_ne, p.d_nb) = shape(op, ed);
            p.m0[1] = nelements(op) as u32;
            let groups = unary_fast(&mut p, s0, op);
            let (a, d) = (rec.bind(s0, ea)?, rec.bind(op, ed)?);
            rec.dispatch(&kernel, a, None, d, p, groups)
        }
        sys::GGML_OP_GLU => {
            let kernel = match glu_op(op) {
                sys::GGML_GLU_OP_SWIGLU => "swiglu_f32",
                sys::GGML_GLU_OP_REGLU => "reglu_f32",
                _ => return Err(fail(op, "glu op")),
            };
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            let b = if s1.is_null() {
                None
            } else {
                (p.b_ne, p.b_nb) = shape(s1, 4);
                p.m1[2] = 1;
                Some(rec.bind(s1, 4)?)
            };
            p.m1[1] = param_u32(op, 1);
            let n = nelements(op);
            p.m0[1] = n as u32;
            let (a, d) = (rec.bind(s0, 4)?, rec.bind(op, 4)?);
            rec.dispatch(kernel, a, b, d, p, groups_for(n, 256))
        }
        sys::GGML_OP_RMS_NORM => {
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            p.m1[1] = param_u32(op, 0);
            let rows = nelements(s0) / ne(s0)[0] as u64;
            p.m0[1] = rows as u32;
            let (a, d) = (rec.bind(s0, 4)?, rec.bind(op, 4)?);
            let gpu = rec.gpu();
            let kernel = if gpu.fast_kernels() && ne(s0)[0] % 256 == 0 && gpu.has_pipeline("mv_rms_norm_f32") {
                "mv_rms_norm_f32"
            } else {
                "rms_norm_f32"
            };
            rec.dispatch(kernel, a, None, d, p, rows)
        }
        sys::GGML_OP_SOFT_MAX => {
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            p.m1[1] = param_u32(op, 0);
            let (kernel, b) = if s1.is_null() {
                ("soft_max_f32", None)
            } else {
                let el = elsize(ty(s1)).unwrap_or(4);
                (p.b_ne, p.b_nb) = shape(s1, el);
                p.m1[2] = 1;
                (if ty(s1) == F16 { "soft_max_f16" } else { "soft_max_f32" }, Some(rec.bind(s1, el)?))
            };
            let rows = nelements(s0) / ne(s0)[0] as u64;
            p.m0[1] = rows as u32;
            let (a, d) = (rec.bind(s0, 4)?, rec.bind(op, 4)?);
            rec.dispatch(kernel, a, b, d, p, rows)
        }
        sys::GGML_OP_ROPE => encode_rope(rec, op, "rope_f32"),
        sys::GGML_OP_GET_ROWS => {
            let ea = elsize(ty(s0)).unwrap_or(4);
            (p.a_ne, p.a_nb) = shape(s0, ea);
            (p.b_ne, p.b_nb) = shape(s1, 4);
            (p.d_ne, p.d_nb) = shape(op, 4);
            let n = nelements(op);
            p.m0[1] = n as u32;
            let kernel = if ty(s0) == F16 { "get_rows_f16" } else { "get_rows_f32" };
            let (a, b, d) = (rec.bind(s0, ea)?, rec.bind(s1, 4)?, rec.bind(op, 4)?);
            rec.dispatch(kernel, a, Some(b), d, p, groups_for(n, 256))
        }
        sys::GGML_OP_SET_ROWS => {
            let ei = elsize(ty(s1)).unwrap_or(8);
            let ed = elsize(ty(op)).unwrap_or(4);
            (p.a_ne, p.a_nb) = shape(s0, 4);
            (p.b_ne, p.b_nb) = shape(s1, ei);
            (p.d_ne, p.d_nb) = shape(op, ed);
            let n = nelements(s0);
            p.m0[1] = n as u32;
            let kernel = format!(
                "set_rows_{}_{}",
                if ty(op) == F16 { "f16" } else { "f32" },
                if ty(s1) == I64 { "i64" } else { "i32" }
            );
            let (a, b, d) = (rec.bind(s0, 4)?, rec.bind(s1, ei)?, rec.bind(op, ed)?);
            rec.dispatch(&kernel, a, Some(b), d, p, groups_for(n, 256))
        }
        _ => Err(fail(op, "no kernel")),
    }
}
