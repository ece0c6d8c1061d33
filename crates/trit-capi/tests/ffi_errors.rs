//! trit.h's error contract from the caller's side, without a C compiler: NULL and invalid
//! arguments come back as negative codes with a message; nothing crashes.

use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::ptr::{null, null_mut};

use trit::*;

mod common;

use common::last_error;

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn fixture() -> CString {
    c(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bitnet-2b4t-bf16").to_str().unwrap())
}

/// trit_train_start with these params on paths that do not matter (params are checked first).
fn start_with(p: &trit_train_params) -> (i32, *mut trit_trainer) {
    let mut t = null_mut();
    let (m, d) = (c("/nonexistent/model.gguf"), c("/nonexistent/data.txt"));
    // SAFETY: valid strings, params and out pointer.
    let rc = unsafe { trit_train_start(m.as_ptr(), d.as_ptr(), p, &mut t) };
    (rc, t)
}

#[test]
fn null_arguments_are_invalid_argument_errors() {
    let s = c("x");
    let mut t = null_mut();
    // SAFETY: each call passes NULL where the contract allows it to (an error), else valid pointers.
    unsafe {
        assert_eq!(trit_train_start(null(), s.as_ptr(), null(), &mut t), TRIT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("model_path must not be NULL"), "{}", last_error());
        assert_eq!(trit_train_start(s.as_ptr(), null(), null(), &mut t), TRIT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("data_path"));
        assert_eq!(trit_train_start(s.as_ptr(), s.as_ptr(), null(), null_mut()), TRIT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("out must not be NULL"));
        assert!(t.is_null());
        let mut loss = 0.0;
        assert_eq!(trit_train_step(null_mut(), &mut loss), TRIT_ERR_INVALID_ARGUMENT);
        assert_eq!(trit_train_save(null_mut(), s.as_ptr()), TRIT_ERR_INVALID_ARGUMENT);
        assert_eq!(trit_train_n_windows(null()), TRIT_ERR_INVALID_ARGUMENT as i64);
        assert_eq!(trit_train_n_steps(null()), TRIT_ERR_INVALID_ARGUMENT as i64);
        trit_train_free(null_mut());
        assert_eq!(trit_convert(null(), s.as_ptr(), TRIT_WEIGHT_TQ2_0, TRIT_EMBED_F16), TRIT_ERR_INVALID_ARGUMENT);
        assert_eq!(trit_convert(s.as_ptr(), null(), TRIT_WEIGHT_TQ2_0, TRIT_EMBED_F16), TRIT_ERR_INVALID_ARGUMENT);
        let mut out = [0 as c_char; 64];
        assert_eq!(trit_generate(null(), s.as_ptr(), 1, out.as_mut_ptr(), out.len()), TRIT_ERR_INVALID_ARGUMENT);
        assert!(CStr::from_ptr(out.as_ptr()).to_string_lossy().contains("NULL"));
    }
}

#[test]
fn invalid_training_params_are_rejected_before_loading_anything() {
    let d = trit_train_default_params();
    assert_eq!((d.lora_rank, d.lora_alpha, d.n_ctx, d.seed), (8, 16.0, 512, 42));
    assert!(d.lora_targets.is_null() && d.shuffle && !d.assistant_only);
    let bad_targets = c("attn_q,nonsense");
    let cases: Vec<(trit_train_params, &str)> = vec![
        (trit_train_params { lora_rank: 0, ..d }, "lora_rank"),
        (trit_train_params { lora_alpha: f32::NAN, ..d }, "lora_alpha"),
        (trit_train_params { learning_rate: -1.0, ..d }, "learning_rate"),
        (trit_train_params { weight_decay: 2.0, ..d }, "weight_decay"),
        (trit_train_params { n_ctx: 300, ..d }, "multiple of 256"),
        (trit_train_params { n_ctx: 512, n_batch: 384, ..d }, "divisible"),
        (trit_train_params { lora_targets: bad_targets.as_ptr(), ..d }, "nonsense"),
    ];
    for (p, what) in cases {
        let (rc, t) = start_with(&p);
        assert_eq!(rc, TRIT_ERR_INVALID_ARGUMENT, "{what}: {}", last_error());
        assert!(last_error().contains(what), "{what}: {}", last_error());
        assert!(t.is_null());
    }
    // Valid params: the failure is now the missing model, an operation error.
    let (rc, t) = start_with(&d);
    assert_eq!(rc, TRIT_ERR_FAILED);
    assert!(last_error().contains("/nonexistent/model.gguf"), "{}", last_error());
    assert!(t.is_null());
}

#[test]
fn non_utf8_strings_are_rejected() {
    let bad = CString::new(vec![0xffu8, 0xfe]).unwrap();
    let out = c("/tmp/x.gguf");
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe { trit_convert(bad.as_ptr(), out.as_ptr(), TRIT_WEIGHT_TQ2_0, TRIT_EMBED_F16) };
    assert_eq!(rc, TRIT_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("hf_dir is not valid UTF-8"));
}

#[test]
fn convert_rejects_unknown_types_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let out = c(dir.path().join("m.gguf").to_str().unwrap());
    let src = fixture();
    // SAFETY: valid strings.
    unsafe {
        assert_eq!(trit_convert(src.as_ptr(), out.as_ptr(), 3, TRIT_EMBED_F16), TRIT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("weight_type 3"));
        assert_eq!(trit_convert(src.as_ptr(), out.as_ptr(), TRIT_WEIGHT_TQ1_0, -1), TRIT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("embed_type -1"));
        let missing = c(dir.path().join("no-such-checkpoint").to_str().unwrap());
        assert_eq!(trit_convert(missing.as_ptr(), out.as_ptr(), TRIT_WEIGHT_TQ2_0, TRIT_EMBED_F16), TRIT_ERR_FAILED);
        assert!(last_error().contains("no-such-checkpoint"), "{}", last_error());
        assert!(!dir.path().join("m.gguf").exists(), "a failed conversion leaves no file");
    }
}

#[test]
fn convert_writes_each_weight_type_and_clears_the_error() {
    use trit_gguf::{GgmlType, GgufFile};
    let dir = tempfile::tempdir().unwrap();
    let src = fixture();
    let types =
        [(TRIT_WEIGHT_TQ2_0, GgmlType::TQ2_0), (TRIT_WEIGHT_TQ1_0, GgmlType::TQ1_0), (TRIT_WEIGHT_F16, GgmlType::F16)];
    for (i, (ty, want)) in types.into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.gguf"));
        let out = c(path.to_str().unwrap());
        let embed = if i == 0 { TRIT_EMBED_Q8_0 } else { TRIT_EMBED_F16 };
        // SAFETY: valid strings.
        let rc = unsafe { trit_convert(src.as_ptr(), out.as_ptr(), ty, embed) };
        assert_eq!(rc, TRIT_OK, "{}", last_error());
        assert_eq!(last_error(), "");
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.tensor_info("blk.0.attn_q.weight").unwrap().ty, want);
        let embd = if i == 0 { GgmlType::Q8_0 } else { GgmlType::F16 };
        assert_eq!(f.tensor_info("token_embd.weight").unwrap().ty, embd);
    }
}
