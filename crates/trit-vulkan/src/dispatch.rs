//! Recording a ggml graph into one Vulkan command buffer: operand binding (aligned-down
//! descriptor offsets plus an element offset in push constants), hazard barriers, and
//! dynamic tiling against maxComputeWorkGroupCount[0] and maxStorageBufferRange.

use std::sync::Arc;

use ash::vk;
use trit_sys as sys;

use crate::error::{Error, Result, VkContext};
use crate::gpu::{Allocation, Gpu};
use crate::signature::Signature;

pub(crate) const PUSH_BYTES: u32 = 128;
/// Storage-buffer bindings in the shared set layout at most: A, B, D, plus two for kernels
/// with more operands (`Recorder::dispatch_n`: the AdamW step's five, the cross-entropy
/// backward's four; fused kernels' binding 3 and 4). `Gpu::bindings` is 4 where a device
/// allows no more (kernels using binding 4 are then not built). Up to `MAX_BINDINGS` (8)
/// where the device allows that many: the QKV products that write the KV cache themselves
/// (`KV` in mul_mv_tq.comp) use 8, and 11 where they also compute the token's attention
/// (`ATTN`); devices allowing 8 to 10 get 8.
pub(crate) const MAX_BINDINGS: u32 = 11;

/// vkCmdDispatch calls recorded by every backend of this process (for tests of tiling).
pub(crate) static DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Graphs replayed by every backend of this process (tests).
pub(crate) static REPLAYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Compute-to-compute barriers recorded by every backend of this process (tests).
pub(crate) static BARRIERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const SETS_PER_POOL: u32 = 512;
/// Slots of the split-k scratch ring (`Recorder::split_scratch`): consecutive split products
/// that do not depend on each other may still overlap.
pub(crate) const SPLIT_RING: u64 = 4;
/// Slots of the ring for the int8 input gradient's quantized operand (`Recorder::dxq_scratch`),
/// after the split-k ring: one (~71 MiB at 2B-4T's shapes), so a product's quantization waits
/// for the previous product's reads (the hazard check puts a barrier there). Two let them
/// overlap, but the second slot took the checkpointed 2B-4T step past 3·10⁹ bytes once the
/// 128-row int8 tiles split along k into more slices (H200, 2026-12-03).
pub(crate) const DXQ_RING: u64 = 1;

/// The error of a scratch request the graph's layout did not plan for.
fn unreserved(why: &str) -> Error {
    Error::Unsupported { node: String::new(), op: "scratch".into(), why: why.into() }
}

/// Dispatches per submitted chunk of a graph: a short first one to start the GPU early.
const FIRST_CHUNK: u32 = 24;
const CHUNK: u32 = 96;

/// Dispatches in chunk `cur` before it is submitted. `TRIT_VULKAN_CHUNK=N`: N for every
/// chunk. While kernel timestamps are recorded (`TRIT_VULKAN_PROFILE=1`, `timestamps`) a
/// graph is submitted at once unless TRIT_VULKAN_CHUNK says otherwise: in chunks, the GPU
/// would wait for the host to record the next one, and the timestamps would charge that wait
/// to the kernel after each chunk boundary (decode round 21).
fn chunk_len(cur: usize, timestamps: bool) -> u32 {
    static FIXED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let fixed = *FIXED.get_or_init(|| std::env::var("TRIT_VULKAN_CHUNK").ok().and_then(|v| v.parse().ok()));
    let default = if timestamps {
        u32::MAX
    } else if cur == 0 {
        FIRST_CHUNK
    } else {
        CHUNK
    };
    fixed.unwrap_or(default).max(1)
}

/// The push-constant block every kernel declares (kernels/common.glsl).
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Push {
    pub a_ne: [u32; 4],
    pub a_nb: [u32; 4],
    pub b_ne: [u32; 4],
    pub b_nb: [u32; 4],
    pub d_ne: [u32; 4],
    pub d_nb: [u32; 4],
    /// wg_base, n_items, a_off, b_off
    pub m0: [u32; 4],
    /// d_off, p0, p1, p2
    pub m1: [u32; 4],
}

impl Push {
    fn bytes(&self) -> [u8; PUSH_BYTES as usize] {
        let mut out = [0u8; PUSH_BYTES as usize];
        let all = [self.a_ne, self.a_nb, self.b_ne, self.b_nb, self.d_ne, self.d_nb, self.m0, self.m1];
        for (i, w) in all.iter().flatten().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// A byte range of one of our buffers, ready to bind.
#[derive(Clone, Copy)]
pub(crate) struct Bound {
    buffer: vk::Buffer,
    offset: u64,
    range: u64,
    /// Offset of the operand inside the bound range, in elements of the bound type.
    pub elem_off: u32,
    lo: u64,
    hi: u64,
}

/// Whether `t`'s data starts at a multiple of `unit` bytes of its buffer, as kernels that read
/// it in `unit`-byte vectors need.
pub(crate) fn starts_aligned(t: *const sys::ggml_tensor, unit: u64) -> bool {
    locate(t).is_ok_and(|(_, off)| off % unit == 0)
}

/// The allocation backing `t` and the tensor's byte offset in it.
pub(crate) fn locate(t: *const sys::ggml_tensor) -> Result<(&'static Allocation, u64)> {
    // SAFETY: t is a live graph tensor; its buffer (set for views too) was made by us when
    // `buffer_alloc` says so.
    unsafe {
        let buf = if (*t).buffer.is_null() && !(*t).view_src.is_null() { (*(*t).view_src).buffer } else { (*t).buffer };
        let alloc =
            crate::ffi::buffer_alloc(buf).ok_or_else(|| unsupported(t, "tensor is not in a trit-vulkan buffer"))?;
        let mut off = ((*t).data as u64).wrapping_sub(crate::ffi::FAKE_BASE);
        if (*t).data.is_null() || off > alloc.size.max(1) {
            return Err(unsupported(t, "tensor has no data in its buffer"));
        }
        if crate::weight_store::is_stored(t) {
            if !crate::weight_store::layout_ok(t) {
                return Err(unsupported(t, "a view of ternary weights that is not whole rows"));
            }
            off = crate::weight_store::stored_offset(t, off)
                .ok_or_else(|| unsupported(t, "a view of ternary weights that starts inside a row"))?;
        }
        Ok((alloc, off))
    }
}

/// Bytes from the first to one past the last element of `t` (ggml_nbytes; in the split
/// layout for a ternary tensor in our buffers, `weight_store`).
pub(crate) fn span(t: *const sys::ggml_tensor) -> u64 {
    // SAFETY: t is a live tensor.
    let n = unsafe { sys::ggml_nbytes(t) as u64 };
    if crate::weight_store::is_stored(t) {
        crate::weight_store::span(t, n)
    } else {
        n
    }
}

fn unsupported(t: *const sys::ggml_tensor, why: &str) -> Error {
    let node = crate::ops::tensor_name(t);
    // SAFETY: t is a live tensor; ggml_op_desc returns a static string.
    let op = unsafe { std::ffi::CStr::from_ptr(sys::ggml_op_desc(t)) }.to_string_lossy().into_owned();
    Error::Unsupported { node, op, why: why.to_string() }
}

pub(crate) struct Recorder {
    gpu: Arc<Gpu>,
    pool: vk::CommandPool,
    /// The command buffer being recorded: `cmds[cur]`. A graph is recorded in chunks that
    /// are submitted as they fill, so the GPU runs the first while the rest is recorded.
    cmd: vk::CommandBuffer,
    cmds: Vec<vk::CommandBuffer>,
    cur: usize,
    in_chunk: u32,
    fence: vk::Fence,
    desc_pools: Vec<vk::DescriptorPool>,
    pool_cursor: usize,
    used_in_last: u32,
    reads: Vec<(vk::Buffer, u64, u64)>,
    writes: Vec<(vk::Buffer, u64, u64)>,
    pub dispatches: u64,
    pub barriers: u64,
    /// Device-only scratch for per-graph temporaries (rounded activations), bump-allocated.
    scratch: Option<Allocation>,
    scratch_cursor: u64,
    /// The first `SPLIT_RING` x `split_slot` bytes of scratch: slots for the partial sums of
    /// split-k products, taken in turn and reused (the hazard check puts a barrier between a
    /// slot's last reader and its next writer), so a graph of hundreds of them needs only a
    /// few slots, not the sum of all.
    split_slot: u64,
    split_next: u64,
    /// The next `DXQ_RING` x `dxq_slot` bytes: the int8 input gradient's quantized operand.
    dxq_slot: u64,
    dxq_next: u64,
    /// Where each rounded activation of this graph goes (`scratch::Layout::rounded`):
    /// regions of tensors whose uses do not overlap in recording order share memory.
    rounded_at: Vec<crate::scratch::Rounded>,
    /// Rounded activations already made in this graph, by source tensor and form (f32
    /// values or packed int8 + scales): Q, K and V (and gate and up) share one input,
    /// which is rounded once.
    pub rounded: Vec<(*const sys::ggml_tensor, u8, Bound)>,
    /// Norms of this graph not recorded yet: the ternary mat-vecs that read them compute them
    /// (`fuse::Deferred`); any other reader records them first (`fuse::materialize`).
    pub deferred: Vec<crate::fuse::Deferred>,
    /// Decode attentions of this graph (their KQ nodes) computed by the QKV dispatch before
    /// them (`matvec::AttnTail`): recorded as nothing at their own place.
    pub attn_in_qkv: Vec<*const sys::ggml_tensor>,
    /// TRIT_VULKAN_PROFILE=1: host and GPU time per kernel, printed when the backend is freed.
    prof: Option<crate::profile::Profile>,
    /// The graph's outputs copied to host memory at its end (`outputs`).
    outputs: crate::outputs::OutputCopies,
    /// Binding 4 of the dispatch being recorded (`dispatch5`).
    fifth: Option<Bound>,
    /// (reads, writes) of the dispatch being recorded where its bindings span more than it
    /// touches (`dispatch_precise`): hazards are checked on these instead.
    precise: Option<(Vec<Bound>, Vec<Bound>)>,
    /// Command buffers used by the last graph (chunks), for `replay`.
    last_chunks: usize,
    /// The last graph recorded, kept while its command buffers are intact.
    recorded: Option<Recorded>,
    /// A signature buffer to fill next (reused: a decode graph's is ~0.5 MB).
    spare_sig: Signature,
    /// The split attention kernel's counters (zeroed once; each dispatch leaves them zero)
    /// and partial results (`attn_scratch`), made at its first use.
    attn: Option<Allocation>,
}

/// What recording one graph produced: its signature (`signature::Signature`), the chunks it
/// filled and its counts.
struct Recorded {
    sig: Signature,
    chunks: usize,
    dispatches: u64,
    barriers: u64,
    /// Submit-to-fence time of its last replay: how long the next one sleeps before it polls.
    last_wait: Option<std::time::Duration>,
}

/// Whether replays poll their fence near the expected end (`Gpu::wait_fence_spin`): 0 = not
/// decided yet, 1 = on GPUs (not on a CPU driver, whose threads the poll would slow), 2 =
/// everywhere, 3 = off. TRIT_VULKAN_SPIN=0 / =1 (or `set_spin_wait`): off / everywhere.
pub(crate) static SPIN: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn spin_wait(gpu: &Gpu) -> bool {
    use std::sync::atomic::Ordering;
    let mut mode = SPIN.load(Ordering::Relaxed);
    if mode == 0 {
        mode = match std::env::var("TRIT_VULKAN_SPIN").as_deref() {
            Ok("0") => 3,
            Ok("1") => 2,
            _ => 1,
        };
        SPIN.store(mode, Ordering::Relaxed);
    }
    mode == 2 || (mode == 1 && !gpu.is_cpu)
}

impl Recorder {
    pub fn new(gpu: Arc<Gpu>) -> Result<Recorder> {
        let (pool, cmd, fence) = crate::gpu::command_objects(&gpu.device, gpu.queue_family)?;
        Ok(Recorder {
            gpu,
            pool,
            cmd,
            cmds: vec![cmd],
            cur: 0,
            in_chunk: 0,
            fence,
            desc_pools: Vec::new(),
            pool_cursor: 0,
            used_in_last: SETS_PER_POOL,
            reads: Vec::new(),
            writes: Vec::new(),
            dispatches: 0,
            barriers: 0,
            scratch: None,
            scratch_cursor: 0,
            split_slot: 0,
            split_next: 0,
            dxq_slot: 0,
            dxq_next: 0,
            rounded_at: Vec::new(),
            rounded: Vec::new(),
            deferred: Vec::new(),
            attn_in_qkv: Vec::new(),
            prof: None,
            fifth: None,
            precise: None,
            last_chunks: 0,
            recorded: None,
            spare_sig: Signature::default(),
            attn: None,
            outputs: Default::default(),
        })
        .map(|mut r| {
            r.prof = crate::profile::Profile::new(&r.gpu);
            r
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Bind `len` bytes of `alloc` starting at byte `start`; `elsize` is the element size the
    /// kernel reads the binding as (1 for quantized rows addressed in bytes).
    pub fn bind_bytes(&self, alloc: &Allocation, start: u64, len: u64, elsize: u64) -> Result<Bound> {
        let align = self.gpu.min_storage_align;
        let offset = start / align * align;
        let rem = start - offset;
        if elsize > 1 && rem % elsize != 0 {
            return Err(Error::Unsupported {
                node: String::new(),
                op: String::new(),
                why: format!("offset {start} is not a multiple of the element size {elsize}"),
            });
        }
        let range = (rem + len.max(1)).next_multiple_of(4).min(alloc.size - offset);
        Ok(Bound {
            buffer: alloc.buffer,
            offset,
            range,
            elem_off: (rem / elsize.max(1)) as u32,
            lo: start,
            hi: start + len,
        })
    }

    /// As `bind_bytes` for a kernel that reads the binding in `unit`-byte elements
    /// (vectors): the descriptor offset is aligned to `unit` as well; `start` must be.
    pub fn bind_bytes_aligned(&self, alloc: &Allocation, start: u64, len: u64, unit: u64) -> Result<Bound> {
        let align = self.gpu.min_storage_align.max(unit);
        let offset = start / align * align;
        let rem = start - offset;
        if rem % unit != 0 {
            return Err(Error::Unsupported {
                node: String::new(),
                op: String::new(),
                why: format!("offset {start} is not a multiple of {unit}"),
            });
        }
        let range = (rem + len.max(1)).next_multiple_of(unit).min(alloc.size - offset);
        Ok(Bound { buffer: alloc.buffer, offset, range, elem_off: (rem / unit) as u32, lo: start, hi: start + len })
    }

    /// `t` bound for a kernel that reads it in `unit`-byte vectors (`bind_bytes_aligned`; its
    /// element offset is then in `unit`s).
    pub fn bind_vec(&self, t: *const sys::ggml_tensor, unit: u64) -> Result<Bound> {
        let (alloc, off) = locate(t)?;
        self.bind_bytes_aligned(alloc, off, span(t), unit)
    }

    pub fn bind(&self, t: *const sys::ggml_tensor, elsize: u64) -> Result<Bound> {
        let (alloc, off) = locate(t)?;
        self.bind_bytes(alloc, off, span(t), elsize)
    }

    /// Make sure the scratch of `layout` exists for the graph about to be recorded: the
    /// first `SPLIT_RING` x `split_slot` bytes the ring of split-k slots (`split_scratch`),
    /// then the rounded activations (`rounded_scratch`), then bump-allocated (`scratch`).
    pub fn reserve_scratch(&mut self, layout: crate::scratch::Layout) -> Result<()> {
        let bytes = layout.bytes;
        self.split_slot = layout.split_slot;
        self.split_next = 0;
        self.dxq_slot = layout.dxq_slot;
        self.dxq_next = 0;
        self.scratch_cursor = layout.bump_start;
        self.rounded_at = layout.rounded;
        if bytes == 0 || self.scratch.as_ref().is_some_and(|s| s.size >= bytes) {
            return Ok(());
        }
        if let Some(old) = self.scratch.take() {
            self.gpu.free(&old);
        }
        self.scratch = Some(self.gpu.alloc(bytes.next_multiple_of(1 << 20))?);
        Ok(())
    }

    /// The planned region for the rounded activations of `t` in `form` (0: f32 values,
    /// `matvec::ROUNDED_Q8`: packed int8 + scales), `bytes` of it bound for f32 access. A
    /// form the plan did not expect (the f32 one where the fast path was thought to apply)
    /// falls back to bump-allocated scratch.
    pub fn rounded_scratch(&mut self, t: *const sys::ggml_tensor, form: u8, bytes: u64) -> Result<Bound> {
        let planned = self.rounded_at.iter().find(|r| r.tensor == t).and_then(|r| match form {
            crate::matvec::ROUNDED_Q8 => Some((r.q8, r.q8_bytes)),
            _ => r.f32,
        });
        let Some((start, room)) = planned.filter(|&(_, room)| bytes <= room) else {
            return self.scratch(bytes);
        };
        let s = self
            .scratch
            .as_ref()
            .filter(|s| start + room <= s.size)
            .ok_or_else(|| unreserved("scratch for rounded activations was not reserved for this graph"))?;
        self.bind_bytes(s, start, bytes, 4)
    }

    /// The next slot of the split-k ring, `bytes` of it bound for f32 access.
    pub fn split_scratch(&mut self, bytes: u64) -> Result<Bound> {
        let start = (self.split_next % SPLIT_RING) * self.split_slot;
        let s = self
            .scratch
            .as_ref()
            .filter(|s| bytes <= self.split_slot && start + bytes <= s.size)
            .ok_or_else(|| unreserved("split-k scratch was not reserved for this graph"))?;
        self.split_next += 1;
        self.bind_bytes(s, start, bytes, 4)
    }

    /// The next slot of the quantized-operand ring, `bytes` of which will be used: where it
    /// starts in scratch (bind its parts with `scratch_at`).
    pub fn dxq_scratch(&mut self, bytes: u64) -> Result<u64> {
        // DXQ_RING is a tuning constant that is 1 at present.
        #[allow(clippy::modulo_one)]
        let start = SPLIT_RING * self.split_slot + (self.dxq_next % DXQ_RING) * self.dxq_slot;
        self.scratch
            .as_ref()
            .filter(|s| bytes <= self.dxq_slot && start + bytes <= s.size)
            .ok_or_else(|| unreserved("scratch for the int8 input gradient was not reserved for this graph"))?;
        self.dxq_next += 1;
        Ok(start)
    }

    /// `len` bytes of scratch from `start`, bound for `elsize`-byte elements.
    pub fn scratch_at(&self, start: u64, len: u64, elsize: u64) -> Result<Bound> {
        let s = self
            .scratch
            .as_ref()
            .filter(|s| start + len <= s.size)
            .ok_or_else(|| unreserved("scratch range out of what was reserved"))?;
        self.bind_bytes(s, start, len, elsize)
    }

    /// The first `bytes` of the split attention kernel's scratch (`attn::SPLIT_SCRATCH_BYTES`
    /// in all, its counters zeroed), bound from its start. One for all its dispatches: the
    /// hazard check puts a barrier between two of them, as it does between any two writers
    /// of the same memory.
    pub fn attn_scratch(&mut self, bytes: u64) -> Result<Bound> {
        if self.attn.is_none() {
            let a = self.gpu.alloc(crate::attn::SPLIT_SCRATCH_BYTES)?;
            if let Err(e) = self.gpu.fill_range(&a, 0, crate::attn::SPLIT_COUNTER_BYTES, 0) {
                self.gpu.free(&a);
                return Err(e);
            }
            self.attn = Some(a);
        }
        let a = self.attn.as_ref().expect("made above");
        self.bind_bytes(a, 0, bytes.min(a.size), 4)
    }

    /// A fresh scratch range of `bytes`, bound for f32 access.
    pub fn scratch(&mut self, bytes: u64) -> Result<Bound> {
        let start = self.scratch_cursor;
        let s = self
            .scratch
            .as_ref()
            .filter(|s| start + bytes <= s.size)
            .ok_or_else(|| unreserved("scratch space was not reserved for this graph"))?;
        self.scratch_cursor = (start + bytes).next_multiple_of(self.gpu.min_storage_align.max(256));
        self.bind_bytes(s, start, bytes, 4)
    }

    /// Whether a graph with this signature can be replayed: not while GPU timestamps are
    /// recorded (TRIT_VULKAN_PROFILE=1) or with TRIT_VULKAN_NO_REPLAY=1.
    pub fn can_replay(&self) -> bool {
        static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        !*OFF.get_or_init(|| std::env::var("TRIT_VULKAN_NO_REPLAY").is_ok_and(|v| v == "1"))
            && self.prof.as_ref().is_none_or(|p| !p.has_timestamps())
    }

    /// If the last graph recorded had the signature of `graph`, submit its command buffers
    /// again (all chunks at once) and wait: Ok(true). Ok(false): nothing done, record it.
    pub fn replay(&mut self, graph: *mut sys::ggml_cgraph, t0: std::time::Instant) -> Result<bool> {
        let Some(r) = self.recorded.as_mut() else { return Ok(false) };
        if !r.sig.matches(&self.gpu, graph) {
            return Ok(false);
        }
        if trace() {
            eprintln!("trit-vulkan trace: signature matched in {:.1} us", t0.elapsed().as_secs_f64() * 1e6);
        }
        let (chunks, dispatches, barriers) = (r.chunks, r.dispatches, r.barriers);
        let sleep_for = if spin_wait(&self.gpu) { r.last_wait } else { None };
        self.began_at(t0);
        let submitted = std::time::Instant::now();
        if let Err(e) = self.gpu.submit_all_and_wait(&self.cmds[..chunks], self.fence, sleep_for) {
            self.recorded = None;
            return Err(e);
        }
        if let Some(r) = self.recorded.as_mut() {
            r.last_wait = Some(submitted.elapsed());
        }
        self.outputs.publish(&self.gpu, self as *const Recorder as usize);
        self.dispatches += dispatches;
        self.barriers += barriers;
        DISPATCHES.fetch_add(dispatches, std::sync::atomic::Ordering::Relaxed);
        BARRIERS.fetch_add(barriers, std::sync::atomic::Ordering::Relaxed);
        REPLAYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = self.prof.as_mut() {
            p.finish(&self.gpu, submitted, true);
        }
        Ok(true)
    }

    /// Plan the copies of `graph`'s outputs to host memory that `finish` records.
    pub fn plan_outputs(&mut self, graph: *mut sys::ggml_cgraph) {
        self.outputs.plan(&self.gpu, graph);
    }

    /// An empty buffer for the next signature (its allocation reused).
    pub fn take_signature_buffer(&mut self) -> Signature {
        std::mem::take(&mut self.spare_sig)
    }

    /// Keep the graph just recorded and finished (`begin` .. `finish`, counts since
    /// `counts_before`) for replay under signature `sig`.
    pub fn keep(&mut self, sig: Signature, counts_before: (u64, u64)) {
        if let Some(old) = self.recorded.take() {
            self.spare_sig = old.sig;
        }
        self.recorded = Some(Recorded {
            sig,
            chunks: self.last_chunks,
            dispatches: self.dispatches - counts_before.0,
            barriers: self.barriers - counts_before.1,
            last_wait: None,
        });
    }

    pub fn begin(&mut self) -> Result<()> {
        // Its command buffers are about to be recorded again.
        if let Some(old) = self.recorded.take() {
            self.spare_sig = old.sig;
        }
        let d = &self.gpu.device;
        // SAFETY: the command buffers are idle (the previous compute waited on its fence) and
        // no descriptor set from these pools is in use any more.
        unsafe {
            for p in &self.desc_pools {
                d.reset_descriptor_pool(*p, vk::DescriptorPoolResetFlags::empty()).vk("vkResetDescriptorPool")?;
            }
        }
        self.cur = 0;
        self.cmd = self.cmds[0];
        self.in_chunk = 0;
        self.begin_cmd()?;
        self.used_in_last = SETS_PER_POOL;
        self.pool_cursor = 0;
        self.reads.clear();
        self.writes.clear();
        self.rounded.clear();
        self.deferred.clear();
        self.attn_in_qkv.clear();
        if let Some(p) = self.prof.as_mut() {
            p.begin(&self.gpu, self.cmd);
        }
        Ok(())
    }

    /// The profile's host time of this graph counts from `t` (planning before `begin`).
    pub fn began_at(&mut self, t: std::time::Instant) {
        if let Some(p) = self.prof.as_mut() {
            p.began_at(t);
        }
    }

    fn begin_cmd(&mut self) -> Result<()> {
        // SAFETY: the buffer is idle: either never submitted in this graph or, for chunk 0,
        // the previous graph's fence was waited on.
        unsafe {
            self.gpu
                .device
                .begin_command_buffer(self.cmd, &vk::CommandBufferBeginInfo::default())
                .vk("vkBeginCommandBuffer")
        }
    }

    /// Submit what is recorded so far (no fence) and continue in the next command buffer.
    /// Hazards across the boundary are still covered: a pipeline barrier's first scope is
    /// every command earlier in submission order on the queue.
    fn flush_chunk(&mut self) -> Result<()> {
        // SAFETY: ending and submitting our own recorded buffer; the queue is behind its lock.
        unsafe { self.gpu.device.end_command_buffer(self.cmd).vk("vkEndCommandBuffer")? };
        self.gpu.submit(self.cmd, vk::Fence::null())?;
        self.cur += 1;
        if self.cur == self.cmds.len() {
            let ai = vk::CommandBufferAllocateInfo::default()
                .command_pool(self.pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            // SAFETY: allocating from our own pool; freed with it.
            let c = unsafe { self.gpu.device.allocate_command_buffers(&ai) }.vk("vkAllocateCommandBuffers")?[0];
            self.cmds.push(c);
        }
        self.cmd = self.cmds[self.cur];
        self.in_chunk = 0;
        self.begin_cmd()
    }

    /// End, submit, wait. Results are visible to the host and to transfers afterwards.
    pub fn finish(&mut self) -> Result<()> {
        let d = &self.gpu.device;
        let barrier = vk::MemoryBarrier::default().src_access_mask(vk::AccessFlags::SHADER_WRITE).dst_access_mask(
            vk::AccessFlags::HOST_READ | vk::AccessFlags::TRANSFER_READ | vk::AccessFlags::TRANSFER_WRITE,
        );
        // SAFETY: recording into our command buffer.
        unsafe {
            d.cmd_pipeline_barrier(
                self.cmd,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::PipelineStageFlags::HOST | vk::PipelineStageFlags::TRANSFER,
                vk::DependencyFlags::empty(),
                &[barrier],
                &[],
                &[],
            );
        }
        self.outputs.record(d, self.cmd);
        // SAFETY: as above.
        unsafe { d.end_command_buffer(self.cmd).vk("vkEndCommandBuffer")? };
        let t0 = std::time::Instant::now();
        self.gpu.submit_and_wait(self.cmd, self.fence)?;
        self.outputs.publish(&self.gpu, self as *const Recorder as usize);
        self.last_chunks = self.cur + 1;
        self.cur = 0;
        self.cmd = self.cmds[0];
        if let Some(p) = self.prof.as_mut() {
            p.finish(&self.gpu, t0, false);
        }
        Ok(())
    }

    /// Abandon a half-recorded command buffer after an error (waiting for chunks of it that
    /// were already submitted).
    pub fn abort(&mut self) {
        self.recorded = None;
        // SAFETY: the current buffer was never submitted; resetting returns it to the initial
        // state. Submitted chunks are waited for with an empty submission's fence.
        unsafe {
            let _ = self.gpu.device.end_command_buffer(self.cmd);
            let _ = self.gpu.device.reset_command_buffer(self.cmd, vk::CommandBufferResetFlags::empty());
            if self.cur > 0 && self.gpu.submit_empty(self.fence).is_ok() {
                let _ = self.gpu.device.wait_for_fences(&[self.fence], true, u64::MAX);
                let _ = self.gpu.device.reset_fences(&[self.fence]);
            }
        }
        self.cur = 0;
        self.cmd = self.cmds[0];
    }

    fn descriptor_set(&mut self) -> Result<vk::DescriptorSet> {
        let d = &self.gpu.device;
        if self.used_in_last >= SETS_PER_POOL {
            self.pool_cursor += 1;
            if self.pool_cursor > self.desc_pools.len() {
                let sizes = [vk::DescriptorPoolSize {
                    ty: vk::DescriptorType::STORAGE_BUFFER,
                    descriptor_count: MAX_BINDINGS * SETS_PER_POOL,
                }];
                // SAFETY: plain object creation; destroyed in Drop.
                let p = unsafe {
                    d.create_descriptor_pool(
                        &vk::DescriptorPoolCreateInfo::default().max_sets(SETS_PER_POOL).pool_sizes(&sizes),
                        None,
                    )
                }
                .vk("vkCreateDescriptorPool")?;
                self.desc_pools.push(p);
            }
            self.used_in_last = 0;
        }
        let pool = self.desc_pools[self.pool_cursor - 1];
        let layouts = [self.gpu.set_layout];
        // SAFETY: the pool has room (counted above).
        let set = unsafe {
            d.allocate_descriptor_sets(
                &vk::DescriptorSetAllocateInfo::default().descriptor_pool(pool).set_layouts(&layouts),
            )
        }
        .vk("vkAllocateDescriptorSets")?[0];
        self.used_in_last += 1;
        Ok(set)
    }

    /// A compute-to-compute memory barrier: every dispatch recorded so far is complete and
    /// visible before the next; the hazard ranges start empty again.
    fn compute_barrier(&mut self) {
        if trace() {
            eprintln!("trit-vulkan trace: -- barrier");
        }
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::SHADER_READ)
            .dst_access_mask(vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE);
        // SAFETY: recording into our command buffer.
        unsafe {
            self.gpu.device.cmd_pipeline_barrier(
                self.cmd,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::DependencyFlags::empty(),
                &[barrier],
                &[],
                &[],
            );
        }
        self.barriers += 1;
        BARRIERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.reads.clear();
        self.writes.clear();
    }

    fn hazard(&self, b: &Bound, write: bool) -> bool {
        let overlaps =
            |v: &Vec<(vk::Buffer, u64, u64)>| v.iter().any(|&(buf, lo, hi)| buf == b.buffer && lo < b.hi && b.lo < hi);
        overlaps(&self.writes) || (write && overlaps(&self.reads))
    }

    /// A profile timestamp after `kernel`'s dispatch, named by its shape under
    /// TRIT_VULKAN_PROFILE_SHAPES=1 (dst and A extents, workgroups).
    /// After a kernel's dispatches are recorded: its profile mark and trace line, and the
    /// chunk submitted once it holds `chunk_len` dispatches.
    fn dispatched(&mut self, kernel: &str, push: &Push, groups: u64) -> Result<()> {
        self.profile_mark(kernel, push, groups);
        if trace() {
            eprintln!("trit-vulkan trace: {kernel} ({groups} workgroups)");
        }
        self.in_chunk += 1;
        if self.in_chunk >= chunk_len(self.cur, self.prof.as_ref().is_some_and(|p| p.timestamps())) {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn profile_mark(&mut self, kernel: &str, push: &Push, groups: u64) {
        let Some(p) = self.prof.as_mut() else { return };
        if p.shapes {
            let (d, a) = (push.d_ne, push.a_ne);
            let key =
                format!("{kernel} d{}x{}x{} a{}x{}x{} g{groups}", d[0], d[1], d[2] * d[3], a[0], a[1], a[2] * a[3]);
            p.mark(&self.gpu, self.cmd, &key);
        } else {
            p.mark(&self.gpu, self.cmd, kernel);
        }
    }

    /// Record `groups` workgroups of `kernel`, split into tiles of at most
    /// maxComputeWorkGroupCount[0] (the tile base goes to the kernel as m0.x).
    pub fn dispatch(
        &mut self,
        kernel: &str,
        a: Bound,
        b: Option<Bound>,
        dst: Bound,
        push: Push,
        groups: u64,
    ) -> Result<()> {
        self.dispatch_ex(kernel, a, b, dst, None, false, push, groups)
    }

    /// As `dispatch_ex`, with a fifth operand (read) at binding 4.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch5(
        &mut self,
        kernel: &str,
        a: Bound,
        b: Option<Bound>,
        dst: Bound,
        extra: Option<Bound>,
        extra_written: bool,
        fifth: Bound,
        push: Push,
        groups: u64,
    ) -> Result<()> {
        self.fifth = Some(fifth);
        let r = self.dispatch_ex(kernel, a, b, dst, extra, extra_written, push, groups);
        self.fifth = None;
        r
    }

    /// As `dispatch_ex` (nothing written but `dst`), for bindings that span more memory than
    /// the kernel touches: the hazard check uses the ranges in `reads` and `writes`.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_precise(
        &mut self,
        kernel: &str,
        a: Bound,
        b: Bound,
        dst: Bound,
        extra: Option<Bound>,
        reads: Vec<Bound>,
        writes: Vec<Bound>,
        push: Push,
        groups: u64,
    ) -> Result<()> {
        self.precise = Some((reads, writes));
        let r = self.dispatch_ex(kernel, a, Some(b), dst, extra, false, push, groups);
        self.precise = None;
        r
    }

    /// As `dispatch`, with a fourth operand at binding 3 (fused kernels), read or, with
    /// `extra_written`, written.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_ex(
        &mut self,
        kernel: &str,
        a: Bound,
        b: Option<Bound>,
        dst: Bound,
        extra: Option<Bound>,
        extra_written: bool,
        mut push: Push,
        groups: u64,
    ) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        let pipeline = self.gpu.pipeline(kernel)?;
        let b = b.unwrap_or(a);
        let e = extra.unwrap_or(a);
        let f = self.fifth.unwrap_or(a);
        if let Some((reads, writes)) = self.precise.take() {
            if reads.iter().any(|r| self.hazard(r, false)) || writes.iter().any(|w| self.hazard(w, true)) {
                self.compute_barrier();
            }
            self.reads.extend(reads.iter().map(|r| (r.buffer, r.lo, r.hi)));
            self.writes.extend(writes.iter().map(|w| (w.buffer, w.lo, w.hi)));
        } else {
            if self.hazard(&a, false)
                || self.hazard(&b, false)
                || self.hazard(&e, extra_written)
                || self.hazard(&f, false)
                || self.hazard(&dst, true)
            {
                self.compute_barrier();
            }
            self.reads.push((a.buffer, a.lo, a.hi));
            self.reads.push((b.buffer, b.lo, b.hi));
            if self.fifth.is_some() {
                self.reads.push((f.buffer, f.lo, f.hi));
            }
            if extra.is_some() {
                if extra_written {
                    self.writes.push((e.buffer, e.lo, e.hi));
                } else {
                    self.reads.push((e.buffer, e.lo, e.hi));
                }
            }
            self.writes.push((dst.buffer, dst.lo, dst.hi));
        }

        let infos = [a, b, dst, e, f]
            .map(|x| [vk::DescriptorBufferInfo { buffer: x.buffer, offset: x.offset, range: x.range }]);
        let nw = (self.gpu.bindings as usize).min(5);
        let mut writes = [0, 1, 2, 3, 4].map(|i| {
            vk::WriteDescriptorSet::default()
                .dst_binding(i as u32)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .buffer_info(&infos[i])
        });
        push.m0[2] = a.elem_off;
        push.m0[3] = b.elem_off;
        push.m1[0] = dst.elem_off;
        self.record(kernel, pipeline, &mut writes[..nw], push, groups)
    }

    /// The part every dispatch shares: the operands' descriptors (a fresh set, or pushed
    /// where the device has `VK_KHR_push_descriptor`), the pipeline, and `groups` workgroups
    /// in as many dispatches as the device's workgroup-count limit needs, each told its
    /// first workgroup in m0.x.
    fn record(
        &mut self,
        kernel: &str,
        pipeline: vk::Pipeline,
        writes: &mut [vk::WriteDescriptorSet],
        mut push: Push,
        groups: u64,
    ) -> Result<()> {
        let layout = self.gpu.pipeline_layout;
        if self.gpu.push_desc.is_none() {
            let set = self.descriptor_set()?;
            for w in writes.iter_mut() {
                w.dst_set = set;
            }
            let d = &self.gpu.device;
            // SAFETY: the set is fresh from our pool and the buffers are live.
            unsafe {
                d.update_descriptor_sets(writes, &[]);
                d.cmd_bind_descriptor_sets(self.cmd, vk::PipelineBindPoint::COMPUTE, layout, 0, &[set], &[]);
            }
        }
        let d = &self.gpu.device;
        let max = self.gpu.max_wg_x() as u64;
        // SAFETY: recording into our command buffer with a pipeline of the shared layout; the
        // kernel uses only the bindings written above.
        unsafe {
            d.cmd_bind_pipeline(self.cmd, vk::PipelineBindPoint::COMPUTE, pipeline);
            if let Some(pd) = &self.gpu.push_desc {
                pd.cmd_push_descriptor_set(self.cmd, vk::PipelineBindPoint::COMPUTE, layout, 0, writes);
            }
            let mut base = 0u64;
            while base < groups {
                let n = (groups - base).min(max);
                push.m0[0] = base as u32;
                d.cmd_push_constants(self.cmd, layout, vk::ShaderStageFlags::COMPUTE, 0, &push.bytes());
                d.cmd_dispatch(self.cmd, n as u32, 1, 1);
                self.dispatches += 1;
                DISPATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                base += n;
            }
        }
        self.dispatched(kernel, &push, groups)
    }

    /// As [`Recorder::dispatch_n`], for bindings that span more memory than the kernel
    /// touches: the hazard check uses the ranges in `reads` and `writes`.
    pub fn dispatch_n_precise(
        &mut self,
        kernel: &str,
        bufs: &[Bound],
        (reads, writes): (Vec<Bound>, Vec<Bound>),
        push: Push,
        groups: u64,
    ) -> Result<()> {
        self.precise = Some((reads, writes));
        let written = vec![false; bufs.len()];
        let r = self.dispatch_n(kernel, bufs, &written, push, groups);
        self.precise = None;
        r
    }

    /// As [`Recorder::dispatch`] for kernels with more operands: `bufs[i]` goes to binding i
    /// (at most `MAX_BINDINGS`), `written[i]` marks the ones the kernel writes. The element
    /// offsets (`Bound::elem_off`) are placed in the push block by the caller, as each such
    /// kernel documents; only m0.x (the tile base) is set here.
    pub fn dispatch_n(
        &mut self,
        kernel: &str,
        bufs: &[Bound],
        written: &[bool],
        push: Push,
        groups: u64,
    ) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        assert!(!bufs.is_empty() && bufs.len() <= self.gpu.bindings as usize && written.len() == bufs.len());
        let pipeline = self.gpu.pipeline(kernel)?;
        if let Some((reads, writes)) = self.precise.take() {
            if reads.iter().any(|r| self.hazard(r, false)) || writes.iter().any(|w| self.hazard(w, true)) {
                self.compute_barrier();
            }
            self.reads.extend(reads.iter().map(|r| (r.buffer, r.lo, r.hi)));
            self.writes.extend(writes.iter().map(|w| (w.buffer, w.lo, w.hi)));
        } else {
            if bufs.iter().zip(written).any(|(b, &w)| self.hazard(b, w)) {
                self.compute_barrier();
            }
            for (b, &w) in bufs.iter().zip(written) {
                if w {
                    self.writes.push((b.buffer, b.lo, b.hi));
                } else {
                    self.reads.push((b.buffer, b.lo, b.hi));
                }
            }
        }
        let infos: Vec<[vk::DescriptorBufferInfo; 1]> = bufs
            .iter()
            .map(|x| [vk::DescriptorBufferInfo { buffer: x.buffer, offset: x.offset, range: x.range }])
            .collect();
        let mut writes: Vec<vk::WriteDescriptorSet> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_binding(i as u32)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(info)
            })
            .collect();
        self.record(kernel, pipeline, &mut writes, push, groups)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let d = &self.gpu.device;
        if let Some(s) = self.scratch.take() {
            self.gpu.free(&s);
        }
        if let Some(a) = self.attn.take() {
            self.gpu.free(&a);
        }
        let me = self as *const Recorder as usize;
        self.outputs.destroy(&self.gpu, me);
        if let Some(p) = self.prof.take() {
            p.report(&self.gpu, self.dispatches, self.barriers);
        }
        // SAFETY: every submit waited for its fence, so nothing is in flight.
        unsafe {
            for p in &self.desc_pools {
                d.destroy_descriptor_pool(*p, None);
            }
            d.destroy_fence(self.fence, None);
            d.destroy_command_pool(self.pool, None);
        }
    }
}

/// TRIT_VULKAN_TRACE=1: every dispatch and barrier recorded, to stderr (the stages of a graph).
pub(crate) fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRIT_VULKAN_TRACE").is_ok_and(|v| v == "1"))
}
