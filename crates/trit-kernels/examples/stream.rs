//! Decode-speed check on a weight matrix far larger than the caches (as in a real model):
//! `cargo run --release -p trit-kernels --example stream [rows] [k]`, one thread. A small
//! `rows` (e.g. 4000: 2.6 MB) measures the kernels in cache, i.e. their compute speed.
//! `TRIT_GFNI=0` runs the AVX-512 TQ2_0 kernel's shift variant instead of its GFNI one.

use std::time::Instant;

use half::f16;
use trit_kernels::formats::{pack, quantize_q8k, TernaryType};
use trit_kernels::{mul_mat_q8k, Isa, Weights};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let k: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2560);
    if std::env::var("TRIT_GFNI").is_ok_and(|v| v == "0") {
        trit_kernels::set_gfni_allowed(false);
    }
    for ty in [TernaryType::Tq2_0, TernaryType::Tq1_0] {
        let trits: Vec<i8> = (0..rows * k).map(|i| ((i * 7 + i / 13) % 3) as i8 - 1).collect();
        let w = pack(ty, &trits, &vec![f16::from_f32(0.01); rows * k / 256]);
        drop(trits);
        let x: Vec<f32> = (0..k).map(|i| (i % 17) as f32 - 8.0).collect();
        let act = quantize_q8k(&x);
        let weights = Weights::new(ty, &w, rows, k).unwrap();
        let mut out = vec![0f32; rows];
        for isa in Isa::available().into_iter().rev() {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t0 = Instant::now();
                mul_mat_q8k(isa, &weights, &act, 1, &mut out).unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!(
                "{} {:?}: {:.1} MB in {:.2} ms = {:.2} GB/s",
                ty.name(),
                isa,
                w.len() as f64 / 1e6,
                best * 1e3,
                w.len() as f64 / best / 1e9
            );
            if isa == Isa::Avx2 {
                break;
            }
        }
        #[cfg(feature = "ggml")]
        {
            let gt = match ty {
                TernaryType::Tq2_0 => trit_sys::GGML_TYPE_TQ2_0,
                TernaryType::Tq1_0 => trit_sys::GGML_TYPE_TQ1_0,
            };
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t0 = Instant::now();
                // SAFETY: ggml_cpu_init fills ggml's tables; vec_dot reads one row of `k`
                // weights and one Q8_K row, both in bounds, and writes one float.
                unsafe {
                    trit_sys::ggml_cpu_init();
                    let vd = (*trit_sys::ggml_get_type_traits_cpu(gt)).vec_dot.unwrap();
                    let wr = ty.row_bytes(k);
                    for r in 0..rows {
                        vd(
                            k as i32,
                            out.as_mut_ptr().add(r),
                            0,
                            w.as_ptr().add(r * wr) as *const _,
                            0,
                            act.as_ptr() as *const _,
                            0,
                            1,
                        );
                    }
                }
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!("{} ggml: {:.2} ms = {:.2} GB/s", ty.name(), best * 1e3, w.len() as f64 / best / 1e9);
        }
    }
}
