//! TQ1_0 blocks re-encoded as TQ2_0 blocks and back, losslessly.
//!
//! TQ1_0 stores a block's 256 ternary weights as base-3 digits (5 a byte, 54 bytes); TQ2_0
//! as 2-bit codes (4 a byte, 66 bytes). Both keep the weight value + 1 (0, 1, 2) and one f16
//! scale, so a block's weights, scale and every product computed from them are the same in
//! either encoding. The CPU decode kernels stream TQ2_0's codes at memory bandwidth, while
//! TQ1_0's digit arithmetic keeps them compute-bound; `ggml`'s repack buffer type holds TQ1_0
//! weights in this layout (22% more bytes) so that TQ1_0 models decode with the TQ2_0
//! kernels. [`tq2_to_tq1`] writes ggml's canonical TQ1_0 bytes (`quantize_row_tq1_0_ref`'s
//! ceil-scaled digits) for the same weights, which equal the file's for files ggml wrote.

use crate::formats::{tq1_trit, TQ1_0_BYTES, TQ2_0_BYTES};

/// The five digits (most significant first) of every TQ1_0 byte.
static DIGITS: std::sync::LazyLock<[[u8; 5]; 256]> = std::sync::LazyLock::new(|| {
    let mut t = [[0u8; 5]; 256];
    for (q, d) in t.iter_mut().enumerate() {
        for (n, v) in d.iter_mut().enumerate() {
            *v = tq1_trit(q as u8, n as u32);
        }
    }
    t
});

/// Where TQ1_0 byte `j`'s digit `n` goes: element index in the block.
#[inline(always)]
fn tq1_elem(j: usize, n: usize) -> usize {
    match j {
        0..32 => n * 32 + j,
        32..48 => 160 + n * 16 + (j - 32),
        _ => 240 + n * 4 + (j - 48),
    }
}

/// TQ2_0 position of element `e`: (byte, shift).
#[inline(always)]
fn tq2_pos(e: usize) -> (usize, u32) {
    ((e / 128) * 32 + e % 32, 2 * ((e % 128) / 32) as u32)
}

fn one_to_tq2(src: &[u8], dst: &mut [u8]) {
    let digits = &*DIGITS;
    dst[..64].fill(0);
    for (j, &q) in src[..52].iter().enumerate() {
        // qh bytes (48..52) hold four digits and a zero.
        let nd = if j < 48 { 5 } else { 4 };
        for (n, &c) in digits[q as usize][..nd].iter().enumerate() {
            let (b, s) = tq2_pos(tq1_elem(j, n));
            dst[b] |= c << s;
        }
    }
    dst[64..66].copy_from_slice(&src[52..54]);
}

fn one_to_tq1(src: &[u8], dst: &mut [u8]) {
    let code = |e: usize| {
        let (b, s) = tq2_pos(e);
        // 0..2: these blocks were written by `one_to_tq2`.
        ((src[b] >> s) & 3) as u16
    };
    for (j, o) in dst[..52].iter_mut().enumerate() {
        let nd = if j < 48 { 5 } else { 4 };
        let mut q: u16 = 0;
        for n in 0..5 {
            q = q * 3 + if n < nd { code(tq1_elem(j, n)) } else { 0 };
        }
        *o = (q * 256).div_ceil(243) as u8;
    }
    dst[52..54].copy_from_slice(&src[64..66]);
}

/// Blocks converted per thread at least before the conversion is split across threads.
const BLOCKS_PER_THREAD: usize = 1 << 14;

/// Apply `f` to matching blocks of `src` (`sb` bytes each) and `dst` (`db` bytes each), on
/// several threads for large tensors.
fn convert(src: &[u8], dst: &mut [u8], sb: usize, db: usize, f: fn(&[u8], &mut [u8])) {
    let n = (src.len() / sb).min(dst.len() / db);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n / BLOCKS_PER_THREAD).max(1);
    let per = n.div_ceil(threads);
    let run = |s: &[u8], d: &mut [u8]| {
        for (a, b) in s.chunks_exact(sb).zip(d.chunks_exact_mut(db)) {
            f(a, b);
        }
    };
    if threads == 1 {
        run(&src[..n * sb], &mut dst[..n * db]);
        return;
    }
    std::thread::scope(|sc| {
        for (s, d) in src[..n * sb].chunks(per * sb).zip(dst[..n * db].chunks_mut(per * db)) {
            sc.spawn(move || run(s, d));
        }
    });
}

/// Re-encode whole TQ1_0 blocks (`src`, 54 bytes each) as TQ2_0 blocks (`dst`, 66 each).
/// Converts `min(src.len() / 54, dst.len() / 66)` blocks.
pub fn tq1_to_tq2(src: &[u8], dst: &mut [u8]) {
    convert(src, dst, TQ1_0_BYTES, TQ2_0_BYTES, one_to_tq2);
}

/// Encode whole TQ2_0 blocks (`src`) back as ggml's canonical TQ1_0 blocks (`dst`).
pub fn tq2_to_tq1(src: &[u8], dst: &mut [u8]) {
    convert(src, dst, TQ2_0_BYTES, TQ1_0_BYTES, one_to_tq1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{decode_codes, dequantize_row, pack, TernaryType, QK};
    use half::f16;

    /// A small deterministic generator (no dependency for it).
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    fn random_trits(n: usize, seed: &mut u64) -> Vec<i8> {
        (0..n).map(|_| (lcg(seed) % 3) as i8 - 1).collect()
    }

    #[test]
    fn every_weight_and_scale_survives_both_ways() {
        let mut seed = 7;
        let blocks = 3 * BLOCKS_PER_THREAD + 5; // also the threaded split
        let trits = random_trits(blocks * QK, &mut seed);
        let scales: Vec<f16> = (0..blocks).map(|i| f16::from_f32(0.01 + i as f32 * 1e-4)).collect();
        let tq1 = pack(TernaryType::Tq1_0, &trits, &scales);
        let mut tq2 = vec![0u8; blocks * TQ2_0_BYTES];
        tq1_to_tq2(&tq1, &mut tq2);
        // The re-encoded blocks are exactly what packing the weights as TQ2_0 gives.
        assert_eq!(tq2, pack(TernaryType::Tq2_0, &trits, &scales));
        let mut back = vec![0u8; blocks * TQ1_0_BYTES];
        tq2_to_tq1(&tq2, &mut back);
        assert_eq!(back, tq1, "TQ1_0 bytes differ after the round trip");
        let (mut a, mut b) = (vec![0f32; blocks * QK], vec![0f32; blocks * QK]);
        dequantize_row(TernaryType::Tq1_0, &tq1, &mut a);
        dequantize_row(TernaryType::Tq2_0, &tq2, &mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    #[test]
    fn any_tq1_byte_keeps_its_digits() {
        // Bytes a quantizer never writes still decode to digits 0..2; the re-encoding keeps
        // those digits (not the byte).
        let mut seed = 11;
        let mut tq1 = vec![0u8; 64 * TQ1_0_BYTES];
        tq1.iter_mut().for_each(|b| *b = lcg(&mut seed) as u8);
        let mut tq2 = vec![0u8; 64 * TQ2_0_BYTES];
        tq1_to_tq2(&tq1, &mut tq2);
        let (mut c1, mut c2) = ([0u8; QK], [0u8; QK]);
        for (x, y) in tq1.chunks_exact(TQ1_0_BYTES).zip(tq2.chunks_exact(TQ2_0_BYTES)) {
            decode_codes(TernaryType::Tq1_0, x, &mut c1);
            decode_codes(TernaryType::Tq2_0, y, &mut c2);
            assert_eq!(c1, c2);
            assert_eq!(x[52..], y[64..]);
        }
    }

    #[test]
    fn converts_only_whole_blocks() {
        let tq1 = vec![0x55u8; 2 * TQ1_0_BYTES + 10];
        let mut tq2 = vec![0xAAu8; 2 * TQ2_0_BYTES + 3];
        tq1_to_tq2(&tq1, &mut tq2);
        assert!(tq2[2 * TQ2_0_BYTES..].iter().all(|&b| b == 0xAA), "wrote past the last whole block");
    }
}
