//! x86-64 paths: AVX2 (decode, `vpmaddubsw` tiles) and AVX-512 VNNI (`vpdpbusd` tiles).
//! Callers reach these only after `Isa::check`/`Isa::detect` found the features.
//! Integer dot products are exact, and the per-block float step is done lane by lane with
//! the same operations in the same order as `scalar.rs`, so results equal it bit for bit.

use std::arch::x86_64::*;

use crate::formats::{block_scale, TernaryType, Q8_K_BYTES, QK};

pub(crate) fn decode_row(ty: TernaryType, row: &[u8], codes: &mut [u8], dw: &mut [f32], stride: usize) {
    let bb = ty.block_bytes();
    let nb = codes.len() / QK;
    assert!(codes.len() == nb * QK && row.len() >= nb * bb && (nb == 0 || dw.len() > (nb - 1) * stride));
    debug_assert!(std::arch::is_x86_feature_detected!("avx2"));
    for b in 0..nb {
        let blk = &row[b * bb..(b + 1) * bb];
        let out = &mut codes[b * QK..(b + 1) * QK];
        // SAFETY: a prefetch is a hint that never faults; SSE is part of x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(blk.as_ptr().wrapping_add(PF_BLOCKS * bb) as *const i8) };
        // SAFETY: AVX2 is present (dispatch checked it); `blk` holds one whole block
        // (`bb` bytes) and `out` 256 bytes, which is all the unaligned loads/stores touch.
        unsafe {
            match ty {
                TernaryType::Tq2_0 => decode_tq2_avx2(blk.as_ptr(), out.as_mut_ptr()),
                TernaryType::Tq1_0 => decode_tq1_avx2(blk.as_ptr(), out.as_mut_ptr()),
            }
        }
        dw[b * stride] = block_scale(ty, blk);
    }
}

#[target_feature(enable = "avx2")]
unsafe fn decode_tq2_avx2(p: *const u8, out: *mut u8) {
    let m3 = _mm256_set1_epi8(3);
    for half in 0..2 {
        let v = _mm256_loadu_si256(p.add(half * 32) as *const __m256i);
        let o = out.add(half * 128);
        _mm256_storeu_si256(o as *mut __m256i, _mm256_and_si256(v, m3));
        _mm256_storeu_si256(o.add(32) as *mut __m256i, _mm256_and_si256(_mm256_srli_epi16::<2>(v), m3));
        _mm256_storeu_si256(o.add(64) as *mut __m256i, _mm256_and_si256(_mm256_srli_epi16::<4>(v), m3));
        _mm256_storeu_si256(o.add(96) as *mut __m256i, _mm256_and_si256(_mm256_srli_epi16::<6>(v), m3));
    }
}

/// The leading base-3 digit of each byte: (t·3) >> 8, i.e. (t ≥ 86) + (t ≥ 171).
#[target_feature(enable = "avx2")]
unsafe fn lead_trit256(t: __m256i) -> __m256i {
    // t ^ 0x80 makes the unsigned compares t > 85 and t > 170 signed: x > -43, x > 42.
    let x = _mm256_xor_si256(t, _mm256_set1_epi8(-128));
    let a = _mm256_cmpgt_epi8(x, _mm256_set1_epi8(-43));
    let b = _mm256_cmpgt_epi8(x, _mm256_set1_epi8(42));
    _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), a), b)
}

#[target_feature(enable = "avx2")]
unsafe fn lead_trit128(t: __m128i) -> __m128i {
    let x = _mm_xor_si128(t, _mm_set1_epi8(-128));
    let a = _mm_cmpgt_epi8(x, _mm_set1_epi8(-43));
    let b = _mm_cmpgt_epi8(x, _mm_set1_epi8(42));
    _mm_sub_epi8(_mm_sub_epi8(_mm_setzero_si128(), a), b)
}

#[target_feature(enable = "avx2")]
unsafe fn decode_tq1_avx2(p: *const u8, out: *mut u8) {
    // qs[0..32]: byte m holds elements m + 32n, n = 0..5, most significant first.
    let mut t = _mm256_loadu_si256(p as *const __m256i);
    for n in 0..5 {
        if n > 0 {
            t = _mm256_add_epi8(_mm256_add_epi8(t, t), t); // ×3 mod 256 shifts the next digit up
        }
        _mm256_storeu_si256(out.add(n * 32) as *mut __m256i, lead_trit256(t));
    }
    // qs[32..48]: byte m holds elements 160 + m + 16n.
    let mut t = _mm_loadu_si128(p.add(32) as *const __m128i);
    for n in 0..5 {
        if n > 0 {
            t = _mm_add_epi8(_mm_add_epi8(t, t), t);
        }
        _mm_storeu_si128(out.add(160 + n * 16) as *mut __m128i, lead_trit128(t));
    }
    // qh[0..4]: byte j holds elements 240 + j + 4m, m = 0..4. Lane 4m + j gets qh[j]·3^m
    // (mod 256, in 16-bit lanes), then its leading digit (x·3) >> 8.
    let qh = _mm_set1_epi32(i32::from_le_bytes([*p.add(48), *p.add(49), *p.add(50), *p.add(51)]));
    let pow = _mm256_setr_epi16(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27);
    let t = _mm256_and_si256(_mm256_mullo_epi16(_mm256_cvtepu8_epi16(qh), pow), _mm256_set1_epi16(0xff));
    let d = _mm256_srli_epi16::<8>(_mm256_mullo_epi16(t, _mm256_set1_epi16(3)));
    let packed = _mm_packus_epi16(_mm256_castsi256_si128(d), _mm256_extracti128_si256::<1>(d));
    _mm_storeu_si128(out.add(240) as *mut __m128i, packed);
}

/// Sum each of four vectors' 8 lanes: `[Σa0, Σa1, Σa2, Σa3]`.
#[target_feature(enable = "avx2")]
unsafe fn reduce4_256(a0: __m256i, a1: __m256i, a2: __m256i, a3: __m256i) -> __m128i {
    let t01 = _mm256_hadd_epi32(a0, a1);
    let t23 = _mm256_hadd_epi32(a2, a3);
    let t = _mm256_hadd_epi32(t01, t23);
    _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t))
}

/// `acc + (dw4 · da) · isum4` lane by lane, `isum4` corrected by the block's Σa.
#[target_feature(enable = "avx2")]
unsafe fn block_step(acc: __m128, dw4: __m128, ab: *const u8, isum4: __m128i) -> __m128 {
    // SAFETY (of the reads): `ab` points at a whole Q8_K block (caller's contract).
    let blk = std::slice::from_raw_parts(ab, Q8_K_BYTES);
    let suma = crate::formats::q8k_sum(blk);
    let da = crate::formats::q8k_scale(blk);
    let isum = _mm_sub_epi32(isum4, _mm_set1_epi32(suma));
    let s = _mm_mul_ps(dw4, _mm_set1_ps(da));
    _mm_add_ps(acc, _mm_mul_ps(s, _mm_cvtepi32_ps(isum)))
}

fn check_tile(codes: &[u8], k: usize, dw: &[f32], acts: &[&[u8]]) {
    let nb = k / QK;
    assert!(codes.len() >= 4 * k && dw.len() >= 4 * nb && (acts.len() == 1 || acts.len() == 4));
    assert!(acts.iter().all(|a| a.len() >= nb * Q8_K_BYTES));
}

pub(crate) fn dot_tile_avx2(codes: &[u8], k: usize, dw: &[f32], acts: &[&[u8]], out: &mut [[f32; 4]; 4]) {
    check_tile(codes, k, dw, acts);
    let nb = k / QK;
    // SAFETY: AVX2 is present (dispatch checked it); check_tile verified that 4 rows of
    // `k` codes, `4·nb` scales and `nb` Q8_K blocks per column are in bounds.
    unsafe {
        if acts.len() == 4 {
            for h in 0..2 {
                let r = tile_avx2::<2>(
                    codes.as_ptr(),
                    k,
                    dw.as_ptr(),
                    [acts[2 * h].as_ptr(), acts[2 * h + 1].as_ptr()],
                    nb,
                );
                out[2 * h] = r[0];
                out[2 * h + 1] = r[1];
            }
        } else {
            out[0] = tile_avx2::<1>(codes.as_ptr(), k, dw.as_ptr(), [acts[0].as_ptr()], nb)[0];
        }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const C: usize>(
    codes: *const u8,
    k: usize,
    dw: *const f32,
    acts: [*const u8; C],
    nb: usize,
) -> [[f32; 4]; C] {
    let ones = _mm256_set1_epi16(1);
    let mut accf = [_mm_setzero_ps(); C];
    for b in 0..nb {
        // i16 lanes: ≤ 8 chunks × 2 products × 2·128 = 4096, no saturation.
        let mut acc = [[_mm256_setzero_si256(); 4]; C];
        for j in 0..8 {
            let mut w = [_mm256_setzero_si256(); 4];
            for (r, wr) in w.iter_mut().enumerate() {
                *wr = _mm256_loadu_si256(codes.add(r * k + b * QK + 32 * j) as *const __m256i);
            }
            for c in 0..C {
                let a = _mm256_loadu_si256(acts[c].add(b * Q8_K_BYTES + 4 + 32 * j) as *const __m256i);
                for r in 0..4 {
                    acc[c][r] = _mm256_add_epi16(acc[c][r], _mm256_maddubs_epi16(w[r], a));
                }
            }
        }
        let dw4 = _mm_loadu_ps(dw.add(b * 4));
        for c in 0..C {
            let i = reduce4_256(
                _mm256_madd_epi16(acc[c][0], ones),
                _mm256_madd_epi16(acc[c][1], ones),
                _mm256_madd_epi16(acc[c][2], ones),
                _mm256_madd_epi16(acc[c][3], ones),
            );
            accf[c] = block_step(accf[c], dw4, acts[c].add(b * Q8_K_BYTES), i);
        }
    }
    let mut out = [[0f32; 4]; C];
    for c in 0..C {
        _mm_storeu_ps(out[c].as_mut_ptr(), accf[c]);
    }
    out
}

pub(crate) fn dot_tile_avx512(codes: &[u8], k: usize, dw: &[f32], acts: &[&[u8]], out: &mut [[f32; 4]; 4]) {
    check_tile(codes, k, dw, acts);
    let nb = k / QK;
    // SAFETY: AVX-512 F/BW/VNNI and AVX2 are present (dispatch checked them); check_tile
    // verified the bounds of every load.
    unsafe {
        if acts.len() == 4 {
            *out = tile_avx512::<4>(
                codes.as_ptr(),
                k,
                dw.as_ptr(),
                [acts[0].as_ptr(), acts[1].as_ptr(), acts[2].as_ptr(), acts[3].as_ptr()],
                nb,
            );
        } else {
            out[0] = tile_avx512::<1>(codes.as_ptr(), k, dw.as_ptr(), [acts[0].as_ptr()], nb)[0];
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn fold512(x: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64::<1>(x))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn tile_avx512<const C: usize>(
    codes: *const u8,
    k: usize,
    dw: *const f32,
    acts: [*const u8; C],
    nb: usize,
) -> [[f32; 4]; C] {
    let mut accf = [_mm_setzero_ps(); C];
    for b in 0..nb {
        let mut acc = [[_mm512_setzero_si512(); 4]; C];
        for j in 0..4 {
            let mut w = [_mm512_setzero_si512(); 4];
            for (r, wr) in w.iter_mut().enumerate() {
                *wr = _mm512_loadu_si512(codes.add(r * k + b * QK + 64 * j) as *const _);
            }
            for c in 0..C {
                let a = _mm512_loadu_si512(acts[c].add(b * Q8_K_BYTES + 4 + 64 * j) as *const _);
                for r in 0..4 {
                    acc[c][r] = _mm512_dpbusd_epi32(acc[c][r], w[r], a);
                }
            }
        }
        let dw4 = _mm_loadu_ps(dw.add(b * 4));
        for c in 0..C {
            let i = reduce4_256(fold512(acc[c][0]), fold512(acc[c][1]), fold512(acc[c][2]), fold512(acc[c][3]));
            accf[c] = block_step(accf[c], dw4, acts[c].add(b * Q8_K_BYTES), i);
        }
    }
    let mut out = [[0f32; 4]; C];
    for c in 0..C {
        _mm_storeu_ps(out[c].as_mut_ptr(), accf[c]);
    }
    out
}

/// Software-prefetch distance of the matrix-vector kernels, in blocks (~17 KB ahead of each
/// row stream; rows are contiguous, so this runs ahead into the next tiles). Measured on a
/// 132 MB TQ2_0 matrix, one thread: 8.7 GB/s without, 31 GB/s with (ggml: 21 GB/s).
const PF_BLOCKS: usize = 256;

/// Matrix-vector for TQ2_0: 4 rows against one Q8_K column, decoding the 2-bit codes in
/// registers (no code buffer). Same arithmetic contract as the tiles.
pub(crate) fn gemv4_tq2(isa: crate::Isa, rows: [&[u8]; 4], act: &[u8], nb: usize) -> [f32; 4] {
    assert!(rows.iter().all(|r| r.len() >= nb * 66) && act.len() >= nb * Q8_K_BYTES);
    let p = [rows[0].as_ptr(), rows[1].as_ptr(), rows[2].as_ptr(), rows[3].as_ptr()];
    // SAFETY: the features were checked by dispatch (AVX-512 path only for Avx512Vnni);
    // the assert above bounds every load.
    unsafe {
        match isa {
            crate::Isa::Avx512Vnni => gemv4_tq2_avx512(p, act.as_ptr(), nb),
            _ => gemv4_tq2_avx2(p, act.as_ptr(), nb),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn gemv4_tq2_avx512(rows: [*const u8; 4], act: *const u8, nb: usize) -> [f32; 4] {
    let m3 = _mm512_set1_epi8(3);
    // 16-bit shift counts: low half of the vector by 0 (or 4), high half by 2 (or 6), so one
    // broadcast of 32 code bytes yields 64 consecutive elements.
    let cnt01 = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
    let cnt23 = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(6));
    let mut accf = _mm_setzero_ps();
    for b in 0..nb {
        let ab = act.add(b * Q8_K_BYTES + 4);
        let mut a = [_mm512_setzero_si512(); 4];
        for (j, aj) in a.iter_mut().enumerate() {
            *aj = _mm512_loadu_si512(ab.add(64 * j) as *const _);
        }
        let mut acc = [_mm512_setzero_si512(); 4];
        for r in 0..4 {
            // Four interleaved row streams defeat the hardware prefetcher on DRAM-sized
            // matrices; ask for the lines PF_BLOCKS blocks ahead (a hint, never faults).
            _mm_prefetch::<_MM_HINT_T0>(rows[r].wrapping_add((b + PF_BLOCKS) * 66) as *const i8);
            for h in 0..2 {
                let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(rows[r].add(b * 66 + 32 * h) as *const __m256i));
                let c01 = _mm512_and_si512(_mm512_srlv_epi16(q, cnt01), m3);
                let c23 = _mm512_and_si512(_mm512_srlv_epi16(q, cnt23), m3);
                acc[r] = _mm512_dpbusd_epi32(acc[r], c01, a[2 * h]);
                acc[r] = _mm512_dpbusd_epi32(acc[r], c23, a[2 * h + 1]);
            }
        }
        let mut dw = [0f32; 4];
        for r in 0..4 {
            dw[r] = block_scale(TernaryType::Tq2_0, std::slice::from_raw_parts(rows[r].add(b * 66), 66));
        }
        let i = reduce4_256(fold512(acc[0]), fold512(acc[1]), fold512(acc[2]), fold512(acc[3]));
        accf = block_step(accf, _mm_loadu_ps(dw.as_ptr()), act.add(b * Q8_K_BYTES), i);
    }
    let mut out = [0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), accf);
    out
}

#[target_feature(enable = "avx2")]
unsafe fn gemv4_tq2_avx2(rows: [*const u8; 4], act: *const u8, nb: usize) -> [f32; 4] {
    let m3 = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut accf = _mm_setzero_ps();
    for b in 0..nb {
        let ab = act.add(b * Q8_K_BYTES + 4);
        let mut acc = [_mm256_setzero_si256(); 4];
        for h in 0..2 {
            let mut a = [_mm256_setzero_si256(); 4];
            for (n, an) in a.iter_mut().enumerate() {
                *an = _mm256_loadu_si256(ab.add(128 * h + 32 * n) as *const __m256i);
            }
            for r in 0..4 {
                if h == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(rows[r].wrapping_add((b + PF_BLOCKS) * 66) as *const i8);
                }
                let v = _mm256_loadu_si256(rows[r].add(b * 66 + 32 * h) as *const __m256i);
                let c0 = _mm256_and_si256(v, m3);
                let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(v), m3);
                let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m3);
                let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(v), m3);
                let s01 = _mm256_add_epi16(_mm256_maddubs_epi16(c0, a[0]), _mm256_maddubs_epi16(c1, a[1]));
                let s23 = _mm256_add_epi16(_mm256_maddubs_epi16(c2, a[2]), _mm256_maddubs_epi16(c3, a[3]));
                acc[r] = _mm256_add_epi16(acc[r], _mm256_add_epi16(s01, s23));
            }
        }
        let mut dw = [0f32; 4];
        for r in 0..4 {
            dw[r] = block_scale(TernaryType::Tq2_0, std::slice::from_raw_parts(rows[r].add(b * 66), 66));
        }
        let i = reduce4_256(
            _mm256_madd_epi16(acc[0], ones),
            _mm256_madd_epi16(acc[1], ones),
            _mm256_madd_epi16(acc[2], ones),
            _mm256_madd_epi16(acc[3], ones),
        );
        accf = block_step(accf, _mm_loadu_ps(dw.as_ptr()), act.add(b * Q8_K_BYTES), i);
    }
    let mut out = [0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), accf);
    out
}
