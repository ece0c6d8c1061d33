//! include/trit.h against the Rust side: cbindgen regenerates it from src/ and it must equal
//! the committed file; every trit_* symbol libtrit.so exports must be declared in it (and
//! nothing else); it must compile as C and C++.
//!
//! After changing an extern "C" item, update the header with
//!   TRIT_BLESS_HEADER=1 cargo test --release -p trit-capi --test header

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("include/trit.h")
}

/// The header cbindgen writes for the crate whose lib.rs is `lib_rs`, with cbindgen.toml.
fn generate(lib_rs: &Path) -> String {
    let config = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings =
        cbindgen::Builder::new().with_config(config).with_src(lib_rs).generate().expect("cbindgen parses src/");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn committed_header_equals_cbindgen_output() {
    let generated = generate(&crate_dir().join("src/lib.rs"));
    if std::env::var("TRIT_BLESS_HEADER").is_ok_and(|v| v == "1") {
        std::fs::write(header_path(), &generated).unwrap();
        eprintln!("wrote {}", header_path().display());
        return;
    }
    let committed = std::fs::read_to_string(header_path()).unwrap();
    if committed != generated {
        let first = committed.lines().zip(generated.lines()).position(|(a, b)| a != b);
        let line = first.unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "include/trit.h is out of date with src/ (first difference at line {}: committed {:?}, generated {:?}).\n\
             Regenerate it: TRIT_BLESS_HEADER=1 cargo test --release -p trit-capi --test header",
            line + 1,
            committed.lines().nth(line),
            generated.lines().nth(line)
        );
    }
}

/// The check above is not vacuous: a changed Rust signature changes the generated header.
#[test]
fn a_changed_signature_changes_the_header() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(crate_dir().join("src")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let train = dir.path().join("train.rs");
    let text = std::fs::read_to_string(&train).unwrap();
    let old = "trit_train_step(trainer: *mut trit_trainer, loss: *mut f64)";
    assert!(text.contains(old), "train.rs no longer has `{old}`; update this test");
    std::fs::write(&train, text.replace(old, "trit_train_step(trainer: *mut trit_trainer, loss: *mut f32)")).unwrap();
    let changed = generate(&dir.path().join("lib.rs"));
    let committed = std::fs::read_to_string(header_path()).unwrap();
    assert!(committed.contains("double *loss"), "the committed header declares trit_train_step's loss as double");
    assert!(changed.contains("float *loss") && !changed.contains("double *loss"), "{changed}");
}

/// libtrit.so and libtrit.a as built for this test run: cargo writes them next to the test
/// binary (target/release/deps); `cargo build` copies them up to target/release, which can be
/// older than the tests, so that copy is only the fallback.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    if deps.join("libtrit.so").is_file() && deps.join("libtrit.a").is_file() {
        deps.to_path_buf()
    } else {
        deps.parent().unwrap().to_path_buf()
    }
}

#[test]
fn exported_trit_symbols_are_exactly_the_declared_functions() {
    let so = lib_dir().join("libtrit.so");
    assert!(so.is_file(), "{} (build with cargo build --release -p trit-capi)", so.display());
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(&so).output().expect("nm (binutils)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("trit_"))
        .map(|s| s.split('@').next().unwrap().to_string())
        .collect();
    let header = std::fs::read_to_string(header_path()).unwrap();
    let declared: BTreeSet<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with('*') && !l.trim_start().starts_with("/*"))
        .filter_map(|l| {
            let open = l.find('(')?;
            let name = l[..open].rsplit([' ', '*']).next()?;
            name.starts_with("trit_").then(|| name.to_string())
        })
        .collect();
    assert!(declared.contains("trit_train_start") && declared.contains("trit_convert"), "{declared:?}");
    assert_eq!(exported, declared, "trit_* symbols in libtrit.so vs functions declared in trit.h");
}

#[test]
fn header_compiles_as_c_and_cxx() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("use.c");
    std::fs::write(
        &src,
        "#include \"trit.h\"\nint main(void) { trit_train_params p = trit_train_default_params(); \
         return p.lora_rank == 8 ? TRIT_OK : TRIT_ERR_FAILED; }\n",
    )
    .unwrap();
    for (compiler, lang) in [("cc", "c"), ("c++", "c++")] {
        let out = Command::new(compiler)
            .args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-x", lang])
            .arg("-I")
            .arg(crate_dir().join("include"))
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("{compiler}: {e}"));
        assert!(out.status.success(), "{compiler} -x {lang}:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}
