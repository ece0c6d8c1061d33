//! Shared by the trit.h tests that call the library from Rust.
#![allow(dead_code)] // each test binary uses its own subset

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// trit_last_error() as a Rust string.
pub fn last_error() -> String {
    // SAFETY: trit_last_error never returns NULL; the string lives until the next trit_* call.
    unsafe { CStr::from_ptr(trit::trit_last_error()) }.to_string_lossy().into_owned()
}

/// A path as the NUL-terminated string trit.h takes.
pub fn c(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
