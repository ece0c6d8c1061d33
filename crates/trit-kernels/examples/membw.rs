//! Memory copy bandwidth for the roofline: `cargo run --release -p trit-kernels --example
//! membw -- [threads] [MiB per thread]`. Each thread copies its own buffer (larger than the
//! caches) repeatedly; prints the best of 5 rounds as GB/s of bytes read (copy moves
//! each byte once in and once out; the read rate is what a weight-streaming kernel needs).

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let len = mib << 20;
    let mut bufs: Vec<(Vec<u8>, Vec<u8>)> = (0..threads).map(|i| (vec![i as u8 + 1; len], vec![0u8; len])).collect();
    let mut best_read = 0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (src, dst) in bufs.iter_mut() {
                s.spawn(move || dst.copy_from_slice(src));
            }
        });
        let secs = t0.elapsed().as_secs_f64();
        best_read = best_read.max((threads * len) as f64 / secs / 1e9);
    }
    let check: u64 = bufs.iter().map(|(_, d)| d[len / 2] as u64).sum();
    assert!(check > 0);
    println!("copy: {threads} threads x {mib} MiB: read {best_read:.2} GB/s (read+write {:.2} GB/s)", 2.0 * best_read);
    // Pure streaming read (what a weight-bound kernel does): sum the buffers as u64.
    let mut best = 0f64;
    let mut total = 0u64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = bufs
                .iter()
                .map(|(src, _)| {
                    s.spawn(move || {
                        let mut acc = [0u64; 8];
                        for c in src.chunks_exact(64) {
                            for (a, w) in acc.iter_mut().zip(c.chunks_exact(8)) {
                                *a = a.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
                            }
                        }
                        acc.iter().fold(0u64, |x, &y| x.wrapping_add(y))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let secs = t0.elapsed().as_secs_f64();
        total = total.wrapping_add(sums.iter().sum::<u64>());
        best = best.max((threads * len) as f64 / secs / 1e9);
    }
    println!("read: {threads} threads x {mib} MiB: {best:.2} GB/s (checksum {})", total % 997);
}
