use std::ffi::CStr;
use std::sync::Once;

static INIT: Once = Once::new();

/// Initialise llama.cpp's backends and route its log to `tracing`. Idempotent.
pub fn init() {
    INIT.call_once(|| {
        crate::log::install();
        // SAFETY: called once, before any other llama.cpp call that needs the backends.
        unsafe { trit_sys::llama_backend_init() };
    });
}

/// llama.cpp's description of the CPU features it was built for and found.
pub fn system_info() -> String {
    init();
    // SAFETY: returns a pointer to a static, NUL-terminated string owned by llama.cpp.
    unsafe { CStr::from_ptr(trit_sys::llama_print_system_info()) }.to_string_lossy().into_owned()
}
