//! The ggml backend interface (ggml-backend-impl.h, API version 3) built from the bindgen
//! structs: one registry, one device, one buffer type, buffers and backends. Every
//! callback catches panics: unwinding into C is undefined behaviour.

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;
use std::sync::{Arc, Mutex, OnceLock};

use trit_sys as sys;

use crate::dispatch::Recorder;
use crate::gpu::{Allocation, Gpu};

/// Base address ggml sees for every one of our buffers: tensor offsets are `data - FAKE_BASE`.
/// Non-null and aligned, never dereferenced.
pub(crate) const FAKE_BASE: u64 = 0x1000;

/// Alignment of tensors inside our buffers.
const ALIGNMENT: u64 = 256;

struct Registered {
    gpu: Arc<Gpu>,
    reg: *mut sys::ggml_backend_reg,
    dev: *mut sys::ggml_backend_device,
    buft: *mut sys::ggml_backend_buffer_type,
}
// SAFETY: the ggml structs are written once here and only read afterwards.
unsafe impl Send for Registered {}
// SAFETY: as above.
unsafe impl Sync for Registered {}

static STATE: OnceLock<Result<Registered, String>> = OnceLock::new();

struct BufferCtx {
    gpu: Arc<Gpu>,
    alloc: Allocation,
}

struct BackendCtx {
    rec: Mutex<Recorder>,
}

fn guard<T>(what: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            tracing::error!("trit-vulkan: panic in {what}; returning a failure to ggml");
            fallback
        }
    }
}

fn state() -> Option<&'static Registered> {
    STATE.get().and_then(|r| r.as_ref().ok())
}

/// The registry, creating the device on first use. Err carries why there is no device.
pub(crate) fn backend_reg() -> Result<sys::ggml_backend_reg_t, String> {
    backend_reg_with(Gpu::new)
}

/// As [`backend_reg`], with `make` creating the device if it does not exist yet.
pub(crate) fn backend_reg_with(
    make: impl FnOnce() -> crate::error::Result<Gpu>,
) -> Result<sys::ggml_backend_reg_t, String> {
    let st = STATE.get_or_init(|| {
        let gpu = Arc::new(make().map_err(|e| e.to_string())?);
        let buft = Box::into_raw(Box::new(sys::ggml_backend_buffer_type {
            iface: sys::ggml_backend_buffer_type_i {
                get_name: Some(buft_get_name),
                alloc_buffer: Some(buft_alloc_buffer),
                get_alignment: Some(buft_get_alignment),
                get_max_size: Some(buft_get_max_size),
                get_alloc_size: Some(buft_get_alloc_size),
                ..Default::default()
            },
            device: null_mut(),
            context: null_mut(),
        }));
        let reg = Box::into_raw(Box::new(sys::ggml_backend_reg {
            api_version: sys::GGML_BACKEND_API_VERSION as i32,
            iface: sys::ggml_backend_reg_i {
                get_name: Some(reg_get_name),
                get_device_count: Some(reg_get_device_count),
                get_device: Some(reg_get_device),
                get_proc_address: None,
            },
            context: null_mut(),
        }));
        let dev = Box::into_raw(Box::new(sys::ggml_backend_device {
            iface: sys::ggml_backend_device_i {
                get_name: Some(dev_get_name),
                get_description: Some(dev_get_description),
                get_memory: Some(dev_get_memory),
                get_type: Some(dev_get_type),
                get_props: Some(dev_get_props),
                init_backend: Some(dev_init_backend),
                get_buffer_type: Some(dev_get_buffer_type),
                supports_op: Some(dev_supports_op),
                supports_buft: Some(dev_supports_buft),
                offload_op: Some(dev_offload_op),
                ..Default::default()
            },
            reg,
            context: null_mut(),
        }));
        // SAFETY: buft was just leaked and is not shared yet.
        unsafe { (*buft).device = dev };
        Ok(Registered { gpu, reg, dev, buft })
    });
    st.as_ref().map(|r| r.reg).map_err(|e| e.clone())
}

pub(crate) fn gpu() -> Option<Arc<Gpu>> {
    state().map(|s| s.gpu.clone())
}

/// Our allocation behind a ggml buffer, or None if the buffer is not ours.
pub(crate) fn buffer_alloc(buf: *mut sys::ggml_backend_buffer) -> Option<&'static Allocation> {
    let st = state()?;
    if buf.is_null() {
        return None;
    }
    // SAFETY: buf is a live ggml buffer; its context is a BufferCtx when buft is ours, and
    // lives until free_buffer (after every graph that uses it).
    unsafe {
        if (*buf).buft != st.buft || (*buf).context.is_null() {
            return None;
        }
        Some(&(*((*buf).context as *const BufferCtx)).alloc)
    }
}

// ---- registry ----

unsafe extern "C" fn reg_get_name(_: sys::ggml_backend_reg_t) -> *const c_char {
    c"TritVulkan".as_ptr()
}
unsafe extern "C" fn reg_get_device_count(_: sys::ggml_backend_reg_t) -> usize {
    usize::from(state().is_some())
}
unsafe extern "C" fn reg_get_device(_: sys::ggml_backend_reg_t, index: usize) -> sys::ggml_backend_dev_t {
    match state() {
        Some(s) if index == 0 => s.dev,
        _ => null_mut(),
    }
}

// ---- device ----

unsafe extern "C" fn dev_get_name(_: sys::ggml_backend_dev_t) -> *const c_char {
    state().map_or(c"TritVulkan".as_ptr(), |s| s.gpu.name.as_ptr())
}
unsafe extern "C" fn dev_get_description(_: sys::ggml_backend_dev_t) -> *const c_char {
    state().map_or(c"".as_ptr(), |s| s.gpu.description.as_ptr())
}
unsafe extern "C" fn dev_get_memory(_: sys::ggml_backend_dev_t, free: *mut usize, total: *mut usize) {
    guard("get_memory", (), || {
        let (f, t) = state().map_or((0, 0), |s| s.gpu.memory());
        // SAFETY: ggml passes valid out-pointers.
        unsafe {
            *free = f as usize;
            *total = t as usize;
        }
    })
}
unsafe extern "C" fn dev_get_type(_: sys::ggml_backend_dev_t) -> sys::ggml_backend_dev_type {
    // A CPU Vulkan implementation (lavapipe) is still a separate device with its own buffers.
    sys::GGML_BACKEND_DEVICE_TYPE_GPU
}
unsafe extern "C" fn dev_get_props(dev: sys::ggml_backend_dev_t, props: *mut sys::ggml_backend_dev_props) {
    guard("get_props", (), || {
        let Some(s) = state() else { return };
        let (free, total) = s.gpu.memory();
        // SAFETY: ggml passes a valid out-pointer; the strings live as long as the device.
        unsafe {
            *props = sys::ggml_backend_dev_props {
                name: dev_get_name(dev),
                description: dev_get_description(dev),
                memory_free: free as usize,
                memory_total: total as usize,
                type_: sys::GGML_BACKEND_DEVICE_TYPE_GPU,
                device_id: s.gpu.device_id.as_ptr(),
                caps: sys::ggml_backend_dev_caps {
                    async_: false,
                    host_buffer: false,
                    buffer_from_host_ptr: false,
                    events: false,
                    mmap_support: true,
                },
            };
        }
    })
}
unsafe extern "C" fn dev_get_buffer_type(_: sys::ggml_backend_dev_t) -> sys::ggml_backend_buffer_type_t {
    state().map_or(null_mut(), |s| s.buft)
}
unsafe extern "C" fn dev_supports_op(_: sys::ggml_backend_dev_t, op: *const sys::ggml_tensor) -> bool {
    guard("supports_op", false, || state().is_some_and(|s| crate::ops::supports(&s.gpu, op)))
}
unsafe extern "C" fn dev_supports_buft(_: sys::ggml_backend_dev_t, buft: sys::ggml_backend_buffer_type_t) -> bool {
    state().is_some_and(|s| s.buft == buft)
}
unsafe extern "C" fn dev_offload_op(_: sys::ggml_backend_dev_t, _op: *const sys::ggml_tensor) -> bool {
    // Weights on the CPU stay there: copying them per batch costs more than it saves.
    false
}

// ---- buffer type ----

unsafe extern "C" fn buft_get_name(_: sys::ggml_backend_buffer_type_t) -> *const c_char {
    c"TritVulkan0".as_ptr()
}
unsafe extern "C" fn buft_get_alignment(_: sys::ggml_backend_buffer_type_t) -> usize {
    state().map_or(ALIGNMENT, |s| ALIGNMENT.max(s.gpu.min_storage_align)) as usize
}
unsafe extern "C" fn buft_get_max_size(_: sys::ggml_backend_buffer_type_t) -> usize {
    state().map_or(0, |s| s.gpu.max_alloc) as usize
}
/// ggml_nbytes, except for ternary tensors, which our buffers hold in split rows (weight_store).
unsafe extern "C" fn buft_get_alloc_size(_: sys::ggml_backend_buffer_type_t, t: *const sys::ggml_tensor) -> usize {
    guard("get_alloc_size", 0, || {
        // SAFETY: ggml passes a live tensor.
        crate::weight_store::alloc_size(t, unsafe { sys::ggml_nbytes(t) } as u64) as usize
    })
}
const MIB: f64 = 1048576.0;

unsafe extern "C" fn buft_alloc_buffer(
    buft: sys::ggml_backend_buffer_type_t,
    size: usize,
) -> sys::ggml_backend_buffer_t {
    guard("alloc_buffer", null_mut(), || {
        let Some(s) = state() else { return null_mut() };
        let alloc = match s.gpu.alloc(size as u64) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("trit-vulkan: {e}");
                return null_mut();
            }
        };
        if std::env::var_os("TRIT_VULKAN_PROFILE").is_some() {
            let (now, _) = crate::allocated_bytes();
            eprintln!(
                "trit-vulkan: buffer of {:.1} MiB allocated ({:.1} MiB in all)",
                size as f64 / MIB,
                now as f64 / MIB
            );
        }
        let ctx = Box::into_raw(Box::new(BufferCtx { gpu: s.gpu.clone(), alloc }));
        let iface = sys::ggml_backend_buffer_i {
            free_buffer: Some(buf_free),
            get_base: Some(buf_get_base),
            memset_tensor: Some(buf_memset_tensor),
            set_tensor: Some(buf_set_tensor),
            get_tensor: Some(buf_get_tensor),
            clear: Some(buf_clear),
            ..Default::default()
        };
        // SAFETY: iface callbacks are ours; ctx is freed by buf_free.
        let b = unsafe { sys::ggml_backend_buffer_init(buft, iface, ctx as *mut c_void, size) };
        if b.is_null() {
            // SAFETY: ctx was not handed over.
            let ctx = unsafe { Box::from_raw(ctx) };
            ctx.gpu.free(&ctx.alloc);
        }
        b
    })
}

// ---- buffer ----

/// # Safety
/// `b` must be one of our buffers (its context a live BufferCtx).
unsafe fn ctx_of<'a>(b: sys::ggml_backend_buffer_t) -> &'a BufferCtx {
    // SAFETY: per the function contract.
    unsafe { &*((*b).context as *const BufferCtx) }
}

fn tensor_offset(t: *const sys::ggml_tensor) -> u64 {
    // SAFETY: t is a live tensor placed in this buffer.
    (unsafe { (*t).data } as u64).wrapping_sub(FAKE_BASE)
}

unsafe extern "C" fn buf_free(b: sys::ggml_backend_buffer_t) {
    guard("free_buffer", (), || {
        // SAFETY: ggml calls this once per buffer; the context came from Box::into_raw.
        let ctx = unsafe { Box::from_raw((*b).context as *mut BufferCtx) };
        ctx.gpu.free(&ctx.alloc);
    })
}
unsafe extern "C" fn buf_get_base(_: sys::ggml_backend_buffer_t) -> *mut c_void {
    FAKE_BASE as *mut c_void
}
unsafe extern "C" fn buf_set_tensor(
    b: sys::ggml_backend_buffer_t,
    t: *mut sys::ggml_tensor,
    data: *const c_void,
    offset: usize,
    size: usize,
) {
    guard("set_tensor", (), || {
        // SAFETY: b is ours; data points to `size` readable bytes (ggml's contract).
        let (ctx, src) = unsafe { (ctx_of(b), std::slice::from_raw_parts(data as *const u8, size)) };
        if crate::weight_store::is_stored(t) {
            // ggml's blocks in, split rows stored (weight_store).
            if crate::weight_store::reencoded(t) {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::info!(
                        "trit-vulkan: TQ1_0 weights held as TQ2_0 blocks for the TQ2_0 kernels (22% more memory for \
                         them; TRIT_VULKAN_TQ1_AS_TQ2=0 keeps them as stored)"
                    )
                });
            }
            if let Err(e) = write_split(ctx, t, src, offset) {
                tracing::error!("trit-vulkan: set_tensor {}: {e}", crate::ops::tensor_name(t));
            }
            return;
        }
        let at = tensor_offset(t) + offset as u64;
        if at + size as u64 > ctx.alloc.size {
            tracing::error!("trit-vulkan: set_tensor out of bounds ({at} + {size} > {})", ctx.alloc.size);
            return;
        }
        if let Err(e) = ctx.gpu.write(&ctx.alloc, at, src) {
            tracing::error!("trit-vulkan: set_tensor: {e}");
        }
    })
}
unsafe extern "C" fn buf_get_tensor(
    b: sys::ggml_backend_buffer_t,
    t: *const sys::ggml_tensor,
    data: *mut c_void,
    offset: usize,
    size: usize,
) {
    guard("get_tensor", (), || {
        // SAFETY: b is ours; data points to `size` writable bytes (ggml's contract).
        let (ctx, dst) = unsafe { (ctx_of(b), std::slice::from_raw_parts_mut(data as *mut u8, size)) };
        if crate::weight_store::is_stored(t) {
            // Split rows stored, ggml's blocks out (weight_store).
            if let Err(e) = read_split(ctx, t, dst, offset) {
                tracing::error!("trit-vulkan: get_tensor {}: {e}", crate::ops::tensor_name(t));
            }
            return;
        }
        let at = tensor_offset(t) + offset as u64;
        if at + size as u64 > ctx.alloc.size {
            tracing::error!("trit-vulkan: get_tensor out of bounds ({at} + {size} > {})", ctx.alloc.size);
            return;
        }
        if let Err(e) = ctx.gpu.read(&ctx.alloc, at, dst) {
            tracing::error!("trit-vulkan: get_tensor: {e}");
        }
    })
}
/// The split rows a `set_tensor` / `get_tensor` of `size` ggml bytes at `offset` into held
/// tensor `t` touches, and where they start in the allocation (checked against its end).
fn split_rows(
    ctx: &BufferCtx,
    t: *const sys::ggml_tensor,
    offset: usize,
    size: usize,
) -> Result<(crate::weight_store::Span, u64), String> {
    let s = crate::weight_store::span_of(t, offset, size)?;
    let base = crate::weight_store::stored_offset(t, tensor_offset(t)).ok_or("a view that starts inside a row")?;
    let at = base + s.first_row * s.row_bytes;
    let bytes = s.rows * s.row_bytes;
    if at + bytes > ctx.alloc.size {
        return Err(format!("out of bounds ({at} + {bytes} > {})", ctx.alloc.size));
    }
    Ok((s, at))
}

/// ggml's bytes `src` at `offset` into held tensor `t`, written as split rows; rows the write
/// covers in part are read first, so their other blocks keep their values.
fn write_split(ctx: &BufferCtx, t: *const sys::ggml_tensor, src: &[u8], offset: usize) -> Result<(), String> {
    let (s, at) = split_rows(ctx, t, offset, src.len())?;
    let mut rows = vec![0u8; (s.rows * s.row_bytes) as usize];
    if !s.whole_rows {
        ctx.gpu.read(&ctx.alloc, at, &mut rows).map_err(|e| e.to_string())?;
    }
    crate::weight_store::place(&s, &crate::weight_store::to_tq2(t, src), &mut rows);
    ctx.gpu.write(&ctx.alloc, at, &rows).map_err(|e| e.to_string())
}

/// ggml's bytes of held tensor `t` at `offset` into `dst`, from its split rows.
fn read_split(ctx: &BufferCtx, t: *const sys::ggml_tensor, dst: &mut [u8], offset: usize) -> Result<(), String> {
    let (s, at) = split_rows(ctx, t, offset, dst.len())?;
    let mut rows = vec![0u8; (s.rows * s.row_bytes) as usize];
    ctx.gpu.read(&ctx.alloc, at, &mut rows).map_err(|e| e.to_string())?;
    let mut tq2 = vec![0u8; (s.blocks * trit_kernels::formats::TQ2_0_BYTES as u64) as usize];
    crate::weight_store::take(&s, &rows, &mut tq2);
    crate::weight_store::from_tq2(t, &tq2, dst);
    Ok(())
}

unsafe extern "C" fn buf_memset_tensor(
    b: sys::ggml_backend_buffer_t,
    t: *mut sys::ggml_tensor,
    value: u8,
    offset: usize,
    size: usize,
) {
    guard("memset_tensor", (), || {
        // SAFETY: b is ours.
        let ctx = unsafe { ctx_of(b) };
        if crate::weight_store::is_stored(t) {
            // A byte fill means other weights in the split layout: refuse it rather than
            // write a tensor other than the one asked for.
            tracing::error!("trit-vulkan: memset_tensor on ternary weights {}", crate::ops::tensor_name(t));
            return;
        }
        let at = tensor_offset(t) + offset as u64;
        if at + size as u64 > ctx.alloc.size {
            tracing::error!("trit-vulkan: memset_tensor out of bounds");
            return;
        }
        if let Err(e) = ctx.gpu.fill_range(&ctx.alloc, at, size as u64, value) {
            tracing::error!("trit-vulkan: memset_tensor: {e}");
        }
    })
}
unsafe extern "C" fn buf_clear(b: sys::ggml_backend_buffer_t, value: u8) {
    guard("clear", (), || {
        // SAFETY: b is ours.
        let ctx = unsafe { ctx_of(b) };
        if let Err(e) = ctx.gpu.fill(&ctx.alloc, value) {
            tracing::error!("trit-vulkan: clear: {e}");
        }
    })
}

// ---- backend ----

static GUID: [u8; 16] = *b"trit-vulkan-0001";

unsafe extern "C" fn dev_init_backend(dev: sys::ggml_backend_dev_t, _params: *const c_char) -> sys::ggml_backend_t {
    guard("init_backend", null_mut(), || {
        let Some(s) = state() else { return null_mut() };
        let rec = match Recorder::new(s.gpu.clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("trit-vulkan: {e}");
                return null_mut();
            }
        };
        let ctx = Box::into_raw(Box::new(BackendCtx { rec: Mutex::new(rec) }));
        Box::into_raw(Box::new(sys::ggml_backend {
            guid: GUID.as_ptr() as *mut _,
            iface: sys::ggml_backend_i {
                get_name: Some(backend_get_name),
                free: Some(backend_free),
                graph_compute: Some(backend_graph_compute),
                ..Default::default()
            },
            device: dev,
            context: ctx as *mut c_void,
        }))
    })
}

unsafe extern "C" fn backend_get_name(_: sys::ggml_backend_t) -> *const c_char {
    c"TritVulkan0".as_ptr()
}
unsafe extern "C" fn backend_free(backend: sys::ggml_backend_t) {
    guard("backend_free", (), || {
        // SAFETY: both boxes came from dev_init_backend; ggml frees a backend once.
        unsafe {
            let b = Box::from_raw(backend);
            drop(Box::from_raw(b.context as *mut BackendCtx));
        }
    })
}
/// Graphs (scheduler splits) handed to any trit-vulkan backend of this process (tests).
pub(crate) static GRAPHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

unsafe extern "C" fn backend_graph_compute(
    backend: sys::ggml_backend_t,
    graph: *mut sys::ggml_cgraph,
) -> sys::ggml_status {
    guard("graph_compute", sys::GGML_STATUS_FAILED, || {
        // SAFETY: backend came from dev_init_backend.
        let ctx = unsafe { &*((*backend).context as *const BackendCtx) };
        let mut rec = ctx.rec.lock().unwrap_or_else(|e| e.into_inner());
        GRAPHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let done = compute(&mut rec, graph);
        // Pipelines this graph built (a first prompt or decode step) go to the disk cache.
        rec.gpu().save_pipeline_cache();
        match done {
            Ok(()) => sys::GGML_STATUS_SUCCESS,
            Err(e) => {
                tracing::error!("trit-vulkan: graph_compute: {e}");
                sys::GGML_STATUS_FAILED
            }
        }
    })
}

fn compute(rec: &mut Recorder, graph: *mut sys::ggml_cgraph) -> crate::error::Result<()> {
    let t0 = std::time::Instant::now();
    // SAFETY: graph is a live ggml graph for the duration of the call.
    let n = unsafe { sys::ggml_graph_n_nodes(graph) };
    // The same graph as last time (a decode step): submit what was recorded then.
    let mut sig = None;
    if rec.can_replay() {
        if rec.replay(graph, t0)? {
            return Ok(());
        }
        let mut s = rec.take_signature_buffer();
        let t = std::time::Instant::now();
        s.build(rec.gpu(), graph);
        if crate::dispatch::trace() {
            eprintln!("trit-vulkan trace: signature built in {:.1} us", t.elapsed().as_secs_f64() * 1e6);
        }
        sig = Some(s);
    }
    let align = rec.gpu().min_storage_align;
    if crate::dispatch::trace() {
        trace_nodes(graph);
    }
    let plan = crate::fuse::Plan::new(graph, rec.gpu());
    let units = crate::schedule::order(graph, |i| plan.len(i), |i| plan.extra_read(i));
    let layout = crate::ops::graph_scratch(rec.gpu(), graph, &units, align);
    let scratch = layout.bytes;
    crate::scratch::LAST_BYTES.store(scratch, std::sync::atomic::Ordering::Relaxed);
    // TRIT_VULKAN_PROFILE: the scratch of each graph that sets a new high, reserved or as it
    // would be without reuse (`scratch::Layout::without_reuse`).
    static MOST: [std::sync::atomic::AtomicU64; 2] = [const { std::sync::atomic::AtomicU64::new(0) }; 2];
    if std::env::var_os("TRIT_VULKAN_PROFILE").is_some() {
        let (with, without) = (scratch, layout.without_reuse());
        let up = |i: usize, v: u64| MOST[i].fetch_max(v, std::sync::atomic::Ordering::Relaxed) < v;
        if up(0, with) | up(1, without) {
            eprintln!(
                "trit-vulkan: graph of {n} nodes: {:.1} MiB of scratch ({:.1} MiB without reuse of rounded activations)",
                with as f64 / MIB,
                without as f64 / MIB
            );
        }
    }
    rec.reserve_scratch(layout)?;
    let counts = (rec.dispatches, rec.barriers);
    rec.begin()?;
    rec.began_at(t0);
    for (first, k) in units {
        let mut i = first;
        while i < first + k {
            // SAFETY: i < n_nodes.
            let node = unsafe { sys::ggml_graph_node(graph, i) };
            let r = match plan.encode_within(rec, graph, i, first + k - i) {
                Ok(0) => crate::ops::encode(rec, node).map(|()| 1),
                r => r, // nodes fused into one dispatch
            };
            match r {
                Ok(k) => i += k,
                Err(e) => {
                    rec.abort();
                    return Err(e);
                }
            }
        }
    }
    rec.plan_outputs(graph);
    rec.finish()?;
    if let Some(sig) = sig {
        rec.keep(sig, counts);
    }
    Ok(())
}

/// TRIT_VULKAN_TRACE=1: the nodes of a graph about to be recorded (index, op, name, sources'
/// names), to stderr.
fn trace_nodes(graph: *mut sys::ggml_cgraph) {
    let name = crate::ops::tensor_name;
    // SAFETY: graph is live for the call.
    let n = unsafe { sys::ggml_graph_n_nodes(graph) };
    for i in 0..n {
        // SAFETY: i < n_nodes.
        let t = unsafe { sys::ggml_graph_node(graph, i) };
        // SAFETY: t is live; ggml_op_desc returns a static string.
        let op = unsafe { std::ffi::CStr::from_ptr(sys::ggml_op_desc(t)) }.to_string_lossy();
        // SAFETY: t is live.
        let srcs: Vec<String> = unsafe { (*t).src }.iter().filter(|s| !s.is_null()).map(|&s| name(s)).collect();
        eprintln!("trit-vulkan trace: node {i} {op} {} <- {}", name(t), srcs.join(", "));
    }
}
