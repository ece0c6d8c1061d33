//! Fusing a node with the MUL that follows it, where that MUL is the node's only user:
//! * MUL_MAT (a mat-vec path) then MUL by a one-element tensor — BitNet's per-tensor weight
//!   scale after every projection (`build_lora_mm`): the product is scaled as it is stored.
//! * RMS_NORM then MUL by a broadcast weight (`build_norm`): one kernel.
//! * RELU then SQR (BitNet's ReLU² gate): one kernel; and RELU, SQR, MUL where the MUL
//!   follows at once (llama.cpp's graph computes the up projection in between).
//!
//! The results are bit-identical to the unfused pair (the same f32 operations in the same
//! order per element); what is saved is a dispatch, a barrier and a round trip through memory.

use trit_sys as sys;

use crate::dispatch::{Push, Recorder};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::{nb, ne, nelements, op_of, shape, src, ty, F32, TQ1, TQ2};

/// Indices of the nodes of a graph that may be fused with their successor (pairs) or two
/// successors (the ReLU² gate).
#[derive(Default)]
pub(crate) struct Plan {
    fusable: Vec<usize>,
    triples: Vec<usize>,
    /// MUL_MAT, MUL by its scale, ADD of a residual (`build_lora_mm` then the residual sum).
    res_triples: Vec<usize>,
    /// MUL, RMS_NORM of it, MUL by the norm weight (gate * up before the FFN sub-norm).
    pre_triples: Vec<usize>,
    /// (pre triple head, ReLU node index, ReLU input): the ReLU and SQR (a unit of their
    /// own, recorded as nothing) fold into the pre kernel, which reads the ReLU's input.
    relu_pre: Vec<(usize, usize, usize)>,
    /// MUL_MAT, PERMUTE of it, CONT of that (attention's KQV back to rows): the product
    /// stores straight into the CONT's memory.
    perm_triples: Vec<usize>,
    /// ROPE, RESHAPE of it to rows, SET_ROWS of those into an f16 cache (K's rotation and
    /// cache write): one kernel.
    rope_triples: Vec<usize>,
    /// (head, nodes): KQ MUL_MAT, SOFT_MAX, KQV MUL_MAT (3), or those then the PERMUTE and
    /// CONT of `perm_triples` (5): decode attention in one kernel (`attn.rs`).
    attn: Vec<(usize, usize)>,
    /// (kernel, heads): scaled products of one activation column (Q, K, V; gate, up)
    /// recorded as one dispatch at the first head (`matvec::encode_multi`).
    multi: Vec<(String, Vec<usize>)>,
    /// Heads of `multi` groups after the first: their pairs are recorded as nothing.
    moved: Vec<usize>,
    /// (multi head, ROPE node): the group's first product (Q) is rotated by the group's
    /// dispatch (`matvec::encode_multi`) into the ROPE's memory; that ROPE (sorted in `roped`)
    /// is recorded as nothing.
    multi_rope: Vec<(usize, usize)>,
    roped: Vec<usize>,
    /// (multi head, cache writes): a Q, V, K group (with Q's ROPE folded in) whose V and K are
    /// read only by their KV-cache writes: the group's dispatch writes the cache itself
    /// (`matvec::encode_multi`); those writes' nodes (sorted in `kv_absorbed`) are recorded
    /// as nothing.
    multi_kv: Vec<(usize, KvNodes)>,
    kv_absorbed: Vec<usize>,
    /// (multi head, attention head): a Q, V, K group writing the caches and the decode
    /// attention right after it (nothing else recorded between them), which the group's
    /// dispatch may compute too (`matvec::AttnTail`; whether it did is known only when it is
    /// recorded: `Recorder::attn_in_qkv`).
    qkv_attn: Vec<(usize, usize)>,
    /// Tensors that ternary products read (sorted): a fused norm producing one also writes
    /// it quantized, as the products' quant_q8 would.
    ternary_inputs: Vec<usize>,
    /// (head, pre triple): norms recorded by their readers (`deferrable`).
    deferred: Vec<(usize, bool)>,
}

/// The residual operand of `add` if it sums `scaled` (either side) and a same-shaped f32
/// tensor laid out as `add`.
fn residual_of(scaled: *const sys::ggml_tensor, add: *const sys::ggml_tensor) -> Option<*const sys::ggml_tensor> {
    if op_of(add) != sys::GGML_OP_ADD || ty(add) != F32 || ne(add) != ne(scaled) {
        return None;
    }
    let r = if src(add, 0) == scaled {
        src(add, 1)
    } else if src(add, 1) == scaled {
        src(add, 0)
    } else {
        return None;
    };
    (r != scaled && ty(r) == F32 && ne(r) == ne(add) && nb(r) == nb(add)).then_some(r)
}

/// MUL of two same-shaped, same-strided f32 tensors, then RMS_NORM of it, then its weight MUL.
fn mul_norm(m: *const sys::ggml_tensor, norm: *const sys::ggml_tensor, w: *const sys::ggml_tensor) -> bool {
    op_of(m) == sys::GGML_OP_MUL
        && op_of(norm) == sys::GGML_OP_RMS_NORM
        && src(norm, 0) == m
        && pairs(norm, w)
        && [m, src(m, 0), src(m, 1)].iter().all(|&t| ty(t) == F32)
        && ne(src(m, 0)) == ne(m)
        && ne(src(m, 1)) == ne(m)
        && nb(src(m, 0)) == nb(src(m, 1))
        && ne(m)[0] % 256 == 0
}

/// Whether `out` is stored clear of every tensor in `reads`: a fused unit whose workgroups
/// each read all of an input (attention's K, V, Q, a product's matrix and vector) must not
/// write memory that another of its workgroups may still read. ggml-alloc may place the unit's
/// last result in memory an input of an earlier node of it used (that input is dead by then in
/// ggml's node-by-node order, but not inside one dispatch). Unplaced tensors count as
/// overlapping.
pub(crate) fn stored_clear_of(out: *const sys::ggml_tensor, reads: &[*const sys::ggml_tensor]) -> bool {
    let Some(o) = placed(out) else { return false };
    reads.iter().filter(|r| !r.is_null()).all(|&r| placed(r).is_some_and(|r| r.0 != o.0 || r.2 <= o.1 || o.2 <= r.1))
}

/// The buffer and byte range `t` occupies in one of our buffers (None: not in one).
fn placed(t: *const sys::ggml_tensor) -> Option<(ash::vk::Buffer, u64, u64)> {
    crate::dispatch::locate(t).ok().map(|(a, o)| (a.buffer, o, o + crate::dispatch::span(t).max(1)))
}

/// MUL_MAT (f32 result), PERMUTE of it, CONT of the permuted view into a contiguous f32
/// tensor of as many elements.
fn mm_permute_cont(mm: *const sys::ggml_tensor, perm: *const sys::ggml_tensor, cont: *const sys::ggml_tensor) -> bool {
    op_of(mm) == sys::GGML_OP_MUL_MAT
        && op_of(perm) == sys::GGML_OP_PERMUTE
        && src(perm, 0) == mm
        && op_of(cont) == sys::GGML_OP_CONT
        && src(cont, 0) == perm
        && ty(mm) == F32
        && ty(cont) == F32
        && nelements(cont) == nelements(mm)
        // SAFETY: cont is a live tensor.
        && unsafe { sys::ggml_is_contiguous(cont) }
        && (0..4).all(|k| crate::ops::param_u32(perm, k) < 4)
        && nelements(mm) < u32::MAX as u64 / 2
}

/// ROPE (as the backend runs it) of a 3-D f32 tensor, RESHAPE (or whole contiguous VIEW) of
/// its contiguous result to rows, SET_ROWS of those rows, by i64 indices, into a 2-D f16 tensor.
fn rope_set_rows(rope: *const sys::ggml_tensor, view: *const sys::ggml_tensor, rows: *const sys::ggml_tensor) -> bool {
    let r = ne(rope);
    op_of(rope) == sys::GGML_OP_ROPE
        // RESHAPE, or a VIEW of all of it as contiguous rows (llama.cpp's KV write)
        && (op_of(view) == sys::GGML_OP_RESHAPE
            || (op_of(view) == sys::GGML_OP_VIEW
                // SAFETY: view and rope are live tensors.
                && unsafe { (*view).data == (*rope).data }
                && nb(view)[0] == 4
                && nb(view)[1] == (r[0] * r[1] * 4) as usize))
        && src(view, 0) == rope
        && op_of(rows) == sys::GGML_OP_SET_ROWS
        && src(rows, 0) == view
        && ty(rope) == F32
        && ty(src(rope, 0)) == F32
        && ty(rows) == sys::GGML_TYPE_F16
        && ty(src(rows, 1)) == sys::GGML_TYPE_I64
        && r[3] == 1
        // SAFETY: rope is a live tensor.
        && unsafe { sys::ggml_is_contiguous(rope) }
        && ne(view) == [r[0] * r[1], r[2], 1, 1]
        && ne(src(rows, 1))[0] == r[2]
        && ne(src(rows, 1))[1..] == [1, 1, 1]
        && nb(src(rows, 1))[0] == 8
        && ne(rows)[0] == r[0] * r[1]
        && ne(rows)[2..] == [1, 1]
        && nb(rows)[0] == 2
}

/// ROPE `rope` (of K), reshaped to rows, SET_ROWS `rows` into the f16 cache: one kernel.
fn encode_rope_rows(rec: &mut Recorder, rope: *const sys::ggml_tensor, rows: *const sys::ggml_tensor) -> Result<()> {
    let (x, pos, ids) = (src(rope, 0), src(rope, 1), src(rows, 1));
    let mut p = Push::default();
    (p.a_ne, p.a_nb) = shape(x, 4);
    (_, p.d_nb) = shape(rows, 2);
    crate::ops::rope_params(&mut p, rope, pos);
    let n = nelements(x) / 2;
    p.m0[1] = n as u32;
    let (a, b, d, id) = (rec.bind(x, 4)?, rec.bind(pos, 4)?, rec.bind(rows, 2)?, rec.bind(ids, 8)?);
    p.d_ne = [id.elem_off, (nb(ids)[0] / 8) as u32, 0, 0];
    rec.dispatch_ex("rope_set_rows_f16_i64", a, Some(b), d, Some(id), false, p, n.div_ceil(256))
}

/// Node indices of the KV-cache writes a Q, V, K group folds in (`kv_writes`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KvNodes {
    pub k_rope: usize,
    pub k_rows: usize,
    pub v_rows: usize,
}

/// The only node after `from` reading `t`, if `t` has exactly one use and is no output.
fn sole_reader(graph: *mut sys::ggml_cgraph, t: *const sys::ggml_tensor, from: usize) -> Option<usize> {
    // SAFETY: graph and t are live for the call.
    let (n, uses, flags) =
        unsafe { (sys::ggml_graph_n_nodes(graph) as usize, sys::ggml_graph_use_count(graph, t), (*t).flags) };
    if uses != 1 || flags & sys::GGML_TENSOR_FLAG_OUTPUT as i32 != 0 {
        return None;
    }
    (from + 1..n).find(|&k| {
        let u = node(graph, k as i32);
        (0..sys::GGML_MAX_SRC as usize).any(|s| src(u, s) == t)
    })
}

/// For a Q, V, K group (`members`: Q, V, K) with Q's ROPE `q_rope`
/// folded in: K's ROPE and its SET_ROWS into the f16 K cache (`rope_set_rows`, one token,
/// the same rotation as Q's), and V's SET_ROWS into the f16 V cache through RESHAPEs (rows
/// of all of V, or of one element each: llama.cpp's transposed V cache), if they are the
/// only readers of V and K, so that the group's dispatch can write the caches itself.
fn kv_writes(graph: *mut sys::ggml_cgraph, members: &[usize], q_rope: usize) -> Option<KvNodes> {
    if members.len() != 3 {
        return None;
    }
    kv_writes_as(graph, members[1], members[2], q_rope)
}

/// `kv_writes` with V's product at `v` and K's at `k`.
fn kv_writes_as(graph: *mut sys::ggml_cgraph, v: usize, k: usize, q_rope: usize) -> Option<KvNodes> {
    let qr = node(graph, q_rope as i32);
    // K: MUL, RESHAPE, ROPE, VIEW or RESHAPE, SET_ROWS.
    let kr = sole_reader(graph, node(graph, k as i32 + 1), k + 1)?;
    let k_rope = sole_reader(graph, node(graph, kr as i32), kr)?;
    let rope = node(graph, k_rope as i32);
    let view = sole_reader(graph, rope, k_rope)?;
    let k_rows = sole_reader(graph, node(graph, view as i32), view)?;
    let same_rotation =
        src(rope, 1) == src(qr, 1) && (1..=10).all(|p| crate::ops::param_u32(rope, p) == crate::ops::param_u32(qr, p));
    let k_ok = op_of(node(graph, kr as i32)) == sys::GGML_OP_RESHAPE
        && src(rope, 0) == node(graph, kr as i32)
        && same_rotation
        && epilogue_rope(rope)
        && rope_set_rows(rope, node(graph, view as i32), node(graph, k_rows as i32))
        && ne(src(node(graph, k_rows as i32), 1))[0] == 1;
    // V: MUL, RESHAPEs, SET_ROWS.
    let (mut t, mut at) = (node(graph, v as i32 + 1), v + 1);
    let v_rows = loop {
        let r = sole_reader(graph, t, at)?;
        let u = node(graph, r as i32);
        match op_of(u) {
            sys::GGML_OP_RESHAPE => (t, at) = (u, r),
            sys::GGML_OP_SET_ROWS if src(u, 0) == t => break r,
            _ => return None,
        }
    };
    let rows = node(graph, v_rows as i32);
    let (x, ids) = (src(rows, 0), src(rows, 1));
    let v_n = ne(node(graph, v as i32 + 1))[0];
    let [w, n_rows, ..] = ne(x);
    let v_ok = ty(rows) == sys::GGML_TYPE_F16
        && ty(x) == F32
        && ty(ids) == sys::GGML_TYPE_I64
        && nb(rows)[0] == 2
        && nb(rows)[1] % 2 == 0
        && nb(rows)[1] / 2 < (1 << 31)
        && ne(x)[2..] == [1, 1]
        && ne(rows)[0] == w
        && ((w == 1 && n_rows == v_n) || (w == v_n && n_rows == 1))
        && ne(ids)[0] == n_rows
        && ne(ids)[1..] == [1, 1, 1]
        && nb(ids)[0] == 8;
    (k_ok && v_ok).then_some(KvNodes { k_rope, k_rows, v_rows })
}

/// A rotation the products' epilogue computes (`ROPE` in mul_mv_tq.comp): one token, NEOX or
/// normal pairs over the whole head, whose size is a multiple of 16 (a row group's pairs stay
/// in one head), no YaRN or frequency factors, f32.
fn epilogue_rope(rope: *const sys::ggml_tensor) -> bool {
    let r = ne(rope);
    let n_dims = crate::ops::param_u32(rope, 1) as i64;
    let mode = crate::ops::param_u32(rope, 2);
    ty(rope) == F32
        && ty(src(rope, 1)) == crate::ops::I32
        && src(rope, 2).is_null()
        && (mode == 0 || mode == sys::GGML_ROPE_TYPE_NEOX)
        && crate::ops::param_f32(rope, 7) == 0.0
        && n_dims == r[0]
        && n_dims % crate::matvec::NORM_ROWS_PER_WG as i64 == 0
        && r[2..] == [1, 1]
        && ne(src(rope, 1))[0] == 1
}

/// The ROPE that is the only reader of the scaled product at `first` (MUL_MAT, MUL by its
/// scale, RESHAPE to heads, ROPE, as llama.cpp's graph rotates Q), if the products' epilogue
/// can compute it (`epilogue_rope`) into contiguous memory.
fn rope_of_first(graph: *mut sys::ggml_cgraph, first: usize) -> Option<usize> {
    // SAFETY: graph is live for the call.
    let n = unsafe { sys::ggml_graph_n_nodes(graph) } as usize;
    if first + 3 >= n {
        return None;
    }
    let (mul, reshape, rope) =
        (node(graph, first as i32 + 1), node(graph, first as i32 + 2), node(graph, first as i32 + 3));
    // SAFETY: rope is a live node of the graph.
    let contiguous = unsafe { sys::ggml_is_contiguous(rope) };
    let ok = op_of(reshape) == sys::GGML_OP_RESHAPE
        && src(reshape, 0) == mul
        && op_of(rope) == sys::GGML_OP_ROPE
        && src(rope, 0) == reshape
        && sole_reader(graph, mul, first + 1) == Some(first + 2)
        && sole_reader(graph, reshape, first + 2) == Some(first + 3)
        && epilogue_rope(rope)
        && contiguous
        && nelements(rope) as i64 == ne(mul)[0];
    ok.then_some(first + 3)
}

/// Element strides in a contiguous CONT of the PERMUTE `perm` for each dimension of the
/// permuted tensor: its dimension k is the view's dimension axis[k].
fn permuted_strides(perm: *const sys::ggml_tensor) -> [u32; 4] {
    let nv = ne(perm);
    let mut cs = [1u32; 4];
    for d in 1..4 {
        cs[d] = cs[d - 1] * nv[d - 1] as u32;
    }
    [0, 1, 2, 3].map(|k| cs[crate::ops::param_u32(perm, k) as usize])
}

/// RELU, then SQR of it, f32, same shapes.
fn relu_sqr(a: *const sys::ggml_tensor, b: *const sys::ggml_tensor) -> bool {
    op_of(a) == sys::GGML_OP_UNARY
        // SAFETY: a is a live UNARY node.
        && unsafe { sys::ggml_get_unary_op(a) } == sys::GGML_UNARY_OP_RELU
        && op_of(b) == sys::GGML_OP_SQR
        && src(b, 0) == a
        && [a, b, src(a, 0)].iter().all(|&t| ty(t) == F32)
        && ne(a) == ne(src(a, 0))
        && ne(b) == ne(a)
}

/// RELU at `i`, SQR of it at `i + 1`, MUL of that (as src0) by a same-shaped f32 tensor.
fn relu_sqr_mul(a: *const sys::ggml_tensor, b: *const sys::ggml_tensor, c: *const sys::ggml_tensor) -> bool {
    op_of(a) == sys::GGML_OP_UNARY
        // SAFETY: a is a live UNARY node.
        && unsafe { sys::ggml_get_unary_op(a) } == sys::GGML_UNARY_OP_RELU
        && op_of(b) == sys::GGML_OP_SQR
        && op_of(c) == sys::GGML_OP_MUL
        && src(b, 0) == a
        && src(c, 0) == b
        && [a, b, c, src(a, 0), src(c, 1)].iter().all(|&t| ty(t) == F32)
        && ne(a) == ne(src(a, 0))
        && ne(b) == ne(a)
        && ne(c) == ne(a)
        && ne(src(c, 1)) == ne(a)
}

/// More than one node of the whole graph reads `t` (ggml's use count: a scheduler split shares
/// its graph's, so uses in other splits count too).
fn graph_uses_more_than_once(graph: *mut sys::ggml_cgraph, t: *const sys::ggml_tensor) -> bool {
    // SAFETY: graph and t are live for the call.
    unsafe { sys::ggml_graph_use_count(graph, t) > 1 }
}

fn node(graph: *mut sys::ggml_cgraph, i: i32) -> *const sys::ggml_tensor {
    // SAFETY: callers pass 0 <= i < n_nodes of a live graph.
    unsafe { sys::ggml_graph_node(graph, i) }
}

/// `next` consumes `cur` in a pair this module fuses: a MUL (of `cur` as src0) after
/// MUL_MAT or RMS_NORM, or a SQR after a RELU.
fn pairs(cur: *const sys::ggml_tensor, next: *const sys::ggml_tensor) -> bool {
    if op_of(next) == sys::GGML_OP_SQR {
        return relu_sqr(cur, next);
    }
    if op_of(next) != sys::GGML_OP_MUL || src(next, 0) != cur || ne(next) != ne(cur) || ty(next) != F32 {
        return false;
    }
    let w = src(next, 1);
    if ty(w) != F32 {
        return false;
    }
    match op_of(cur) {
        sys::GGML_OP_MUL_MAT => nelements(w) == 1,
        sys::GGML_OP_RMS_NORM => ty(cur) == F32,
        _ => false,
    }
}

/// TRIT_VULKAN_NO_FUSION=1 (or `all`) turns fusion off; a comma-separated list of `scale`,
/// `norm`, `quant`, `relu`, `res`, `pre` turns off those kinds (for bisecting).
fn off(kind: &str) -> bool {
    static LIST: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let list = LIST.get_or_init(|| {
        let v = std::env::var("TRIT_VULKAN_NO_FUSION").unwrap_or_default();
        v.split(',').map(|s| if s.trim() == "1" { "all".to_string() } else { s.trim().to_string() }).collect()
    });
    list.iter().any(|k| k == "all" || k == kind)
}

impl Plan {
    pub fn new(graph: *mut sys::ggml_cgraph, gpu: &Gpu) -> Plan {
        if off("all") {
            return Plan::default();
        }
        // SAFETY: graph is live for the call.
        let n = unsafe { sys::ggml_graph_n_nodes(graph) };
        // SAFETY: t is a live tensor.
        let output = |t: *const sys::ggml_tensor| unsafe { (*t).flags } & sys::GGML_TENSOR_FLAG_OUTPUT as i32 != 0;
        let mut ternary_inputs = Vec::new();
        for i in 0..n {
            let t = node(graph, i);
            if op_of(t) == sys::GGML_OP_MUL_MAT && matches!(ty(src(t, 0)), TQ1 | TQ2) {
                ternary_inputs.push(src(t, 1) as usize);
            }
        }
        ternary_inputs.sort_unstable();
        let (mut pair_heads, mut triple_heads) = (Vec::new(), Vec::new());
        let (mut res_heads, mut pre_heads) = (Vec::new(), Vec::new());
        let (mut perm_heads, mut rope_heads) = (Vec::new(), Vec::new());
        let mut attn_heads = Vec::new();
        let attn_on = !off("attn");
        for i in 0..n.saturating_sub(1) {
            let (cur, next) = (node(graph, i), node(graph, i + 1));
            if output(cur) {
                continue;
            }
            let pair_kind = match op_of(cur) {
                sys::GGML_OP_MUL_MAT => "scale",
                sys::GGML_OP_RMS_NORM => "norm",
                _ => "relu",
            };
            // A product's workgroups each read all of its vector: its stored result must not
            // overlap it (nor the matrix).
            let product_clear =
                |out| op_of(cur) != sys::GGML_OP_MUL_MAT || stored_clear_of(out, &[src(cur, 0), src(cur, 1)]);
            if pairs(cur, next) && !off(pair_kind) && product_clear(next) {
                pair_heads.push(i as usize);
            }
            if i + 2 < n && !output(next) && !off("relu") && relu_sqr_mul(cur, next, node(graph, i + 2)) {
                triple_heads.push(i as usize);
            }
            if i + 2 < n && !output(next) {
                let third = node(graph, i + 2);
                if op_of(cur) == sys::GGML_OP_MUL_MAT
                    && !off("res")
                    && pairs(cur, next)
                    && residual_of(next, third).is_some()
                    && product_clear(third)
                {
                    res_heads.push(i as usize);
                }
                if !off("perm")
                    && mm_permute_cont(cur, next, third)
                    && stored_clear_of(third, &[src(cur, 0), src(cur, 1)])
                {
                    perm_heads.push(i as usize);
                }
                if !off("rope") && rope_set_rows(cur, next, third) {
                    rope_heads.push(i as usize);
                }
                if attn_on && !output(third) && crate::attn::matches(gpu, cur, next, third) {
                    let five = i + 4 < n && mm_permute_cont(third, node(graph, i + 3), node(graph, i + 4));
                    let last = if five { node(graph, i + 4) } else { third };
                    let reads = [src(cur, 0), src(cur, 1), src(next, 1), src(third, 0)];
                    if stored_clear_of(last, &reads) {
                        attn_heads.push((i as usize, if five { 5 } else { 3 }));
                    }
                }
                let quantized = ternary_inputs.binary_search(&(third as usize)).is_ok();
                if quantized && !off("pre") && mul_norm(cur, next, third) {
                    pre_heads.push(i as usize);
                }
            }
        }
        // The nodes whose single use decides: pair heads, and both intermediates of triples.
        let mut cand: Vec<(usize, usize)> = pair_heads.iter().map(|&i| (node(graph, i as i32) as usize, i)).collect();
        let attn_nodes = attn_heads.iter().flat_map(|&(i, len)| [i, i + 2, i + len - 2]);
        for i in triple_heads
            .iter()
            .chain(&res_heads)
            .chain(&pre_heads)
            .chain(&perm_heads)
            .chain(&rope_heads)
            .copied()
            .chain(attn_nodes)
        {
            cand.push((node(graph, i as i32) as usize, i));
            cand.push((node(graph, i as i32 + 1) as usize, i + 1));
        }
        if cand.is_empty() {
            return Plan { ternary_inputs, ..Plan::default() };
        }
        cand.sort_unstable();
        cand.dedup();
        // Uses of each candidate by any node, directly or through a view of it.
        let mut uses = vec![0u32; cand.len()];
        let mut count = |t: *const sys::ggml_tensor| {
            if let Ok(k) = cand.binary_search_by_key(&(t as usize), |c| c.0) {
                uses[k] += 1;
            }
        };
        for j in 0..n {
            let t = node(graph, j);
            for k in 0..sys::GGML_MAX_SRC as usize {
                let s = src(t, k);
                if s.is_null() {
                    continue;
                }
                count(s);
                // SAFETY: s is a live tensor.
                let root = unsafe { (*s).view_src };
                if !root.is_null() {
                    count(root);
                }
            }
            // SAFETY: t is a live tensor.
            let root = unsafe { (*t).view_src };
            if !root.is_null() {
                count(root);
            }
        }
        // The graph may be one split of the scheduler's graph: a node of a later split (the
        // backward pass after a CPU split, under gradient checkpointing) may read a candidate
        // too. ggml's use counts cover the whole graph, so a candidate must also have at most
        // one use there (a PERMUTE or RESHAPE counts as the one use of what it views).
        let global = |i: usize| !graph_uses_more_than_once(graph, node(graph, i as i32));
        let once = |i: usize| {
            let p = node(graph, i as i32) as usize;
            cand.binary_search_by_key(&p, |c| c.0).is_ok_and(|k| uses[k] == 1) && global(i)
        };
        let triples: Vec<usize> = triple_heads.into_iter().filter(|&i| once(i) && once(i + 1)).collect();
        let res_triples: Vec<usize> = res_heads.into_iter().filter(|&i| once(i) && once(i + 1)).collect();
        let pre_triples: Vec<usize> = pre_heads.into_iter().filter(|&i| once(i) && once(i + 1)).collect();
        // The product is counted three times by its PERMUTE and CONT (a source, and the view
        // root of the PERMUTE and of the CONT's source): any other use makes it more. None:
        // used in another split of the graph as well.
        let uses_of = |i: usize| {
            let p = node(graph, i as i32) as usize;
            global(i).then(|| cand.binary_search_by_key(&p, |c| c.0).map_or(0, |k| uses[k]))
        };
        let perm_triples: Vec<usize> =
            perm_heads.into_iter().filter(|&i| uses_of(i) == Some(3) && uses_of(i + 1) == Some(1)).collect();
        // The same count for a ROPE under its RESHAPE and the SET_ROWS of that.
        let rope_triples: Vec<usize> =
            rope_heads.into_iter().filter(|&i| uses_of(i) == Some(3) && uses_of(i + 1) == Some(1)).collect();
        // KQ and the softmax used once each; with the PERMUTE and CONT, KQV's uses as in
        // `perm_triples`; without, KQV's own uses do not matter (it is what is stored).
        let attn: Vec<(usize, usize)> = attn_heads
            .into_iter()
            .filter(|&(i, len)| {
                once(i) && once(i + 1) && (len == 3 || (uses_of(i + 2) == Some(3) && uses_of(i + 3) == Some(1)))
            })
            .collect();
        let fusable: Vec<usize> =
            pair_heads.into_iter().filter(|&i| once(i) && triples.binary_search(&i).is_err()).collect();
        let relu_pre = if off("relu2") || !gpu.fast_kernels() || !gpu.has_pipeline("mv_rms_norm_mul_q8_pre_relu2_f32") {
            Vec::new()
        } else {
            relu_into_pre(graph, n, &pre_triples, &fusable)
        };
        let mut plan = Plan {
            fusable,
            triples,
            res_triples,
            pre_triples,
            relu_pre,
            perm_triples,
            rope_triples,
            attn,
            multi: Vec::new(),
            moved: Vec::new(),
            multi_rope: Vec::new(),
            roped: Vec::new(),
            multi_kv: Vec::new(),
            kv_absorbed: Vec::new(),
            qkv_attn: Vec::new(),
            ternary_inputs,
            deferred: Vec::new(),
        };
        if !off("multi") && !crate::schedule::enabled() {
            let groups = plan.sibling_products(graph, gpu);
            plan.multi_rope = groups.iter().filter_map(|g| g.2.map(|r| (g.1[0], r))).collect();
            plan.roped = plan.multi_rope.iter().map(|m| m.1).collect();
            plan.roped.sort_unstable();
            plan.multi_kv = groups.iter().filter_map(|g| g.3.map(|kv| (g.1[0], kv))).collect();
            plan.kv_absorbed = plan.multi_kv.iter().flat_map(|m| [m.1.k_rope, m.1.k_rows, m.1.v_rows]).collect();
            plan.kv_absorbed.sort_unstable();
            plan.multi = groups.into_iter().map(|g| (g.0, g.1)).collect();
            plan.moved = plan.multi.iter().flat_map(|m| m.1[1..].iter().copied()).collect();
            plan.moved.sort_unstable();
            if !off("attnqkv") {
                plan.qkv_attn = plan.attention_after_qkv(graph);
            }
        }
        if !plan.relu_pre.is_empty() {
            // Both ends must start a recording unit (`schedule::order` cuts units greedily).
            let mut starts = Vec::new();
            let mut i = 0usize;
            while i < n as usize {
                starts.push(i);
                i += plan.len(i);
            }
            plan.relu_pre.retain(|e| starts.binary_search(&e.0).is_ok() && starts.binary_search(&e.1).is_ok());
        }
        if gpu.fast_kernels() {
            plan.deferred = deferrable(graph, n, &plan);
        }
        plan
    }

    /// For each Q, V, K group writing the caches (`multi_kv`), the decode attention unit that
    /// follows it with nothing recorded in between: every node between them is a view or
    /// reshape, or one the group's dispatch computes (its products and scales, Q's ROPE, the
    /// cache writes).
    fn attention_after_qkv(&self, graph: *mut sys::ggml_cgraph) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (head, kv) in &self.multi_kv {
            let Some((_, members)) = self.multi.iter().find(|m| m.1[0] == *head) else { continue };
            let Some(&(_, rope)) = self.multi_rope.iter().find(|m| m.0 == *head) else { continue };
            let Some(&(a, _)) = self.attn.iter().filter(|a| a.0 > *head).min_by_key(|a| a.0) else { continue };
            let covered = |k: usize| {
                crate::ops::is_noop(op_of(node(graph, k as i32)))
                    || members.iter().any(|&m| k == m || k == m + 1)
                    || [rope, kv.k_rope, kv.k_rows, kv.v_rows].contains(&k)
            };
            if (head + 1..a).all(covered) {
                out.push((*head, a));
            }
        }
        out
    }

    /// Groups of 2 or 3 scaled products (fusable MUL_MAT + scale pairs, nothing else fused
    /// into them) of one activation column, that `matvec::multi_kernel` accepts and that can
    /// all run at the first one's place: no node recorded between the first and a later one
    /// reads or writes memory overlapping that one's result (ggml-alloc may have given the
    /// later result memory that was in use until then). Where the first product's only reader
    /// is a ROPE (`rope_of_first`), that ROPE is folded in: the first result is stored rotated,
    /// into the ROPE's memory, and nothing reads the unrotated one. That saves a stage, and
    /// lets Q join K and V at all: llama.cpp's graph rotates Q before computing V and K, whose
    /// results may take the unrotated Q's memory.
    /// Where such a Q, V, K group's V and K are read only by their KV-cache writes
    /// (`kv_writes`), those are folded in too: the group's fourth element.
    #[allow(clippy::type_complexity)]
    fn sibling_products(
        &self,
        graph: *mut sys::ggml_cgraph,
        gpu: &Gpu,
    ) -> Vec<(String, Vec<usize>, Option<usize>, Option<KvNodes>)> {
        let taken = |i: usize| {
            let has = |v: &Vec<usize>| v.binary_search(&i).is_ok();
            has(&self.res_triples)
                || has(&self.pre_triples)
                || has(&self.triples)
                || has(&self.perm_triples)
                || has(&self.rope_triples)
                || self.attn.iter().any(|a| (a.0..a.0 + a.1).contains(&i))
        };
        let mut heads: Vec<usize> = self
            .fusable
            .iter()
            .copied()
            .filter(|&i| op_of(node(graph, i as i32)) == sys::GGML_OP_MUL_MAT && !taken(i))
            .collect();
        let range = placed;
        let overlaps = |a: Option<(ash::vk::Buffer, u64, u64)>, b: (ash::vk::Buffer, u64, u64)| {
            a.is_none_or(|a| a.0 == b.0 && a.1 < b.2 && b.1 < a.2)
        };
        // Whether no node recorded in first + 2 .. j but those in `skip` touches `out`.
        let untouched = |first: usize, j: usize, out: (ash::vk::Buffer, u64, u64), skip: &[usize]| {
            (first + 2..j).all(|k| {
                let t = node(graph, k as i32);
                if crate::ops::is_noop(op_of(t)) || skip.contains(&k) {
                    return true;
                }
                let srcs = (0..sys::GGML_MAX_SRC as usize).map(|s| src(t, s)).filter(|s| !s.is_null());
                !overlaps(range(t), out) && srcs.into_iter().all(|s| !overlaps(range(s), out))
            })
        };
        // Whether the later members of `group` can run at the first one's place (with the
        // first's ROPE `rope` folded into it: the ROPE's result is written there too, and the
        // ROPE no longer reads the first's result).
        let movable = |group: &[usize], rope: Option<usize>| {
            let first = group[0];
            let skip: Vec<usize> = rope.into_iter().collect();
            let rope_ok =
                rope.is_none_or(|r| range(node(graph, r as i32)).is_some_and(|out| untouched(first, r, out, &[])));
            rope_ok
                && group[1..]
                    .iter()
                    .all(|&j| range(node(graph, j as i32 + 1)).is_some_and(|out| untouched(first, j, out, &skip)))
        };
        // Whether the cache writes of `kv` can happen at the group's place too.
        let kv_movable = |first: usize, q_rope: usize, kv: &KvNodes| {
            let skip = [q_rope, kv.k_rope, kv.k_rows, kv.v_rows];
            [kv.k_rows, kv.v_rows]
                .iter()
                .all(|&w| range(node(graph, w as i32)).is_some_and(|out| untouched(first, w, out, &skip)))
        };
        let mut groups = Vec::new();
        while let Some(&first) = heads.first() {
            let x = src(node(graph, first as i32), 1);
            let mut members: Vec<usize> =
                heads.iter().copied().filter(|&i| src(node(graph, i as i32), 1) == x).take(3).collect();
            heads.retain(|i| !members.contains(i));
            // Without the first where the rest cannot move up to it (llama.cpp's graph rotates
            // Q before computing V and K, whose results may take Q's memory): V and K.
            while members.len() >= 2 {
                let pairs: Vec<_> =
                    members.iter().map(|&i| (node(graph, i as i32), node(graph, i as i32 + 1))).collect();
                // With the first's ROPE folded in where it can be (one stage less), else without.
                let rope = rope_of_first(graph, members[0]).filter(|_| !off("multirope"));
                if let Some(r) = rope {
                    let kernel = crate::matvec::multi_kernel(gpu, &pairs, Some(node(graph, r as i32)));
                    if let Some(kernel) = kernel.filter(|_| movable(&members, Some(r))) {
                        // V and K in either order in the graph; the kernel takes them as V, K.
                        let mut members = members;
                        let mut kv = None;
                        if !off("multikv") && gpu.has_pipeline("rope_set_rows_f16_i64") {
                            for swap in [false, true] {
                                let mut m = members.clone();
                                if swap && m.len() == 3 {
                                    m.swap(1, 2);
                                }
                                if let Some(c) = kv_writes(graph, &m, r).filter(|c| kv_movable(m[0], r, c)) {
                                    (members, kv) = (m, Some(c));
                                    break;
                                }
                            }
                        }
                        groups.push((kernel, members, Some(r), kv));
                        break;
                    }
                }
                if let Some(kernel) = crate::matvec::multi_kernel(gpu, &pairs, None).filter(|_| movable(&members, None))
                {
                    groups.push((kernel, members, None, None));
                    break;
                }
                members.remove(0);
            }
        }
        groups
    }

    /// The decode attention unit at node `i` (`attn`): its nodes and where its result goes,
    /// with element strides for (dim, token, head): the KQV node's own or, with the PERMUTE
    /// and CONT folded in, the CONT's.
    fn attention_at(&self, graph: *mut sys::ggml_cgraph, i: usize) -> Option<crate::matvec::AttnTail> {
        let &(_, len) = self.attn.iter().find(|a| a.0 == i)?;
        let i = i as i32;
        let (kq, sm, kqv) = (node(graph, i), node(graph, i + 1), node(graph, i + 2));
        let (out, strides) = if len == 5 {
            let (perm, cont) = (node(graph, i + 3), node(graph, i + 4));
            (cont, permuted_strides(perm))
        } else {
            (kqv, nb(kqv).map(|x| (x / 4) as u32))
        };
        Some(crate::matvec::AttnTail { kq, sm, kqv, out, strides: [strides[0], strides[1], strides[2]] })
    }

    /// Record node `i` fused with the nodes after it if possible: how many nodes were
    /// recorded (0: none, node `i` is to be recorded alone).
    /// A tensor the unit at `i` reads besides its nodes' operands (for `schedule`).
    pub fn extra_read(&self, i: usize) -> Option<*const sys::ggml_tensor> {
        self.relu_pre.iter().find(|r| r.0 == i).map(|r| r.2 as *const sys::ggml_tensor)
    }

    /// Nodes from `i` on that `encode` may fuse into one unit (1: none).
    pub fn len(&self, i: usize) -> usize {
        let has = |v: &Vec<usize>| v.binary_search(&i).is_ok();
        if let Some(&(_, len)) = self.attn.iter().find(|a| a.0 == i) {
            len
        } else if has(&self.res_triples)
            || has(&self.pre_triples)
            || has(&self.triples)
            || has(&self.perm_triples)
            || has(&self.rope_triples)
        {
            3
        } else if has(&self.fusable) {
            2
        } else {
            1
        }
    }

    /// As [`Plan::encode`], fusing at most `max` nodes (the rest of node `i`'s unit).
    pub fn encode_within(&self, rec: &mut Recorder, graph: *mut sys::ggml_cgraph, i: i32, max: i32) -> Result<i32> {
        if self.len(i as usize) <= max as usize {
            return self.encode(rec, graph, i);
        }
        Ok(0)
    }

    pub fn encode(&self, rec: &mut Recorder, graph: *mut sys::ggml_cgraph, i: i32) -> Result<i32> {
        if self.moved.binary_search(&(i as usize)).is_ok() {
            return Ok(2); // recorded with the first product of its group
        }
        if self.roped.binary_search(&(i as usize)).is_ok() {
            return Ok(1); // computed by the products of its group
        }
        if self.kv_absorbed.binary_search(&(i as usize)).is_ok() {
            return Ok(self.len(i as usize) as i32); // recorded with the products of its group
        }
        if let Some((kernel, members)) = self.multi.iter().find(|m| m.1[0] == i as usize) {
            let pairs: Vec<_> = members.iter().map(|&j| (node(graph, j as i32), node(graph, j as i32 + 1))).collect();
            let rope = self.multi_rope.iter().find(|m| m.0 == i as usize).map(|m| node(graph, m.1 as i32));
            let kv = self.multi_kv.iter().find(|m| m.0 == i as usize).map(|m| m.1);
            let cache = kv.map(|kv| crate::matvec::KvWrites {
                k_rope: node(graph, kv.k_rope as i32),
                k_rows: node(graph, kv.k_rows as i32),
                v_rows: node(graph, kv.v_rows as i32),
            });
            let attn = self.qkv_attn.iter().find(|m| m.0 == i as usize).and_then(|m| self.attention_at(graph, m.1));
            let (written, attended) = crate::matvec::encode_multi(rec, kernel, &pairs, rope, cache, attn)?;
            if let (Some(t), true) = (attn, attended) {
                rec.attn_in_qkv.push(t.kq);
            }
            if let (Some(c), false) = (cache, written) {
                // The products stored V and K: their cache writes are recorded here instead.
                encode_rope_rows(rec, c.k_rope, c.k_rows)?;
                crate::ops::encode(rec, c.v_rows)?;
            }
            return Ok(2);
        }
        if self.relu_pre.iter().any(|r| r.1 == i as usize) {
            return Ok(2); // RELU and SQR: computed by the pre kernel that reads them
        }
        if let (Some(&(_, len)), Some(t)) =
            (self.attn.iter().find(|a| a.0 == i as usize), self.attention_at(graph, i as usize))
        {
            if !rec.attn_in_qkv.contains(&t.kq) {
                crate::attn::encode(rec, t.kq, t.sm, t.kqv, t.out, t.strides)?;
            }
            return Ok(len as i32);
        }
        if self.res_triples.binary_search(&(i as usize)).is_ok() {
            let (mm, mul, add) = (node(graph, i), node(graph, i + 1), node(graph, i + 2));
            let r = residual_of(mul, add).expect("checked by Plan::new");
            if crate::matvec::encode_fused(rec, mm, Some((mul, src(mul, 1))), Some((add, r)))? {
                return Ok(3);
            }
        }
        if self.rope_triples.binary_search(&(i as usize)).is_ok() && rec.gpu().has_pipeline("rope_set_rows_f16_i64") {
            encode_rope_rows(rec, node(graph, i), node(graph, i + 2))?;
            return Ok(3);
        }
        if self.perm_triples.binary_search(&(i as usize)).is_ok() {
            let (mm, perm, cont) = (node(graph, i), node(graph, i + 1), node(graph, i + 2));
            if crate::matvec::encode_to(rec, mm, None, None, Some((cont, permuted_strides(perm))))? {
                return Ok(3);
            }
        }
        if let Some(d) = self.deferred.iter().find(|d| d.0 == i as usize) {
            let (head, norm, wmul) = (node(graph, i), node(graph, i + 1), node(graph, i + 2));
            let deferred = if d.1 {
                let relu_in = self.extra_read(i as usize).expect("deferred pre triples have a ReLU");
                Deferred { out: wmul, norm, pre: Some((head, relu_in)) }
            } else {
                Deferred { out: node(graph, i + 1), norm: head, pre: None }
            };
            rec.deferred.push(deferred);
            return Ok(if d.1 { 3 } else { 2 });
        }
        if self.pre_triples.binary_search(&(i as usize)).is_ok()
            && rec.gpu().fast_kernels()
            && rec.gpu().has_pipeline("mv_rms_norm_mul_q8_pre_f32")
        {
            let (m, norm, wmul) = (node(graph, i), node(graph, i + 1), node(graph, i + 2));
            record_pre(rec, m, norm, wmul, self.extra_read(i as usize))?;
            return Ok(3);
        }
        if self.triples.binary_search(&(i as usize)).is_ok() {
            let (relu, mul) = (node(graph, i), node(graph, i + 2));
            let (x, y) = (src(relu, 0), src(mul, 1));
            let mut p = Push::default();
            (p.a_ne, p.a_nb) = shape(x, 4);
            (p.b_ne, p.b_nb) = shape(y, 4);
            (p.d_ne, p.d_nb) = shape(mul, 4);
            let n = nelements(mul);
            p.m0[1] = n as u32;
            let (a, b, d) = (rec.bind(x, 4)?, rec.bind(y, 4)?, rec.bind(mul, 4)?);
            rec.dispatch("relu_sqr_mul_f32", a, Some(b), d, p, n.div_ceil(256))?;
            return Ok(3);
        }
        if self.fusable.binary_search(&(i as usize)).is_err() {
            return Ok(0);
        }
        let (cur, next) = (node(graph, i), node(graph, i + 1));
        let w = src(next, 1);
        match op_of(cur) {
            sys::GGML_OP_MUL_MAT => Ok(if crate::matvec::encode_scaled(rec, cur, Some((next, w)))? { 2 } else { 0 }),
            sys::GGML_OP_RMS_NORM => {
                let ternary = self.ternary_inputs.binary_search(&(next as usize)).is_ok();
                record_norm(rec, cur, next, ternary)?;
                Ok(2)
            }
            sys::GGML_OP_UNARY => {
                // RELU then SQR, written as the SQR node.
                let x = src(cur, 0);
                let mut p = Push::default();
                (p.a_ne, p.a_nb) = shape(x, 4);
                (p.d_ne, p.d_nb) = shape(next, 4);
                p.m0[1] = nelements(next) as u32;
                let groups = crate::ops::unary_fast(&mut p, x, next);
                let (a, d) = (rec.bind(x, 4)?, rec.bind(next, 4)?);
                rec.dispatch("relu_sqr_f32", a, None, d, p, groups)?;
                Ok(2)
            }
            _ => Ok(0),
        }
    }
}

/// RMS_NORM `norm` times its weight, stored as `wmul` (the weight MUL), and, where ternary
/// products read `wmul` (`ternary`), also written in their int8 form.
fn record_norm(
    rec: &mut Recorder,
    norm: *const sys::ggml_tensor,
    wmul: *const sys::ggml_tensor,
    ternary: bool,
) -> Result<()> {
    let (s0, w) = (src(norm, 0), src(wmul, 1));
    let mut p = Push::default();
    (p.a_ne, p.a_nb) = shape(s0, 4);
    (p.b_ne, p.b_nb) = shape(w, 4);
    (p.d_ne, p.d_nb) = shape(wmul, 4);
    p.m1[1] = crate::ops::param_u32(norm, 0);
    let rows = nelements(s0) / ne(s0)[0] as u64;
    p.m0[1] = rows as u32;
    let (a, b, d) = (rec.bind(s0, 4)?, rec.bind(w, 4)?, rec.bind(wmul, 4)?);
    let gpu = rec.gpu().clone();
    let fast = gpu.fast_kernels();
    let quant =
        fast && !off("quant") && ne(wmul)[0] % 256 == 0 && gpu.has_pipeline("mv_rms_norm_mul_q8_f32") && ternary;
    if quant {
        // Output quantized too, where the ternary products will look for it.
        let nel = nelements(wmul);
        let q = rec.rounded_scratch(wmul, crate::matvec::ROUNDED_Q8, nel + nel / 256 * 4)?;
        p.m1[2] = (nel / 4) as u32;
        p.m1[3] = q.elem_off;
        rec.dispatch_ex("mv_rms_norm_mul_q8_f32", a, Some(b), d, Some(q), true, p, rows)?;
        rec.rounded.push((wmul, crate::matvec::ROUNDED_Q8, q));
    } else {
        let kernel = if fast && ne(wmul)[0] % 256 == 0 && gpu.has_pipeline("mv_rms_norm_mul_f32") {
            "mv_rms_norm_mul_f32"
        } else {
            "rms_norm_mul_f32"
        };
        rec.dispatch(kernel, a, Some(b), d, p, rows)?;
    }
    Ok(())
}

/// The pre triple MUL `m` (of x and x2; of relu(`relu_in`)^2 and x2 where given), RMS_NORM
/// of it, its weight MUL `wmul`: one kernel, which also writes the int8 form of `wmul`.
fn record_pre(
    rec: &mut Recorder,
    m: *const sys::ggml_tensor,
    norm: *const sys::ggml_tensor,
    wmul: *const sys::ggml_tensor,
    relu_in: Option<*const sys::ggml_tensor>,
) -> Result<()> {
    let (x, x2, w) = (relu_in.unwrap_or(src(m, 0)), src(m, 1), src(wmul, 1));
    let kernel = if relu_in.is_some() { "mv_rms_norm_mul_q8_pre_relu2_f32" } else { "mv_rms_norm_mul_q8_pre_f32" };
    let mut p = Push::default();
    (p.a_ne, p.a_nb) = shape(x, 4);
    (p.b_ne, p.b_nb) = shape(w, 4);
    (_, p.d_nb) = shape(wmul, 4);
    p.m1[1] = crate::ops::param_u32(norm, 0);
    let rows = nelements(x) / ne(x)[0] as u64;
    p.m0[1] = rows as u32;
    let nel = nelements(wmul);
    let (a, b, d, a2) = (rec.bind(x, 4)?, rec.bind(w, 4)?, rec.bind(wmul, 4)?, rec.bind(x2, 4)?);
    let q = rec.rounded_scratch(wmul, crate::matvec::ROUNDED_Q8, nel + nel / 256 * 4)?;
    p.m1[2] = (nel / 4) as u32;
    p.m1[3] = q.elem_off;
    p.d_ne = [a2.elem_off, 0, 0, 0];
    rec.dispatch5(kernel, a, Some(b), d, Some(q), true, a2, p, rows)?;
    rec.rounded.push((wmul, crate::matvec::ROUNDED_Q8, q));
    Ok(())
}

/// A norm whose recording waits for its readers (ternary mat-vecs, which compute it
/// themselves: `NORM` in mul_mv_tq.comp): RMS_NORM `norm` and its weight MUL `out`; with
/// `pre` = (MUL, x), the norm of relu(x)^2 * the MUL's src1 (the FFN's sub-norm).
#[derive(Clone, Copy)]
pub(crate) struct Deferred {
    pub out: *const sys::ggml_tensor,
    pub norm: *const sys::ggml_tensor,
    pub pre: Option<(*const sys::ggml_tensor, *const sys::ggml_tensor)>,
}

impl Deferred {
    /// (x, x2, norm weight): the norm's input, the second factor of a pre norm's MUL.
    pub fn operands(&self) -> (*const sys::ggml_tensor, Option<*const sys::ggml_tensor>, *const sys::ggml_tensor) {
        match self.pre {
            Some((m, x)) => (x, Some(src(m, 1)), src(self.out, 1)),
            None => (src(self.norm, 0), None, src(self.out, 1)),
        }
    }
}

/// On unless TRIT_VULKAN_NO_FUSION names `normpro` (or `set_norm_in_mat_vec`).
pub(crate) static NORM_PROLOGUE: crate::switch::Switch = crate::switch::Switch::new();

/// Whether norms may be left to the ternary mat-vecs that read them (`deferrable`).
pub(crate) fn norm_prologue() -> bool {
    NORM_PROLOGUE.get(|| !off("normpro"))
}

/// Record the norm deferred for `t`, if one is: a reader of `t` other than a mat-vec that
/// computes it needs it in memory.
pub(crate) fn materialize(rec: &mut Recorder, t: *const sys::ggml_tensor) -> Result<()> {
    let Some(k) = rec.deferred.iter().position(|d| d.out == t) else { return Ok(()) };
    let d = rec.deferred.remove(k);
    match d.pre {
        Some((m, x)) => record_pre(rec, m, d.norm, d.out, Some(x)),
        None => record_norm(rec, d.norm, d.out, true),
    }
}

/// Norms (heads of RMS_NORM + weight pairs, and of pre triples with a ReLU: `true`) that
/// can wait for their readers: read only by ternary mat-vecs of one column, which run the
/// norm themselves (`NORM` in mul_mv_tq.comp), with nothing recorded in between writing the
/// norm's inputs. TRIT_VULKAN_NO_FUSION=normpro: none.
fn deferrable(graph: *mut sys::ggml_cgraph, n: i32, plan: &Plan) -> Vec<(usize, bool)> {
    let mut found = Vec::new();
    if !norm_prologue() || crate::schedule::enabled() {
        return found;
    }
    // SAFETY: t is a live tensor.
    let output = |t: *const sys::ggml_tensor| unsafe { (*t).flags } & sys::GGML_TENSOR_FLAG_OUTPUT as i32 != 0;
    let vec_of = |t: *const sys::ggml_tensor, k: i64| ty(t) == F32 && ne(t) == [k, 1, 1, 1] && nb(t)[0] == 4;
    let heads = plan
        .fusable
        .iter()
        .filter(|&&i| op_of(node(graph, i as i32)) == sys::GGML_OP_RMS_NORM)
        .map(|&i| (i, false))
        .chain(plan.relu_pre.iter().map(|r| (r.0, true)));
    for (i, pre) in heads {
        let len = if pre { 3 } else { 2 };
        let out = node(graph, (i + len - 1) as i32);
        let k = ne(out)[0];
        if plan.ternary_inputs.binary_search(&(out as usize)).is_err() || k % 256 != 0 || k > 8192 {
            continue;
        }
        let (x, x2) = if pre {
            let r = plan.relu_pre.iter().find(|r| r.0 == i).expect("a pre head");
            (r.2 as *const sys::ggml_tensor, Some(src(node(graph, i as i32), 1)))
        } else {
            (src(node(graph, i as i32), 0), None)
        };
        if !vec_of(out, k) || !vec_of(x, k) || !vec_of(src(out, 1), k) || x2.is_some_and(|t| !vec_of(t, k)) {
            continue;
        }
        if (i..i + len).any(|j| output(node(graph, j as i32))) {
            continue;
        }
        // Its readers: ternary MUL_MATs of it as src1, and nothing else.
        let readers: Vec<usize> = ((i + len) as i32..n)
            .filter(|&j| (0..sys::GGML_MAX_SRC as usize).any(|s| src(node(graph, j), s) == out))
            .map(|j| j as usize)
            .collect();
        let all_products = readers.iter().all(|&j| {
            let t = node(graph, j as i32);
            op_of(t) == sys::GGML_OP_MUL_MAT
                && src(t, 1) == out
                && src(t, 0) != out
                && matches!(ty(src(t, 0)), TQ1 | TQ2)
        });
        // SAFETY: graph and out are live for the call.
        let uses = unsafe { sys::ggml_graph_use_count(graph, out) } as usize;
        let Some(&last) = readers.last() else { continue };
        if !all_products || uses != readers.len() {
            continue;
        }
        // The inputs stay as they are until the last reader has run (ggml-alloc may reuse
        // memory), through the last reader: each reader runs the norm from the inputs in every
        // workgroup, so its own result must not be stored over them either. (Inputs outside
        // our buffers count as clobbered.)
        let inputs = [x, x2.unwrap_or(std::ptr::null())];
        let clobbered = (i + len..=last).any(|j| {
            let t = node(graph, j as i32);
            !crate::ops::is_noop(op_of(t)) && !stored_clear_of(t, &inputs)
        });
        if !clobbered {
            found.push((i, pre));
        }
    }
    found
}

/// Pre triples (MUL, RMS_NORM, MUL) whose first MUL reads SQR(RELU(x)) computed a few nodes
/// earlier by a fusable RELU+SQR pair, each used only there: (head, RELU index, x). Only
/// where nothing recorded between the pair and the MUL writes memory overlapping x (the
/// fused kernel reads x after them; ggml-alloc may reuse x's memory once the RELU is done).
fn relu_into_pre(graph: *mut sys::ggml_cgraph, n: i32, pre: &[usize], fusable: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut found = Vec::new();
    // SAFETY: t is a live tensor.
    let output = |t: *const sys::ggml_tensor| unsafe { (*t).flags } & sys::GGML_TENSOR_FLAG_OUTPUT as i32 != 0;
    // Uses of each candidate SQR (as a source or a view root), counted in one pass.
    let mut sqrs: Vec<(usize, usize)> = pre
        .iter()
        .map(|&m| src(node(graph, m as i32), 0))
        .filter(|&t| op_of(t) == sys::GGML_OP_SQR)
        .map(|t| (t as usize, 0))
        .collect();
    sqrs.sort_unstable();
    if sqrs.is_empty() {
        return found;
    }
    for j in 0..n {
        let t = node(graph, j);
        // SAFETY: t is a live tensor.
        let view = unsafe { (*t).view_src } as *const sys::ggml_tensor;
        for u in (0..sys::GGML_MAX_SRC as usize).map(|k| src(t, k)).chain(std::iter::once(view)) {
            if let Ok(k) = sqrs.binary_search_by_key(&(u as usize), |e| e.0) {
                sqrs[k].1 += 1;
            }
        }
    }
    for &m in pre {
        let mt = node(graph, m as i32);
        let sq = src(mt, 0);
        if op_of(sq) != sys::GGML_OP_SQR {
            continue;
        }
        let Some(r) = (m.saturating_sub(8)..m.saturating_sub(1)).find(|&r| node(graph, r as i32 + 1) == sq) else {
            continue;
        };
        let (relu, x) = (node(graph, r as i32), src(src(sq, 0), 0));
        if fusable.binary_search(&r).is_err() || !relu_sqr(relu, sq) || output(sq) || output(relu) {
            continue;
        }
        if x.is_null() || nb(x) != nb(sq) || nb(sq) != nb(src(mt, 1)) {
            continue;
        }
        let Ok((xa, xo)) = crate::dispatch::locate(x) else { continue };
        let (xlo, xhi) = (xo, xo + crate::dispatch::span(x));
        let clobbered = (r + 2..m).any(|j| {
            let t = node(graph, j as i32);
            !crate::ops::is_noop(op_of(t))
                && crate::dispatch::locate(t).map_or(true, |(a, o)| {
                    a.buffer == xa.buffer && o < xhi && xlo < o + crate::dispatch::span(t).max(1)
                })
        });
        // SQR used once (by the MUL); the RELU's single use is the pair's condition.
        let uses = sqrs.binary_search_by_key(&(sq as usize), |e| e.0).map_or(0, |k| sqrs[k].1);
        if !clobbered && uses == 1 && !graph_uses_more_than_once(graph, sq) {
            found.push((m, r, x as usize));
        }
    }
    found
}
