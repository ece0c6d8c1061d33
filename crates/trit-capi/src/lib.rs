//! libtrit: the pinned llama.cpp's C API (`llama.h`, with the ggml/gguf symbols it exposes)
//! as `libtrit.so` / `libtrit.a`, plus `trit.h` for what llama.h lacks.
//!
//! The llama.h functions are llama.cpp's own, linked from the static archives trit-sys
//! builds and exported as they are (see build.rs); trit's additions are `trit_*` below.
//! No panic crosses the FFI boundary: every `trit_*` body runs under `catch_unwind` (see
//! [`ffi`]), and errors come back as negative `TRIT_ERR_*` codes with a message in
//! `trit_last_error()`.
//!
//! `include/trit.h` is generated from this crate's source by cbindgen; `tests/header.rs`
//! regenerates it and fails when the committed header differs.

use std::ffi::{c_char, c_int};
use std::path::Path;

mod convert;
mod ffi;
mod train;

pub use convert::*;
pub use ffi::{TRIT_ERR_FAILED, TRIT_ERR_INTERNAL, TRIT_ERR_INVALID_ARGUMENT, TRIT_OK};
pub use train::*;

#[allow(dead_code)]
mod keep {
    include!(concat!(env!("OUT_DIR"), "/keep.rs"));
}

/// Number of llama.h functions libtrit exports.
pub fn n_exported_llama_functions() -> usize {
    keep::KEEP.0.len()
}

/// "trit VERSION", NUL-terminated, static.
#[no_mangle]
pub extern "C" fn trit_version() -> *const c_char {
    ffi::no_panic(c"trit".as_ptr(), || concat!("trit ", env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char)
}

/// The llama.cpp pin the library was built from, NUL-terminated, static.
#[no_mangle]
pub extern "C" fn trit_llama_cpp_pin() -> *const c_char {
    static PIN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ffi::no_panic(c"unknown".as_ptr(), || {
        PIN.get_or_init(|| {
            let mut v = trit_sys::LLAMA_CPP_PIN.as_bytes().to_vec();
            v.push(0);
            v
        })
        .as_ptr() as *const c_char
    })
}

fn write_out(text: &[u8], out: *mut c_char, out_size: usize) {
    if out.is_null() || out_size == 0 {
        return;
    }
    let n = text.len().min(out_size - 1);
    // SAFETY: the caller gave `out` as writable for out_size bytes; n < out_size.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), out as *mut u8, n);
        *out.add(n) = 0;
    }
}

fn generate(model: &str, prompt: &str, n_predict: c_int) -> anyhow::Result<Vec<u8>> {
    use trit_llama::{Batch, Context, ContextParams, Model, ModelParams, Sampler, SamplerParams};
    init();
    let model = Model::load(Path::new(model), &ModelParams::default())?;
    let tokens = model.tokenize(prompt, true, true)?;
    let n_ctx = (tokens.len() + n_predict.max(0) as usize + 8) as u32;
    let params = ContextParams { n_ctx, n_batch: n_ctx, n_ubatch: n_ctx, ..Default::default() };
    let mut ctx = Context::new(&model, &params)?;
    let mut sampler = Sampler::new(&SamplerParams { temp: 0.0, ..Default::default() }, model.n_vocab());
    let mut batch = Batch::new(tokens.len().max(1));
    for (i, &t) in tokens.iter().enumerate() {
        batch.push(t, i as i32, 0, i + 1 == tokens.len())?;
    }
    let mut out = Vec::new();
    let start = tokens.len() as i32;
    for pos in start..start + n_predict.max(0) {
        ctx.decode(&batch)?;
        let t = sampler.sample(&ctx, -1);
        out.extend_from_slice(&model.token_bytes(t, false));
        batch.clear();
        batch.push(t, pos, 0, true)?;
    }
    Ok(out)
}

/// Initialise llama.cpp's backends (what llama_backend_init() does) and register trit's own:
/// the Rust Vulkan backend when a Vulkan GPU is found (TRIT_VULKAN=0 turns it off,
/// TRIT_VULKAN_ALLOW_CPU=1 also takes a CPU Vulkan driver), so that llama.h's device list and
/// n_gpu_layers include it. Also routes the CPU backend's ternary products (TQ1_0/TQ2_0
/// MUL_MAT, the f16 output head at decode, training's OUT_PROD) to trit's kernels, as `trit`'s
/// binaries do (TRIT_TERNARY_KERNELS=ggml keeps ggml's), and llama.cpp's log through trit
/// (errors and warnings on stderr). Call it instead of llama_backend_init(), before the first
/// model load; idempotent; the trit_* calls that load a model run it themselves. Returns
/// TRIT_OK or a negative TRIT_ERR_* code.
#[no_mangle]
pub extern "C" fn trit_init() -> c_int {
    ffi::call("trit_init", || {
        init();
        Ok(())
    })
}

/// What [`trit_init`] does, once per process.
pub(crate) fn init() {
    static KERNELS: std::sync::Once = std::sync::Once::new();
    KERNELS.call_once(|| {
        use trit_kernels::ggml::{install, TernaryKernels};
        let which = match std::env::var("TRIT_TERNARY_KERNELS") {
            Ok(v) => v.parse().unwrap_or_else(|e| {
                tracing::warn!("TRIT_TERNARY_KERNELS: {e}; using trit's");
                TernaryKernels::Trit
            }),
            Err(_) => TernaryKernels::Trit,
        };
        let isa = install(which);
        tracing::debug!("ternary kernels: {} ({})", which.name(), isa.name());
    });
    trit_llama::init();
}

/// The message of this thread's last failed trit_* call ("" after a call that succeeded).
/// The string is valid until this thread's next trit_* call; never NULL.
#[no_mangle]
pub extern "C" fn trit_last_error() -> *const c_char {
    ffi::no_panic(c"".as_ptr(), ffi::last_error_ptr)
}

/// Greedy completion in one call: load `model_path`, generate `n_predict` tokens after
/// `prompt` (end-of-generation tokens included), write the NUL-terminated text into `out`.
/// Returns the text's length (which may exceed `out_size - 1`: the text is then cut), or a
/// negative TRIT_ERR_* code with the error message in `out` and in trit_last_error().
///
/// # Safety
/// `model_path` and `prompt` are NULL (an error) or NUL-terminated strings; `out` is NULL or
/// writable for `out_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn trit_generate(
    model_path: *const c_char,
    prompt: *const c_char,
    n_predict: c_int,
    out: *mut c_char,
    out_size: usize,
) -> c_int {
    let r = ffi::call_value(
        "trit_generate",
        |code| code,
        || {
            // SAFETY: NULL or NUL-terminated strings, by the contract above.
            let (m, p) = unsafe { (ffi::str_arg(model_path, "model_path")?, ffi::str_arg(prompt, "prompt")?) };
            let text = generate(m, p, n_predict)?;
            write_out(&text, out, out_size);
            Ok(text.len().min(c_int::MAX as usize) as c_int)
        },
    );
    if r < 0 {
        // SAFETY: trit_last_error's string is NUL-terminated and alive until the next call.
        let msg = unsafe { std::ffi::CStr::from_ptr(trit_last_error()) };
        write_out(msg.to_bytes(), out, out_size);
    }
    r
}
