//! `TRIT_VULKAN_PROFILE=1`: where graph time goes. Per graph, host recording time (from
//! `begin` to the last submit; earlier chunks run meanwhile) and last-submit-to-fence time;
//! per kernel, GPU time from a timestamp after each of its dispatches (the difference to the
//! previous timestamp, so kernels that overlap share their time). `=2`: the host times only,
//! without timestamps (which cost time of their own). Printed to stderr when the backend is
//! freed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ash::vk;

use crate::gpu::Gpu;

const MAX_QUERIES: u32 = 8192;

pub(crate) struct Profile {
    pool: Option<vk::QueryPool>,
    period_ns: f64,
    names: Vec<&'static str>,
    /// Kernel of each timestamp after the first, in this graph.
    marks: Vec<usize>,
    per_kernel: HashMap<usize, (u64, f64)>,
    began: Instant,
    record: Duration,
    wait: Duration,
    /// Graphs replayed (`Recorder::replay`) and their host time (the signature) in `record`.
    replays: u64,
    replay_record: Duration,
    graphs: u64,
    gpu_total_ns: f64,
    /// When the last graph's fence was waited on, and the host time from there to the next
    /// graph's start summed (graph building, allocation and transfers outside the graphs).
    last_end: Option<Instant>,
    between: Duration,
    /// TRIT_VULKAN_PROFILE_SHAPES=1: rows keyed by kernel and shape.
    pub shapes: bool,
}

impl Profile {
    pub fn new(gpu: &Gpu) -> Option<Profile> {
        let level = std::env::var("TRIT_VULKAN_PROFILE").unwrap_or_default();
        if level != "1" && level != "2" {
            return None;
        }
        let pool = gpu.timestamp_period.filter(|_| level == "1").and_then(|_| {
            let ci = vk::QueryPoolCreateInfo::default().query_type(vk::QueryType::TIMESTAMP).query_count(MAX_QUERIES);
            // SAFETY: plain object creation; destroyed in `report`.
            unsafe { gpu.device.create_query_pool(&ci, None) }.ok()
        });
        Some(Profile {
            pool,
            period_ns: gpu.timestamp_period.unwrap_or(1.0) as f64,
            names: Vec::new(),
            marks: Vec::new(),
            per_kernel: HashMap::new(),
            began: Instant::now(),
            record: Duration::ZERO,
            wait: Duration::ZERO,
            replays: 0,
            replay_record: Duration::ZERO,
            graphs: 0,
            gpu_total_ns: 0.0,
            last_end: None,
            between: Duration::ZERO,
            shapes: std::env::var("TRIT_VULKAN_PROFILE_SHAPES").is_ok_and(|v| v == "1"),
        })
    }

    /// Whether kernel timestamps are recorded (`TRIT_VULKAN_PROFILE=1` on a device with them).
    pub fn timestamps(&self) -> bool {
        self.pool.is_some()
    }

    pub fn begin(&mut self, gpu: &Gpu, cmd: vk::CommandBuffer) {
        self.began = Instant::now();
        self.marks.clear();
        if let Some(pool) = self.pool {
            // SAFETY: recording into a command buffer in the recording state; the pool is ours.
            unsafe {
                gpu.device.cmd_reset_query_pool(cmd, pool, 0, MAX_QUERIES);
                gpu.device.cmd_write_timestamp(cmd, vk::PipelineStageFlags::TOP_OF_PIPE, pool, 0);
            }
        }
    }

    pub fn mark(&mut self, gpu: &Gpu, cmd: vk::CommandBuffer, kernel: &str) {
        let Some(pool) = self.pool else { return };
        let q = self.marks.len() as u32 + 1;
        if q >= MAX_QUERIES {
            return;
        }
        let id = match self.names.iter().position(|n| *n == kernel) {
            Some(i) => i,
            None => {
                self.names.push(Box::leak(kernel.to_string().into_boxed_str()));
                self.names.len() - 1
            }
        };
        self.marks.push(id);
        // SAFETY: as in `begin`; q < MAX_QUERIES.
        unsafe { gpu.device.cmd_write_timestamp(cmd, vk::PipelineStageFlags::BOTTOM_OF_PIPE, pool, q) };
    }

    /// GPU timestamps are written into the recorded command buffers (level 1).
    pub fn has_timestamps(&self) -> bool {
        self.pool.is_some()
    }

    /// Count the host time of this graph from `t` (its fusion plan and recording order).
    pub fn began_at(&mut self, t: Instant) {
        self.began = t;
        if let Some(end) = self.last_end {
            self.between += t.saturating_duration_since(end);
        }
    }

    /// After the fence: `submitted` is when the command buffer was submitted; `replayed`:
    /// the graph's recorded command buffers were submitted again.
    pub fn finish(&mut self, gpu: &Gpu, submitted: Instant, replayed: bool) {
        self.record += submitted - self.began;
        if replayed {
            self.replays += 1;
            self.replay_record += submitted - self.began;
        }
        self.wait += submitted.elapsed();
        self.graphs += 1;
        self.last_end = Some(Instant::now());
        let Some(pool) = self.pool else { return };
        let n = self.marks.len() + 1;
        let mut ts = vec![0u64; n];
        // SAFETY: the graph finished (fence waited), so all n queries are available.
        let ok = unsafe {
            gpu.device.get_query_pool_results(
                pool,
                0,
                &mut ts,
                vk::QueryResultFlags::TYPE_64 | vk::QueryResultFlags::WAIT,
            )
        };
        if ok.is_err() {
            return;
        }
        for (i, &k) in self.marks.iter().enumerate() {
            let dt = ts[i + 1].saturating_sub(ts[i]) as f64 * self.period_ns;
            let e = self.per_kernel.entry(k).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += dt;
        }
        self.gpu_total_ns += ts[n - 1].saturating_sub(ts[0]) as f64 * self.period_ns;
    }

    pub fn report(self, gpu: &Gpu, dispatches: u64, barriers: u64) {
        let g = self.graphs.max(1) as f64;
        let mut out = format!(
            "trit-vulkan profile: {} graphs; per graph: host record {:.1} us, submit..fence {:.1} us, GPU {:.1} us, \
             {:.1} dispatches, {:.1} barriers; {} replayed, {:.1} us host time each\n",
            self.graphs,
            self.record.as_secs_f64() * 1e6 / g,
            self.wait.as_secs_f64() * 1e6 / g,
            self.gpu_total_ns / 1e3 / g,
            dispatches as f64 / g,
            barriers as f64 / g,
            self.replays,
            self.replay_record.as_secs_f64() * 1e6 / self.replays.max(1) as f64,
        );
        {
            use crate::transfer::*;
            use std::sync::atomic::Ordering::Relaxed;
            out.push_str(&format!(
                "  host time between graphs {:.1} us per graph; transfers (process): {} uploads ({:.1} MiB), \
                 {} fills, {} reads ({:.1} us each, {:.1} of it copying out), {} served by output copies \
                 ({:.1} us each), \
                 {} transfer submits, \
                 {:.1} ms host time in transfer calls\n",
                self.between.as_secs_f64() * 1e6 / (g - 1.0).max(1.0),
                UPLOADS.load(Relaxed),
                UPLOAD_BYTES.load(Relaxed) as f64 / 1048576.0,
                FILLS.load(Relaxed),
                READS.load(Relaxed),
                READ_NS.load(Relaxed) as f64 / 1e3 / READS.load(Relaxed).max(1) as f64,
                READ_COPY_NS.load(Relaxed) as f64 / 1e3 / READS.load(Relaxed).max(1) as f64,
                crate::outputs::HITS.load(Relaxed),
                crate::outputs::HIT_NS.load(Relaxed) as f64 / 1e3 / crate::outputs::HITS.load(Relaxed).max(1) as f64,
                SUBMITS.load(Relaxed),
                HOST_NS.load(Relaxed) as f64 / 1e6,
            ));
        }
        let mut rows: Vec<_> = self.per_kernel.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        for (k, (count, ns)) in rows {
            out.push_str(&format!(
                "  {:<22} {:>9} calls {:>12.1} us total {:>9.2} us/call {:>5.1}%\n",
                self.names[*k],
                count,
                ns / 1e3,
                ns / 1e3 / *count as f64,
                100.0 * ns / self.gpu_total_ns.max(1.0)
            ));
        }
        eprint!("{out}");
        if let Some(pool) = self.pool {
            // SAFETY: no graph is in flight when the recorder is dropped.
            unsafe { gpu.device.destroy_query_pool(pool, None) };
        }
    }
}
