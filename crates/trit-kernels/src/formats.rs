//! Block layouts: llama.cpp's TQ2_0 / TQ1_0 weights and Q8_K activations, byte for byte
//! (little-endian, no alignment assumed), plus packers and decoders used by tests,
//! benches and the scalar reference.

use half::f16;

/// Elements per block (ggml's `QK_K`).
pub const QK: usize = 256;
/// TQ2_0 block: `qs[64]` (2-bit codes, value = code − 1), then `d` (f16).
pub const TQ2_0_BYTES: usize = 66;
/// TQ1_0 block: `qs[48]` (5 trits a byte), `qh[4]` (4 trits a byte), then `d` (f16).
pub const TQ1_0_BYTES: usize = 54;
/// Q8_K block: `d` (f32), `qs[256]` (i8), `bsums[16]` (i16, sums of 16 consecutive `qs`).
pub const Q8_K_BYTES: usize = 292;

/// The ternary weight formats the kernels read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TernaryType {
    Tq1_0,
    Tq2_0,
}

impl TernaryType {
    pub const fn block_bytes(self) -> usize {
        match self {
            TernaryType::Tq1_0 => TQ1_0_BYTES,
            TernaryType::Tq2_0 => TQ2_0_BYTES,
        }
    }

    /// Bytes of one row of `k` weights (`k` a multiple of 256).
    pub const fn row_bytes(self, k: usize) -> usize {
        k / QK * self.block_bytes()
    }

    pub const fn name(self) -> &'static str {
        match self {
            TernaryType::Tq1_0 => "TQ1_0",
            TernaryType::Tq2_0 => "TQ2_0",
        }
    }
}

/// Bytes of one row of `k` activations in Q8_K.
pub const fn q8k_row_bytes(k: usize) -> usize {
    k / QK * Q8_K_BYTES
}

/// The f16 scale `d` of a weight block, as f32.
#[inline(always)]
pub fn block_scale(ty: TernaryType, block: &[u8]) -> f32 {
    let o = ty.block_bytes() - 2;
    f16::from_bits(u16::from_le_bytes([block[o], block[o + 1]])).to_f32()
}

/// The f32 scale `d` of a Q8_K block.
#[inline(always)]
pub fn q8k_scale(block: &[u8]) -> f32 {
    f32::from_le_bytes([block[0], block[1], block[2], block[3]])
}

/// Σ of the 256 quants of a Q8_K block, from its `bsums`.
#[inline(always)]
pub fn q8k_sum(block: &[u8]) -> i32 {
    (0..16).map(|i| i16::from_le_bytes([block[260 + 2 * i], block[261 + 2 * i]]) as i32).sum()
}

/// One Q8_K activation column's per-block values, read once per column instead of once per
/// 4-row pass: `da[b]` (the block scale) and `suma[b]` (Σ of its 256 quants, from `bsums`).
pub(crate) struct ColSums {
    pub da: Vec<f32>,
    pub suma: Vec<i32>,
}

impl ColSums {
    pub fn new(act: &[u8], nb: usize) -> Self {
        let blk = |b: usize| &act[b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES];
        ColSums { da: (0..nb).map(|b| q8k_scale(blk(b))).collect(), suma: (0..nb).map(|b| q8k_sum(blk(b))).collect() }
    }
}

/// Quantize `x` (length a multiple of 256) to Q8_K rows the way ggml's reference does:
/// per block of 256, scale = −max/127 where max is the signed value of largest magnitude,
/// quants rounded to nearest (ties to even), at most 127.
pub fn quantize_q8k(x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(QK), "Q8_K needs a multiple of 256 values, got {}", x.len());
    let mut out = vec![0u8; x.len() / QK * Q8_K_BYTES];
    for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_K_BYTES)) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            continue; // d = 0, quants 0, bsums 0
        }
        let iscale = -127.0 / max;
        let mut q = [0i8; QK];
        for (qi, &v) in q.iter_mut().zip(xb) {
            *qi = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        ob[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (i, &v) in q.iter().enumerate() {
            ob[4 + i] = v as u8;
        }
        for g in 0..16 {
            let s: i32 = q[g * 16..g * 16 + 16].iter().map(|&v| v as i32).sum();
            ob[260 + 2 * g..262 + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
        }
    }
    out
}

/// Pack ternary values (−1, 0, 1; length a multiple of 256) with one scale per block.
pub fn pack(ty: TernaryType, trits: &[i8], scales: &[f16]) -> Vec<u8> {
    assert!(trits.len().is_multiple_of(QK) && scales.len() == trits.len() / QK, "pack: bad lengths");
    let mut out = vec![0u8; trits.len() / QK * ty.block_bytes()];
    for ((t, &d), ob) in trits.chunks_exact(QK).zip(scales).zip(out.chunks_exact_mut(ty.block_bytes())) {
        let code = |i: usize| -> u8 {
            assert!((-1..=1).contains(&t[i]), "not a ternary value: {}", t[i]);
            (t[i] + 1) as u8
        };
        match ty {
            TernaryType::Tq2_0 => {
                for half in 0..2 {
                    for m in 0..32 {
                        let mut q = 0u8;
                        for n in 0..4 {
                            q |= code(half * 128 + n * 32 + m) << (2 * n);
                        }
                        ob[half * 32 + m] = q;
                    }
                }
            }
            TernaryType::Tq1_0 => {
                let enc = |digits: &mut dyn Iterator<Item = u8>| -> u8 {
                    let mut q: u16 = 0;
                    for dgt in digits {
                        q = q * 3 + dgt as u16;
                    }
                    ((q * 256).div_ceil(243)) as u8
                };
                for m in 0..32 {
                    ob[m] = enc(&mut (0..5).map(|n| code(m + n * 32)));
                }
                for m in 0..16 {
                    ob[32 + m] = enc(&mut (0..5).map(|n| code(160 + m + n * 16)));
                }
                for j in 0..4 {
                    // four trits, then a zero trit as the least significant digit
                    ob[48 + j] = enc(&mut (0..4).map(|m| code(240 + j + m * 4)).chain(std::iter::once(0)));
                }
            }
        }
        ob[ty.block_bytes() - 2..].copy_from_slice(&d.to_bits().to_le_bytes());
    }
    out
}

/// The `n`-th most significant base-3 digit of a TQ1_0 byte (ggml's ceil-scaled encoding).
#[inline(always)]
pub fn tq1_trit(q: u8, n: u32) -> u8 {
    let t = q.wrapping_mul(3u8.pow(n));
    ((t as u16 * 3) >> 8) as u8
}

/// Decode one block's codes (value + 1, so 0..=2) in element order.
pub fn decode_codes(ty: TernaryType, block: &[u8], codes: &mut [u8; QK]) {
    match ty {
        TernaryType::Tq2_0 => {
            for half in 0..2 {
                for n in 0..4 {
                    for m in 0..32 {
                        codes[half * 128 + n * 32 + m] = (block[half * 32 + m] >> (2 * n)) & 3;
                    }
                }
            }
        }
        TernaryType::Tq1_0 => {
            for n in 0..5 {
                for m in 0..32 {
                    codes[n * 32 + m] = tq1_trit(block[m], n as u32);
                }
                for m in 0..16 {
                    codes[160 + n * 16 + m] = tq1_trit(block[32 + m], n as u32);
                }
            }
            for m in 0..4 {
                for j in 0..4 {
                    codes[240 + m * 4 + j] = tq1_trit(block[48 + j], m as u32);
                }
            }
        }
    }
}

/// Dequantize a row of ternary weights to f32 (value × d).
pub fn dequantize_row(ty: TernaryType, row: &[u8], out: &mut [f32]) {
    let mut codes = [0u8; QK];
    for (b, o) in row.chunks_exact(ty.block_bytes()).zip(out.chunks_exact_mut(QK)) {
        decode_codes(ty, b, &mut codes);
        let d = block_scale(ty, b);
        for (v, &c) in o.iter_mut().zip(codes.iter()) {
            *v = (c as f32 - 1.0) * d;
        }
    }
}
