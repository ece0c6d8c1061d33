//! trit-vulkan: a ggml backend written in Rust over Vulkan (`ash`), registered into the
//! pinned llama.cpp at run time.
//!
//! * [`register`] finds a device (discrete > integrated > virtual > CPU, or
//!   `TRIT_VULKAN_DEVICE=N`) and calls `ggml_backend_register`; without a Vulkan loader or
//!   device it returns an error and llama.cpp keeps running on the CPU.
//! * Kernels are GLSL compute shaders in `kernels/`, compiled to SPIR-V at build time.
//! * `supports_op` answers exactly what `ops::encode` implements; everything else runs on
//!   the CPU through ggml's scheduler.
//!
//! Limits used for tiling come from the device and can be lowered with
//! `TRIT_VULKAN_MAX_WG` (workgroups per dispatch) and `TRIT_VULKAN_MAX_RANGE` (bytes per
//! storage binding), or with [`set_limits`]. `TRIT_VULKAN_STAGING=1` forces copies through
//! a staging buffer even where device memory is host-visible.

mod attn;
mod dispatch;
mod error;
mod ffi;
mod fuse;
mod gpu;
mod kernels {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
mod matvec;
mod ops;
mod outputs;
mod pipeline_cache;
mod pipelines;
pub mod probe;
mod profile;
mod schedule;
mod scratch;
mod signature;
mod switch;
mod transfer;
mod weight_store;

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

pub use error::{Error, Result};
pub use matvec::NormLanes;

/// The ggml registry of the Vulkan backend (creating the device on first call), without
/// registering it with ggml. Tests use it to build a backend next to the CPU one.
pub fn backend_reg() -> Result<trit_sys::ggml_backend_reg_t> {
    ffi::backend_reg().map_err(Error::Unavailable)
}

/// The device of [`backend_reg`].
pub fn device() -> Result<trit_sys::ggml_backend_dev_t> {
    let reg = backend_reg()?;
    // SAFETY: reg is our live registry; index 0 exists when backend_reg succeeded.
    Ok(unsafe { trit_sys::ggml_backend_reg_dev_get(reg, 0) })
}

static REGISTERED: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// Register the backend with ggml (once), whatever kind the selected device is. Returns the
/// device description, or why there is no Vulkan device (then llama.cpp runs on the CPU).
pub fn register() -> Result<String> {
    register_with(true)
}

/// Whether [`register`] succeeded.
pub fn registered() -> bool {
    REGISTERED.get().is_some_and(|r| r.is_ok())
}

/// As [`register`]; with `allow_cpu` false a CPU implementation of Vulkan (lavapipe) is
/// not registered, since ggml's own CPU backend is faster than it.
pub fn register_with(allow_cpu: bool) -> Result<String> {
    REGISTERED
        .get_or_init(|| {
            // Which device it would be, before creating it (compiling every kernel).
            let reg = if ffi::gpu().is_none() {
                let chosen = gpu::Chosen::open().map_err(|e| e.to_string())?;
                if !allow_cpu && chosen.is_cpu() {
                    return Err(cpu_only(&chosen.name()));
                }
                ffi::backend_reg_with(move || chosen.into_gpu())?
            } else {
                ffi::backend_reg()?
            };
            if let Some(g) = ffi::gpu().filter(|g| !allow_cpu && g.is_cpu) {
                return Err(cpu_only(&g.description.to_string_lossy()));
            }
            // SAFETY: reg and everything it points to are leaked statics, valid forever.
            unsafe { trit_sys::ggml_backend_register(reg) };
            Ok(info().unwrap_or_default())
        })
        .clone()
        .map_err(Error::Unavailable)
}

/// Why a CPU implementation of Vulkan (`name`) is not registered.
fn cpu_only(name: &str) -> String {
    format!("no Vulkan GPU: only a CPU implementation of Vulkan ({name}), not used (TRIT_VULKAN_ALLOW_CPU=1 uses it)")
}

/// Whether our buffers hold TQ1_0 tensors re-encoded as TQ2_0 blocks, read by the TQ2_0
/// kernels (the default; `TRIT_VULKAN_TQ1_AS_TQ2=0` turns it off for the process).
pub fn tq1_as_tq2() -> bool {
    weight_store::tq1_as_tq2()
}

/// Build every kernel pipeline the selected device can run now (they are otherwise built on
/// first use): how many exist afterwards and the variants the driver rejected, with why.
/// None without a device.
pub fn build_all_pipelines() -> Option<(usize, Vec<String>)> {
    ffi::gpu().map(|g| g.build_all_pipelines())
}

/// The selected device's pipeline cache on disk: its file (None: not kept on disk,
/// TRIT_VULKAN_PIPELINE_CACHE=0 or no cache directory), the bytes read from it when the device
/// was created and the bytes its last save wrote (0: none yet).
pub fn pipeline_cache_stats() -> Option<(Option<std::path::PathBuf>, u64, u64)> {
    ffi::gpu().map(|g| g.pipeline_cache_stats())
}

/// How many kernel pipelines the selected device has built so far.
pub fn pipelines_built() -> usize {
    ffi::gpu().map_or(0, |g| g.pipelines_built())
}

/// One line describing the selected device, if any.
pub fn info() -> Option<String> {
    ffi::gpu().map(|g| {
        format!(
            "{} | maxComputeWorkGroupCount[0] {} | maxStorageBufferRange {} | maxMemoryAllocationSize {}",
            g.description.to_string_lossy(),
            g.hw_max_wg_x,
            g.hw_max_range,
            g.max_alloc
        )
    })
}

/// Override the tiling limits (None restores the device's value). For tests of the tiling
/// paths; takes effect for graphs recorded afterwards.
pub fn set_limits(max_workgroups: Option<u32>, max_storage_range: Option<u64>) {
    if let Some(g) = ffi::gpu() {
        g.limits.max_wg_x.store(max_workgroups.unwrap_or(g.hw_max_wg_x).clamp(1, g.hw_max_wg_x), Ordering::Relaxed);
        g.limits
            .max_range
            .store(max_storage_range.unwrap_or(g.hw_max_range).clamp(1024, g.hw_max_range), Ordering::Relaxed);
    }
}

/// Whether `buf` is one of our buffers whose memory the host has mapped (reads and writes
/// are plain copies); false for a staged buffer (a discrete GPU's device-local memory, or
/// any buffer allocated under [`set_force_staging`]) and for buffers not ours.
pub fn buffer_is_mapped(buf: trit_sys::ggml_backend_buffer_t) -> bool {
    ffi::buffer_alloc(buf).is_some_and(|a| a.mapped.is_some())
}

/// Route host<->device copies of buffers allocated afterwards through the staging buffer.
pub fn set_force_staging(on: bool) {
    if let Some(g) = ffi::gpu() {
        g.limits.force_staging.store(on, Ordering::Relaxed);
    }
}

/// Use the subgroup mat-vec kernels for products of up to 8 columns (default; off: the
/// plain kernels, as with `TRIT_VULKAN_PLAIN_KERNELS=1`) and, within them, the packed int8
/// dot product where the device has it (`TRIT_VULKAN_NO_INT_DOT=1` turns it off).
pub fn set_mat_vec_kernels(fast: bool, int_dot: bool) {
    if let Some(g) = ffi::gpu() {
        g.limits.fast_mv.store(fast, Ordering::Relaxed);
        g.limits.int_dot.store(int_dot, Ordering::Relaxed);
    }
}

/// Record graphs by dependency level (`TRIT_VULKAN_REORDER=1`) or in ggml's node order
/// (default); see `schedule.rs`.
pub fn set_reorder(on: bool) {
    schedule::set_enabled(on);
}

/// Large ternary prompt products in 128 x 64 tiles (`TRIT_VULKAN_MMQ_BIG=1`) or 64 x 64
/// (default).
pub fn set_mmq_big_tiles(on: bool) {
    if let Some(g) = ffi::gpu() {
        g.limits.mmq_big.store(on, Ordering::Relaxed);
    }
}

/// Use the cooperative-matrix (`_cm`, tensor-core) kernels where the device has them
/// (default; `TRIT_VULKAN_NO_COOPMAT=1` keeps them from being built at all).
pub fn set_coopmat(on: bool) {
    if let Some(g) = ffi::gpu() {
        g.limits.coopmat.store(on, Ordering::Relaxed);
    }
}

/// Training's products (OUT_PROD, the tied LM head's f16 MUL_MAT) on the tensor-core
/// kernel where the device has f16 cooperative matrices (default: off, or
/// TRIT_VULKAN_CM_TRAIN=1; measured slower than the FMA kernels on an H200).
pub fn set_cm_training(on: bool) {
    if let Some(g) = ffi::gpu() {
        g.limits.cm_train.store(on, Ordering::Relaxed);
    }
}

/// Whether the device can run training's tensor-core kernel (`set_cm_training`).
pub fn cm_training_available() -> bool {
    ffi::gpu().is_some_and(|g| ops::train::cm_available(&g))
}

/// Training products recorded on the tensor-core kernel (`set_cm_training`) so far in this
/// process.
pub fn cm_training_dispatch_count() -> u64 {
    ops::train::CM_DISPATCHES.load(Ordering::Relaxed)
}

/// The input gradient through a frozen ternary weight as int8 products on tensor cores
/// (`dx_q8.comp`: dY in two int8 parts per column, ~15 bits of each column's largest
/// element) where the device has int8 cooperative matrices (default: on; TRIT_VULKAN_DX_Q8=0
/// turns it off). Off, that gradient is summed in f32 (`out_prod.comp`). Under
/// `set_coopmat_emulation` the emulated variant runs on any device while this is on.
pub fn set_dx_int8(on: bool) {
    if let Some(g) = ffi::gpu() {
        g.limits.dx_q8.store(on, Ordering::Relaxed);
    }
}

/// Whether the device runs the int8 tensor-core input gradient (`set_dx_int8`) for real.
pub fn dx_int8_available() -> bool {
    ffi::gpu().is_some_and(|g| ops::train::dx_q8_available(&g))
}

/// Ternary input gradients recorded with `dx_q8.comp` (tensor cores or emulated) so far in
/// this process.
pub fn dx_int8_dispatch_count() -> u64 {
    ops::train::DXQ_DISPATCHES.load(Ordering::Relaxed)
}

/// f32 products with a rank-thin output recorded with `prod_thin.comp` (a LoRA pair's
/// forward A·x and its gradients; TRIT_VULKAN_THIN=0 turns it off) so far in this process.
pub fn thin_dispatch_count() -> u64 {
    ops::train::THIN_DISPATCHES.load(Ordering::Relaxed)
}

/// Tests: ternary products on tensor cores with fewer than `tiles` 64 x 64 output tiles take
/// 32 x 64 tiles (0: never; the default is 160, or TRIT_VULKAN_MMQ_SMALL_BELOW).
pub fn set_mmq_small_below(tiles: u64) {
    matvec::MMQ_SMALL_BELOW.store(tiles, Ordering::Relaxed);
}

/// Ternary products recorded with 32 x 64 tiles (`mul_mmq_tq_cm.comp` with SMALL) so far in
/// this process.
pub fn mmq_small_dispatch_count() -> u64 {
    matvec::MMQ_SMALL_DISPATCHES.load(Ordering::Relaxed)
}

/// Tests: whether the int8 input gradient of a TQ2_0 weight (dY quantized beforehand) may
/// take 128-row tiles (`dx_q8.comp` WIDE; on by default, TRIT_VULKAN_DXQ_WIDE=0 turns it off).
pub fn set_dxq_wide(on: bool) {
    ops::train::DXQ_WIDE.set(on);
}

/// Int8 input gradients recorded with 128-row tiles (`dx_q8.comp` WIDE) so far in this process.
pub fn dx_int8_wide_dispatch_count() -> u64 {
    ops::train::DXQ_WIDE_DISPATCHES.load(Ordering::Relaxed)
}

/// f16 OUT_PRODs recorded with `out_prod_f16_cmv.comp` (aligned operands: the tied LM head's
/// input gradient; TRIT_VULKAN_F16_CMV=0 turns it off) so far in this process.
pub fn f16_out_prod_vector_dispatch_count() -> u64 {
    ops::train::F16V_DISPATCHES.load(Ordering::Relaxed)
}

/// Tests: whether a norm read only by one-column ternary products is computed inside them
/// (`NORM` in mul_mv_tq.comp; on by default, TRIT_VULKAN_NO_FUSION=normpro turns it off).
pub fn set_norm_in_mat_vec(on: bool) {
    fuse::NORM_PROLOGUE.set(on);
}

/// Tests: whether the QKV products may write the KV cache themselves (`KV` in
/// mul_mv_tq.comp; on by default). Off, the cache writes are recorded as kernels of their own
/// at the products' place, as on devices with fewer than 8 storage bindings.
pub fn set_kv_in_products(on: bool) {
    matvec::KV_KERNEL.store(on, Ordering::Relaxed);
}

/// Tests and A/B runs: whether a QKV dispatch that writes the KV cache may also compute the
/// token's attention (`ATTN` in mul_mv_tq.comp; off by default, TRIT_VULKAN_ATTN_IN_QKV=1
/// turns it on). Off, the attention is a dispatch of its own after the products.
pub fn set_attn_in_qkv(on: bool) {
    matvec::ATTN_IN_QKV.set(on);
}

/// Undo `set_attn_in_qkv`: the default (or TRIT_VULKAN_ATTN_IN_QKV) again.
pub fn reset_attn_in_qkv() {
    matvec::ATTN_IN_QKV.reset();
}

/// Tests and A/B runs: decode attention split into workgroups of at least `keys` keys each
/// (`attn_split.comp`, rounded up to a multiple of 32; the default 32, or
/// TRIT_VULKAN_ATTN_CHUNK), or with 0 one workgroup per (query row, head) for all its keys
/// (`attn_decode.comp`).
pub fn set_attn_chunk(keys: u32) {
    attn::set_min_chunk(keys);
}

/// Decode attention dispatches recorded with the split kernel so far in this process.
pub fn attn_split_dispatch_count() -> u64 {
    attn::SPLIT_DISPATCHES.load(Ordering::Relaxed)
}

/// Tests and A/B runs: whether decode mat-vecs have their weights pulled into the GPU's L2
/// cache by a small dispatch beside the stage before them (`l2_prefetch.comp`; on by default
/// for discrete GPUs, TRIT_VULKAN_L2_PREFETCH=0 turns it off).
pub fn set_l2_prefetch(on: bool) {
    matvec::L2_PREFETCH.set(on);
}

/// Tests: back to the default (discrete GPUs, unless TRIT_VULKAN_L2_PREFETCH=0) after
/// `set_l2_prefetch`.
pub fn reset_l2_prefetch() {
    matvec::L2_PREFETCH.reset();
}

/// `l2_prefetch` dispatches recorded so far in this process.
pub fn l2_prefetch_dispatch_count() -> u64 {
    matvec::PREFETCH_DISPATCHES.load(Ordering::Relaxed)
}

/// Tests: whether the wide variants of the mat-vecs that compute their input's norm (1024
/// invocations, the input kept in shared memory) are used where the device has them (on by
/// default; TRIT_VULKAN_NORM_WIDE=0 turns them off).
pub fn set_wide_norm_mat_vecs(on: bool) {
    matvec::NORM_WIDE.set(on);
}

/// Tests and A/B runs: lanes per row (8, 16 or 32) of one class of the wide mat-vecs that
/// compute their input's norm (TRIT_VULKAN_NORM_LANES, _QKV, _ONE).
pub fn set_norm_lanes(class: NormLanes, lanes: u32) {
    matvec::LANES[class as usize].store(matvec::valid_lanes(lanes), Ordering::Relaxed);
}

/// The lanes per row a class of the wide norm mat-vecs takes when no variable says otherwise.
pub fn default_norm_lanes(class: NormLanes) -> u32 {
    matvec::LANES_ENV[class as usize].1
}

/// Tests and A/B runs: whether replayed graphs poll their fence near the expected end
/// (`Some(true)`: on every device, `Some(false)`: never, `None`: the default, on GPUs but not
/// on a CPU driver; TRIT_VULKAN_SPIN=1 / =0).
pub fn set_spin_wait(on: Option<bool>) {
    let mode = match on {
        None => 1,
        Some(true) => 2,
        Some(false) => 3,
    };
    dispatch::SPIN.store(mode, Ordering::Relaxed);
}

/// Replays whose fence wait polled near the expected end so far in this process.
pub fn polled_wait_count() -> u64 {
    gpu::POLLED_WAITS.load(Ordering::Relaxed)
}

/// Of `wide_norm_mat_vec_dispatch_count`, those with 16 or 8 lanes per row.
pub fn narrow_norm_mat_vec_dispatch_count() -> u64 {
    matvec::NARROW_NORM_DISPATCHES.load(Ordering::Relaxed)
}

/// Of `norm_mat_vec_dispatch_count`, those recorded as the wide variant.
pub fn wide_norm_mat_vec_dispatch_count() -> u64 {
    matvec::WIDE_NORM_DISPATCHES.load(Ordering::Relaxed)
}

/// Mat-vecs recorded with their input's norm computed in the kernel so far in this process.
pub fn norm_mat_vec_dispatch_count() -> u64 {
    matvec::NORM_DISPATCHES.load(Ordering::Relaxed)
}

/// Q rotations computed by the QKV products' epilogue (`ROPE` in mul_mv_tq.comp) so far in
/// this process.
pub fn rope_in_products_count() -> u64 {
    matvec::ROPE_IN_MULTI.load(Ordering::Relaxed)
}

/// KV-cache writes done by the QKV products' epilogue (`KV` in mul_mv_tq.comp) so far in
/// this process.
pub fn kv_in_products_count() -> u64 {
    matvec::KV_IN_MULTI.load(Ordering::Relaxed)
}

/// Decode attentions computed by the QKV products (`ATTN` in mul_mv_tq.comp) so far in this
/// process.
pub fn attn_in_products_count() -> u64 {
    matvec::ATTN_IN_MULTI.load(Ordering::Relaxed)
}

/// f16 products recorded with `mul_mm_f16_cmv.comp` (aligned operands, 128 x 128 tiles;
/// TRIT_VULKAN_F16_CMV=0 turns it off) so far in this process.
pub fn f16_vector_dispatch_count() -> u64 {
    matvec::F16_VECTOR_DISPATCHES.load(Ordering::Relaxed)
}

/// Tests: run ternary prompt products through the cooperative-matrix tile kernel with its
/// matrix instructions emulated (any device), to check its tiling, partial tiles and scaling
/// where the extension is absent: `n` = 8 (16 x 8 fragments, `_emu`) or 16 (16 x 16,
/// `_n16_emu`); 0 turns it off (the default).
pub fn set_coopmat_emulation(n: u32) {
    if let Some(g) = ffi::gpu() {
        g.limits.coopmat_emu.store(n, Ordering::Relaxed);
    }
}

/// Whether the int8 tile kernels may use 16 x 16 x 32 fragments for real
/// (TRIT_VULKAN_INT8_N16=1; off by default: not yet verified on hardware).
pub fn int8_n16_enabled() -> bool {
    matvec::int8_n16_opt_in()
}

/// Ternary prompt products recorded with a cooperative-matrix tile kernel (`_cm`, or the
/// emulated ones under `set_coopmat_emulation`) so far in this process.
pub fn coopmat_dispatch_count() -> u64 {
    matvec::COOPMAT_DISPATCHES.load(Ordering::Relaxed)
}

/// The device's subgroup cooperative-matrix shapes as (m, n, k, A/B type, C/D type), types
/// as VK_NV_cooperative_matrix's component-type numbers (0 f16, 1 f32, 3 s8, 5 s32); empty
/// without VK_NV_cooperative_matrix or with `TRIT_VULKAN_NO_COOPMAT=1`.
pub fn coopmat_shapes() -> Vec<(u32, u32, u32, i32, i32)> {
    ffi::gpu().map_or(Vec::new(), |g| {
        g.coopmat_shapes.iter().filter(|s| s.a == s.b && s.c == s.d).map(|s| (s.m, s.n, s.k, s.a, s.c)).collect()
    })
}

/// Which mat-vec features the device offers: (subgroup kernels, int8 dot product).
pub fn mat_vec_features() -> (bool, bool) {
    ffi::gpu().map_or((false, false), |g| (g.subgroups, g.has_int_dot))
}

/// Whether the device has the `NORM` mat-vecs (ternary products that compute their input's
/// norm; subgroups of 8 lanes or more).
pub fn has_norm_mat_vecs() -> bool {
    ffi::gpu().is_some_and(|g| g.has_pipeline("mv_tq2_1_norm"))
}

/// Whether the device has the wide `NORM` mat-vecs (1024 invocations, subgroups of 8 lanes or
/// more).
pub fn has_wide_norm_mat_vecs() -> bool {
    ffi::gpu().is_some_and(|g| g.has_pipeline("mv_tq2_1_norm_w"))
}

/// Whether the device takes the fifth storage-buffer binding the residual / pre-multiplied
/// fusions need (Vulkan guarantees four per stage).
pub fn has_fifth_binding() -> bool {
    ffi::gpu().is_some_and(|g| g.bindings >= 5)
}

/// Storage-buffer bindings of the kernels' shared layout on this device (4, 5 or 8; the QKV
/// products that write the KV cache need 8).
pub fn storage_bindings() -> u32 {
    ffi::gpu().map_or(0, |g| g.bindings)
}

/// Every compiled kernel variant as (name, SPIR-V bytes), e.g. for translation checks.
pub fn kernels() -> &'static [(&'static str, &'static [u8])] {
    kernels::SPIRV
}

/// (current, peak) bytes of device buffers this backend has allocated in this process
/// (weights, KV cache, compute and optimizer buffers, scratch).
pub fn allocated_bytes() -> (u64, u64) {
    (gpu::ALLOCATED.load(Ordering::Relaxed), gpu::PEAK_ALLOCATED.load(Ordering::Relaxed))
}

/// Number of vkCmdDispatch calls recorded so far in this process (tiles count separately;
/// those of a replayed graph count again).
pub fn dispatch_count() -> u64 {
    dispatch::DISPATCHES.load(Ordering::Relaxed)
}

/// Graphs (scheduler splits) handed to trit-vulkan to compute so far in this process.
pub fn graph_count() -> u64 {
    ffi::GRAPHS.load(Ordering::Relaxed)
}

/// Graphs replayed (submitted again as recorded, `dispatch::Recorder::replay`) so far.
pub fn replay_count() -> u64 {
    dispatch::REPLAYS.load(Ordering::Relaxed)
}

/// Replays whose graph was known unchanged from ggml's scheduler (the same split of the same
/// graph) rather than by comparing its tensor structs (`signature`).
pub fn same_split_replay_count() -> u64 {
    signature::SAME_SPLIT.load(Ordering::Relaxed)
}

/// Host reads of graph outputs served from the copies the graphs made of them (`outputs`).
pub fn output_copy_reads() -> u64 {
    outputs::HITS.load(Ordering::Relaxed)
}

/// Whether graphs copy their outputs to host memory (`TRIT_VULKAN_OUTPUT_COPY`, default on).
pub fn output_copies_enabled() -> bool {
    outputs::enabled()
}

/// Number of compute-to-compute pipeline barriers recorded so far in this process.
pub fn barrier_count() -> u64 {
    dispatch::BARRIERS.load(Ordering::Relaxed)
}

/// Bytes of scratch the last graph recorded (not replayed) by this process reserved:
/// rounded activations, split-k ring and per-node temporaries (`scratch.rs`).
pub fn last_scratch_bytes() -> u64 {
    scratch::LAST_BYTES.load(Ordering::Relaxed)
}

/// Let rounded activations whose uses do not overlap share scratch (default), or give each
/// its own (`TRIT_VULKAN_SCRATCH_REUSE=0`), for comparison.
pub fn set_scratch_reuse(on: bool) {
    scratch::set_reuse(on);
}
