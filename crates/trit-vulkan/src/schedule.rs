//! Recording order of a graph: by dependency level instead of ggml's node order.
//!
//! Every dependent dispatch costs a barrier, and on a decode step (one token) each barrier
//! costs more than the small dispatch behind it. ggml's order interleaves independent work
//! (Q's product, Q's scale, K's product, ...) so that a dispatch-by-dispatch hazard check
//! finds a hazard almost everywhere. Here each recorded unit (a node, or the nodes one
//! fused kernel covers) gets a level: one more than the highest level of the units it must
//! follow — those that wrote memory it reads or writes, and those that read memory it
//! writes (ggml-alloc reuses a freed tensor's memory for later nodes, so memory, not the
//! tensor graph, decides). Units are recorded by level, ggml's order within a level: a
//! topological order of those dependencies, in which units of one level need no barrier
//! between them (the Recorder still checks every dispatch, so a unit of several dispatches
//! or a shared rounded activation gets its barrier as before).
//!
//! Off by default, on with TRIT_VULKAN_REORDER=1: on an H100 it removed 60 of 515 barriers
//! per decode step but the step got slower (this pass then cost more host time than the
//! barriers saved; since then it scans only ranges of the last few levels, not re-measured).

use crate::switch::Switch;

use ash::vk;
use trit_sys as sys;

use crate::dispatch::{locate, span};
use crate::ops::{is_noop, op_of, src};

/// How many levels below the highest so far a unit may still go.
const HOIST: i32 = 3;

/// A byte range of one device buffer.
#[derive(Clone, Copy)]
struct Range {
    buf: vk::Buffer,
    lo: u64,
    hi: u64,
}

/// The last levels that wrote and read one range.
struct Seen {
    r: Range,
    write: i32,
    read: i32,
}

fn node(graph: *mut sys::ggml_cgraph, i: i32) -> *const sys::ggml_tensor {
    // SAFETY: callers pass 0 <= i < n_nodes of a live graph.
    unsafe { sys::ggml_graph_node(graph, i) }
}

fn range(t: *const sys::ggml_tensor) -> Option<Range> {
    let (alloc, off) = locate(t).ok()?;
    Some(Range { buf: alloc.buffer, lo: off, hi: off + span(t).max(1) })
}

/// Off unless TRIT_VULKAN_REORDER=1 or `set_enabled`.
static REORDER: Switch = Switch::new();

pub(crate) fn set_enabled(on: bool) {
    REORDER.set(on);
}

pub(crate) fn enabled() -> bool {
    REORDER.get(|| std::env::var("TRIT_VULKAN_REORDER").is_ok_and(|v| v == "1"))
}

/// Ops whose only write is their own tensor's memory (views of a destination included:
/// SET_ROWS, CPY). Anything else (the optimizer step, which updates its moments in place)
/// is taken to write every operand too.
fn writes_only_itself(op: sys::ggml_op) -> bool {
    matches!(
        op,
        sys::GGML_OP_MUL_MAT
            | sys::GGML_OP_ADD
            | sys::GGML_OP_MUL
            | sys::GGML_OP_RMS_NORM
            | sys::GGML_OP_SCALE
            | sys::GGML_OP_SQR
            | sys::GGML_OP_CPY
            | sys::GGML_OP_CONT
            | sys::GGML_OP_DUP
            | sys::GGML_OP_UNARY
            | sys::GGML_OP_GLU
            | sys::GGML_OP_SOFT_MAX
            | sys::GGML_OP_ROPE
            | sys::GGML_OP_GET_ROWS
            | sys::GGML_OP_SET_ROWS
    )
}

/// The recording units `(first node, node count)` in recording order. `len(i)` is the
/// number of nodes starting at `i` that one fused kernel may cover (1: none);
/// `extra_read(i)`, a tensor the unit at `i` reads besides its nodes' operands.
pub(crate) fn order(
    graph: *mut sys::ggml_cgraph,
    len: impl Fn(usize) -> usize,
    extra_read: impl Fn(usize) -> Option<*const sys::ggml_tensor>,
) -> Vec<(i32, i32)> {
    // SAFETY: graph is live for the call.
    let n = unsafe { sys::ggml_graph_n_nodes(graph) };
    let mut units = Vec::new();
    let mut i = 0;
    while i < n {
        let k = len(i as usize).clamp(1, (n - i) as usize) as i32;
        units.push((i, k));
        i += k;
    }
    if !enabled() || units.len() < 3 {
        return units;
    }
    // Operand ranges of every unit: (range, written).
    let mut ops: Vec<(usize, Range, bool)> = Vec::with_capacity(units.len() * 4);
    for (u, &(first, k)) in units.iter().enumerate() {
        if let Some(x) = extra_read(first as usize) {
            let Some(r) = range(x) else { return units };
            ops.push((u, r, false));
        }
        for j in first..first + k {
            let t = node(graph, j);
            let kind = op_of(t);
            if is_noop(kind) {
                continue;
            }
            let Some(r) = range(t) else { return units };
            ops.push((u, r, true));
            let all = !writes_only_itself(kind);
            for s in 0..sys::GGML_MAX_SRC as usize {
                let st = src(t, s);
                if st.is_null() {
                    continue;
                }
                match range(st) {
                    Some(r) => ops.push((u, r, all)),
                    // An operand outside our buffers (the scheduler copies such inputs
                    // in): nothing on the GPU writes it.
                    None if !all => {}
                    None => return units,
                }
            }
        }
    }
    // Buffers written in this graph: reads of others (weights) order nothing.
    let mut written: Vec<vk::Buffer> = ops.iter().filter(|o| o.2).map(|o| o.1.buf).collect();
    written.sort_unstable();
    written.dedup();
    let mut seen: Vec<Seen> = Vec::new();
    let mut level = vec![0i32; units.len()];
    let mut at = 0;
    // A unit goes at most HOIST levels below the highest level so far (the floor): ranges
    // last touched below the floor can no longer raise any level and are dropped, which
    // keeps the scan short (the work a decode step can overlap is a few levels apart).
    let (mut top, mut floor) = (0i32, 0i32);
    for (u, lv) in level.iter_mut().enumerate() {
        let end = at + ops[at..].iter().take_while(|o| o.0 == u).count();
        let mine = &ops[at..end];
        at = end;
        let mut l = floor;
        for &(_, r, w) in mine {
            if written.binary_search(&r.buf).is_err() {
                continue;
            }
            for s in seen.iter().filter(|s| s.r.buf == r.buf && s.r.lo < r.hi && r.lo < s.r.hi) {
                l = l.max(s.write + 1);
                if w {
                    l = l.max(s.read + 1);
                }
            }
        }
        *lv = l;
        if l > top {
            top = l;
            if top - HOIST > floor {
                floor = top - HOIST;
                seen.retain(|s| s.write.max(s.read) >= floor);
            }
        }
        for &(_, r, w) in mine {
            if written.binary_search(&r.buf).is_err() {
                continue;
            }
            let s = match seen.iter_mut().find(|s| s.r.buf == r.buf && s.r.lo == r.lo && s.r.hi == r.hi) {
                Some(s) => s,
                None => {
                    seen.push(Seen { r, write: -1, read: -1 });
                    seen.last_mut().expect("just pushed")
                }
            };
            if w {
                s.write = s.write.max(l);
            } else {
                s.read = s.read.max(l);
            }
        }
    }
    let mut idx: Vec<usize> = (0..units.len()).collect();
    idx.sort_by_key(|&u| (level[u], u));
    idx.into_iter().map(|u| units[u]).collect()
}
