//! The vector Q8_K quantizers (AVX2, AVX-512) write the same bytes as the scalar reference
//! `formats::quantize_q8k`, which `ggml_parity` checks against ggml's own; and they decline,
//! rather than guess, the blocks whose values they do not take.

use trit_kernels::formats::{quantize_q8k, Q8_K_BYTES};
use trit_kernels::q8k::{has_vector_path, quantize_q8k_into};
use trit_kernels::{Isa, QK};

mod common;

use common::Rng;

fn vector_isas() -> Vec<Isa> {
    Isa::available().into_iter().filter(|&i| has_vector_path(i)).collect()
}

/// A block of 256 values of one of several kinds: plain, wide magnitudes, exact ties of the
/// largest magnitude with both signs, values that round at exactly .5 after scaling, tiny
/// normals, zeros with a few non-zero values, all zeros.
fn block(rng: &mut Rng, kind: usize) -> Vec<f32> {
    match kind {
        0 => (0..QK).map(|_| rng.f32() * 3.0).collect(),
        1 => (0..QK).map(|_| rng.f32() * 2f32.powi(rng.below(40) as i32 - 20)).collect(),
        2 => {
            // the largest magnitude several times, with both signs: the first one decides
            let m = rng.f32().abs() + 0.5;
            let mut b: Vec<f32> = (0..QK).map(|_| rng.f32() * m * 0.99).collect();
            for _ in 0..1 + rng.below(4) {
                b[rng.below(QK)] = if rng.below(2) == 0 { m } else { -m };
            }
            b
        }
        3 => {
            // max = ±127 so iscale = ∓1: every k + 0.5 is a tie for round-to-nearest-even
            let s = if rng.below(2) == 0 { 127.0 } else { -127.0 };
            let mut b: Vec<f32> =
                (0..QK).map(|_| (rng.below(253) as f32 - 126.0) + 0.5 * rng.below(2) as f32).collect();
            b[rng.below(QK)] = s;
            b
        }
        4 => (0..QK).map(|_| rng.f32() * 1e-30).collect(),
        5 => {
            let mut b = vec![0f32; QK];
            for _ in 0..rng.below(3) + 1 {
                b[rng.below(QK)] = rng.f32() * 10.0;
            }
            b
        }
        6 => {
            let mut b = vec![0f32; QK];
            if rng.below(2) == 0 {
                b[rng.below(QK)] = -0.0;
            }
            b
        }
        _ => unreachable!(),
    }
}

#[test]
fn vector_paths_equal_the_scalar_path() {
    let isas = vector_isas();
    eprintln!("vector Q8_K paths here: {isas:?}");
    let mut rng = Rng(0x0a8c);
    for case in 0..300 {
        let nb = 1 + rng.below(27);
        let mut x = Vec::with_capacity(nb * QK);
        for _ in 0..nb {
            let kind = rng.below(7);
            x.extend(block(&mut rng, kind));
        }
        let want = quantize_q8k(&x);
        for &isa in &isas {
            let mut got = vec![0xa5u8; nb * Q8_K_BYTES];
            assert!(quantize_q8k_into(isa, &x, &mut got), "case {case} {isa:?}: declined finite values");
            if got != want {
                let b = (0..nb).find(|&b| got[b * Q8_K_BYTES..][..Q8_K_BYTES] != want[b * Q8_K_BYTES..][..Q8_K_BYTES]);
                panic!("case {case} {isa:?}: block {b:?} differs from the scalar path");
            }
        }
    }
}

#[test]
fn what_the_vector_paths_decline() {
    let mut rng = Rng(7);
    for isa in vector_isas() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x: Vec<f32> = (0..2 * QK).map(|_| rng.f32()).collect();
            x[QK + rng.below(QK)] = bad;
            let mut out = vec![0u8; 2 * Q8_K_BYTES];
            assert!(!quantize_q8k_into(isa, &x, &mut out), "{isa:?}: took a block with {bad}");
        }
        // a largest magnitude so small that −127 / max overflows
        let mut x = vec![0f32; QK];
        x[3] = f32::from_bits(1); // the smallest subnormal
        assert!(!quantize_q8k_into(isa, &x, &mut vec![0u8; Q8_K_BYTES]), "{isa:?}: took an overflowing scale");
        // wrong lengths
        assert!(!quantize_q8k_into(isa, &x[..100], &mut vec![0u8; Q8_K_BYTES]));
        assert!(!quantize_q8k_into(isa, &x, &mut vec![0u8; Q8_K_BYTES - 1]));
    }
    assert!(!quantize_q8k_into(Isa::Scalar, &[1.0; QK], &mut vec![0u8; Q8_K_BYTES]), "no vector path: the caller's");
}
