//! Output-head decode check on DRAM-sized f16 weights (2B-4T's tied head by default):
//! `cargo run --release -p trit-kernels [--features ggml] --example stream_f16 -- [threads]
//! [rows] [k]`. Each thread takes a contiguous share of rows, as the hook does with few
//! threads; prints weight GB/s for trit's f16 mat-vec (each ISA) and ggml's `vec_dot_f16`.

use std::time::Instant;

use half::f16;
use trit_kernels::f16w::{gemv_f16, F16Weights};
use trit_kernels::Isa;

fn timed(threads: usize, rows: usize, f: impl Fn(std::ops::Range<usize>) + Sync) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let f = &f;
                let (r0, r1) = (rows * t / threads / 4 * 4, (rows * (t + 1) / threads / 4 * 4).min(rows));
                let r1 = if t + 1 == threads { rows } else { r1 };
                s.spawn(move || f(r0..r1));
            }
        });
        best = best.min(t0.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let rows: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128_256);
    let k: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2560);
    let w: Vec<u16> =
        (0..rows * k).map(|i| f16::from_f32(((i * 7 + i / 13) % 17) as f32 * 0.01 - 0.08).to_bits()).collect();
    let act: Vec<u16> = (0..k).map(|i| f16::from_f32((i % 11) as f32 * 0.1 - 0.5).to_bits()).collect();
    let bytes = (2 * rows * k) as f64;
    let out: Vec<std::sync::atomic::AtomicU32> = (0..rows).map(|_| Default::default()).collect();
    for isa in Isa::available().into_iter().rev().filter(|&i| i != Isa::Scalar) {
        let secs = timed(threads, rows, |r| {
            let n = r.len();
            let wt = F16Weights::new(&w[r.start * k..r.end * k], n, k).unwrap();
            let mut o = vec![0f32; n];
            gemv_f16(isa, &wt, &act, 1, &mut o).unwrap();
            out[r.start].store(o[0].to_bits(), std::sync::atomic::Ordering::Relaxed);
        });
        println!(
            "trit {isa:?}, {threads} threads: {:.1} MB in {:.2} ms = {:.2} GB/s",
            bytes / 1e6,
            secs * 1e3,
            bytes / secs / 1e9
        );
    }
    #[cfg(feature = "ggml")]
    {
        // SAFETY: ggml_cpu_init fills ggml's tables (idempotent).
        unsafe { trit_sys::ggml_cpu_init() };
        let secs = timed(threads, rows, |r| {
            let mut o = 0f32;
            for row in r {
                // SAFETY: vec_dot_f16 reads one row of `k` weights and `k` activations (in
                // bounds) and writes one float.
                unsafe {
                    let vd = (*trit_sys::ggml_get_type_traits_cpu(trit_sys::GGML_TYPE_F16)).vec_dot.unwrap();
                    vd(k as i32, &mut o, 0, w.as_ptr().add(row * k) as *const _, 0, act.as_ptr() as *const _, 0, 1);
                }
            }
            std::hint::black_box(o);
        });
        println!("ggml vec_dot_f16, {threads} threads: {:.2} ms = {:.2} GB/s", secs * 1e3, bytes / secs / 1e9);
    }
}
