//! trit.h training on the GPU: with trit_init() and n_gpu_layers = 99 the trainer's step runs
//! on trit's Vulkan backend (lavapipe in CI), its first losses match the CPU trainer's, and it
//! learns. Its own test binary: backend registration is once per process. TRIT_VULKAN_OPTIONAL=1 skips, loudly, where there is no Vulkan driver.

#![cfg(feature = "vulkan")]

use std::path::Path;
use std::ptr::null_mut;

use trit::*;

mod common;

use common::{c, last_error};

/// Five steps on `model` with `n_gpu_layers`; the losses.
fn train(model: &Path, data: &Path, n_gpu_layers: i32) -> Vec<f64> {
    let p = trit_train_params {
        n_ctx: 256,
        n_threads: 2,
        learning_rate: 2e-3,
        weight_decay: 0.0,
        shuffle: false,
        n_gpu_layers,
        ..trit_train_default_params()
    };
    let mut t = null_mut();
    // SAFETY: valid strings, params and out pointer; the handle is freed below.
    unsafe {
        assert_eq!(trit_train_start(c(model).as_ptr(), c(data).as_ptr(), &p, &mut t), TRIT_OK, "{}", last_error());
        let losses = (0..5)
            .map(|_| {
                let mut loss = f64::NAN;
                assert_eq!(trit_train_step(t, &mut loss), TRIT_OK, "{}", last_error());
                loss
            })
            .collect();
        trit_train_free(t);
        losses
    }
}

#[test]
fn training_on_vulkan_matches_the_cpu_and_learns() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf");
    let src = c(&common::root().join("tests/fixtures/bitnet-2b4t-bf16"));
    // SAFETY: valid strings.
    let rc = unsafe { trit_convert(src.as_ptr(), c(&model).as_ptr(), TRIT_WEIGHT_F16, TRIT_EMBED_F16) };
    assert_eq!(rc, TRIT_OK, "{}", last_error());
    let data = dir.path().join("train.txt");
    std::fs::write(&data, "The quick brown fox jumps over the lazy dog. A stitch in time saves nine.\n".repeat(20))
        .unwrap();

    // This test binary holds this one test, so nothing else reads the environment meanwhile.
    // The backend registers at the first backend init, whichever call makes it.
    std::env::set_var("TRIT_VULKAN_ALLOW_CPU", "1");
    std::env::remove_var("TRIT_VULKAN");
    assert_eq!(trit_init(), TRIT_OK, "{}", last_error());
    if !trit_vulkan::registered() {
        if std::env::var("TRIT_VULKAN_OPTIONAL").is_ok_and(|v| v == "1") {
            eprintln!("\n!!!!!!!! SKIPPING: no Vulkan device (TRIT_VULKAN_OPTIONAL=1) !!!!!!!!\n");
            return;
        }
        panic!("no Vulkan device: install mesa-vulkan-drivers or set TRIT_VULKAN_OPTIONAL=1");
    }
    let cpu = train(&model, &data, 0);
    let dispatches = trit_vulkan::dispatch_count();
    let gpu = train(&model, &data, 99);
    // (n_gpu_layers 0 may still give the scheduler a small Vulkan compute buffer, as llama.cpp does.)
    let (_, peak) = trit_vulkan::allocated_bytes();
    eprintln!("cpu losses {cpu:?}\nvulkan losses {gpu:?}\npeak device buffers {peak} bytes");
    assert!(peak > 16 << 20, "the model's weights were not put on the Vulkan device ({peak} bytes)");
    assert!(trit_vulkan::dispatch_count() > dispatches, "no Vulkan dispatch was recorded");
    // F16 projections: the two backends differ by float rounding only.
    for (i, (a, b)) in cpu.iter().zip(&gpu).take(2).enumerate() {
        assert!((a - b).abs() <= 0.02 * a.abs(), "step {i}: CPU {a} vs Vulkan {b}");
    }
    assert!(gpu.iter().all(|l| l.is_finite()));
    assert!(gpu[4] < 0.8 * gpu[0], "Vulkan training did not learn: {gpu:?}");
}
