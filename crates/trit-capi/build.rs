//! libtrit must export llama.h's functions, which live in the static llama/ggml archives
//! that trit-sys links. Two things are needed:
//!
//! 1. every archive member that defines a llama.h function must be linked in: `keep.rs`
//!    (generated here from trit-sys's bindings) takes the address of each `llama_*`
//!    function in a `#[used]` static, so the linker pulls exactly those members (no
//!    whole-archive, so no duplicate definitions with the copy bundled in trit-sys's rlib);
//! 2. rustc's version script for a cdylib keeps only Rust `#[no_mangle]` items global; a
//!    second version script (`exports.map`) makes `llama_*`, `ggml_*` and `gguf_*` global
//!    as well. GNU ld and lld merge the two anonymous version nodes.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let src = PathBuf::from(std::env::var("DEP_TRIT_LLAMA_SRC").expect("trit-sys exports its source path"));
    let include = std::env::var("DEP_TRIT_LLAMA_INCLUDE").unwrap();
    let bindings = src.parent().unwrap().join("bindings.rs");
    println!("cargo:rerun-if-changed={}", bindings.display());
    println!("cargo:rerun-if-changed=build.rs");
    let text = std::fs::read_to_string(&bindings).expect("read trit-sys bindings.rs");
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub fn "))
        .filter_map(|l| l.split('(').next())
        .filter(|n| n.starts_with("llama_"))
        .collect();
    names.sort();
    names.dedup();
    let mut keep = format!("/// Addresses of the {} llama.h functions (see build.rs).\n", names.len());
    keep.push_str(&format!("pub struct Keep(pub [*const (); {}]);\n", names.len()));
    keep.push_str("// SAFETY: the addresses are never dereferenced; they only keep symbols linked.\n");
    keep.push_str("unsafe impl Sync for Keep {}\n");
    keep.push_str("#[used]\npub static KEEP: Keep = Keep([\n");
    for n in &names {
        keep.push_str(&format!("    trit_sys::{n} as *const (),\n"));
    }
    keep.push_str("]);\n");
    std::fs::write(out.join("keep.rs"), keep).unwrap();
    let map = out.join("exports.map");
    // trit_* Rust functions are already global through rustc's own script; a trit_* glob here
    // would also export the C++ shims' internal helpers (trit_lora_* in trit-finetune).
    std::fs::write(&map, "{\n  global:\n    llama_*;\n    ggml_*;\n    gguf_*;\n};\n").unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={}", map.display());
    // For the C example test: the headers of the pinned llama.cpp.
    println!("cargo:rustc-env=TRIT_LLAMA_INCLUDE={include}");
    println!("cargo:rustc-env=TRIT_GGML_INCLUDE={}", src.join("ggml/include").display());
}
