//! With the `ggml` feature: compiles `shim/cpu_repack.cpp` (the TQ1_0 repack buffer type, one
//! of ggml-cpu's extra buffer types) against the patched llama.cpp copy trit-sys built.

fn main() {
    println!("cargo:rerun-if-changed=shim/cpu_repack.cpp");
    #[cfg(feature = "ggml")]
    compile_shim();
}

#[cfg(feature = "ggml")]
fn compile_shim() {
    let src = std::path::PathBuf::from(
        std::env::var("DEP_TRIT_LLAMA_SRC").expect("DEP_TRIT_LLAMA_SRC (trit-sys's `cargo:src` metadata) is not set"),
    );
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("shim/cpu_repack.cpp")
        .include(src.join("ggml/include"))
        .include(src.join("ggml/src"))
        .include(src.join("ggml/src/ggml-cpu"))
        .warnings(true)
        // ggml-impl.h's static helpers this file does not use
        .flag_if_supported("-Wno-unused-function")
        .compile("trit_cpu_repack");
}
