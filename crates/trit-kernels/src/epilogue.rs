//! What a MUL_MAT hook writes when ggml-cpu offers it the elementwise nodes after the product
//! (vendor patch 0013): BitNet's graph multiplies every projection by its per-tensor weight
//! scale (a MUL by one value), then adds the residual (output and down projections) or
//! applies the FFN's activation and gate (gate: relu, then square; up: times the activated
//! gate). Each such node is an op of its own with a barrier after it on every thread; applied
//! in the hook's store of each result instead, it costs a few flops.
//!
//! Each op is the f32 arithmetic ggml-cpu's own op performs on the same values (`a·b`, `a + b`,
//! `x·x`, `x > 0 ? x : 0`, operands in either order being the same IEEE result), so the output
//! is bit for bit what the separate nodes give. The hook declines (returns false) any chain it
//! does not take whole, and ggml-cpu then offers it the shorter chains.

use std::sync::atomic::{AtomicU8, Ordering};

use trit_sys as sys;

/// Most nodes after a product the patch offers.
const MAX_OPS: usize = 4;

/// One node applied to each result `v` (column `c`, row `r`).
#[derive(Clone, Copy, Debug)]
enum Op {
    /// `v · s`: a MUL by a one-element f32 tensor (the weight scale).
    Scale(f32),
    /// `v + m[c, r]`: an ADD of a same-shaped f32 matrix (`ld` floats between columns).
    Add(*const f32, usize),
    /// `v · m[c, r]`: a MUL by a same-shaped f32 matrix.
    Mul(*const f32, usize),
    /// `v > 0 ? v : 0` (ggml's RELU).
    Relu,
    /// `v · v` (ggml's SQR).
    Sqr,
}

/// The nodes between a product and the tensor its results go to, in graph order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epilogue {
    ops: [Op; MAX_OPS],
    n: usize,
}

/// Which epilogues the hooks take: TRIT_EPILOGUE=0 none (ggml computes every node after the
/// product, as without patch 0013), `all` every one [`resolve`] knows, anything else (the
/// default) the weight scale alone. On a 16-core Xeon (2026-12-06, tg64, 5 rounds) the scale
/// gave +4.9% over none, and the rest (residual ADD, relu, square, gate MUL) nothing more
/// (−2.4% at 16 threads, ±1% at 8), so the default stops at the scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Epilogues {
    None = 0,
    #[default]
    Scale = 1,
    All = 2,
}

static MODE: AtomicU8 = AtomicU8::new(Epilogues::Scale as u8);

/// Set which epilogues the hooks take (see [`Epilogues`]).
pub fn set_epilogues(mode: Epilogues) {
    MODE.store(mode as u8, Ordering::Relaxed);
}

/// [`Epilogues`] from TRIT_EPILOGUE (`0`, `all`; otherwise the default).
pub(crate) fn epilogues_from_env() -> Epilogues {
    match std::env::var("TRIT_EPILOGUE").as_deref() {
        Ok("0") => Epilogues::None,
        Ok("all") => Epilogues::All,
        _ => Epilogues::default(),
    }
}

fn mode() -> u8 {
    MODE.load(Ordering::Relaxed)
}

impl Epilogue {
    /// No node: the product itself.
    pub(crate) const NONE: Epilogue = Epilogue { ops: [Op::Sqr; MAX_OPS], n: 0 };

    /// Result `v` of column `c`, row `r`, through the nodes.
    #[inline]
    pub(crate) fn apply(&self, c: usize, r: usize, mut v: f32) -> f32 {
        for op in &self.ops[..self.n] {
            v = match *op {
                Op::Scale(s) => v * s,
                // SAFETY: `resolve` checked the matrix's shape and layout against the output's
                // (c < columns, r < rows); ggml keeps it alive while the op runs.
                Op::Add(m, ld) => v + unsafe { *m.add(c * ld + r) },
                // SAFETY: as for Add.
                Op::Mul(m, ld) => v * unsafe { *m.add(c * ld + r) },
                Op::Relu => {
                    if v > 0.0 {
                        v
                    } else {
                        0.0
                    }
                }
                Op::Sqr => v * v,
            };
        }
        v
    }
}

fn is_chain_op(t: &sys::ggml_tensor) -> bool {
    matches!(t.op, sys::GGML_OP_MUL | sys::GGML_OP_ADD | sys::GGML_OP_SQR | sys::GGML_OP_UNARY)
}

/// Whether `t` is `mm` or reaches it through at most `depth` chain nodes.
///
/// # Safety
/// `t` and its sources are live tensors.
unsafe fn leads_to(t: *const sys::ggml_tensor, mm: *const sys::ggml_tensor, depth: usize) -> bool {
    if std::ptr::eq(t, mm) {
        return true;
    }
    // SAFETY: the function's contract.
    let t = unsafe { &*t };
    // SAFETY: the sources of a live tensor are live (or null).
    depth > 0 && is_chain_op(t) && t.src[..2].iter().any(|&s| !s.is_null() && unsafe { leads_to(s, mm, depth - 1) })
}

/// An f32 matrix the shape of the product's output (`rows` × `cols`, one matrix), read
/// element by element: its data and the floats between its columns.
fn same_shape_operand(t: &sys::ggml_tensor, rows: usize, cols: usize) -> Option<(*const f32, usize)> {
    let ok = t.type_ == sys::GGML_TYPE_F32
        && t.ne[0] as usize == rows
        && t.ne[1] as usize == cols
        && t.ne[2] == 1
        && t.ne[3] == 1
        && t.nb[0] == 4
        && t.nb[1].is_multiple_of(4)
        && t.nb[1] / 4 >= rows
        && !t.data.is_null();
    ok.then_some((t.data as *const f32, t.nb[1] / 4))
}

/// The epilogue from product `mm` (a `rows` × `cols` f32 result) to `out`, if the hooks take it:
/// the weight scale for any product, the other nodes for mat-vecs only (`cols` < 4: there a
/// node costs a barrier on every thread for a few microseconds of work; a prompt's products
/// keep ggml's vectorised passes). None for anything else, and for what [`Epilogues`] excludes.
///
/// # Safety
/// `mm` and `out` are live tensors of the graph being computed, their sources allocated.
pub(crate) unsafe fn resolve(
    mm: &sys::ggml_tensor,
    out: &sys::ggml_tensor,
    rows: usize,
    cols: usize,
) -> Option<Epilogue> {
    if std::ptr::eq(mm, out) {
        return Some(Epilogue::NONE);
    }
    if mode() == Epilogues::None as u8 {
        return None;
    }
    // The path from `out` back to `mm`, last node first.
    let mut path: [*const sys::ggml_tensor; MAX_OPS] = [std::ptr::null(); MAX_OPS];
    let mut len = 0;
    let mut t: *const sys::ggml_tensor = out;
    while !std::ptr::eq(t, mm) {
        if len == MAX_OPS {
            return None;
        }
        path[len] = t;
        len += 1;
        // SAFETY: the function's contract; every tensor on the path is `out` or a source of one.
        let node = unsafe { &*t };
        if !is_chain_op(node) {
            return None;
        }
        // SAFETY: as above.
        let leads = |s: *const sys::ggml_tensor| !s.is_null() && unsafe { leads_to(s, mm, MAX_OPS) };
        t = match (leads(node.src[0]), leads(node.src[1])) {
            (true, false) => node.src[0],
            (false, true) => node.src[1],
            _ => return None,
        };
    }
    let mut epi = Epilogue::NONE;
    for (i, &p) in path[..len].iter().rev().enumerate() {
        // SAFETY: as above.
        let node = unsafe { &*p };
        let pred = if i == 0 { mm as *const _ } else { path[len - i] };
        let op = match node.op {
            sys::GGML_OP_MUL | sys::GGML_OP_ADD => {
                let other = if std::ptr::eq(node.src[0], pred) { node.src[1] } else { node.src[0] };
                if other.is_null() || std::ptr::eq(other, pred) {
                    return None;
                }
                // SAFETY: a source of a live node.
                let other = unsafe { &*other };
                // SAFETY: reads the fields of a live tensor.
                let one = unsafe { sys::ggml_nelements(other) } == 1;
                if node.op == sys::GGML_OP_MUL && one && other.type_ == sys::GGML_TYPE_F32 && !other.data.is_null() {
                    // SAFETY: an allocated one-element F32 tensor holds one f32.
                    Op::Scale(unsafe { (other.data as *const f32).read_unaligned() })
                } else {
                    let (m, ld) = same_shape_operand(other, rows, cols)?;
                    if node.op == sys::GGML_OP_MUL {
                        Op::Mul(m, ld)
                    } else {
                        Op::Add(m, ld)
                    }
                }
            }
            sys::GGML_OP_SQR => Op::Sqr,
            // SAFETY: reads the op parameters of a live UNARY node.
            sys::GGML_OP_UNARY if unsafe { sys::ggml_get_unary_op(node) } == sys::GGML_UNARY_OP_RELU => Op::Relu,
            _ => return None,
        };
        let scale_only = matches!(op, Op::Scale(_)) && i == 0;
        if !scale_only && (cols >= 4 || mode() != Epilogues::All as u8) {
            return None;
        }
        if node.type_ != sys::GGML_TYPE_F32 || node.ne != mm.ne {
            return None;
        }
        epi.ops[i] = op;
        epi.n = i + 1;
    }
    Some(epi)
}
