//! trit_init() registers trit's Rust Vulkan backend with ggml, so that a C program using
//! llama.h sees it among the devices. Needs a Vulkan driver (lavapipe in CI);
//! TRIT_VULKAN_OPTIONAL=1 skips, loudly, where there is none.

#![cfg(feature = "vulkan")]

use std::ffi::CStr;

#[test]
fn trit_init_registers_the_vulkan_backend() {
    // This test binary holds this one test, so nothing else reads the environment meanwhile.
    std::env::set_var("TRIT_VULKAN_ALLOW_CPU", "1");
    std::env::remove_var("TRIT_VULKAN");
    assert_eq!(trit::trit_init(), trit::TRIT_OK);
    assert_eq!(trit::trit_init(), trit::TRIT_OK, "idempotent");
    // SAFETY: a NUL-terminated name; the lookup only reads ggml's registry.
    let reg = unsafe { trit_sys::ggml_backend_reg_by_name(c"TritVulkan".as_ptr()) };
    if reg.is_null() {
        if std::env::var("TRIT_VULKAN_OPTIONAL").is_ok_and(|v| v == "1") {
            eprintln!(
                "\n!!!!!!!! SKIPPING: no Vulkan device, TritVulkan not registered (TRIT_VULKAN_OPTIONAL=1) !!!!!!!!\n"
            );
            return;
        }
        panic!("trit_init did not register TritVulkan: install a Vulkan driver (mesa-vulkan-drivers) or set TRIT_VULKAN_OPTIONAL=1");
    }
    // SAFETY: reg is a registered backend; ggml owns it for the program's life.
    let n = unsafe { trit_sys::ggml_backend_reg_dev_count(reg) };
    assert!(n >= 1, "TritVulkan has no device");
    let mut names = Vec::new();
    // SAFETY: a plain getter over ggml's device list.
    let n_dev = unsafe { trit_sys::ggml_backend_dev_count() };
    for i in 0..n_dev {
        // SAFETY: i < n_dev, so the device exists; its name is a NUL-terminated static string.
        let name = unsafe { CStr::from_ptr(trit_sys::ggml_backend_dev_name(trit_sys::ggml_backend_dev_get(i))) };
        names.push(name.to_string_lossy().into_owned());
    }
    eprintln!("devices: {names:?}");
    assert!(names.len() >= 2, "the CPU and trit's Vulkan device: {names:?}");
}
