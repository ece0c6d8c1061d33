//! Scratch reuse (src/scratch.rs): the rounded activations of ternary products whose uses
//! do not overlap share scratch memory, so a graph's scratch is about the largest few
//! regions live at once instead of the sum; results stay equal to the CPU's, and every
//! region written anew waits for the products that read its previous contents (a barrier
//! for the write-after-read hazard).
//!
//! Needs a Vulkan device (lavapipe in CI). TRIT_VULKAN_OPTIONAL=1 skips, loudly.
// SAFETY (whole file): the builders call ggml constructors on a live no_alloc context with
// shapes that satisfy each constructor's assertions.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use trit_sys as sys;

/// Ternary products round activations exactly as the CPU's Q8_K does; a rounding flipped by
/// an f32 summation-order difference upstream can still move a chain's output slightly.
const NMSE_CHAIN: f64 = 1e-4;
const NMSE_TQ: f64 = 1e-9;

const K: i64 = 512;
const COLS: i64 = 16;

fn setup() -> Option<(std::sync::MutexGuard<'static, ()>, Backends)> {
    let s = common::setup()?;
    trit_vulkan::set_mat_vec_kernels(true, true);
    trit_vulkan::set_mmq_big_tiles(false);
    trit_vulkan::set_reorder(false);
    Some(s)
}

/// Upper bound on one rounded activation's region: both forms (int8 + scales, f32), each
/// rounded up to 256 bytes or the storage alignment.
fn region_bound(nel: i64) -> u64 {
    let nel = nel as u64;
    (nel + nel / 64) + nel * 4 + 2 * 4096
}

/// Twenty layers of chained ternary products, each reading a different tensor: every other
/// layer through a norm and weight (fused, the norm writes the rounded activations), the
/// others through RELU. Without reuse the scratch holds all twenty roundings; with it, about
/// one. The output is bit-identical either way and close to the CPU's (a Q8_K rounding
/// flipped by an f32 summation-order difference moves a 20-layer chain slightly).
#[test]
fn chained_products_share_scratch() {
    let Some((_g, b)) = setup() else { return };
    const LAYERS: usize = 20;
    let build: Builder = &|ctx, ins| unsafe {
        let mut x = input(ctx, ins, F32, &[K, COLS], Fill::Uniform);
        for l in 0..LAYERS {
            let ty = if l % 3 == 1 { TQ1 } else { TQ2 };
            let w = input(ctx, ins, ty, &[K, K], Fill::Uniform);
            let h = sys::ggml_mul_mat(ctx, w, x);
            x = if l % 2 == 0 {
                let g = input(ctx, ins, F32, &[K], Fill::Uniform);
                sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, h, 1e-5), g)
            } else {
                sys::ggml_scale(ctx, sys::ggml_relu(ctx, h), 0.05)
            };
        }
        x
    };
    let mut bytes = Vec::new();
    let mut outs = Vec::new();
    for reuse in [false, true] {
        trit_vulkan::set_scratch_reuse(reuse);
        check(&b, &format!("{LAYERS} chained ternary products, reuse={reuse}"), build, NMSE_CHAIN);
        bytes.push(trit_vulkan::last_scratch_bytes());
        outs.push(run(b.vk, build, 11).0);
    }
    trit_vulkan::set_scratch_reuse(true);
    let same = outs[0].iter().zip(&outs[1]).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    assert_eq!(same, outs[0].len(), "outputs with and without reuse differ");
    let (without, with) = (bytes[0], bytes[1]);
    let nel = K * COLS;
    let q8 = (nel + nel / 64) as u64;
    println!("scratch: {without} bytes without reuse, {with} with; one region <= {}", region_bound(nel));
    assert!(without >= LAYERS as u64 * q8, "without reuse: {without} bytes for {LAYERS} regions of >= {q8}");
    assert!(with >= q8, "with reuse: {with} bytes, less than one region of {q8}");
    assert!(
        with <= 2 * region_bound(nel),
        "with reuse: {with} bytes, more than two regions of <= {}",
        region_bound(nel)
    );
}

/// Independent products of different inputs, recorded one after another (the sum nests to
/// the right, so ggml orders all products before the adds): with reuse each input's
/// rounding overwrites the region the previous product read, which is safe only with a
/// barrier between that product and the next quantization; nothing else orders them (the
/// inputs do not depend on the products). The results equal the CPU's, and reuse costs
/// exactly those barriers: one per product after the first. (lavapipe runs dispatches one
/// after another, so a missing barrier shows here in the count, not in the values.)
#[test]
fn reused_region_waits_for_its_readers() {
    let Some((_g, b)) = setup() else { return };
    const N: usize = 6;
    let build: Builder = &|ctx, ins| unsafe {
        let products: Vec<_> = (0..N)
            .map(|i| {
                let x = input(ctx, ins, F32, &[K, COLS], Fill::Uniform);
                let w = input(ctx, ins, if i % 2 == 0 { TQ2 } else { TQ1 }, &[K, 40], Fill::Uniform);
                sys::ggml_mul_mat(ctx, w, x)
            })
            .collect();
        products.into_iter().rev().reduce(|acc, p| sys::ggml_add(ctx, p, acc)).unwrap()
    };
    let mut barriers = Vec::new();
    let mut bytes = Vec::new();
    for reuse in [false, true] {
        trit_vulkan::set_scratch_reuse(reuse);
        let before = trit_vulkan::barrier_count();
        check(&b, &format!("{N} independent ternary products summed, reuse={reuse}"), build, NMSE_TQ);
        barriers.push(trit_vulkan::barrier_count() - before);
        bytes.push(trit_vulkan::last_scratch_bytes());
    }
    trit_vulkan::set_scratch_reuse(true);
    println!("barriers without / with reuse: {barriers:?}; scratch bytes: {bytes:?}");
    assert!(bytes[1] * 3 <= bytes[0], "reuse did not shrink the scratch: {bytes:?}");
    assert_eq!(barriers[1], barriers[0] + (N as u64 - 1), "one write-after-read barrier per reused region");
}

/// Q, K and V style siblings sharing one rounding, next to other roundings that are dead:
/// a shared region stays live until its last product, even with unrelated roundings
/// recorded in between.
#[test]
fn shared_rounding_outlives_interleaved_ones() {
    let Some((_g, b)) = setup() else { return };
    let build: Builder = &|ctx, ins| unsafe {
        let x = input(ctx, ins, F32, &[K, COLS], Fill::Uniform);
        let mut acc = None;
        for i in 0..4 {
            let w = input(ctx, ins, TQ2, &[K, 48], Fill::Uniform);
            let shared = sys::ggml_mul_mat(ctx, w, x);
            // A product of another input in between the products of x.
            let y = input(ctx, ins, F32, &[K, COLS], Fill::Uniform);
            let v = input(ctx, ins, if i % 2 == 0 { TQ1 } else { TQ2 }, &[K, 48], Fill::Uniform);
            let other = sys::ggml_mul_mat(ctx, v, y);
            let t = sys::ggml_add(ctx, shared, other);
            acc = Some(match acc {
                None => t,
                Some(a) => sys::ggml_add(ctx, a, t),
            });
        }
        acc.unwrap()
    };
    check(&b, "shared rounding with others in between", build, NMSE_TQ);
    // x's region and one shared by the y's.
    let bytes = trit_vulkan::last_scratch_bytes();
    assert!(bytes <= 2 * region_bound(K * COLS), "{bytes} bytes of scratch for two live regions");
}

/// A fused RMS_NORM x weight writes its output's rounding when it runs, before the products
/// that read it: the region is live from the norm on, so a rounding made in between (here
/// of a tensor computed from the norm's output) gets other memory.
#[test]
fn fused_norm_rounding_lives_from_the_norm() {
    let Some((_g, b)) = setup() else { return };
    let build: Builder = &|ctx, ins| unsafe {
        let x = input(ctx, ins, F32, &[K, COLS], Fill::Uniform);
        let g = input(ctx, ins, F32, &[K], Fill::Uniform);
        let n = sys::ggml_mul(ctx, sys::ggml_rms_norm(ctx, x, 1e-5), g);
        let y = input(ctx, ins, F32, &[K, COLS], Fill::Uniform);
        let v = input(ctx, ins, TQ1, &[K, 48], Fill::Uniform);
        let w = input(ctx, ins, TQ2, &[K, 48], Fill::Uniform);
        // ggml's order: norm, weight, y + n, v's product (rounds y + n), w's product of n.
        let between = sys::ggml_mul_mat(ctx, v, sys::ggml_add(ctx, y, n));
        sys::ggml_add(ctx, between, sys::ggml_mul_mat(ctx, w, n))
    };
    check(&b, "fused norm's rounding, another rounding before its product", build, NMSE_TQ);
}
