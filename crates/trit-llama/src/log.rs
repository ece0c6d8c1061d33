//! llama.cpp's log, routed to `tracing`, with the last error kept for error messages.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static LAST_ERROR: Mutex<String> = Mutex::new(String::new());
/// A line llama.cpp is still writing, and the level of its first piece.
static PARTIAL: Mutex<(String, trit_sys::ggml_log_level)> = Mutex::new((String::new(), 0));
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Show llama.cpp's info/debug lines (as `-v` does); errors and warnings always show.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// An informational line of trit's own, shown like llama.cpp's (on stderr with `-v`).
pub(crate) fn info(line: &str) {
    if VERBOSE.load(Ordering::Relaxed) {
        eprintln!("{line}");
    } else {
        tracing::info!("{line}");
    }
}

/// Take the last error line llama.cpp logged (empty if none), clearing it.
pub fn take_last_error() -> String {
    std::mem::take(&mut *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()))
}

pub(crate) fn last_error_or(fallback: &str) -> String {
    let e = take_last_error();
    if e.is_empty() {
        fallback.to_string()
    } else {
        e
    }
}

pub(crate) fn install() {
    // SAFETY: `callback` is a plain function valid for the whole program; null user data.
    unsafe { trit_sys::llama_log_set(Some(callback), std::ptr::null_mut()) };
}

unsafe extern "C" fn callback(level: trit_sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for this call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    // Never unwind into C: everything below is infallible or its failure is ignored.
    let _ = std::panic::catch_unwind(|| handle(level, &text));
}

fn handle(level: trit_sys::ggml_log_level, text: &str) {
    let mut partial = PARTIAL.lock().unwrap_or_else(|e| e.into_inner());
    if partial.0.is_empty() || level != trit_sys::GGML_LOG_LEVEL_CONT {
        if !partial.0.is_empty() {
            partial.0.push('\n');
        }
        partial.1 = level;
    }
    partial.0.push_str(text);
    if !partial.0.ends_with('\n') {
        return;
    }
    let level = partial.1;
    let line = std::mem::take(&mut partial.0);
    drop(partial);
    let line = line.trim_end();
    if line.is_empty() {
        return;
    }
    match level {
        trit_sys::GGML_LOG_LEVEL_ERROR => {
            *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = line.to_string();
            tracing::error!(target: "llama.cpp", "{line}");
        }
        trit_sys::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "llama.cpp", "{line}"),
        // -v shows llama.cpp's own log as llama.cpp prints it, whatever TRIT_LOG says.
        _ if VERBOSE.load(Ordering::Relaxed) => eprintln!("{line}"),
        _ => tracing::debug!(target: "llama.cpp", "{line}"),
    }
}
