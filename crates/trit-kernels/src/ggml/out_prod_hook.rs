//! The OUT_PROD hook (vendor patch 0016): training's gradient products (through a frozen TQ2_0,
//! TQ1_0 or F16 weight, and the LoRA matrices' F32 ones), computed by [`crate::out_prod`] — the
//! same bits as ggml's own OUT_PROD — or, through ternary weights with [`TernaryGrad::I16`], by
//! [`crate::out_prod_q16`].

use std::ffi::c_int;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use trit_sys as sys;

use crate::f16w::F16Weights;
use crate::formats::TernaryType;
use crate::out_prod::{out_prod_item, F32Rows, OutProdLayout, OutProdWeights, Plan};
use crate::out_prod_q16::{has_q16_path, out_prod_q16_item, Q16Scratch, Q16_MAX_ROWS};
use crate::Weights;

/// How training's gradient through a frozen ternary weight is computed on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TernaryGrad {
    /// In f32, the same bits as ggml's OUT_PROD.
    F32,
    /// In 16-bit integers where the CPU has i16 dot products ([`crate::out_prod_q16`]: each
    /// value held to 2⁻¹⁵ of its token's largest in the 256 columns, as the Vulkan backend's
    /// int8 input gradient does), f32 elsewhere. The default.
    I16,
}

impl TernaryGrad {
    pub fn name(self) -> &'static str {
        match self {
            TernaryGrad::F32 => "f32",
            TernaryGrad::I16 => "i16",
        }
    }
}

impl FromStr for TernaryGrad {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(TernaryGrad::F32),
            "i16" => Ok(TernaryGrad::I16),
            _ => Err(format!("unknown ternary gradient form '{s}' (f32, i16)")),
        }
    }
}

static GRAD_I16: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// Each thread's buffers, kept from op to op: the i16 form's quantized gradient is
    /// megabytes, and a fresh allocation every op would fault its pages in every time.
    static SCRATCH: std::cell::RefCell<(Q16Scratch, Vec<f32>)> = Default::default();
}
static Q16_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Compute the gradient through frozen ternary weights as `g` says from now on (call while no
/// graph is computing). [`super::install`] sets it from `TRIT_TERNARY_GRAD` (`i16` when unset).
pub fn set_ternary_grad(g: TernaryGrad) {
    GRAD_I16.store(g == TernaryGrad::I16, Ordering::Relaxed);
}

/// The form the hook computes in: [`set_ternary_grad`]'s choice, but f32 where the installed
/// ISA has no i16 dot products (the f32 path is as fast there).
pub fn ternary_grad() -> TernaryGrad {
    if GRAD_I16.load(Ordering::Relaxed) && has_q16_path(super::isa()) {
        TernaryGrad::I16
    } else {
        TernaryGrad::F32
    }
}

/// How many OUT_PROD ops (threads × ops) ran in i16, for tests.
pub fn out_prod_q16_runs() -> usize {
    Q16_RUNS.load(Ordering::Relaxed)
}

/// Whether ggml-cpu's `ggml_vec_mad_f32` fuses its multiply-adds (it does where it was built
/// with FMA or AVX-512, as native x86-64 builds are, and on aarch64, whose NEON form is
/// `vfmaq_f32`), set by [`install`].
static FUSED: AtomicBool = AtomicBool::new(true);
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Point ggml-cpu's OUT_PROD at [`out_prod_hook`] for TQ1_0, TQ2_0, F16 and F32 (`on`, and
/// only where [`crate::out_prod`] has a vector path on `isa`), or back at ggml's own code.
pub(super) fn install(on: bool, isa: crate::Isa) {
    // SAFETY: plain queries of how ggml-cpu was compiled.
    let fused =
        unsafe { sys::ggml_cpu_has_fma() != 0 || sys::ggml_cpu_has_avx512() != 0 || sys::ggml_cpu_has_arm_fma() != 0 };
    FUSED.store(fused, Ordering::Relaxed);
    let hook: sys::ggml_cpu_out_prod_hook_t =
        (on && crate::out_prod::has_vector_path(isa)).then_some(out_prod_hook as _);
    for ty in [sys::GGML_TYPE_TQ1_0, sys::GGML_TYPE_TQ2_0, sys::GGML_TYPE_F16, sys::GGML_TYPE_F32] {
        // SAFETY: the setter only stores the pointer in ggml-cpu's table; `ty` is in range.
        unsafe { sys::ggml_cpu_set_out_prod_hook(ty, hook) };
    }
}

/// How many times (threads × ops) the OUT_PROD hook has computed an op in this process, for
/// tests: its results equal ggml's bit for bit, so numbers alone cannot show that it ran.
pub fn out_prod_hook_runs() -> usize {
    RUNS.load(Ordering::Relaxed)
}

/// The hook ggml-cpu calls for OUT_PROD with a TQ1_0, TQ2_0, F16 or F32 first operand: f32
/// `src1` and `dst`, the first operand's rows contiguous, 2-D or batched over dims 2 and 3 as
/// ggml's OUT_PROD allows (attention's per-head gradients, the first operand broadcast over
/// grouped-query heads); anything else returns false on every thread and ggml computes it.
///
/// # Safety
/// Called by ggml-cpu with a valid OUT_PROD `dst` whose sources are allocated, on each of the
/// op's `nth` threads.
unsafe extern "C" fn out_prod_hook(dst: *const sys::ggml_tensor, ith: c_int, nth: c_int) -> bool {
    // SAFETY: see the function's contract; ggml keeps these alive for the call.
    let (d, s0, s1) = unsafe { (&*dst, &*(*dst).src[0], &*(*dst).src[1]) };
    let ne = |t: &sys::ggml_tensor, i: usize| t.ne[i].max(0) as usize;
    let (k, rows, n) = (ne(s0, 0), ne(s0, 1), ne(s1, 0));
    let (ne2, ne3) = (ne(d, 2), ne(d, 3));
    let aligned = |p: *mut std::ffi::c_void, a: usize| (p as usize).is_multiple_of(a);
    let f32_strides = |t: &sys::ggml_tensor| t.nb.iter().all(|b| b.is_multiple_of(4));
    if s1.type_ != sys::GGML_TYPE_F32
        || d.type_ != sys::GGML_TYPE_F32
        || nth <= 0
        || ith < 0
        || k == 0
        || ne(s1, 1) != rows
        || ne(d, 0) != k
        || ne(d, 1) != n
        || ne(s1, 2) != ne2
        || ne(s1, 3) != ne3
        || ne(s0, 2) == 0
        || ne(s0, 3) == 0
        || !ne2.is_multiple_of(ne(s0, 2))
        || !ne3.is_multiple_of(ne(s0, 3))
        || d.nb[0] != 4
        || d.nb[1] / 4 < k
        || !f32_strides(d)
        || !f32_strides(s1)
        || !aligned(d.data, 4)
        || !aligned(s1.data, 4)
        || super::is_repacked(s0)
    {
        return false;
    }
    let (dps2, dps3) = (ne2 / ne(s0, 2), ne3 / ne(s0, 3));
    // Matrix (i2, i3) of the first operand, a view of `rows` rows from byte `at`.
    let need = |stride: usize, row: usize| if rows == 0 { 0 } else { (rows - 1) * stride + row };
    let weights = |at: usize| -> Option<OutProdWeights> {
        match s0.type_ {
            sys::GGML_TYPE_TQ2_0 | sys::GGML_TYPE_TQ1_0 => {
                let ty = if s0.type_ == sys::GGML_TYPE_TQ2_0 { TernaryType::Tq2_0 } else { TernaryType::Tq1_0 };
                if s0.nb[0] != ty.block_bytes() || !k.is_multiple_of(crate::QK) || s0.nb[1] < ty.row_bytes(k) {
                    return None;
                }
                // SAFETY: inside ggml's tensor: `rows` rows of nb[1] bytes from `at`.
                let data = unsafe {
                    std::slice::from_raw_parts((s0.data as *const u8).add(at), need(s0.nb[1], ty.row_bytes(k)))
                };
                Weights::with_stride(ty, data, rows, k, s0.nb[1]).ok().map(OutProdWeights::Ternary)
            }
            sys::GGML_TYPE_F16 => {
                if s0.nb[0] != 2 || !s0.nb.iter().all(|b| b.is_multiple_of(2)) || !aligned(s0.data, 2) {
                    return None;
                }
                let stride = s0.nb[1] / 2;
                // SAFETY: inside ggml's tensor: `rows` rows of `stride` halves from `at`.
                let data = unsafe {
                    std::slice::from_raw_parts((s0.data as *const u8).add(at) as *const u16, need(stride, k))
                };
                F16Weights::with_stride(data, rows, k, stride).ok().map(OutProdWeights::F16)
            }
            sys::GGML_TYPE_F32 => {
                if s0.nb[0] != 4 || !f32_strides(s0) || !aligned(s0.data, 4) {
                    return None;
                }
                let stride = s0.nb[1] / 4;
                // SAFETY: inside ggml's tensor: `rows` rows of `stride` floats from `at`.
                let data = unsafe {
                    std::slice::from_raw_parts((s0.data as *const u8).add(at) as *const f32, need(stride, k))
                };
                F32Rows::new(data, rows, k, stride).ok().map(OutProdWeights::F32)
            }
            _ => None,
        }
    };
    // Every matrix's operand must be usable before any thread writes (the same answer on all).
    if weights(0).is_none() {
        return false;
    }
    let matrices = ne2 * ne3;
    if matrices == 0 {
        return true; // an empty result: nothing to write
    }
    let (ith, nth) = (ith as usize, nth as usize);
    let plan = Plan::new(k, n, nth.div_ceil(matrices));
    let per = plan.items();
    let total = matrices * per;
    let lay = OutProdLayout { n, s_tok: s1.nb[0] / 4, s_row: s1.nb[1] / 4, ldy: d.nb[1] / 4 };
    let fused = FUSED.load(Ordering::Relaxed);
    let isa = super::isa();
    let ternary = matches!(s0.type_, sys::GGML_TYPE_TQ2_0 | sys::GGML_TYPE_TQ1_0);
    let q16 = ternary && ternary_grad() == TernaryGrad::I16 && rows <= Q16_MAX_ROWS;
    let mut cur = None;
    SCRATCH.with_borrow_mut(|(scratch, buf)| {
        for item in ith * total / nth..(ith + 1) * total / nth {
            let m = item / per;
            let (i2, i3) = (m % ne2, m / ne2);
            if cur.as_ref().is_none_or(|(cm, _)| *cm != m) {
                let at = (i2 / dps2) * s0.nb[2] + (i3 / dps3) * s0.nb[3];
                let Some(w) = weights(at) else { unreachable!("checked at offset 0: the same strides and sizes") };
                cur = Some((m, w));
            }
            let w = &cur.as_ref().unwrap().1;
            // SAFETY: src1 holds (t, r) of matrix (i2, i3) at t·nb[0] + r·nb[1] bytes from
            // i2·nb[2] + i3·nb[3] (t < n, r < rows) and dst that matrix's n rows of k floats
            // nb[1] bytes apart (ggml's tensors, checked above); the items are disjoint pieces
            // of dst, each computed by one thread.
            unsafe {
                let sm = (s1.data as *const u8).add(i2 * s1.nb[2] + i3 * s1.nb[3]) as *const f32;
                let dm = (d.data as *mut u8).add(i2 * d.nb[2] + i3 * d.nb[3]) as *mut f32;
                match w {
                    OutProdWeights::Ternary(tw) if q16 => {
                        out_prod_q16_item(isa, tw, sm, dm, lay, plan, item % per, scratch)
                    }
                    _ => out_prod_item(isa, w, sm, dm, lay, fused, plan, item % per, buf),
                }
            }
        }
    });
    RUNS.fetch_add(1, Ordering::Relaxed);
    if q16 {
        Q16_RUNS.fetch_add(1, Ordering::Relaxed);
    }
    true
}
