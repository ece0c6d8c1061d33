//! RMS norm times a weight (`y = x · 1/√(mean(x²) + ε) · w`), the pair ggml-cpu fuses before
//! every projection of a BitNet layer (four a layer, 121 a 2B-4T token).
//!
//! ggml-cpu computes a row's sum of squares with one f64 accumulator, element after element,
//! and gives a row to one thread. At decode there is one row, so one thread spends the
//! chain of dependent f64 adds (about 2 µs for 2560 values, 6 µs for the FFN's 6912, more
//! with the row's cache lines fetched from the cores that wrote them) while every other
//! thread waits at the next barrier. Here a row is summed in blocks of [`BLOCK`] values, each
//! over [`LANES`] interleaved f64 accumulators (the compiler's vector registers), and the
//! block sums are added in order. With fewer rows than threads, the op's threads share a
//! row's blocks: each sums its own blocks into the graph's work buffer, waits at one
//! barrier, adds the row's block sums and writes its own blocks (reading and writing only
//! its blocks, so the op may run in place). Otherwise each thread takes whole rows.
//!
//! Only the order of the additions differs from ggml's: each square is the same f32
//! product, added in f64, and the mean, scale and output use ggml's expressions, so the
//! scale differs from ggml's by at most the f64 rounding of a few thousand additions (far
//! below the f32 rounding of the mean: most rows give ggml's bits). The order is fixed, so
//! the result does not depend on the thread count or the CPU.

/// Values a block sum covers.
pub const BLOCK: usize = 256;

/// f64 accumulators the sum of squares interleaves (four AVX-512 registers).
pub const LANES: usize = 32;

/// `Σ x²`, each square rounded to f32 (as ggml computes `x[i] * x[i]`) and added in f64: the
/// sums of blocks of [`BLOCK`] values ([`block_sum_squares`]) added in order. The same
/// result on every CPU and however the blocks are shared among threads.
pub fn sum_squares(x: &[f32]) -> f64 {
    x.chunks(BLOCK).fold(0.0, |acc, b| acc + block_sum_squares(b))
}

/// `Σ x²` of one block (at most [`BLOCK`] values, though any length works) over [`LANES`]
/// interleaved accumulators combined in a fixed order (the vector paths only run the same
/// IEEE operations wider).
pub fn block_sum_squares(x: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked).
            return unsafe { sum_squares_avx512(x) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked).
            return unsafe { sum_squares_avx2(x) };
        }
    }
    sum_squares_lanes(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_squares_avx512(x: &[f32]) -> f64 {
    sum_squares_lanes(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_squares_avx2(x: &[f32]) -> f64 {
    sum_squares_lanes(x)
}

#[inline(always)]
fn sum_squares_lanes(x: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v * v) as f64;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += (v * v) as f64;
    }
    // Pairwise halving: the same tree on every machine.
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            acc[i] += acc[i + n];
        }
    }
    acc[0]
}

/// The factor a row is multiplied by: `1 / √(mean + ε)` with ggml's f32 rounding of the
/// mean (`sum / n` in f64, then to f32).
pub fn rms_scale(x: &[f32], eps: f32) -> f32 {
    scale_from_sum(sum_squares(x), x.len(), eps)
}

/// [`rms_scale`] from a row's sum of squares and length.
pub fn scale_from_sum(sum: f64, n: usize, eps: f32) -> f32 {
    let mean = (sum / n as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

#[cfg(feature = "ggml")]
pub(crate) use hook::wanted;
#[cfg(feature = "ggml")]
pub use hook::{rms_norm_mul_hook, rms_norm_mul_hook_runs};

#[cfg(feature = "ggml")]
mod hook {
    use std::ffi::{c_int, c_void};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use trit_sys as sys;

    extern "C" {
        /// ggml-cpu's barrier over the threads of the op being computed (ggml-cpu-impl.h).
        fn ggml_barrier(tp: *mut sys::ggml_threadpool);
    }

    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static SHARED_RUNS: AtomicUsize = AtomicUsize::new(0);

    /// Whether [`crate::ggml::install`] installs the hook with trit's kernels: not with
    /// TRIT_NORM=ggml (A/B runs against ggml-cpu's own norm).
    pub(crate) fn wanted() -> bool {
        std::env::var("TRIT_NORM").map_or(true, |v| v != "ggml")
    }

    /// Ops [`rms_norm_mul_hook`] has computed (counted on thread 0), and of those the ones
    /// whose threads shared the rows' blocks, for tests.
    pub fn rms_norm_mul_hook_runs() -> (usize, usize) {
        (RUNS.load(Ordering::Relaxed), SHARED_RUNS.load(Ordering::Relaxed))
    }

    /// The RMS_NORM + MUL hook (vendor patch 0014): `mul = rms_norm(x) · w` for f32 rows,
    /// `w` broadcast over rows as ggml broadcasts it. With at least as many rows as threads
    /// (or no room in the work buffer), thread `ith` takes rows `ith, ith + nth, …` (ggml's
    /// split); with fewer (decode), the threads share the rows' blocks (see the module).
    /// Declines (the same answer on every thread) what it does not take: non-f32 tensors,
    /// strided rows, `w` not broadcastable.
    ///
    /// # Safety
    /// Called by ggml-cpu on every thread of the op with live tensors: `norm` an RMS_NORM
    /// and `mul` the MUL that reads it, `tp` the op's pool, `wsize` bytes at `wdata` free
    /// for the op (patch 0014's contract).
    pub unsafe extern "C" fn rms_norm_mul_hook(
        norm: *const sys::ggml_tensor,
        mul: *mut sys::ggml_tensor,
        ith: c_int,
        nth: c_int,
        tp: *mut sys::ggml_threadpool,
        wdata: *mut c_void,
        wsize: usize,
    ) -> bool {
        if nth <= 0 || ith < 0 {
            return false;
        }
        // SAFETY: the function's contract.
        let (nm, d) = unsafe { (&*norm, &*mul) };
        let x = nm.src[0];
        let w = if std::ptr::eq(d.src[0], norm) { d.src[1] } else { d.src[0] };
        if x.is_null() || w.is_null() {
            return false;
        }
        // SAFETY: sources of live tensors.
        let (x, w) = unsafe { (&*x, &*w) };
        let f32_rows = |t: &sys::ggml_tensor| t.type_ == sys::GGML_TYPE_F32 && t.nb[0] == 4;
        let n = x.ne[0];
        if !f32_rows(x) || !f32_rows(w) || !f32_rows(d) || w.ne[0] != n || n <= 0 {
            return false;
        }
        if (0..4).any(|i| d.ne[i] != x.ne[i] || w.ne[i] <= 0 || x.ne[i] % w.ne[i] != 0) {
            return false;
        }
        let mut eps = 0f32;
        // SAFETY: op_params holds RMS_NORM's eps as its first f32 (ggml_rms_norm's layout).
        unsafe { std::ptr::copy_nonoverlapping(nm.op_params.as_ptr() as *const f32, &mut eps, 1) };
        if eps.is_nan() || eps < 0.0 {
            return false;
        }
        let (n, ith, nth) = (n as usize, ith as usize, nth as usize);
        let rows = (x.ne[1] * x.ne[2] * x.ne[3]) as usize;
        let row_ptr = |t: &sys::ggml_tensor, r: usize, wrap: bool| -> *const u8 {
            let (i1, i2, i3) =
                (r % x.ne[1] as usize, r / x.ne[1] as usize % x.ne[2] as usize, r / (x.ne[1] * x.ne[2]) as usize);
            let (i1, i2, i3) =
                if wrap { (i1 % t.ne[1] as usize, i2 % t.ne[2] as usize, i3 % t.ne[3] as usize) } else { (i1, i2, i3) };
            // SAFETY: indices inside `t`'s shape (wrapped for the broadcast `w`).
            unsafe { (t.data as *const u8).add(i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3]) }
        };
        // Writes columns `cols` of row `r` with `scale`.
        let write = |r: usize, cols: std::ops::Range<usize>, scale: f32| {
            // SAFETY: each row is `n` contiguous f32 (nb[0] == 4 checked) and `cols` lies in
            // it; `x` and `w` are read, and the output's `cols` of row `r` written, by this
            // thread alone among the op's (rows, or blocks, are disjoint between threads),
            // each element read before it is written (the op may be in place).
            unsafe {
                let (xp, wp) = (row_ptr(x, r, false) as *const f32, row_ptr(w, r, true) as *const f32);
                let yp = row_ptr(d, r, false) as *mut f32;
                for i in cols {
                    *yp.add(i) = *xp.add(i) * scale * *wp.add(i); // ggml's order of the products
                }
            }
        };
        // SAFETY: row `r` of `x`: `n` contiguous f32, read only while this thread uses it.
        let x_row = |r: usize| unsafe { std::slice::from_raw_parts(row_ptr(x, r, false) as *const f32, n) };
        let blocks = n.div_ceil(super::BLOCK);
        let items = rows * blocks;
        if rows >= nth || wdata.is_null() || items * 8 > wsize {
            // Whole rows, thread `ith` taking rows ith, ith + nth, … (ggml's split).
            for r in (ith..rows).step_by(nth) {
                let scale = super::rms_scale(x_row(r), eps);
                write(r, 0..n, scale);
            }
        } else {
            // The rows' blocks shared among the threads: block sums into the work buffer,
            // one barrier, then each thread adds its rows' sums and writes its blocks.
            let sums = wdata as *mut f64;
            let mine = ith * items / nth..(ith + 1) * items / nth;
            let block =
                |it: usize| (it / blocks, it % blocks * super::BLOCK..((it % blocks + 1) * super::BLOCK).min(n));
            for it in mine.clone() {
                let (r, cols) = block(it);
                // SAFETY: item `it` < items, and items · 8 ≤ wsize bytes (checked); each
                // thread writes its own items (unaligned: the buffer's alignment is ggml's).
                unsafe { sums.add(it).write_unaligned(super::block_sum_squares(&x_row(r)[cols])) };
            }
            // SAFETY: `tp` is the op's live pool and every thread of the op reaches this call
            // (the branch depends only on the op's shapes and buffer).
            unsafe { ggml_barrier(tp) };
            if ith == 0 {
                SHARED_RUNS.fetch_add(1, Ordering::Relaxed);
            }
            for it in mine {
                let (r, cols) = block(it);
                // SAFETY: row `r`'s block sums, all written before the barrier.
                let sum = (0..blocks).fold(0.0, |acc, b| acc + unsafe { sums.add(r * blocks + b).read_unaligned() });
                write(r, cols, super::scale_from_sum(sum, n, eps));
            }
        }
        if ith == 0 {
            RUNS.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                if i % 61 == 0 {
                    v * 300.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// The dispatched (vector) sums are the portable ones bit for bit, and a row's sum is
    /// the exact sum of the f32 squares within f64 rounding.
    #[test]
    fn sum_of_squares_is_the_same_everywhere_and_close_to_exact() {
        for n in [0, 1, 31, 32, 33, 1000, 2560, 6912] {
            let x = data(n, n as u64 + 7);
            let got = sum_squares(&x);
            assert_eq!(block_sum_squares(&x).to_bits(), sum_squares_lanes(&x).to_bits(), "n={n}");
            let portable = x.chunks(BLOCK).fold(0.0, |acc, b| acc + sum_squares_lanes(b));
            assert_eq!(got.to_bits(), portable.to_bits(), "n={n}");
            // Each f32 square is an exact f64; their sum in ascending order is within about
            // 1e-13 (relative) of the exact sum for these lengths.
            let mut sq: Vec<f64> = x.iter().map(|&v| (v * v) as f64).collect();
            sq.sort_by(f64::total_cmp);
            let want: f64 = sq.iter().sum();
            assert!((got - want).abs() <= 1e-12 * want.max(f64::MIN_POSITIVE), "n={n}: {got} vs {want}");
        }
    }

    /// The scale against a float64 reference: `1/√(mean + ε)` within f32 rounding.
    #[test]
    fn rms_scale_matches_float64() {
        for (n, eps) in [(2560, 1e-5f32), (6912, 1e-6), (7, 0.0)] {
            let x = data(n, 3);
            let mean = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
            let want = 1.0 / (mean + eps as f64).sqrt();
            let got = rms_scale(&x, eps) as f64;
            assert!((got - want).abs() <= 2.0 * f32::EPSILON as f64 * want, "n={n}: {got} vs {want}");
        }
    }
}
