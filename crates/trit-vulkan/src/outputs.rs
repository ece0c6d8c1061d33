//! A graph's outputs copied to host memory by the graph's own command buffer.
//!
//! llama.cpp reads the logits (a node flagged as an output) right after every graph. From
//! device memory the host cannot map, each such read was one more submission and fence wait
//! after the graph's. The recorder appends copies of the graph's output nodes (if they are
//! in unmapped memory and together at most [`MAX_BYTES`]) into a host-cached buffer of its
//! own, at the end of the graph's last command buffer (so replays repeat them), and publishes
//! where they landed once the graph's fence is signalled. A read of bytes inside a published
//! copy is served from there until anything else is submitted or a transfer is recorded
//! (`Gpu::invalidate_outputs`): reads of anything else, or after that, go the usual way.
//! `TRIT_VULKAN_OUTPUT_COPY=0` turns it off.

use ash::vk;
use trit_sys as sys;

use crate::gpu::{Allocation, Gpu};

/// At most this many bytes of outputs per graph are copied (a decode step's logits are
/// 0.5 MB; a perplexity window's 263 MB are read the usual way).
pub(crate) const MAX_BYTES: u64 = 32 << 20;

/// One output's bytes: `len` bytes of `buffer` from `start`, copied to `at` of the host buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Copied {
    pub buffer: vk::Buffer,
    pub start: u64,
    pub len: u64,
    pub at: u64,
}

/// What the last finished graph copied out, as `Gpu::outputs` holds it.
#[derive(Default)]
pub(crate) struct Published {
    /// The recorder (its address) whose buffer holds the copies.
    owner: usize,
    base: usize,
    copies: Vec<Copied>,
    valid: bool,
}

/// Host reads served from published copies (`TRIT_VULKAN_PROFILE`).
pub(crate) static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Host nanoseconds spent copying those reads out of the landing buffer.
pub(crate) static HIT_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRIT_VULKAN_OUTPUT_COPY").map_or(true, |v| v != "0"))
}

/// A recorder's host-cached landing buffer and the copies of the graph being recorded.
#[derive(Default)]
pub(crate) struct OutputCopies {
    host: Option<Allocation>,
    pub copies: Vec<Copied>,
}

impl OutputCopies {
    /// Plan the copies of `graph`'s output nodes (none when they are in mapped memory, too
    /// large, or the device has no host-cached memory), growing the landing buffer as needed.
    pub fn plan(&mut self, gpu: &Gpu, graph: *mut sys::ggml_cgraph) {
        self.copies.clear();
        if !enabled() {
            return;
        }
        // SAFETY: graph is live for the call; i < n_nodes.
        let n = unsafe { sys::ggml_graph_n_nodes(graph) };
        let mut at = 0u64;
        for i in 0..n {
            // SAFETY: as above.
            let t = unsafe { sys::ggml_graph_node(graph, i) };
            // SAFETY: t is a live node.
            if unsafe { (*t).flags } as u32 & sys::GGML_TENSOR_FLAG_OUTPUT == 0 {
                continue;
            }
            let Ok((alloc, start)) = crate::dispatch::locate(t) else { continue };
            if alloc.mapped.is_some() {
                continue;
            }
            let len = crate::dispatch::span(t);
            // Copies stay dword-aligned (vkCmdCopyBuffer has no such rule, but reads widen to it).
            if len == 0 || start % 4 != 0 || len % 4 != 0 || at + len > MAX_BYTES {
                continue;
            }
            self.copies.push(Copied { buffer: alloc.buffer, start, len, at });
            at += len.next_multiple_of(256);
        }
        if self.copies.is_empty() {
            return;
        }
        if self.host.as_ref().is_none_or(|h| h.size < at) {
            gpu.invalidate_outputs();
            if let Some(h) = self.host.take() {
                h.destroy(&gpu.device);
            }
            self.host = Allocation::host_cached(&gpu.device, &gpu.mem_props, at.next_power_of_two());
        }
        if self.host.is_none() {
            self.copies.clear();
        }
    }

    /// Record the planned copies into `cmd`, after a barrier that ended the graph's compute
    /// writes (the caller's), with a barrier making them visible to the host.
    pub fn record(&self, d: &ash::Device, cmd: vk::CommandBuffer) {
        let Some(host) = self.host.as_ref().filter(|_| !self.copies.is_empty()) else { return };
        for c in &self.copies {
            let region = vk::BufferCopy { src_offset: c.start, dst_offset: c.at, size: c.len };
            // SAFETY: recording into the recorder's command buffer; both ranges are inside
            // their buffers (located nodes; the landing buffer was sized for them).
            unsafe { d.cmd_copy_buffer(cmd, c.buffer, host.buffer, &[region]) };
        }
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        // SAFETY: as above.
        unsafe {
            d.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[barrier],
                &[],
                &[],
            )
        };
    }

    /// After the graph's fence: let reads use the copies (`owner`: the recorder's address).
    pub fn publish(&self, gpu: &Gpu, owner: usize) {
        let Some(host) = self.host.as_ref().filter(|_| !self.copies.is_empty()) else { return };
        let Some(base) = host.mapped else { return };
        let mut p = gpu.outputs.lock().unwrap_or_else(|e| e.into_inner());
        p.owner = owner;
        p.base = base as usize;
        p.copies.clear();
        p.copies.extend_from_slice(&self.copies);
        p.valid = true;
    }

    /// Free the landing buffer (the recorder is dropped; nothing of it is in flight).
    pub fn destroy(&mut self, gpu: &Gpu, owner: usize) {
        {
            let mut p = gpu.outputs.lock().unwrap_or_else(|e| e.into_inner());
            if p.owner == owner {
                *p = Published::default();
            }
        }
        if let Some(h) = self.host.take() {
            h.destroy(&gpu.device);
        }
    }
}

impl Gpu {
    /// Published copies no longer show device memory (something else was submitted or a
    /// transfer recorded).
    pub(crate) fn invalidate_outputs(&self) {
        self.outputs.lock().unwrap_or_else(|e| e.into_inner()).valid = false;
    }

    /// Serve a read of `out.len()` bytes of `buffer` at `offset` from a published copy:
    /// true if it was.
    pub(crate) fn read_output(&self, buffer: vk::Buffer, offset: u64, out: &mut [u8]) -> bool {
        let p = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        if !p.valid {
            return false;
        }
        let end = offset + out.len() as u64;
        let Some(c) = p.copies.iter().find(|c| c.buffer == buffer && c.start <= offset && end <= c.start + c.len)
        else {
            return false;
        };
        let from = (p.base + (c.at + offset - c.start) as usize) as *const u8;
        let t0 = std::time::Instant::now();
        // SAFETY: the copy lies inside the owner's mapped landing buffer (sized for it), which
        // lives while published (`destroy` unpublishes first); the graph that wrote it finished
        // (published after its fence) and nothing was submitted since (`valid`).
        unsafe { std::ptr::copy_nonoverlapping(from, out.as_mut_ptr(), out.len()) };
        HITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        HIT_NS.fetch_add(t0.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        true
    }
}
