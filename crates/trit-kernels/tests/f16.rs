//! The f16-weight mat-vec (`f16w`): every SIMD path equals the scalar path bit for bit on
//! random shapes (any `k`, strided rows, several columns); the scalar path equals a float64
//! reference within the bound its summation order gives; bad arguments are errors.

use half::f16;
use trit_kernels::f16w::{gemv_f16, F16Weights};
use trit_kernels::{Isa, KernelError};

mod common;

use common::Rng;

/// Extends the shared generator.
impl Rng {
    /// f16 bits over many binades (subnormals to ~2⁸), signed, some exact zeros.
    fn f16(&mut self) -> u16 {
        if self.below(16) == 0 {
            return 0;
        }
        let e = self.below(34) as i32 - 26;
        f16::from_f32(self.f32() * (e as f32).exp2()).to_bits()
    }
}

/// (rows, k, n, row stride): k anywhere from 1 to 700 (tails of every length), padded rows.
fn random_case(rng: &mut Rng) -> (usize, usize, usize, usize) {
    let k = if rng.below(2) == 0 { 64 * (1 + rng.below(40)) } else { 1 + rng.below(700) };
    (1 + rng.below(13), k, 1 + rng.below(5), k + [0, 0, 1, 7][rng.below(4)])
}

fn random_f16s(rng: &mut Rng, len: usize) -> Vec<u16> {
    (0..len).map(|_| rng.f16()).collect()
}

#[test]
fn f16_simd_paths_equal_scalar_exactly() {
    let mut rng = Rng(21);
    let isas = Isa::available();
    eprintln!("paths under test: {isas:?}");
    for _ in 0..150 {
        let (rows, k, n, stride) = random_case(&mut rng);
        let data = random_f16s(&mut rng, rows * stride);
        let act = random_f16s(&mut rng, n * k);
        let w = F16Weights::with_stride(&data, rows, k, stride).unwrap();
        let mut want = vec![0f32; rows * n];
        gemv_f16(Isa::Scalar, &w, &act, n, &mut want).unwrap();
        for &isa in &isas[1..] {
            let mut got = vec![f32::NAN; rows * n];
            gemv_f16(isa, &w, &act, n, &mut got).unwrap();
            let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{isa:?} rows={rows} k={k} n={n} stride={stride}: {want:?} vs {got:?}");
        }
    }
}

#[test]
fn f16_scalar_matches_f64_reference() {
    let mut rng = Rng(22);
    for _ in 0..80 {
        let (rows, k, n, stride) = random_case(&mut rng);
        let data = random_f16s(&mut rng, rows * stride);
        let act = random_f16s(&mut rng, n * k);
        let w = F16Weights::with_stride(&data, rows, k, stride).unwrap();
        let mut got = vec![0f32; rows * n];
        gemv_f16(Isa::Scalar, &w, &act, n, &mut got).unwrap();
        let v = |b: u16| f16::from_bits(b).to_f64();
        for c in 0..n {
            for r in 0..rows {
                let (mut exact, mut mag) = (0f64, 0f64);
                for i in 0..k {
                    let p = v(data[r * stride + i]) * v(act[c * k + i]);
                    exact += p;
                    mag += p.abs();
                }
                // Products are exact in f32; each result is at most k/64 + 6 + 63 rounded
                // additions deep (lanes, tree, tail).
                let tol = (k / 64 + 70) as f64 * f64::powi(2.0, -24) * mag;
                let g = got[c * rows + r] as f64;
                assert!((g - exact).abs() <= tol, "r={r} c={c} k={k}: {g} vs {exact} (tol {tol})");
            }
        }
    }
}

#[test]
fn f16_bad_arguments_are_rejected() {
    let data = vec![0u16; 100];
    assert!(matches!(F16Weights::new(&data, 11, 10), Err(KernelError::ShortBuffer { what: "weights", .. })));
    assert!(matches!(F16Weights::with_stride(&data, 2, 10, 9), Err(KernelError::Shape(_))));
    assert!(matches!(F16Weights::new(&data, 1, 0), Err(KernelError::Shape(_))));
    let w = F16Weights::new(&data, 10, 10).unwrap();
    let mut out = vec![0f32; 20];
    assert!(matches!(gemv_f16(Isa::Scalar, &w, &[0u16; 19], 2, &mut out), Err(KernelError::ShortBuffer { .. })));
    assert!(matches!(gemv_f16(Isa::Scalar, &w, &[0u16; 20], 2, &mut out[..19]), Err(KernelError::ShortBuffer { .. })));
    gemv_f16(Isa::Scalar, &w, &[0u16; 20], 2, &mut out).unwrap();
}
