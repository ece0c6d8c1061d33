use std::ffi::CStr;
use std::sync::Once;

static INIT: Once = Once::new();

/// Initialise llama.cpp's backends and route its log to `tracing`. Idempotent.
pub fn init() {
    INIT.call_once(|| {
        crate::log::install();
        // SAFETY: called once, before any other llama.cpp call that needs the backends.
        unsafe { trit_sys::llama_backend_init() };
        #[cfg(feature = "vulkan")]
        register_vulkan();
    });
}

/// Register trit's Vulkan backend with ggml, so `-ngl` can offload to it. `TRIT_VULKAN=0`
/// turns it off. A CPU implementation of Vulkan (lavapipe/llvmpipe) is skipped unless
/// `TRIT_VULKAN_ALLOW_CPU=1` (the tests use it): it would only slow the CPU backend down.
#[cfg(feature = "vulkan")]
fn register_vulkan() {
    if std::env::var("TRIT_VULKAN").is_ok_and(|v| v == "0") {
        crate::log::info("trit-vulkan: off (TRIT_VULKAN=0)");
        return;
    }
    let allow_cpu = std::env::var("TRIT_VULKAN_ALLOW_CPU").is_ok_and(|v| v == "1");
    match trit_vulkan::register_with(allow_cpu) {
        Ok(desc) => crate::log::info(&format!("trit-vulkan: registered {desc}")),
        Err(e) => crate::log::info(&format!("trit-vulkan: {e}; running on the CPU")),
    }
}

/// The GPU backend trit registered with ggml, if any (e.g. for `trit bench`'s backends column).
pub fn gpu_backend() -> Option<String> {
    init();
    #[cfg(feature = "vulkan")]
    if trit_vulkan::registered() {
        return trit_vulkan::info();
    }
    // Any other GPU device ggml has (e.g. llama.cpp's own Vulkan backend in a peer build).
    // SAFETY: ggml's device registry is static after init; names are NUL-terminated strings
    // owned by the devices.
    unsafe {
        for i in 0..trit_sys::ggml_backend_dev_count() {
            let dev = trit_sys::ggml_backend_dev_get(i);
            if trit_sys::ggml_backend_dev_type(dev) == trit_sys::GGML_BACKEND_DEVICE_TYPE_GPU {
                let name = CStr::from_ptr(trit_sys::ggml_backend_dev_name(dev)).to_string_lossy();
                let desc = CStr::from_ptr(trit_sys::ggml_backend_dev_description(dev)).to_string_lossy();
                return Some(format!("{name}: {desc}"));
            }
        }
    }
    None
}

/// llama.cpp's description of the CPU features it was built for and found.
pub fn system_info() -> String {
    init();
    // SAFETY: returns a pointer to a static, NUL-terminated string owned by llama.cpp.
    unsafe { CStr::from_ptr(trit_sys::llama_print_system_info()) }.to_string_lossy().into_owned()
}
