//! Fusing a node with the MUL that follows it, where that MUL is the node's only user:
//! * MUL_MAT (a mat-vec path) then MUL by a one-element tensor — BitNet's per-tensor weight
//!   scale after every projection (`build_lora_mm`): the product is scaled as it is stored.
//! * RMS_NORM then MUL by a broadcast weight (`build_norm`): one kernel.
//!
//! The results are bit-identical to the unfused pair (the same f32 operations in the same
//! order per element); what is saved is a dispatch, a barrier and a round trip through memory.

use trit_sys as sys;

use crate::dispatch::{Push, Recorder};
use crate::error::Result;
use crate::ops::{ne, nelements, op_of, shape, src, ty, F32};

/// Indices of the nodes of a graph that may be fused with their successor.
pub(crate) struct Plan {
    fusable: Vec<usize>,
}

fn node(graph: *mut sys::ggml_cgraph, i: i32) -> *const sys::ggml_tensor {
    // SAFETY: callers pass 0 <= i < n_nodes of a live graph.
    unsafe { sys::ggml_graph_node(graph, i) }
}

/// The MUL at `next` multiplies `cur` (as src0) and matches the fusion for `cur`'s op.
fn pairs(cur: *const sys::ggml_tensor, next: *const sys::ggml_tensor) -> bool {
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

impl Plan {
    pub fn new(graph: *mut sys::ggml_cgraph) -> Plan {
        if std::env::var("TRIT_VULKAN_NO_FUSION").is_ok_and(|v| v == "1") {
            return Plan { fusable: Vec::new() };
        }
        // SAFETY: graph is live for the call.
        let n = unsafe { sys::ggml_graph_n_nodes(graph) };
        let mut cand: Vec<(*const sys::ggml_tensor, usize)> = Vec::new();
        for i in 0..n.saturating_sub(1) {
            let (cur, next) = (node(graph, i), node(graph, i + 1));
            // SAFETY: cur is a live tensor.
            let output = unsafe { (*cur).flags } & sys::GGML_TENSOR_FLAG_OUTPUT as i32 != 0;
            if !output && pairs(cur, next) {
                cand.push((cur, i as usize));
            }
        }
        if cand.is_empty() {
            return Plan { fusable: Vec::new() };
        }
        cand.sort_by_key(|c| c.0 as usize);
        // Uses of each candidate by any node, directly or through a view of it.
        let mut uses = vec![0u32; cand.len()];
        let mut count = |t: *const sys::ggml_tensor| {
            if let Ok(k) = cand.binary_search_by_key(&(t as usize), |c| c.0 as usize) {
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
        let mut fusable: Vec<usize> = cand.iter().zip(&uses).filter(|(_, &u)| u == 1).map(|(c, _)| c.1).collect();
        fusable.sort_unstable();
        Plan { fusable }
    }

    /// Record node `i` fused with node `i + 1` if possible: Ok(true) if both are recorded.
    pub fn encode(&self, rec: &mut Recorder, graph: *mut sys::ggml_cgraph, i: i32) -> Result<bool> {
        if self.fusable.binary_search(&(i as usize)).is_err() {
            return Ok(false);
        }
        let (cur, next) = (node(graph, i), node(graph, i + 1));
        let w = src(next, 1);
        match op_of(cur) {
            sys::GGML_OP_MUL_MAT => crate::matvec::encode_scaled(rec, cur, Some((next, w))),
            sys::GGML_OP_RMS_NORM => {
                let s0 = src(cur, 0);
                let mut p = Push::default();
                (p.a_ne, p.a_nb) = shape(s0, 4);
                (p.b_ne, p.b_nb) = shape(w, 4);
                (p.d_ne, p.d_nb) = shape(next, 4);
                p.m1[1] = crate::ops::param_u32(cur, 0);
                let rows = nelements(s0) / ne(s0)[0] as u64;
                p.m0[1] = rows as u32;
                let (a, b, d) = (rec.bind(s0, 4)?, rec.bind(w, 4)?, rec.bind(next, 4)?);
                rec.dispatch("rms_norm_mul_f32", a, Some(b), d, p, rows)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
