//! Compiles the small C++ shim that reaches llama.cpp's internal `llama_adapter_lora::ab_map`
//! (the adapter's A/B tensors), against the patched llama.cpp copy trit-sys built.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim/lora_shim.cpp");
    let src = PathBuf::from(
        std::env::var("DEP_TRIT_LLAMA_SRC").expect("DEP_TRIT_LLAMA_SRC (trit-sys's `cargo:src` metadata) is not set"),
    );
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("shim/lora_shim.cpp")
        .include(src.join("include"))
        .include(src.join("src"))
        .include(src.join("ggml/include"))
        .warnings(true)
        .compile("trit_lora_shim");
}
