//! Memory bandwidth for the roofline: `cargo run --release -p trit-kernels --example membw
//! -- [threads] [MiB per thread]`. Each thread works on its own buffers (larger than the
//! caches); best of 5 rounds each. Two measurements, each on 4 KiB pages and on transparent
//! huge pages (Linux `MADV_HUGEPAGE`; model weights that are mmapped from a file on a
//! filesystem with large folios, or loaded with `--no-mmap`, can be on either):
//! * `copy`: `dst = src`, printed as GB/s of bytes read and, as STREAM counts it, read +
//!   written;
//! * `read`: a pure streaming read (what a weight-bound kernel does).
//!
//! One line per measurement and page size, e.g. `read (2M pages): 2 threads x 256 MiB:
//! 53.10 GB/s`; `scripts/bench-cpu.sh` takes the better page size of each.

use std::time::Instant;

/// An anonymous mapping of `len` bytes, huge pages asked for or refused.
struct Buf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by one Buf and only reached through &/&mut of it.
unsafe impl Send for Buf {}
unsafe impl Sync for Buf {}

impl Buf {
    fn new(len: usize, huge: bool, fill: u8) -> Buf {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: a fresh private anonymous mapping; checked for failure; madvise only
            // gives advice on it.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert!(p != libc::MAP_FAILED, "mmap of {len} bytes failed");
                libc::madvise(p, len, if huge { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE });
                std::ptr::write_bytes(p as *mut u8, fill, len);
                Buf { ptr: p as *mut u8, len }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = huge;
            let v = vec![fill; len].leak();
            Buf { ptr: v.as_mut_ptr(), len }
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is our live mapping.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: unmaps the mapping this Buf created, once.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

fn measure(threads: usize, mib: usize, huge: bool) {
    let len = mib << 20;
    let pages = if huge { "2M pages" } else { "4K pages" };
    let mut bufs: Vec<(Buf, Buf)> =
        (0..threads).map(|i| (Buf::new(len, huge, i as u8 + 1), Buf::new(len, huge, 0))).collect();
    let mut best_read = 0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (src, dst) in bufs.iter_mut() {
                s.spawn(move || dst.bytes_mut().copy_from_slice(src.bytes()));
            }
        });
        let secs = t0.elapsed().as_secs_f64();
        best_read = best_read.max((threads * len) as f64 / secs / 1e9);
    }
    let check: u64 = bufs.iter().map(|(_, d)| d.bytes()[len / 2] as u64).sum();
    assert!(check > 0);
    println!(
        "copy ({pages}): {threads} threads x {mib} MiB: read {best_read:.2} GB/s (read+write {:.2} GB/s)",
        2.0 * best_read
    );
    // Pure streaming read: sum the buffers as u64.
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
                        for c in src.bytes().chunks_exact(64) {
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
    println!("read ({pages}): {threads} threads x {mib} MiB: {best:.2} GB/s (checksum {})", total % 997);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    for huge in [false, true] {
        measure(threads, mib, huge);
    }
}
