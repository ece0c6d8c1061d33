//! Host <-> device transfers for buffers the host cannot map (a discrete GPU's device-local
//! memory): through a host-visible staging buffer and a transfer command buffer.
//!
//! Uploads that fit the staging buffer and fills are not submitted one by one: they are
//! recorded into one pending command buffer (each upload's bytes copied to the next free part
//! of the staging buffer) and submitted together by `flush_transfers`, which everything that
//! could observe them calls first: graph submission, reads, large writes and frees. A training
//! step sets hundreds of tiny tensors (one-hot labels of 4 bytes each, gradient accumulators
//! cleared one by one); with a submit and fence wait each, that was tens of milliseconds.
//! Large uploads skip all-zero blocks (GPU fills instead): the one-hot label matrix, which
//! ggml's scheduler copies from the CPU every step, is 263 MB of almost only zeros at a
//! 128256-token vocabulary and 512 positions. Device copies are kept dword-aligned (unaligned
//! writes are widened with the bytes around them, read back first).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ash::vk;

use crate::error::{Result, VkContext};
use crate::gpu::{command_objects, Allocation, Gpu};

/// Size of the host-visible staging buffer used when device memory is not mappable.
pub(crate) const STAGING_BYTES: u64 = 16 << 20;

/// Transfer counters for `TRIT_VULKAN_PROFILE` (this process): uploads, their bytes, fills,
/// reads, transfer submissions, and host nanoseconds spent in transfer calls.
pub(crate) static UPLOADS: AtomicU64 = AtomicU64::new(0);
pub(crate) static UPLOAD_BYTES: AtomicU64 = AtomicU64::new(0);
pub(crate) static FILLS: AtomicU64 = AtomicU64::new(0);
pub(crate) static READS: AtomicU64 = AtomicU64::new(0);
pub(crate) static SUBMITS: AtomicU64 = AtomicU64::new(0);
pub(crate) static HOST_NS: AtomicU64 = AtomicU64::new(0);
/// Host nanoseconds in reads, and the part of them spent copying out of the landing buffer.
pub(crate) static READ_NS: AtomicU64 = AtomicU64::new(0);
pub(crate) static READ_COPY_NS: AtomicU64 = AtomicU64::new(0);

pub(crate) struct Transfer {
    pub pool: vk::CommandPool,
    pub cmd: vk::CommandBuffer,
    pub fence: vk::Fence,
    pub staging: Allocation,
    /// Where reads land: host-cached memory where the device has it (CPU reads of the
    /// write-combined staging memory are slow: a decode step's 0.5 MB of logits), else none
    /// and reads use `staging`.
    pub readback: Option<Allocation>,
    /// `cmd` is recording deferred transfers (begun, not yet submitted).
    recording: bool,
    /// First free byte of the staging buffer for the deferred uploads.
    cursor: u64,
    /// Device ranges (buffer, start, end) written by deferred transfers since the last
    /// barrier in `cmd`: a transfer overlapping one of them needs a barrier first.
    written: Vec<(vk::Buffer, u64, u64)>,
}

impl Transfer {
    pub fn new(device: &ash::Device, family: u32, mem: &vk::PhysicalDeviceMemoryProperties) -> Result<Transfer> {
        let staging = Allocation::new(
            device,
            mem,
            STAGING_BYTES,
            vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT,
            true,
            true,
        )?;
        let readback = Allocation::host_cached(device, mem, STAGING_BYTES);
        let (pool, cmd, fence) = match command_objects(device, family) {
            Ok(c) => c,
            Err(e) => {
                staging.destroy(device);
                if let Some(r) = &readback {
                    r.destroy(device);
                }
                return Err(e);
            }
        };
        Ok(Transfer { pool, cmd, fence, staging, readback, recording: false, cursor: 0, written: Vec::new() })
    }
}

/// Granularity of the zero check in large uploads.
const ZERO_BLOCK: usize = 64 << 10;

/// Whether every byte is zero (read as u128 words: vectorises, no early exit per word).
fn all_zero(b: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; align_to only reinterprets the aligned middle.
    let (head, mid, tail) = unsafe { b.align_to::<u128>() };
    head.iter().chain(tail).all(|&v| v == 0) && mid.iter().fold(0u128, |acc, &v| acc | v) == 0
}

/// Which ZERO_BLOCK-sized blocks of `data` are all zero; large uploads are scanned by up to
/// 8 threads (the scan reads the whole upload, at memory bandwidth).
fn zero_map(data: &[u8]) -> Vec<bool> {
    let blocks: Vec<&[u8]> = data.chunks(ZERO_BLOCK).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if data.len() < (8 << 20) || threads < 2 {
        return blocks.iter().map(|b| all_zero(b)).collect();
    }
    let mut out = vec![false; blocks.len()];
    let per = blocks.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (outs, bs) in out.chunks_mut(per).zip(blocks.chunks(per)) {
            s.spawn(move || {
                for (o, b) in outs.iter_mut().zip(bs) {
                    *o = all_zero(b);
                }
            });
        }
    });
    out
}

/// Adds the time since `t0` to the transfer host time.
fn timed(t0: Instant) {
    HOST_NS.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

impl Gpu {
    /// Copy host bytes into `dst` at `offset`. Unmapped destinations: deferred (see the module
    /// docs), through the staging buffer in runs of up to its size; in uploads larger than one
    /// block, all-zero blocks become GPU fills instead of copies (a training step's one-hot
    /// label matrix is 263 MB of almost only zeros). Device copies stay dword-aligned: an
    /// unaligned write is widened with the bytes around it, read back first.
    pub fn write(&self, dst: &Allocation, offset: u64, data: &[u8]) -> Result<()> {
        if let Some(p) = dst.mapped {
            // SAFETY: the caller checked offset + len <= size; the mapping covers the buffer and
            // no GPU work is in flight (graph_compute waits for its fence).
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(offset as usize), data.len()) };
            return Ok(());
        }
        let t0 = Instant::now();
        UPLOADS.fetch_add(1, Ordering::Relaxed);
        UPLOAD_BYTES.fetch_add(data.len() as u64, Ordering::Relaxed);
        let mut x = self.xfer.lock().unwrap_or_else(|e| e.into_inner());
        let r = if offset % 4 != 0 || data.len() % 4 != 0 {
            let start = offset & !3;
            let end = (offset + data.len() as u64).next_multiple_of(4).min(dst.size);
            let mut wide = vec![0u8; (end - start) as usize];
            self.read_locked(&mut x, dst, start, &mut wide).and_then(|()| {
                let at = (offset - start) as usize;
                wide[at..at + data.len()].copy_from_slice(data);
                self.write_aligned(&mut x, dst, start, &wide)
            })
        } else {
            self.write_aligned(&mut x, dst, offset, data)
        };
        timed(t0);
        r
    }

    fn write_aligned(&self, x: &mut Transfer, dst: &Allocation, offset: u64, data: &[u8]) -> Result<()> {
        if data.len() <= ZERO_BLOCK {
            return self.copy_run(x, dst, offset, data);
        }
        // Runs of all-zero blocks become fills, the rest copies.
        let zero = zero_map(data);
        let mut i = 0;
        while i < zero.len() {
            let mut j = i + 1;
            while j < zero.len() && zero[j] == zero[i] {
                j += 1;
            }
            let (start, end) = (i * ZERO_BLOCK, (j * ZERO_BLOCK).min(data.len()));
            let at = offset + start as u64;
            if zero[i] {
                let (buf, n) = (dst.buffer, (end - start) as u64);
                FILLS.fetch_add(1, Ordering::Relaxed);
                self.defer(x, buf, at, n, |d, cmd| {
                    // SAFETY: recording into our transfer command buffer; the range is inside dst
                    // and dword-aligned.
                    unsafe { d.cmd_fill_buffer(cmd, buf, at, n, 0) }
                })?;
            } else {
                self.copy_run(x, dst, at, &data[start..end])?;
            }
            i = j;
        }
        Ok(())
    }

    /// Deferred copies of `data` to `dst` at `offset` through the free part of the staging
    /// buffer, flushing whenever it is full.
    fn copy_run(&self, x: &mut Transfer, dst: &Allocation, offset: u64, data: &[u8]) -> Result<()> {
        let sp = x.staging.mapped.expect("staging is mapped");
        let mut pos = 0;
        while pos < data.len() {
            if x.cursor >= STAGING_BYTES {
                self.flush_locked(x)?;
            }
            let at = x.cursor;
            let n = (data.len() - pos).min((STAGING_BYTES - at) as usize);
            // SAFETY: at + n <= STAGING_BYTES; the staging buffer is mapped and no submitted
            // transfer reads it (every flush waits for its fence).
            unsafe { std::ptr::copy_nonoverlapping(data[pos..].as_ptr(), sp.add(at as usize), n) };
            x.cursor = (at + n as u64).next_multiple_of(16);
            let (staging, buf) = (x.staging.buffer, dst.buffer);
            let region = vk::BufferCopy { src_offset: at, dst_offset: offset + pos as u64, size: n as u64 };
            self.defer(x, buf, region.dst_offset, region.size, |d, cmd| {
                // SAFETY: both buffers are live and large enough (checked by callers).
                unsafe { d.cmd_copy_buffer(cmd, staging, buf, &[region]) }
            })?;
            pos += n;
        }
        Ok(())
    }

    /// Copy bytes of `src` at `offset` into host memory (after every deferred transfer).
    pub fn read(&self, src: &Allocation, offset: u64, out: &mut [u8]) -> Result<()> {
        if let Some(p) = src.mapped {
            // SAFETY: as in `write`.
            unsafe { std::ptr::copy_nonoverlapping(p.add(offset as usize), out.as_mut_ptr(), out.len()) };
            return Ok(());
        }
        if self.read_output(src.buffer, offset, out) {
            return Ok(());
        }
        let t0 = Instant::now();
        READS.fetch_add(1, Ordering::Relaxed);
        let mut x = self.xfer.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.read_locked(&mut x, src, offset, out);
        READ_NS.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        timed(t0);
        r
    }

    fn read_locked(&self, x: &mut Transfer, src: &Allocation, offset: u64, out: &mut [u8]) -> Result<()> {
        self.flush_locked(x)?;
        let land = x.readback.as_ref().unwrap_or(&x.staging);
        let (sp, dst) = (land.mapped.expect("staging is mapped"), land.buffer);
        for (i, chunk) in out.chunks_mut(STAGING_BYTES as usize).enumerate() {
            let region = vk::BufferCopy {
                src_offset: offset + (i as u64) * STAGING_BYTES,
                dst_offset: 0,
                size: chunk.len() as u64,
            };
            let srcb = src.buffer;
            self.submit_now(x, |d, cmd| {
                // SAFETY: both buffers are live and large enough (checked by callers).
                unsafe { d.cmd_copy_buffer(cmd, srcb, dst, &[region]) }
            })?;
            let t = Instant::now();
            // SAFETY: the copy finished (fence waited); chunk fits the staging buffer.
            unsafe { std::ptr::copy_nonoverlapping(sp, chunk.as_mut_ptr(), chunk.len()) };
            READ_COPY_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Fill all of `dst` with `value`.
    pub fn fill(&self, dst: &Allocation, value: u8) -> Result<()> {
        self.fill_range(dst, 0, dst.size, value)
    }

    /// Fill `size` bytes of `dst` from `offset` with `value`: on the GPU (deferred) where both
    /// are multiples of 4, as vkCmdFillBuffer requires; otherwise through an upload.
    pub fn fill_range(&self, dst: &Allocation, offset: u64, size: u64, value: u8) -> Result<()> {
        if let Some(p) = dst.mapped {
            // SAFETY: the caller checked offset + size <= dst.size; the GPU is idle.
            unsafe { std::ptr::write_bytes(p.add(offset as usize), value, size as usize) };
            return Ok(());
        }
        if offset % 4 != 0 || size % 4 != 0 {
            return self.write(dst, offset, &vec![value; size as usize]);
        }
        let t0 = Instant::now();
        FILLS.fetch_add(1, Ordering::Relaxed);
        let mut x = self.xfer.lock().unwrap_or_else(|e| e.into_inner());
        let word = u32::from_ne_bytes([value; 4]);
        let buf = dst.buffer;
        self.defer(&mut x, buf, offset, size, |d, cmd| {
            // SAFETY: recording into our transfer command buffer; the range is inside the buffer.
            unsafe { d.cmd_fill_buffer(cmd, buf, offset, size, word) }
        })?;
        timed(t0);
        Ok(())
    }

    /// Submit the deferred transfers, if any, and wait for them.
    pub fn flush_transfers(&self) -> Result<()> {
        let mut x = self.xfer.lock().unwrap_or_else(|e| e.into_inner());
        self.flush_locked(&mut x)
    }

    /// Record one deferred transfer writing `buffer[start..start + len]`, after a barrier if it
    /// overlaps an earlier one of this batch (transfers without one may run in any order).
    fn defer(
        &self,
        x: &mut Transfer,
        buffer: vk::Buffer,
        start: u64,
        len: u64,
        record: impl FnOnce(&ash::Device, vk::CommandBuffer),
    ) -> Result<()> {
        let d = &self.device;
        self.invalidate_outputs();
        if !x.recording {
            begin(d, x.cmd)?;
            x.recording = true;
        }
        let end = start + len;
        if x.written.iter().any(|&(b, s, e)| b == buffer && s < end && start < e) {
            after_transfer_writes(d, x.cmd, vk::PipelineStageFlags::TRANSFER, vk::AccessFlags::TRANSFER_WRITE);
            x.written.clear();
        }
        x.written.push((buffer, start, end));
        record(d, x.cmd);
        Ok(())
    }

    fn flush_locked(&self, x: &mut Transfer) -> Result<()> {
        if !x.recording {
            return Ok(());
        }
        self.end_and_wait(x)
    }

    /// Record one transfer after the deferred ones (flushing them with it) and wait for it.
    fn submit_now(&self, x: &mut Transfer, record: impl FnOnce(&ash::Device, vk::CommandBuffer)) -> Result<()> {
        if !x.recording {
            begin(&self.device, x.cmd)?;
            x.recording = true;
        } else {
            // Everything deferred before happens first (this copy may read or overwrite it).
            after_transfer_writes(
                &self.device,
                x.cmd,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_READ | vk::AccessFlags::TRANSFER_WRITE,
            );
        }
        record(&self.device, x.cmd);
        self.end_and_wait(x)
    }

    /// End the transfer command buffer with a barrier that makes its writes visible to the
    /// host, to compute shaders and to later transfers; submit it and wait for its fence.
    fn end_and_wait(&self, x: &mut Transfer) -> Result<()> {
        self.end_recording(x)?;
        SUBMITS.fetch_add(1, Ordering::Relaxed);
        self.submit_raw(x.cmd, x.fence)?;
        self.wait_fence(x.fence)
    }

    /// End the transfer command buffer (see `end_and_wait`) without submitting it.
    fn end_recording(&self, x: &mut Transfer) -> Result<()> {
        let d = &self.device;
        x.recording = false;
        x.cursor = 0;
        x.written.clear();
        after_transfer_writes(
            d,
            x.cmd,
            vk::PipelineStageFlags::HOST | vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
            vk::AccessFlags::HOST_READ
                | vk::AccessFlags::SHADER_READ
                | vk::AccessFlags::SHADER_WRITE
                | vk::AccessFlags::TRANSFER_READ
                | vk::AccessFlags::TRANSFER_WRITE,
        );
        // SAFETY: the transfer command buffer is recording and only used under the xfer lock.
        unsafe { d.end_command_buffer(x.cmd).vk("vkEndCommandBuffer") }
    }

    /// Submit `cmds` in order after the deferred transfers, if any (in the same submission:
    /// the transfer command buffer's closing barrier orders its writes before the compute
    /// shaders), and block until all have finished (`wait_fence_spin` with `sleep_for`).
    pub fn submit_all_and_wait(
        &self,
        cmds: &[vk::CommandBuffer],
        fence: vk::Fence,
        sleep_for: Option<std::time::Duration>,
    ) -> Result<()> {
        let mut x = self.xfer.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = Vec::with_capacity(cmds.len() + 1);
        if x.recording {
            self.end_recording(&mut x)?;
            SUBMITS.fetch_add(1, Ordering::Relaxed);
            all.push(x.cmd);
        }
        all.extend_from_slice(cmds);
        // The transfer command buffer stays under the xfer lock until the fence below.
        self.submit_cmds(&all, fence)?;
        self.wait_fence_spin(fence, sleep_for)
    }
}

/// A barrier after the transfer writes recorded so far in `cmd`, before `dst_stage`'s `dst_access`.
fn after_transfer_writes(
    d: &ash::Device,
    cmd: vk::CommandBuffer,
    dst_stage: vk::PipelineStageFlags,
    dst_access: vk::AccessFlags,
) {
    let barrier =
        vk::MemoryBarrier::default().src_access_mask(vk::AccessFlags::TRANSFER_WRITE).dst_access_mask(dst_access);
    // SAFETY: `cmd` is the transfer command buffer, recording, only used under the xfer lock.
    unsafe {
        d.cmd_pipeline_barrier(
            cmd,
            vk::PipelineStageFlags::TRANSFER,
            dst_stage,
            vk::DependencyFlags::empty(),
            &[barrier],
            &[],
            &[],
        )
    };
}

fn begin(d: &ash::Device, cmd: vk::CommandBuffer) -> Result<()> {
    // SAFETY: the transfer command buffer is idle (every submit of it waited for its fence)
    // and only used under the xfer lock.
    unsafe {
        d.begin_command_buffer(
            cmd,
            &vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
        )
        .vk("vkBeginCommandBuffer")
    }
}
