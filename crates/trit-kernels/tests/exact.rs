//! Seeded random property tests: every SIMD path equals the scalar path exactly; the scalar
//! path equals a float64 reference within a stated tolerance; odd shapes, unaligned
//! buffers and bad arguments.

#![allow(clippy::needless_range_loop)]

use half::f16;
use trit_kernels::f32act::{gemv_f32, gemv_t_f32};
use trit_kernels::formats::{self, pack, quantize_q8k, TernaryType, Q8_K_BYTES};
use trit_kernels::{mul_mat_q8k, Isa, KernelError, Weights, QK};

mod common;

use common::Rng;

const TYPES: [TernaryType; 2] = [TernaryType::Tq2_0, TernaryType::Tq1_0];

fn random_weights(rng: &mut Rng, ty: TernaryType, rows: usize, k: usize) -> (Vec<i8>, Vec<f16>, Vec<u8>) {
    // Mix of densities, including all-zero and all-±1 rows.
    let mode = rng.below(4);
    let trits: Vec<i8> = (0..rows * k)
        .map(|_| match mode {
            0 => rng.below(3) as i8 - 1,
            1 => [-1, 1][rng.below(2)],
            2 => [0, 0, 0, 1, -1][rng.below(5)],
            _ => rng.below(3) as i8 - 1,
        })
        .collect();
    let scales: Vec<f16> = (0..rows * k / QK)
        .map(|_| if rng.below(20) == 0 { f16::ZERO } else { f16::from_f32(rng.f32().abs() * 0.1 + 1e-3) })
        .collect();
    let data = pack(ty, &trits, &scales);
    (trits, scales, data)
}

/// Q8_K rows: mostly from the quantizer, sometimes raw i8 (−128 included) with matching bsums.
fn random_acts(rng: &mut Rng, n: usize, k: usize) -> Vec<u8> {
    if rng.below(3) == 0 {
        let mut out = vec![0u8; n * k / QK * Q8_K_BYTES];
        for b in out.chunks_exact_mut(Q8_K_BYTES) {
            b[0..4].copy_from_slice(&(rng.f32() * 0.05).to_le_bytes());
            let q: Vec<i8> = (0..QK).map(|_| rng.next() as i8).collect();
            for (i, &v) in q.iter().enumerate() {
                b[4 + i] = v as u8;
            }
            for g in 0..16 {
                let s: i32 = q[g * 16..g * 16 + 16].iter().map(|&v| v as i32).sum();
                b[260 + 2 * g..262 + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
            }
        }
        out
    } else {
        let scale = [1e-3, 1.0, 30.0][rng.below(3)];
        let x: Vec<f32> = (0..n * k).map(|_| rng.f32() * scale).collect();
        quantize_q8k(&x)
    }
}

fn random_shape(rng: &mut Rng) -> (usize, usize, usize) {
    let k = QK * (1 + rng.below(12));
    let rows = 1 + rng.below(14);
    let n = 1 + rng.below(11);
    (rows, k, n)
}

#[test]
fn simd_paths_equal_scalar_exactly() {
    let mut rng = Rng(1);
    let isas = Isa::available();
    assert!(isas.contains(&Isa::Scalar));
    eprintln!("paths under test: {isas:?}");
    // The random shapes, then rows of more blocks than the tiles' group of 16 (a partial
    // group after full ones, and exactly one group), and more rows than the tiled driver's
    // row block (256 KiB of decoded codes: 28 rows at k = 33·256, 36 at 27·256), ending in a
    // partial tile.
    let long = [(5, 17 * QK, 6), (4, 33 * QK, 4), (3, 16 * QK, 9), (6, 27 * QK, 1), (70, 33 * QK, 5), (45, 27 * QK, 6)];
    for case in 0..120 + 2 * long.len() {
        let ty = TYPES[case % 2];
        let (rows, k, n) = if case < 120 { random_shape(&mut rng) } else { long[(case - 120) / 2] };
        let (_, _, data) = random_weights(&mut rng, ty, rows, k);
        let act = random_acts(&mut rng, n, k);
        let w = Weights::new(ty, &data, rows, k).unwrap();
        let mut want = vec![0f32; rows * n];
        mul_mat_q8k(Isa::Scalar, &w, &act, n, &mut want).unwrap();
        for &isa in &isas[1..] {
            // Both code extractions of the AVX-512 TQ2_0 mat-vec (GFNI where present, shifts),
            // and both block-scale conversions of the AVX2 mat-vecs (F16C where present, software).
            for (gfni, f16c) in [(true, true), (false, true), (true, false)] {
                trit_kernels::set_gfni_allowed(gfni);
                trit_kernels::set_f16c_allowed(f16c);
                let mut got = vec![f32::NAN; rows * n];
                mul_mat_q8k(isa, &w, &act, n, &mut got).unwrap();
                let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa:?} gfni={gfni} f16c={f16c} {ty:?} rows={rows} k={k} n={n}: {want:?} vs {got:?}");
            }
            trit_kernels::set_gfni_allowed(true);
            trit_kernels::set_f16c_allowed(true);
        }
    }
}

/// Runs that name the paths the CPU must offer (`TRIT_EXPECT_ISAS=scalar,neon,neondot`) and
/// the one `Isa::detect` must pick (`TRIT_EXPECT_DETECT`, which honours `TRIT_ISA`) check
/// them here, so an emulated run (`scripts/test-aarch64.sh`) cannot pass by silently testing
/// fewer paths than its CPU model has.
#[test]
fn expected_paths_are_detected() {
    let got: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
    eprintln!("available: {got:?}, detect: {}", Isa::detect().name());
    if let Ok(want) = std::env::var("TRIT_EXPECT_ISAS") {
        assert_eq!(got.join(","), want);
    }
    if let Ok(want) = std::env::var("TRIT_EXPECT_DETECT") {
        assert_eq!(Isa::detect().name(), want);
    }
}

#[test]
fn scalar_matches_f64_reference() {
    let mut rng = Rng(2);
    for case in 0..60 {
        let ty = TYPES[case % 2];
        let (rows, k, n) = random_shape(&mut rng);
        let (trits, scales, data) = random_weights(&mut rng, ty, rows, k);
        let act = random_acts(&mut rng, n, k);
        let w = Weights::new(ty, &data, rows, k).unwrap();
        let mut got = vec![0f32; rows * n];
        mul_mat_q8k(Isa::Scalar, &w, &act, n, &mut got).unwrap();
        let nb = k / QK;
        for c in 0..n {
            for r in 0..rows {
                let (mut exact, mut mag) = (0f64, 0f64);
                for i in 0..k {
                    let b = i / QK;
                    let ab = &act[(c * nb + b) * Q8_K_BYTES..];
                    let a = ab[4 + i % QK] as i8 as f64 * formats::q8k_scale(ab) as f64;
                    let wv = trits[r * k + i] as f64 * scales[r * nb + b].to_f64();
                    exact += wv * a;
                    mag += (wv * a).abs();
                }
                let g = got[c * rows + r] as f64;
                // f32 rounding: one product and one add per block, relative to Σ|w·a|.
                let tol = 1e-5 * mag + 1e-30;
                assert!((g - exact).abs() <= tol, "{ty:?} r={r} c={c}: {g} vs {exact} (tol {tol})");
            }
        }
    }
}

#[test]
fn pack_decode_roundtrip() {
    let mut rng = Rng(3);
    for ty in TYPES {
        let (trits, scales, data) = random_weights(&mut rng, ty, 3, 512);
        let mut out = vec![0f32; 3 * 512];
        for r in 0..3 {
            let row = &data[r * ty.row_bytes(512)..(r + 1) * ty.row_bytes(512)];
            formats::dequantize_row(ty, row, &mut out[r * 512..(r + 1) * 512]);
        }
        for (i, (&t, &v)) in trits.iter().zip(&out).enumerate() {
            assert_eq!(t as f32 * scales[i / QK].to_f32(), v, "{ty:?} element {i}");
        }
    }
}

#[test]
fn unaligned_and_strided_buffers() {
    let mut rng = Rng(4);
    for ty in TYPES {
        let (rows, k, n) = (7, 768, 5);
        let (_, _, data) = random_weights(&mut rng, ty, rows, k);
        let act = random_acts(&mut rng, n, k);
        let w = Weights::new(ty, &data, rows, k).unwrap();
        let mut want = vec![0f32; rows * n];
        mul_mat_q8k(Isa::Scalar, &w, &act, n, &mut want).unwrap();
        // Rows at an odd offset with padding between them; activations at an odd offset.
        let stride = ty.row_bytes(k) + 3;
        let mut shifted = vec![0xAAu8; 1 + rows * stride];
        for r in 0..rows {
            let src = &data[r * ty.row_bytes(k)..(r + 1) * ty.row_bytes(k)];
            shifted[1 + r * stride..1 + r * stride + src.len()].copy_from_slice(src);
        }
        let mut act_shifted = vec![0u8; act.len() + 1];
        act_shifted[1..].copy_from_slice(&act);
        let w2 = Weights::with_stride(ty, &shifted[1..], rows, k, stride).unwrap();
        for isa in Isa::available() {
            let mut got = vec![0f32; rows * n];
            mul_mat_q8k(isa, &w2, &act_shifted[1..], n, &mut got).unwrap();
            assert_eq!(want, got, "{isa:?} {ty:?}");
        }
    }
}

#[test]
fn bad_arguments_are_rejected() {
    let data = vec![0u8; 10 * 66];
    assert_eq!(Weights::new(TernaryType::Tq2_0, &data, 1, 300).unwrap_err(), KernelError::KNotMultipleOf256(300));
    assert!(matches!(
        Weights::new(TernaryType::Tq2_0, &data, 11, 256),
        Err(KernelError::ShortBuffer { what: "weights", .. })
    ));
    let w = Weights::new(TernaryType::Tq2_0, &data, 10, 256).unwrap();
    let act = vec![0u8; Q8_K_BYTES];
    let mut out = vec![0f32; 10];
    assert!(matches!(mul_mat_q8k(Isa::Scalar, &w, &act, 2, &mut out), Err(KernelError::ShortBuffer { .. })));
    let mut small = vec![0f32; 9];
    assert!(matches!(mul_mat_q8k(Isa::Scalar, &w, &act, 1, &mut small), Err(KernelError::ShortBuffer { .. })));
    mul_mat_q8k(Isa::Scalar, &w, &act, 1, &mut out).unwrap();
}

#[test]
fn f32_activation_kernels() {
    let mut rng = Rng(5);
    for case in 0..24 {
        let ty = TYPES[case % 2];
        let (rows, k, _) = random_shape(&mut rng);
        let (trits, scales, data) = random_weights(&mut rng, ty, rows, k);
        let w = Weights::new(ty, &data, rows, k).unwrap();
        let x: Vec<f32> = (0..k).map(|_| rng.f32()).collect();
        let dy: Vec<f32> = (0..rows).map(|_| rng.f32()).collect();
        let wv = |r: usize, i: usize| trits[r * k + i] as f64 * scales[(r * k + i) / QK].to_f64();
        let mut y_ref = vec![0f32; rows];
        gemv_f32(Isa::Scalar, &w, &x, &mut y_ref).unwrap();
        let mut dx_ref = vec![0.5f32; k];
        gemv_t_f32(Isa::Scalar, &w, &dy, &mut dx_ref).unwrap();
        for r in 0..rows {
            let exact: f64 = (0..k).map(|i| wv(r, i) * x[i] as f64).sum();
            let mag: f64 = (0..k).map(|i| (wv(r, i) * x[i] as f64).abs()).sum();
            assert!((y_ref[r] as f64 - exact).abs() <= 1e-5 * mag + 1e-30, "gemv r={r}");
        }
        for i in 0..k {
            let exact: f64 = 0.5 + (0..rows).map(|r| wv(r, i) * dy[r] as f64).sum::<f64>();
            let mag: f64 = 0.5 + (0..rows).map(|r| (wv(r, i) * dy[r] as f64).abs()).sum::<f64>();
            assert!((dx_ref[i] as f64 - exact).abs() <= 1e-5 * mag, "gemv_t i={i}");
        }
        for isa in &Isa::available()[1..] {
            let mut y = vec![0f32; rows];
            gemv_f32(*isa, &w, &x, &mut y).unwrap();
            for r in 0..rows {
                let mag: f64 = (0..k).map(|i| (wv(r, i) * x[i] as f64).abs()).sum();
                assert!(((y[r] - y_ref[r]) as f64).abs() <= 1e-5 * mag + 1e-30, "{isa:?} gemv r={r}");
            }
            let mut dx = vec![0.5f32; k];
            gemv_t_f32(*isa, &w, &dy, &mut dx).unwrap();
            assert_eq!(dx, dx_ref, "{isa:?} gemv_t must equal scalar exactly");
        }
    }
}

/// The OUT_PROD kernel (training's gradient products): every vector path equals the scalar
/// path bit for bit, fused and unfused, on ternary, f16 and f32 first operands (widths that
/// leave partial vector strips included), contiguous and transposed `S`, and any output row
/// stride; the scalar path is within float rounding of a float64 reference; short buffers
/// are errors.
#[test]
fn out_prod_paths_equal_scalar_exactly() {
    use trit_kernels::f16w::F16Weights;
    use trit_kernels::out_prod::{out_prod, F32Rows, OutProdLayout, OutProdWeights};
    let mut rng = Rng(11);
    for case in 0..24 {
        let rows = [1, 3, 31, 32, 33, 70][case % 6];
        let n = [1, 5, 6, 7, 13, 50][(case / 2) % 6];
        let (f16w, f32w) = (case % 4 == 2, case % 4 == 3);
        let k = if f16w || f32w { [8, 64, 100, 320, 512, 77][(case / 4) % 6] } else { QK * (1 + case % 3) };
        let ty = TYPES[case % 2];
        let (trits, scales, data) =
            if f16w || f32w { Default::default() } else { random_weights(&mut rng, ty, rows, k) };
        let halves: Vec<u16> = (0..rows * k).map(|_| f16::from_f32(rng.f32() * 0.1).to_bits()).collect();
        let floats: Vec<f32> = (0..rows * k + 3).map(|_| rng.f32()).collect();
        let (w, wv): (OutProdWeights, Box<dyn Fn(usize, usize) -> f64>) = if f32w {
            // Rows 1 apart more than k (a strided view).
            let stride = if rows > 1 { k + 3 / (rows - 1) } else { k };
            let f = floats.clone();
            (
                OutProdWeights::F32(F32Rows::new(&floats, rows, k, stride).unwrap()),
                Box::new(move |r, j| f[r * stride + j] as f64),
            )
        } else if f16w {
            let h = halves.clone();
            (
                OutProdWeights::F16(F16Weights::new(&halves, rows, k).unwrap()),
                Box::new(move |r, j| f16::from_bits(h[r * k + j]).to_f64()),
            )
        } else {
            let (t, sc) = (trits.clone(), scales.clone());
            (
                OutProdWeights::Ternary(Weights::new(ty, &data, rows, k).unwrap()),
                Box::new(move |r, j| t[r * k + j] as f64 * sc[(r * k + j) / QK].to_f64()),
            )
        };
        // S transposed (a token's values contiguous, as ggml-opt's transposed view) or not.
        let (s_tok, s_row) = if case % 4 < 2 { (rows, 1) } else { (1, n) };
        let s: Vec<f32> = (0..n * rows).map(|_| rng.f32()).collect();
        let ldy = k + 64 * (case % 2);
        let lay = OutProdLayout { n, s_tok, s_row, ldy };
        for fused in [true, false] {
            let mut y_ref = vec![f32::NAN; (n - 1) * ldy + k];
            out_prod(Isa::Scalar, &w, &s, &mut y_ref, lay, fused).unwrap();
            for t in 0..n {
                for j in 0..k {
                    let terms = (0..rows).map(|r| wv(r, j) * s[t * s_tok + r * s_row] as f64);
                    let (exact, mag) = terms.fold((0f64, 0f64), |(e, m), v| (e + v, m + v.abs()));
                    let got = y_ref[t * ldy + j] as f64;
                    let tol = (rows as f64 + 2.0) * f64::powi(2.0, -24) * mag;
                    assert!((got - exact).abs() <= tol + 1e-30, "case {case} t={t} j={j}: {got} vs {exact}");
                }
            }
            for isa in &Isa::available()[1..] {
                let mut y = vec![f32::NAN; y_ref.len()];
                out_prod(*isa, &w, &s, &mut y, lay, fused).unwrap();
                for t in 0..n {
                    let (a, b) = (&y[t * ldy..t * ldy + k], &y_ref[t * ldy..t * ldy + k]);
                    assert!(
                        a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{isa:?} case {case} fused={fused} t={t}"
                    );
                }
            }
        }
    }
    let data = [0u16; 100];
    assert!(matches!(F32Rows::new(&[0.0; 10], 2, 6, 5), Err(KernelError::Shape(_))));
    assert!(matches!(F32Rows::new(&[0.0; 10], 2, 6, 6), Err(KernelError::ShortBuffer { .. })));
    let w = OutProdWeights::F16(F16Weights::new(&data[..64], 1, 64).unwrap());
    let lay = OutProdLayout { n: 2, s_tok: 1, s_row: 1, ldy: 64 };
    assert!(matches!(
        out_prod(Isa::Scalar, &w, &[0.0; 2], &mut [0.0; 100], lay, true),
        Err(KernelError::ShortBuffer { .. })
    ));
    assert!(matches!(
        out_prod(Isa::Scalar, &w, &[0.0], &mut [0.0; 128], lay, true),
        Err(KernelError::ShortBuffer { .. })
    ));
}

/// The i16 gradient path (`out_prod_q16`): every vector path equals the scalar path bit for
/// bit (the sums are exact integers), and the scalar path is within the module's bound of
/// float64: `(m/32767)·0.51·Σ_r |w(r, j)|` plus f32 rounding, `m` the token's largest
/// `|d(r, b)·S[t, r]|` in the block. Odd row counts, partial token tiles, both `S` layouts,
/// tiny and zero gradients, and a NaN (its token's outputs NaN, the others untouched).
#[test]
fn out_prod_q16_paths_equal_scalar_exactly() {
    use trit_kernels::out_prod::OutProdLayout;
    use trit_kernels::out_prod_q16::{out_prod_q16, Q16_MAX_ROWS};
    let mut rng = Rng(17);
    for case in 0..16 {
        let rows = [1, 2, 31, 33, 64, 70, 97, 5][case % 8];
        let n = [1, 5, 6, 7, 13, 50][(case / 2) % 6];
        let k = QK * (1 + case % 3);
        let ty = TYPES[case % 2];
        let (trits, scales, data) = random_weights(&mut rng, ty, rows, k);
        let w = Weights::new(ty, &data, rows, k).unwrap();
        let (s_tok, s_row) = if case % 4 < 2 { (rows, 1) } else { (1, n) };
        let mut s: Vec<f32> = (0..n * rows).map(|_| rng.f32()).collect();
        // Token 1: values near 1e-35 (the 2^100 prescale); token 2: all zero; token 3 of
        // case 5 a NaN.
        for r in 0..rows {
            if n > 1 {
                s[s_tok + r * s_row] *= 1e-35;
            }
            if n > 2 {
                s[2 * s_tok + r * s_row] = 0.0;
            }
        }
        let nan_token = (case == 5 && n > 3).then_some(3);
        if let Some(t) = nan_token {
            s[t * s_tok + (rows / 2) * s_row] = f32::NAN;
        }
        let ldy = k + 64 * (case % 2);
        let lay = OutProdLayout { n, s_tok, s_row, ldy };
        let mut y_ref = vec![f32::NAN; (n - 1) * ldy + k];
        out_prod_q16(Isa::Scalar, &w, &s, &mut y_ref, lay).unwrap();
        let wv = |r: usize, j: usize| trits[r * k + j] as f64 * scales[(r * k + j) / QK].to_f64();
        for t in 0..n {
            for j in 0..k {
                let got = y_ref[t * ldy + j] as f64;
                if Some(t) == nan_token {
                    assert!(got.is_nan(), "case {case} t={t} j={j}: {got}");
                    continue;
                }
                let b = j / QK;
                let m = (0..rows)
                    .map(|r| (scales[(r * k) / QK + b].to_f32() * s[t * s_tok + r * s_row]).abs())
                    .fold(0f32, f32::max) as f64;
                let nnz = (0..rows).filter(|&r| trits[r * k + j] != 0).count() as f64;
                let terms = (0..rows).map(|r| wv(r, j) * s[t * s_tok + r * s_row] as f64);
                let (exact, mag) = terms.fold((0f64, 0f64), |(e, a), v| (e + v, a + v.abs()));
                let tol = m / 32767.0 * 0.51 * nnz + f64::powi(2.0, -22) * (mag + exact.abs());
                assert!((got - exact).abs() <= tol + 1e-40, "case {case} t={t} j={j}: {got} vs {exact} (tol {tol})");
            }
        }
        for isa in &Isa::available()[1..] {
            let mut y = vec![f32::NAN; y_ref.len()];
            out_prod_q16(*isa, &w, &s, &mut y, lay).unwrap();
            for t in 0..n {
                let (a, b) = (&y[t * ldy..t * ldy + k], &y_ref[t * ldy..t * ldy + k]);
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{isa:?} case {case} t={t}");
            }
        }
    }
    let data = vec![0u8; TYPES[0].row_bytes(QK) * 2];
    let w = Weights::new(TYPES[0], &data, 2, QK).unwrap();
    let lay = OutProdLayout { n: 2, s_tok: 2, s_row: 1, ldy: QK };
    assert!(matches!(
        out_prod_q16(Isa::Scalar, &w, &[0.0; 4], &mut [0.0; 100], lay),
        Err(KernelError::ShortBuffer { .. })
    ));
    assert!(matches!(
        out_prod_q16(Isa::Scalar, &w, &[0.0; 3], &mut [0.0; 512], lay),
        Err(KernelError::ShortBuffer { .. })
    ));
    let big = vec![0u8; TYPES[0].row_bytes(QK) * (Q16_MAX_ROWS + 1)];
    let w = Weights::new(TYPES[0], &big, Q16_MAX_ROWS + 1, QK).unwrap();
    assert!(matches!(out_prod_q16(Isa::Scalar, &w, &[], &mut [0.0; 512], lay), Err(KernelError::Shape(_))));
}
