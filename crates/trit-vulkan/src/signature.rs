//! The signature of a graph: everything recording it depends on, so that an equal signature
//! means the same command buffers (`Recorder::replay` submits them again, which a decode
//! step does for every token).
//!
//! Each node is described in full: its identity, op, type, flags, shape, strides, data
//! address, buffer, view source and offset, and op parameters; then its sources by identity.
//! A source that is not a node of this graph (weights, inputs, the KV cache, a tensor from an
//! earlier split) is described in full where it is read. A source that is a node is already
//! described as one. Also in it: the product-kernel settings, the level-order, scratch-reuse,
//! norm-prologue, wide-norm and KV-write switches, and `gpu::FREED` (no buffer freed since, so
//! every buffer handle recorded still names the same buffer). Tensor data is not in it: inputs
//! that change between tokens (positions, mask, KV-cache rows) are read by the kernels.
//!
//! Describing node sources by identity keeps it small: a 2B decode graph (1476 nodes) needs
//! ~60 000 words rather than the ~300 000 of describing every source in full, and it is
//! computed on the host before every token.

use std::sync::atomic::Ordering::Relaxed;

use trit_sys as sys;

/// Open-addressing set of the graph's node addresses (0 = empty slot).
struct NodeSet {
    slots: Vec<usize>,
    shift: u32,
}

impl NodeSet {
    fn new(n: usize) -> NodeSet {
        let cap = (2 * n).next_power_of_two().max(16);
        NodeSet { slots: vec![0; cap], shift: usize::BITS - cap.trailing_zeros() }
    }

    fn slot(&self, p: usize) -> usize {
        ((p >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize)) >> self.shift
    }

    fn insert(&mut self, p: usize) {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(p);
        while self.slots[i] != 0 && self.slots[i] != p {
            i = (i + 1) & mask;
        }
        self.slots[i] = p;
    }

    fn contains(&self, p: usize) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(p);
        loop {
            match self.slots[i] {
                0 => return false,
                q if q == p => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }
}

/// Ask for the cache lines of `t`'s struct that a description reads (its first 256 bytes).
fn prefetch_tensor(t: *const sys::ggml_tensor) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..4 {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (t as *const i8).wrapping_add(64 * line),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = t;
}

/// A tensor's full description.
fn describe(sig: &mut Vec<u64>, t: &sys::ggml_tensor) {
    sig.extend([t.type_ as u64, t.op as u64, t.flags as u64, t.data as u64, t.buffer as u64]);
    sig.extend(t.ne.iter().map(|&x| x as u64));
    sig.extend(t.nb.iter().map(|&x| x as u64));
    sig.extend([t.view_src as u64, t.view_offs as u64]);
}

/// Fill `sig` with the signature of `graph` (see the module docs).
pub(crate) fn signature(gpu: &crate::gpu::Gpu, graph: *mut sys::ggml_cgraph, sig: &mut Vec<u64>) {
    // SAFETY: graph is a live ggml graph for the duration of the call.
    let n = unsafe { sys::ggml_graph_n_nodes(graph) }.max(0) as usize;
    let l = &gpu.limits;
    sig.clear();
    sig.extend([
        crate::gpu::FREED.load(Relaxed),
        l.fast_mv.load(Relaxed) as u64
            | (l.int_dot.load(Relaxed) as u64) << 1
            | (l.mmq_big.load(Relaxed) as u64) << 2
            | (l.coopmat.load(Relaxed) as u64) << 3
            | (l.coopmat_emu.load(Relaxed) as u64) << 4
            | (l.cm_train.load(Relaxed) as u64) << 12
            | (l.dx_q8.load(Relaxed) as u64) << 13,
        l.max_wg_x.load(Relaxed) as u64,
        l.max_range.load(Relaxed),
        crate::schedule::enabled() as u64
            | (crate::scratch::reuse() as u64) << 1
            | (crate::fuse::norm_prologue() as u64) << 2
            | (crate::matvec::KV_KERNEL.load(Relaxed) as u64) << 3
            | (crate::matvec::norm_wide() as u64) << 4,
        n as u64,
    ]);
    // SAFETY: i < n_nodes.
    let ptrs: Vec<*mut sys::ggml_tensor> = (0..n).map(|i| unsafe { sys::ggml_graph_node(graph, i as i32) }).collect();
    let mut nodes = NodeSet::new(n);
    for &p in &ptrs {
        nodes.insert(p as usize);
    }
    for (i, &t) in ptrs.iter().enumerate() {
        // The walk is bound by cache misses on ~1500 tensor structs (after a token's other work
        // they are out of the caches): fetch the node 16 ahead, and the sources of the node 8
        // ahead (whose struct was fetched 8 nodes ago), while this one is described. 2B-4T
        // decode graph on the dev VM: 139-199 us without, 100-119 with (32 / 16 ahead: no
        // better).
        if let Some(&ahead) = ptrs.get(i + 16) {
            prefetch_tensor(ahead);
        }
        if let Some(&ahead) = ptrs.get(i + 8) {
            // SAFETY: a live node of the graph.
            for &s in unsafe { &(*ahead).src } {
                if !s.is_null() {
                    prefetch_tensor(s);
                }
            }
        }
        sig.push(t as u64);
        // SAFETY: t is a live tensor of the graph; op_params is a plain i32 array.
        let t = unsafe { &*t };
        describe(sig, t);
        sig.extend(
            t.op_params.chunks(2).map(|p| (p[0] as u32 as u64) | (p.get(1).map_or(0, |&v| v as u32 as u64) << 32)),
        );
        for &s in &t.src {
            sig.push(s as u64);
            if !s.is_null() && !nodes.contains(s as usize) {
                // SAFETY: s is a live source tensor of a graph node.
                describe(sig, unsafe { &*s });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NodeSet;

    #[test]
    fn node_set_finds_exactly_what_was_inserted() {
        let ptrs: Vec<usize> = (1..=3000).map(|i| 0x7f00_0000_0000 + i * 368).collect();
        let mut set = NodeSet::new(1500);
        for &p in &ptrs[..1500] {
            set.insert(p);
        }
        assert!(ptrs[..1500].iter().all(|&p| set.contains(p)));
        assert!(ptrs[1500..].iter().all(|&p| !set.contains(p)));
    }
}
