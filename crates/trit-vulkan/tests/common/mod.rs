//! Shared harness: build the same tiny ggml graph on the Vulkan and the CPU backend, fill
//! the inputs with the same seeded data, compare the outputs by NMSE.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use rand::{rngs::StdRng, Rng, SeedableRng};
use trit_sys as sys;

pub type T = *mut sys::ggml_tensor;
pub type Ctx = *mut sys::ggml_context;

pub const F32: sys::ggml_type = sys::GGML_TYPE_F32;
pub const F16: sys::ggml_type = sys::GGML_TYPE_F16;
pub const I32: sys::ggml_type = sys::GGML_TYPE_I32;
pub const I64: sys::ggml_type = sys::GGML_TYPE_I64;
pub const TQ1: sys::ggml_type = sys::GGML_TYPE_TQ1_0;
pub const TQ2: sys::ggml_type = sys::GGML_TYPE_TQ2_0;

/// ggml's name of a type, for case names.
pub fn tn(t: sys::ggml_type) -> String {
    // SAFETY: returns a static string for any type id.
    unsafe { std::ffi::CStr::from_ptr(sys::ggml_type_name(t)) }.to_string_lossy().into_owned()
}

/// How an input is filled.
#[derive(Clone, Copy)]
pub enum Fill {
    /// Uniform in [-1, 1] (quantized types: quantized from that).
    Uniform,
    /// Integers in [0, n) (I32/I64 indices, positions).
    Index(i64),
    /// Distinct indices (a permutation prefix) in [0, n), for SET_ROWS destinations.
    Distinct(i64),
    /// Indices first, first + step, ... (I64), for SET_ROWS destinations laid out as
    /// llama.cpp's transposed V cache (element r of a cell at r * cells + cell).
    Ramp(i64, i64),
    /// A causal attention mask (0 or -inf), for SOFT_MAX.
    Causal,
    /// Uniform in [0, 1) (second moments of AdamW).
    Positive,
    /// These values, repeated.
    Values(&'static [f32]),
    /// Ternary rows, each with its own scale s_r (every 256-block of a row has an element of
    /// magnitude s_r, so a TQ2_0 / TQ1_0 row's block scales are all s_r, as in BitNet's
    /// weights), except block 2 of row 5, at 2 s_r: block column 2's scales differ from
    /// block column 0's in that row only.
    RowTernary,
    /// Training labels: one-hot rows (of ne[0]), every `n`-th row all zero (a masked position).
    OneHotMasked(usize),
}

/// Dispatches recorded so far in this process, less the L2 prefetches (`l2_prefetch.comp`,
/// on by default on discrete GPUs), which read only weights and change no graph's stages.
pub fn dispatch_count() -> u64 {
    trit_vulkan::dispatch_count() - trit_vulkan::l2_prefetch_dispatch_count()
}

/// Serialises the tests: they share one device and the tiling limits are global.
pub fn lock() -> MutexGuard<'static, ()> {
    static L: Mutex<()> = Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test lock and both backends, with the tiling limits, staging and training's
/// tensor-core products back at their defaults (the int8 input gradient and the emulated
/// cooperative matrices off); None when there is no device and
/// TRIT_VULKAN_OPTIONAL=1.
pub fn setup() -> Option<(MutexGuard<'static, ()>, Backends)> {
    let g = lock();
    let dev = vulkan_device()?;
    trit_vulkan::set_limits(None, None);
    trit_vulkan::set_force_staging(false);
    trit_vulkan::set_cm_training(false);
    // The int8 input gradient is on by default where a device has int8 tensor cores; the
    // tests check the f32 kernels by default and turn it on where they check it.
    trit_vulkan::set_dx_int8(false);
    trit_vulkan::set_dxq_wide(true);
    trit_vulkan::set_coopmat_emulation(0);
    Some((g, Backends::new(dev)))
}

/// The Vulkan device, or None when TRIT_VULKAN_OPTIONAL=1 and there is none. Without that
/// variable a missing device is a test failure (CI has lavapipe).
pub fn vulkan_device() -> Option<sys::ggml_backend_dev_t> {
    match trit_vulkan::device() {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("TRIT_VULKAN_OPTIONAL").is_ok_and(|v| v == "1") {
                eprintln!("\n!!!!!!!! SKIPPING trit-vulkan tests: {e} (TRIT_VULKAN_OPTIONAL=1) !!!!!!!!\n");
                None
            } else {
                panic!("{e}. Install a Vulkan driver (CI: mesa-vulkan-drivers for lavapipe) or set TRIT_VULKAN_OPTIONAL=1 to skip");
            }
        }
    }
}

pub struct Backends {
    pub vk: sys::ggml_backend_t,
    pub cpu: sys::ggml_backend_t,
}

impl Backends {
    pub fn new(dev: sys::ggml_backend_dev_t) -> Backends {
        // SAFETY: dev is our live device; both backends are freed in Drop.
        unsafe {
            let vk = sys::ggml_backend_dev_init(dev, std::ptr::null());
            assert!(!vk.is_null(), "init_backend failed");
            let cpu = sys::ggml_backend_cpu_init();
            assert!(!cpu.is_null());
            Backends { vk, cpu }
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        // SAFETY: created in new, freed once.
        unsafe {
            sys::ggml_backend_free(self.vk);
            sys::ggml_backend_free(self.cpu);
        }
    }
}

pub type Builder<'a> = &'a dyn Fn(Ctx, &mut Vec<(T, Fill)>) -> T;

pub fn fill_tensor(t: T, fill: Fill, rng: &mut StdRng) {
    // SAFETY: t is allocated in a backend buffer; sizes come from ggml itself.
    unsafe {
        let n = sys::ggml_nelements(t) as usize;
        let ty = (*t).type_;
        let bytes: Vec<u8> = match (ty, fill) {
            (sys::GGML_TYPE_I32, Fill::Index(m)) => {
                (0..n).flat_map(|_| (rng.gen_range(0..m) as i32).to_le_bytes()).collect()
            }
            (sys::GGML_TYPE_I64, Fill::Index(m)) => (0..n).flat_map(|_| rng.gen_range(0..m).to_le_bytes()).collect(),
            (sys::GGML_TYPE_I64, Fill::Ramp(first, step)) => {
                (0..n as i64).flat_map(|i| (first + i * step).to_le_bytes()).collect()
            }
            (sys::GGML_TYPE_I32 | sys::GGML_TYPE_I64, Fill::Distinct(m)) => {
                let mut all: Vec<i64> = (0..m).collect();
                for i in (1..all.len()).rev() {
                    all.swap(i, rng.gen_range(0..=i));
                }
                let row = (*t).ne[0] as usize;
                (0..n)
                    .flat_map(|i| {
                        let v = all[i % row];
                        if ty == sys::GGML_TYPE_I32 {
                            (v as i32).to_le_bytes().to_vec()
                        } else {
                            v.to_le_bytes().to_vec()
                        }
                    })
                    .collect()
            }
            _ => {
                let vals: Vec<f32> = match fill {
                    Fill::Causal => {
                        let (cols, rows) = ((*t).ne[0] as usize, (*t).ne[1] as usize);
                        (0..n)
                            .map(|i| {
                                let (c, r) = (i % cols, (i / cols) % rows);
                                if c > r + (cols - rows) {
                                    f32::NEG_INFINITY
                                } else {
                                    0.0
                                }
                            })
                            .collect()
                    }
                    Fill::Positive => (0..n).map(|_| rng.gen_range(0.0f32..1.0)).collect(),
                    Fill::Values(v) => (0..n).map(|i| v[i % v.len()]).collect(),
                    Fill::RowTernary => {
                        let cols = (*t).ne[0] as usize;
                        (0..n)
                            .map(|i| {
                                let (c, r) = (i % cols, i / cols);
                                let s = (0.25 + 0.1 * (r % 7) as f32) * if r == 5 && c / 256 == 2 { 2.0 } else { 1.0 };
                                if c % 256 == 0 {
                                    s
                                } else {
                                    s * (rng.gen_range(0..3) - 1) as f32
                                }
                            })
                            .collect()
                    }
                    Fill::OneHotMasked(every) => {
                        let cols = (*t).ne[0] as usize;
                        let mut v = vec![0f32; n];
                        for (r, row) in v.chunks_mut(cols).enumerate() {
                            let hot = rng.gen_range(0..cols);
                            if r % every != every - 1 {
                                row[hot] = 1.0;
                            }
                        }
                        v
                    }
                    _ => (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect(),
                };
                match ty {
                    sys::GGML_TYPE_F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    sys::GGML_TYPE_F16 => vals.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
                    _ => {
                        let row = (*t).ne[0];
                        let nrows = n as i64 / row;
                        let mut out = vec![0u8; sys::ggml_nbytes(t)];
                        sys::ggml_quantize_chunk(
                            ty,
                            vals.as_ptr(),
                            out.as_mut_ptr() as *mut _,
                            0,
                            nrows,
                            row,
                            std::ptr::null(),
                        );
                        out
                    }
                }
            }
        };
        assert_eq!(bytes.len(), sys::ggml_nbytes(t), "fill size for {}", n);
        sys::ggml_backend_tensor_set(t, bytes.as_ptr() as *const _, 0, bytes.len());
    }
}

/// Build the graph of `build` on `backend`, fill inputs from `seed`, compute, read the output
/// as f32. Also returns whether the Vulkan device claims support for the output op.
pub fn run(backend: sys::ggml_backend_t, build: Builder, seed: u64) -> (Vec<f32>, bool) {
    // SAFETY: standard ggml usage; every object is freed before returning.
    unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: 512 * sys::ggml_tensor_overhead() + sys::ggml_graph_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        assert!(!ctx.is_null());
        let mut inputs = Vec::new();
        let out = build(ctx, &mut inputs);
        let gf = sys::ggml_new_graph(ctx);
        sys::ggml_build_forward_expand(gf, out);
        let buf = sys::ggml_backend_alloc_ctx_tensors(ctx, backend);
        assert!(!buf.is_null(), "allocating the test tensors failed");
        let mut rng = StdRng::seed_from_u64(seed);
        for &(t, f) in &inputs {
            fill_tensor(t, f, &mut rng);
        }
        let supported = trit_vulkan::device().map(|d| sys::ggml_backend_dev_supports_op(d, out)).unwrap_or(false);
        let status = sys::ggml_backend_graph_compute(backend, gf);
        assert_eq!(status, sys::GGML_STATUS_SUCCESS, "graph_compute failed");
        let n = sys::ggml_nelements(out) as usize;
        let mut raw = vec![0u8; sys::ggml_nbytes(out)];
        sys::ggml_backend_tensor_get(out, raw.as_mut_ptr() as *mut _, 0, raw.len());
        let vals = match (*out).type_ {
            sys::GGML_TYPE_F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            sys::GGML_TYPE_F16 => {
                raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            // Integer outputs (ARGMAX, COUNT_EQUAL) compared as floats.
            sys::GGML_TYPE_I32 => {
                raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect()
            }
            sys::GGML_TYPE_I64 => {
                raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
            }
            t => panic!("output type {t}"),
        };
        let vals: Vec<f32> = if sys::ggml_is_contiguous(out) { vals } else { strided(out, &raw) };
        assert_eq!(vals.len(), n);
        sys::ggml_backend_buffer_free(buf);
        sys::ggml_free(ctx);
        (vals, supported)
    }
}

/// Gather a non-contiguous f32/f16 output in logical order.
unsafe fn strided(t: T, raw: &[u8]) -> Vec<f32> {
    // SAFETY: t is live; raw holds ggml_nbytes(t) bytes starting at t's first element.
    let (ne, nb, ty) = unsafe { ((*t).ne, (*t).nb, (*t).type_) };
    let mut out = Vec::new();
    for i3 in 0..ne[3] as usize {
        for i2 in 0..ne[2] as usize {
            for i1 in 0..ne[1] as usize {
                for i0 in 0..ne[0] as usize {
                    let o = i0 * nb[0] + i1 * nb[1] + i2 * nb[2] + i3 * nb[3];
                    out.push(if ty == sys::GGML_TYPE_F32 {
                        f32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]])
                    } else {
                        half::f16::from_le_bytes([raw[o], raw[o + 1]]).to_f32()
                    });
                }
            }
        }
    }
    out
}

/// Normalised mean squared error of `got` against `want` (test-backend-ops' measure).
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut err, mut norm) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        if w.is_infinite() && g == w {
            continue;
        }
        err += (g as f64 - w as f64).powi(2);
        norm += (w as f64).powi(2);
    }
    if norm == 0.0 {
        err
    } else {
        err / norm
    }
}

/// A small TQ2_0 product (40 rows, k = 512, 3 columns) checked against the CPU: the few
/// pipelines a first graph builds, for the start-up and pipeline-cache tests.
pub fn check_small_product(b: &Backends) {
    check(
        b,
        "tq2 product x 3 columns",
        &|ctx, ins| {
            let a = input(ctx, ins, TQ2, &[512, 40], Fill::Uniform);
            let x = input(ctx, ins, F32, &[512, 3], Fill::Uniform);
            // SAFETY: ctx is live.
            unsafe { sys::ggml_mul_mat(ctx, a, x) }
        },
        1e-9,
    );
}

/// Run `build` on both backends and check NMSE <= bound; returns the NMSE.
pub fn check(b: &Backends, name: &str, build: Builder, bound: f64) -> f64 {
    let (got, supported) = run(b.vk, build, 7);
    let (want, _) = run(b.cpu, build, 7);
    assert!(supported, "{name}: the Vulkan device does not claim support for this op");
    assert!(got.iter().all(|v| !v.is_nan()), "{name}: NaN in Vulkan output");
    let e = nmse(&got, &want);
    println!("{name:<48} n={:<7} nmse={e:.3e} (bound {bound:.0e})", got.len());
    assert!(
        e <= bound,
        "{name}: NMSE {e:.3e} > {bound:.0e}\n got[..8]  {:?}\n want[..8] {:?}",
        &got[..got.len().min(8)],
        &want[..want.len().min(8)]
    );
    e
}

// ---- tensor constructors (SAFETY: ctx is a live no_alloc context) ----

pub fn new(ctx: Ctx, ty: sys::ggml_type, ne: &[i64]) -> T {
    let mut n = [1i64; 4];
    n[..ne.len()].copy_from_slice(ne);
    unsafe { sys::ggml_new_tensor_4d(ctx, ty, n[0], n[1], n[2], n[3]) }
}

pub fn input(ctx: Ctx, ins: &mut Vec<(T, Fill)>, ty: sys::ggml_type, ne: &[i64], fill: Fill) -> T {
    let t = new(ctx, ty, ne);
    ins.push((t, fill));
    t
}

/// Which ROPE constructor [`rope`] calls.
#[derive(Clone, Copy)]
pub enum Rope {
    Forward,
    InPlace,
    Back,
}

/// ROPE of `x` at positions `pos` with the tests' fixed settings: no frequency factors,
/// n_ctx_orig 4096, frequency base `base`, no frequency scaling or YaRN extrapolation,
/// attention factor 1, beta_fast 32, beta_slow 1.
pub fn rope(ctx: Ctx, op: Rope, x: T, pos: T, n_dims: i32, mode: i32, base: f32) -> T {
    let f = match op {
        Rope::Forward => sys::ggml_rope_ext,
        Rope::InPlace => sys::ggml_rope_ext_inplace,
        Rope::Back => sys::ggml_rope_ext_back,
    };
    // SAFETY: ctx is a live context and x, pos tensors of it (the callers' contract).
    unsafe { f(ctx, x, pos, std::ptr::null_mut(), n_dims, mode, 4096, base, 1.0, 0.0, 1.0, 32.0, 1.0) }
}
