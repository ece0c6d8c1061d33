//! Builds the pinned llama.cpp/ggml (static, CPU backend, Release) from the source that
//! the `llama-cpp-sys-2` crate ships, with trit's patches applied to a build-time copy,
//! and generates bindings for the headers trit uses. See vendor/README.md.

use std::path::{Path, PathBuf};
use std::process::Command;

const PIN_CRATE: &str = "llama-cpp-sys-2";
const PIN_VERSION: &str = "0.1.161";

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.join("../..").canonicalize().expect("workspace root");
    let patches_dir = workspace.join("vendor/patches");
    let out = PathBuf::from(env("OUT_DIR"));

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed={}", patches_dir.display());
    println!("cargo:rerun-if-env-changed=TRIT_NATIVE");
    println!("cargo:rerun-if-env-changed=TRIT_PEER_LLAMA_VULKAN");
    println!("cargo:rustc-env=TRIT_LLAMA_CPP_PIN={PIN_CRATE} {PIN_VERSION}");

    let pristine = locate_pinned_source(&workspace);
    let src = out.join("llama.cpp");
    // Peer benchmarks only: llama.cpp's own Vulkan backend, built from the same pinned source
    // (scripts/bench-vulkan-device.sh). Never in shipped builds: its device would shadow
    // trit's Rust backend through llama.cpp's device de-duplication. vendor/peer-patches
    // adapts it to older system Vulkan headers.
    let peer_vulkan = std::env::var("TRIT_PEER_LLAMA_VULKAN").is_ok_and(|v| v == "1");
    let mut patches = list_patches(&patches_dir);
    if peer_vulkan {
        patches.extend(list_patches(&workspace.join("vendor/peer-patches")));
    }
    prepare_patched_copy(&pristine, &src, &patches);

    let native = std::env::var("TRIT_NATIVE").map(|v| v != "0" && v != "OFF").unwrap_or(true);
    let mut cfg = cmake::Config::new(&src);
    cfg.profile("Release")
        .define("BUILD_SHARED_LIBS", "OFF")
        .define("LLAMA_BUILD_COMMON", "OFF")
        .define("LLAMA_BUILD_TESTS", "OFF")
        .define("LLAMA_BUILD_TOOLS", "OFF")
        .define("LLAMA_BUILD_EXAMPLES", "OFF")
        .define("LLAMA_BUILD_SERVER", "OFF")
        .define("LLAMA_BUILD_APP", "OFF")
        .define("LLAMA_OPENSSL", "OFF")
        .define("LLAMA_CURL", "OFF")
        .define("GGML_NATIVE", if native { "ON" } else { "OFF" })
        .define("GGML_OPENMP", "ON")
        .define("GGML_VULKAN", if peer_vulkan { "ON" } else { "OFF" })
        .define("GGML_METAL", "OFF")
        .define("GGML_CUDA", "OFF")
        .define("GGML_BLAS", "OFF")
        .define("CMAKE_POSITION_INDEPENDENT_CODE", "ON")
        .build_target("llama");
    let dst = cfg.build();
    let build_dir = dst.join("build");

    let mut libs = vec!["llama", "ggml", "ggml-cpu", "ggml-base"];
    if peer_vulkan {
        libs.insert(2, "ggml-vulkan");
    }
    for lib in &libs {
        let found = find_static_lib(&build_dir, lib)
            .unwrap_or_else(|| panic!("built lib{lib}.a not found under {}", build_dir.display()));
        println!("cargo:rustc-link-search=native={}", found.parent().unwrap().display());
    }
    // Order matters for static linking: dependents first.
    for lib in &libs {
        println!("cargo:rustc-link-lib=static={lib}");
    }
    if peer_vulkan {
        println!("cargo:rustc-link-lib=dylib=vulkan");
    }
    for lib in ["stdc++", "gomp", "m", "pthread"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    // Let dependents (C glue, tests) find the headers and the patched source.
    println!("cargo:src={}", src.display());
    println!("cargo:include={}", src.join("include").display());

    generate_bindings(&src, &out);
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

/// Ask cargo where the pinned crate's source lives (it downloads it if needed).
fn locate_pinned_source(workspace: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .output()
        .expect("running cargo metadata");
    if !output.status.success() {
        panic!(
            "cargo metadata failed while locating {PIN_CRATE} {PIN_VERSION}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata json");
    let pkg = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == PIN_CRATE && p["version"] == PIN_VERSION)
        .unwrap_or_else(|| panic!("{PIN_CRATE} {PIN_VERSION} is not in the dependency graph"));
    let manifest = PathBuf::from(pkg["manifest_path"].as_str().expect("manifest_path"));
    let dir = manifest.parent().unwrap().join("llama.cpp");
    assert!(dir.join("CMakeLists.txt").exists(), "{} has no llama.cpp source", dir.display());
    dir
}

fn list_patches(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "patch"));
    v.sort();
    for p in &v {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    v
}

/// Copy the pristine source to `dst` and apply the patches, unless a copy with the same
/// patch set is already there (so touching Rust code never rebuilds llama.cpp).
fn prepare_patched_copy(pristine: &Path, dst: &Path, patches: &[PathBuf]) {
    let mut stamp = format!("{}\n", pristine.display());
    for p in patches {
        stamp.push_str(&std::fs::read_to_string(p).expect("read patch"));
    }
    let stamp_file = dst.with_extension("stamp");
    if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        return;
    }
    if dst.exists() {
        std::fs::remove_dir_all(dst).expect("remove old copy");
    }
    copy_tree(pristine, dst);
    for p in patches {
        let status = Command::new("patch")
            .args(["-p1", "--forward", "--batch", "--quiet", "-i"])
            .arg(p)
            .current_dir(dst)
            .status()
            .expect("running patch (apt install patch)");
        assert!(status.success(), "patch {} does not apply to the pinned llama.cpp", p.display());
    }
    std::fs::write(&stamp_file, stamp).expect("write stamp");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        let ty = entry.file_type().expect("file type");
        if ty.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy");
            // Registry sources are read-only; the copy must be patchable.
            let mut perm = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&target, perm).unwrap();
        }
    }
}

fn find_static_lib(dir: &Path, name: &str) -> Option<PathBuf> {
    let want = format!("lib{name}.a");
    let rd = std::fs::read_dir(dir).ok()?;
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_static_lib(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|f| f == want.as_str()) {
            return Some(p);
        }
    }
    None
}

fn generate_bindings(src: &Path, out: &Path) {
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg(format!("-I{}", src.join("include").display()))
        .clang_arg(format!("-I{}", src.join("ggml/include").display()))
        .clang_arg(format!("-I{}", src.join("ggml/src").display()))
        .allowlist_function("(llama|ggml|gguf)_.*")
        .allowlist_type("(llama|ggml|gguf)_.*")
        .allowlist_var("(LLAMA|GGML|GGUF)_.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen on wrapper.h");
    bindings.write_to_file(out.join("bindings.rs")).expect("write bindings");
}
