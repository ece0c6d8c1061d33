//! The signature of a graph: everything recording it depends on, so that an equal signature
//! means the same command buffers (`Recorder::replay` submits them again, which a decode
//! step does for every token).
//!
//! It holds each node's address and the bytes of its struct that recording reads (identity,
//! op, type, flags, shape, strides, data address, buffer, view source and offset, op
//! parameters and source addresses: the struct's first 256 bytes), and the same bytes of
//! every source that is not a node of this graph (weights, inputs, the KV cache, a tensor
//! from an earlier split), once each. Also in it: the product-kernel settings, the
//! level-order, scratch-reuse, norm-prologue, wide-norm and KV-write switches, and
//! `gpu::FREED` (no buffer freed since, so every buffer handle recorded still names the same
//! buffer). Tensor data is not in it: inputs that change between tokens (positions, mask,
//! KV-cache rows) are read by the kernels.
//!
//! It is checked on the host before every token, by comparing the structs with the kept
//! bytes as they are read (a 2B decode graph: ~1500 nodes and ~600 other sources, ~0.5 MB),
//! unless ggml's scheduler says the graph is the split it computed last time, unchanged:
//! `ggml_backend_sched_split_epoch` (our patch 0011) names the scheduler's current split of
//! its graph while it computes one, and a scheduler splits again whenever the graph may have
//! changed (a new graph, a reset, a new allocation). llama.cpp computes the same split for
//! every decode token while it reuses its graph, so then only the switches are compared.
//! `TRIT_VULKAN_SPLIT_EPOCH=0` always compares the structs.

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

/// The bytes of a tensor struct that recording depends on: `type` (its 4 bytes of padding
/// masked), `buffer`, `ne`, `nb`, `op`, `op_params`, `flags`, `src`, `view_src`, `view_offs`
/// and `data` are the struct's first 256 bytes (its name and `extra` follow).
const RAW_WORDS: usize = 32;
const _: () = assert!(std::mem::offset_of!(sys::ggml_tensor, name) == 8 * RAW_WORDS);
const _: () = assert!(std::mem::offset_of!(sys::ggml_tensor, type_) == 0 && std::mem::size_of::<sys::ggml_type>() == 4);

fn raw(t: *const sys::ggml_tensor) -> [u64; RAW_WORDS] {
    // SAFETY: t is a live tensor struct, 8-byte aligned and longer than 256 bytes (checked
    // above); every bit pattern is a valid u64.
    let mut w = unsafe { std::ptr::read(t as *const [u64; RAW_WORDS]) };
    w[0] &= 0xffff_ffff; // `type` and the padding after it
    w
}

/// A graph's signature: the switches recording depends on, its node addresses in order, its
/// other sources (first use order, once each), and the recorded bytes of every one of them.
#[derive(Default)]
pub(crate) struct Signature {
    /// None until built: matches nothing.
    head: Option<[u64; 6]>,
    /// The scheduler split (epoch, graph address) the structs were last compared or built
    /// under; epoch 0: none.
    split: (u64, usize),
    nodes: Vec<usize>,
    others: Vec<usize>,
    bytes: Vec<[u64; RAW_WORDS]>,
}

/// The switches and device limits that recording depends on, and the node count.
fn head(gpu: &crate::gpu::Gpu, n: usize) -> [u64; 6] {
    let l = &gpu.limits;
    [
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
    ]
}

/// Graphs that matched their signature by the scheduler's split epoch (tests, profile).
pub(crate) static SAME_SPLIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether the scheduler's split epoch may stand in for comparing the structs
/// (`TRIT_VULKAN_SPLIT_EPOCH=0`: never).
fn split_epoch_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRIT_VULKAN_SPLIT_EPOCH").map_or(true, |v| v != "0"))
}

/// The epoch of the scheduler split being computed on this thread; 0 outside one (or when
/// turned off).
fn split_epoch() -> u64 {
    if !split_epoch_enabled() {
        return 0;
    }
    // SAFETY: reads a thread-local of ggml's scheduler; no arguments.
    unsafe { sys::ggml_backend_sched_split_epoch() }
}

fn node(graph: *mut sys::ggml_cgraph, i: usize) -> *const sys::ggml_tensor {
    // SAFETY: callers pass i < n_nodes of a live graph.
    unsafe { sys::ggml_graph_node(graph, i as i32) }
}

impl Signature {
    /// The signature of `graph` (see the module docs).
    pub(crate) fn build(&mut self, gpu: &crate::gpu::Gpu, graph: *mut sys::ggml_cgraph) {
        // SAFETY: graph is a live ggml graph for the duration of the call.
        let n = unsafe { sys::ggml_graph_n_nodes(graph) }.max(0) as usize;
        self.head = Some(head(gpu, n));
        self.split = (split_epoch(), graph as usize);
        self.nodes.clear();
        self.nodes.extend((0..n).map(|i| node(graph, i) as usize));
        let mut nodes = NodeSet::new(n);
        for &p in &self.nodes {
            nodes.insert(p);
        }
        self.others.clear();
        let mut others = NodeSet::new(n);
        self.bytes.clear();
        for &p in &self.nodes {
            let t = p as *const sys::ggml_tensor;
            self.bytes.push(raw(t));
            // SAFETY: a live node of the graph.
            for &s in unsafe { &(*t).src } {
                let s = s as usize;
                if s != 0 && !nodes.contains(s) && !others.contains(s) {
                    others.insert(s);
                    self.others.push(s);
                }
            }
        }
        for &s in &self.others {
            self.bytes.push(raw(s as *const sys::ggml_tensor));
        }
    }

    /// Whether `graph`'s signature equals this one: the same switches, and either the same
    /// scheduler split (see the module docs) or, compared without building a signature, the
    /// same node addresses and recorded bytes of every node and other source. The other
    /// sources are this signature's list: when every node's bytes (its sources among them)
    /// and address match, the graph's list is the same.
    pub(crate) fn matches(&mut self, gpu: &crate::gpu::Gpu, graph: *mut sys::ggml_cgraph) -> bool {
        // SAFETY: graph is a live ggml graph for the duration of the call.
        let n = unsafe { sys::ggml_graph_n_nodes(graph) }.max(0) as usize;
        if self.head != Some(head(gpu, n)) {
            return false;
        }
        let split = (split_epoch(), graph as usize);
        if split.0 != 0 && split == self.split {
            SAME_SPLIT.fetch_add(1, Relaxed);
            return true;
        }
        let same = self.structs_match(graph, n);
        self.split = if same { split } else { (0, 0) };
        same
    }

    fn structs_match(&self, graph: *mut sys::ggml_cgraph, n: usize) -> bool {
        // The walk is bound by cache misses on the ~1500 node and ~600 other tensor structs
        // (after a token's other work they are out of the caches): fetch 16 ahead.
        for i in 0..n {
            if i + 16 < n {
                prefetch_tensor(node(graph, i + 16));
            }
            let t = node(graph, i);
            if t as usize != self.nodes[i] || raw(t) != self.bytes[i] {
                return false;
            }
        }
        for (j, &s) in self.others.iter().enumerate() {
            if let Some(&ahead) = self.others.get(j + 16) {
                prefetch_tensor(ahead as *const sys::ggml_tensor);
            }
            if raw(s as *const sys::ggml_tensor) != self.bytes[n + j] {
                return false;
            }
        }
        true
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
