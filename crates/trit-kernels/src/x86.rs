//! x86-64 paths: AVX2 (decode, `vpmaddubsw` tiles), AVX-VNNI (256-bit `vpdpbusd` tiles and
//! TQ2_0 mat-vec) and AVX-512 VNNI (`vpdpbusd` tiles).
//! Callers reach these only after `Isa::check`/`Isa::detect` found the features.
//! Integer dot products are exact, and the per-block float step is done lane by lane with
//! the same operations in the same order as `scalar.rs`, so results equal it bit for bit.

use std::arch::x86_64::*;

use crate::formats::{block_scale, ColSums, TernaryType, Q8_K_BYTES, QK};

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

fn check_tile(codes: &[u8], k: usize, dw: &[f32], acts: &[&[u8]]) {
    let nb = k / QK;
    assert!(codes.len() >= 4 * k && dw.len() >= 4 * nb && (acts.len() == 1 || acts.len() == 4));
    assert!(acts.iter().all(|a| a.len() >= nb * Q8_K_BYTES));
}

/// Blocks whose integer sums a tile computes before it takes their float steps: the
/// integer pass then holds only its accumulators, codes and quants in registers (with the
/// float accumulators beside them, 256-bit tiles spilled one to the stack every block), and
/// the float pass is a short chain over prepared per-column sums.
const TILE_GROUP: usize = 16;

/// Per-column block values for a tile's columns: `da` (block scales) and `suma` (Σ of each
/// block's quants), prepared once per column ([`ColSums`]) instead of read from `bsums`
/// in every tile.
fn col_ptrs<const C: usize>(cols: &[&ColSums], nb: usize) -> ([*const f32; C], [*const i32; C]) {
    assert!(cols.len() == C && cols.iter().all(|s| s.da.len() >= nb && s.suma.len() >= nb));
    (std::array::from_fn(|c| cols[c].da.as_ptr()), std::array::from_fn(|c| cols[c].suma.as_ptr()))
}

/// 4 decoded rows × 1 or 4 columns on 256-bit vectors: AVX2, or AVX-VNNI for `Isa::AvxVnni`.
/// `cols[c]` holds column `c`'s block scales and sums ([`ColSums`] of `acts[c]`).
pub(crate) fn dot_tile_256(
    isa: crate::Isa,
    codes: &[u8],
    k: usize,
    dw: &[f32],
    acts: &[&[u8]],
    cols: &[&ColSums],
    out: &mut [[f32; 4]; 4],
) {
    check_tile(codes, k, dw, acts);
    let nb = k / QK;
    let vnni = isa == crate::Isa::AvxVnni;
    assert!(cols.len() == acts.len());
    // SAFETY: AVX2 is present, and AVX-VNNI for the VNNI variant (dispatch checked them);
    // check_tile verified that 4 rows of `k` codes, `4·nb` scales and `nb` Q8_K blocks per
    // column are in bounds, col_ptrs that every column has `nb` block scales and sums.
    unsafe {
        let c = codes.as_ptr();
        let d = dw.as_ptr();
        if acts.len() == 4 {
            // Two columns at a time keep 8 accumulators and 4 code vectors within 16 registers.
            for h in 0..2 {
                let a = [acts[2 * h].as_ptr(), acts[2 * h + 1].as_ptr()];
                let (da, sa) = col_ptrs::<2>(&cols[2 * h..2 * h + 2], nb);
                let r = if vnni {
                    tile_avxvnni::<2>(c, k, d, a, da, sa, nb)
                } else {
                    tile_avx2::<2>(c, k, d, a, da, sa, nb)
                };
                out[2 * h] = r[0];
                out[2 * h + 1] = r[1];
            }
        } else {
            let a = [acts[0].as_ptr()];
            let (da, sa) = col_ptrs::<1>(cols, nb);
            out[0] =
                if vnni { tile_avxvnni::<1>(c, k, d, a, da, sa, nb) } else { tile_avx2::<1>(c, k, d, a, da, sa, nb) }
                    [0];
        }
    }
}

/// The 256-bit tile, twice: AVX2 sums u8 codes × i8 quants in pairs into i16 lanes
/// (`vpmaddubsw`; ≤ 8 chunks × 2 products × 2·128 = 4096, no saturation) and widens them once
/// per block (`vpmaddwd`); AVX-VNNI sums them in fours straight into i32 lanes (`vpdpbusd`).
/// The same integer sums either way. Blocks go in groups of [`TILE_GROUP`]: the group's
/// integer sums first, then its float steps in block order (the contract's order).
macro_rules! tile_256 {
    ($name:ident, $features:literal, $vnni:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name<const C: usize>(
            codes: *const u8,
            k: usize,
            dw: *const f32,
            acts: [*const u8; C],
            da: [*const f32; C],
            suma: [*const i32; C],
            nb: usize,
        ) -> [[f32; 4]; C] {
            let ones = _mm256_set1_epi16(1);
            let mut accf = [_mm_setzero_ps(); C];
            let mut isums = [[_mm_setzero_si128(); C]; TILE_GROUP];
            let mut b0 = 0;
            while b0 < nb {
                let g = TILE_GROUP.min(nb - b0);
                for (bi, isum) in isums.iter_mut().enumerate().take(g) {
                    let b = b0 + bi;
                    let mut acc = [[_mm256_setzero_si256(); 4]; C];
                    for j in 0..8 {
                        let mut w = [_mm256_setzero_si256(); 4];
                        for (r, wr) in w.iter_mut().enumerate() {
                            *wr = _mm256_loadu_si256(codes.add(r * k + b * QK + 32 * j) as *const __m256i);
                        }
                        for c in 0..C {
                            let a = _mm256_loadu_si256(acts[c].add(b * Q8_K_BYTES + 4 + 32 * j) as *const __m256i);
                            for r in 0..4 {
                                acc[c][r] = if $vnni {
                                    _mm256_dpbusd_avx_epi32(acc[c][r], w[r], a)
                                } else {
                                    _mm256_add_epi16(acc[c][r], _mm256_maddubs_epi16(w[r], a))
                                };
                            }
                        }
                    }
                    for c in 0..C {
                        isum[c] = if $vnni {
                            reduce4_256(acc[c][0], acc[c][1], acc[c][2], acc[c][3])
                        } else {
                            let [a0, a1, a2, a3] = acc[c].map(|x| _mm256_madd_epi16(x, ones));
                            reduce4_256(a0, a1, a2, a3)
                        };
                    }
                }
                for (bi, isum) in isums.iter().enumerate().take(g) {
                    let b = b0 + bi;
                    let dw4 = _mm_loadu_ps(dw.add(b * 4));
                    for c in 0..C {
                        accf[c] = block_step_cs(accf[c], dw4, *da[c].add(b), *suma[c].add(b), isum[c]);
                    }
                }
                b0 += g;
            }
            let mut out = [[0f32; 4]; C];
            for c in 0..C {
                _mm_storeu_ps(out[c].as_mut_ptr(), accf[c]);
            }
            out
        }
    };
}

tile_256!(tile_avx2, "avx2", false);
tile_256!(tile_avxvnni, "avx2,avxvnni", true);

/// 4 decoded rows × 1 or 4 columns on 512-bit vectors; `cols` as for [`dot_tile_256`].
pub(crate) fn dot_tile_avx512(
    codes: &[u8],
    k: usize,
    dw: &[f32],
    acts: &[&[u8]],
    cols: &[&ColSums],
    out: &mut [[f32; 4]; 4],
) {
    check_tile(codes, k, dw, acts);
    let nb = k / QK;
    assert!(cols.len() == acts.len());
    // SAFETY: AVX-512 F/BW/VNNI and AVX2 are present (dispatch checked them); check_tile
    // verified the bounds of every load, col_ptrs those of the column sums.
    unsafe {
        if acts.len() == 4 {
            let (da, sa) = col_ptrs::<4>(cols, nb);
            *out = tile4_avx512(
                codes.as_ptr(),
                k,
                dw.as_ptr(),
                [acts[0].as_ptr(), acts[1].as_ptr(), acts[2].as_ptr(), acts[3].as_ptr()],
                da,
                sa,
                nb,
            );
        } else {
            let (da, sa) = col_ptrs::<1>(cols, nb);
            out[0] = tile_avx512::<1>(codes.as_ptr(), k, dw.as_ptr(), [acts[0].as_ptr()], da, sa, nb)[0];
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn fold512(x: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64::<1>(x))
}

/// Block `b`'s integer products of 4 decoded rows (row `r` at `codes + r·k`) and C Q8_K
/// columns on 512-bit vectors: `acc[c][r]`, 16 lanes whose sum is `Σ code·a` over the block.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn block_acc512<const C: usize>(
    codes: *const u8,
    k: usize,
    acts: [*const u8; C],
    b: usize,
) -> [[__m512i; 4]; C] {
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
    acc
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn tile_avx512<const C: usize>(
    codes: *const u8,
    k: usize,
    dw: *const f32,
    acts: [*const u8; C],
    da: [*const f32; C],
    suma: [*const i32; C],
    nb: usize,
) -> [[f32; 4]; C] {
    // 32 registers hold the accumulators, codes and float sums together: each block's float
    // steps follow its integer sums (grouping them, as the 256-bit tiles do, measured slower).
    let mut accf = [_mm_setzero_ps(); C];
    for b in 0..nb {
        let acc = block_acc512(codes, k, acts, b);
        let dw4 = _mm_loadu_ps(dw.add(b * 4));
        for c in 0..C {
            let i = reduce4_256(fold512(acc[c][0]), fold512(acc[c][1]), fold512(acc[c][2]), fold512(acc[c][3]));
            accf[c] = block_step_cs(accf[c], dw4, *da[c].add(b), *suma[c].add(b), i);
        }
    }
    let mut out = [[0f32; 4]; C];
    for c in 0..C {
        _mm_storeu_ps(out[c].as_mut_ptr(), accf[c]);
    }
    out
}

/// The four sums `Σx, Σy, Σz, Σw` of four vectors' lanes, per 128-bit quarter: lane
/// `4·q + i` of the result holds vector `i`'s lanes `4q..4q+4` summed (integer adds, so in
/// any order the same).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn quarter_sums4(v: [__m512i; 4]) -> __m512i {
    let xy = _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
    let zw = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
    _mm512_add_epi32(_mm512_unpacklo_epi64(xy, zw), _mm512_unpackhi_epi64(xy, zw))
}

/// [`tile_avx512`] for four columns, with the block's 16 sums reduced together: a
/// transposing tree of unpacks and quarter shuffles leaves sum `(c, r)` in lane `4c + r`
/// (~45 operations instead of ~76 for 16 separate 4-row reductions), and the 16 float
/// steps run as one vector — per lane the contract's `acc + (dw·da)·isum`, so the same bits.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn tile4_avx512(
    codes: *const u8,
    k: usize,
    dw: *const f32,
    acts: [*const u8; 4],
    da: [*const f32; 4],
    suma: [*const i32; 4],
    nb: usize,
) -> [[f32; 4]; 4] {
    // Lane 4c + r takes element c of a 4-element vector (the column's value)...
    let by_col = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    let mut accf = _mm512_setzero_ps();
    for b in 0..nb {
        let acc = block_acc512(codes, k, acts, b);
        // Per column c, lane 4q + r: row r's quarter q; then the quarters added up.
        let g = [quarter_sums4(acc[0]), quarter_sums4(acc[1]), quarter_sums4(acc[2]), quarter_sums4(acc[3])];
        let s01 = _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(g[0], g[1]),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(g[0], g[1]),
        );
        let s23 = _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(g[2], g[3]),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(g[2], g[3]),
        );
        let isum = _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(s01, s23),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(s01, s23),
        );
        // ...and lane 4c + r of dw4 row r's block scale.
        let sa = _mm_set_epi32(*suma[3].add(b), *suma[2].add(b), *suma[1].add(b), *suma[0].add(b));
        let d4 = _mm_set_ps(*da[3].add(b), *da[2].add(b), *da[1].add(b), *da[0].add(b));
        let sa = _mm512_permutexvar_epi32(by_col, _mm512_castsi128_si512(sa));
        let d4 = _mm512_permutexvar_ps(by_col, _mm512_castps128_ps512(d4));
        let dw16 = _mm512_broadcast_f32x4(_mm_loadu_ps(dw.add(b * 4)));
        let s = _mm512_mul_ps(dw16, d4);
        let x = _mm512_cvtepi32_ps(_mm512_sub_epi32(isum, sa));
        accf = _mm512_add_ps(accf, _mm512_mul_ps(s, x));
    }
    let mut out = [[0f32; 4]; 4];
    _mm512_storeu_ps(out.as_mut_ptr() as *mut f32, accf);
    out
}

/// Software-prefetch distance of the tiled (prefill) decode of `decode_row`, in blocks.
const PF_BLOCKS: usize = 256;

// The matrix-vector kernels issue no software prefetch: their four rows are four sequential
// streams (`mul_mat_rows` gives each a quarter of a row range), which the hardware
// prefetchers follow. History, one thread on a 132 MB TQ2_0 matrix: with four adjacent rows
// per pass, 8.7 GB/s without and 31 GB/s with a prefetch 256 blocks (~17 KB) ahead (ggml:
// 21 GB/s) on the 2026-11-25 EPYC VM; on the 2026-12-04 EPYC VM (Zen 4, THP on madvise
// only) 8.9 GB/s with it (ggml: 14 GB/s). Four quarter streams there: 21.8 GB/s without,
// 15.8–19.6 with 64–512 blocks ahead.

/// `acc + (dw4 · da) · (isum4 − suma)` lane by lane: the contract's per-block float step.
#[target_feature(enable = "avx2")]
unsafe fn block_step_cs(acc: __m128, dw4: __m128, da: f32, suma: i32, isum4: __m128i) -> __m128 {
    let isum = _mm_sub_epi32(isum4, _mm_set1_epi32(suma));
    let s = _mm_mul_ps(dw4, _mm_set1_ps(da));
    _mm_add_ps(acc, _mm_mul_ps(s, _mm_cvtepi32_ps(isum)))
}

static GFNI_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether the AVX-512 TQ2_0 mat-vec may extract 2-bit codes with GFNI affine transforms.
pub(crate) fn has_gfni() -> bool {
    GFNI_ALLOWED.load(std::sync::atomic::Ordering::Relaxed) && std::arch::is_x86_feature_detected!("gfni")
}

/// Tests only: allow or forbid the GFNI variant (both variants compute identical results).
pub fn set_gfni_allowed(allowed: bool) {
    GFNI_ALLOWED.store(allowed, std::sync::atomic::Ordering::Relaxed);
}

static F16C_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether the AVX2 mat-vecs may convert the 4 rows' f16 block scales with F16C
/// (`Isa::Avx2` does not require it; converted in software instead, the scales cost the
/// AVX2 TQ2_0 mat-vec a third of its speed).
pub(crate) fn has_f16c() -> bool {
    F16C_ALLOWED.load(std::sync::atomic::Ordering::Relaxed) && std::arch::is_x86_feature_detected!("f16c")
}

/// Tests only: allow or forbid the F16C variants (both compute identical results).
pub fn set_f16c_allowed(allowed: bool) {
    F16C_ALLOWED.store(allowed, std::sync::atomic::Ordering::Relaxed);
}

/// Matrix-vector for TQ2_0: 4 rows against one Q8_K column, decoding the 2-bit codes in
/// registers (no code buffer). Same arithmetic contract as the tiles. `gfni` (checked by the
/// caller with [`has_gfni`]) picks the code extraction of the AVX-512 path, which reads the
/// column's quants rearranged by [`tq2_perm_acts`] (`perm`); the 256-bit paths read `act`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemv4_tq2(
    isa: crate::Isa,
    gfni: bool,
    rows: [&[u8]; 4],
    act: &[u8],
    perm: &[u8],
    cs: &ColSums,
    nb: usize,
) -> [f32; 4] {
    assert!(rows.iter().all(|r| r.len() >= nb * 66) && act.len() >= nb * Q8_K_BYTES);
    assert!(cs.da.len() >= nb && cs.suma.len() >= nb);
    assert!(isa != crate::Isa::Avx512Vnni || perm.len() >= nb * TQ2_PERM_BYTES);
    let p = [rows[0].as_ptr(), rows[1].as_ptr(), rows[2].as_ptr(), rows[3].as_ptr()];
    let (da, sa) = (cs.da.as_ptr(), cs.suma.as_ptr());
    // SAFETY: the features were checked by dispatch (AVX-512 path only for Avx512Vnni, the
    // AVX-VNNI one only for AvxVnni, the GFNI variant only where has_gfni said so, the AVX2
    // F16C one only where has_f16c did); the asserts above bound every load.
    unsafe {
        match isa {
            crate::Isa::Avx512Vnni if gfni => gemv4_tq2_avx512_gfni(p, perm.as_ptr(), da, sa, nb),
            crate::Isa::Avx512Vnni => gemv4_tq2_avx512_shift(p, perm.as_ptr(), da, sa, nb),
            crate::Isa::AvxVnni => gemv4_tq2_avxvnni(p, act.as_ptr(), da, sa, nb),
            _ if has_f16c() => gemv4_tq2_avx2_f16c(p, act.as_ptr(), da, sa, nb),
            _ => gemv4_tq2_avx2(p, act.as_ptr(), da, sa, nb),
        }
    }
}

/// Bytes of one block's rearranged activations for the AVX-512 TQ2_0 mat-vec.
pub(crate) const TQ2_PERM_BYTES: usize = 256;

/// A Q8_K column's quants rearranged for the AVX-512 TQ2_0 mat-vec: vector `l` of block `b`
/// holds elements `32l .. 32l + 32` (byte lanes 0–31) and `128 + 32l .. 128 + 32l + 32`
/// (lanes 32–63) — the elements that bits `2l, 2l + 1` of code bytes 0–31 and 32–63 encode.
/// One 64-byte load of a weight block's codes then yields, level by level, 64 codes that
/// line up with these vectors.
pub(crate) fn tq2_perm_acts(act: &[u8], nb: usize) -> Vec<u8> {
    let mut out = vec![0u8; nb * TQ2_PERM_BYTES];
    for b in 0..nb {
        let q = &act[b * Q8_K_BYTES + 4..b * Q8_K_BYTES + 4 + QK];
        for l in 0..4 {
            let o = &mut out[b * TQ2_PERM_BYTES + 64 * l..b * TQ2_PERM_BYTES + 64 * (l + 1)];
            o[..32].copy_from_slice(&q[32 * l..32 * l + 32]);
            o[32..].copy_from_slice(&q[128 + 32 * l..128 + 32 * l + 32]);
        }
    }
    out
}

/// The 4 rows' scales `d` of block `b` (f16, the last 2 bytes of each `ty` block) as f32,
/// converted by F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn scales4_f16c(ty: TernaryType, rows: [*const u8; 4], b: usize) -> __m128 {
    let at = b * ty.block_bytes() + ty.block_bytes() - 2;
    let d = |r: usize| std::ptr::read_unaligned(rows[r].add(at) as *const u16) as i16;
    _mm_cvtph_ps(_mm_setr_epi16(d(0), d(1), d(2), d(3), 0, 0, 0, 0))
}

/// [`scales4_f16c`] converted in software, for AVX2 CPUs without F16C (`Isa::Avx2` does not
/// require it).
#[inline(always)]
unsafe fn scales4_soft(ty: TernaryType, rows: [*const u8; 4], b: usize) -> __m128 {
    let bb = ty.block_bytes();
    let d = |r: usize| block_scale(ty, std::slice::from_raw_parts(rows[r].add(b * bb), bb));
    _mm_setr_ps(d(0), d(1), d(2), d(3))
}

macro_rules! gemv4_tq2_avx512 {
    ($name:ident, $features:literal, $gfni:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(
            rows: [*const u8; 4],
            perm: *const u8,
            da: *const f32,
            suma: *const i32,
            nb: usize,
        ) -> [f32; 4] {
            // A block's 64 code bytes in one load; level l (bits 2l, 2l + 1 of every byte) gives
            // 64 codes, against vector l of the rearranged activations. With GFNI: one affine
            // transform per level, whose 8×8 bit matrix (the same in every qword) moves bits 2l,
            // 2l + 1 to bits 0, 1 (output bit i takes matrix byte 7 − i). Without: a 16-bit
            // shift by 2l (bits 0–1 of each byte then still come from that byte) and & 3.
            // Against the earlier broadcast of 32 code bytes per half, no shuffle per load, and
            // the transforms and products are all that occupy the VNNI unit: 26.9 against 24.5
            // GB/s on one Zen 4 thread, in cache.
            let m3 = _mm512_set1_epi8(3);
            let sel = |l: u32| ((1u64 << (2 * l)) << 56 | (1u64 << (2 * l + 1)) << 48) as i64;
            let g = [0, 1, 2, 3].map(|l| _mm512_set1_epi64(sel(l)));
            let mut accf = _mm_setzero_ps();
            for b in 0..nb {
                let pa = perm.add(b * TQ2_PERM_BYTES);
                let a = [0, 1, 2, 3].map(|l| _mm512_loadu_si512(pa.add(64 * l) as *const _));
                let mut acc = [_mm512_setzero_si512(); 4];
                for r in 0..4 {
                    let q = _mm512_loadu_si512(rows[r].add(b * 66) as *const _);
                    let codes: [__m512i; 4] = if $gfni {
                        [0, 1, 2, 3].map(|l| _mm512_gf2p8affine_epi64_epi8::<0>(q, g[l]))
                    } else {
                        [
                            _mm512_and_si512(q, m3),
                            _mm512_and_si512(_mm512_srli_epi16::<2>(q), m3),
                            _mm512_and_si512(_mm512_srli_epi16::<4>(q), m3),
                            _mm512_and_si512(_mm512_srli_epi16::<6>(q), m3),
                        ]
                    };
                    for l in 0..4 {
                        acc[r] = _mm512_dpbusd_epi32(acc[r], codes[l], a[l]);
                    }
                }
                let i = reduce4_256(fold512(acc[0]), fold512(acc[1]), fold512(acc[2]), fold512(acc[3]));
                accf = block_step_cs(accf, scales4_f16c(TernaryType::Tq2_0, rows, b), *da.add(b), *suma.add(b), i);
            }
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), accf);
            out
        }
    };
}

// The same kernel twice: GFNI code extraction where the CPU has it, shifts elsewhere (each
// function enables only the features its CPUs have).
gemv4_tq2_avx512!(gemv4_tq2_avx512_gfni, "avx512f,avx512bw,avx512vnni,avx2,f16c,gfni", true);
gemv4_tq2_avx512!(gemv4_tq2_avx512_shift, "avx512f,avx512bw,avx512vnni,avx2,f16c", false);

/// The 4-row passes over `len` rows from row `start` of a matrix at `base` (rows `stride`
/// bytes apart), `pass` computing each: pass i takes row i of each quarter (see
/// `mul_mat_rows`), and `out[r]` gets row `start + r`'s result. The range functions below
/// run all of a range's passes in one call instead of one call per pass, which keeps the
/// per-pass slicing, checks and ISA dispatch out of the loop (decode runs ~400 passes of
/// ~10 blocks per matrix; single thread, 2B-4T's shapes: 4-5% faster).
///
/// # Safety
/// Rows `start .. start + len` at `base` and `out[..len]` are valid for what `pass` reads
/// and for writes.
#[inline(always)]
unsafe fn quarter_passes(
    base: *const u8,
    stride: usize,
    start: usize,
    len: usize,
    out: *mut f32,
    mut pass: impl FnMut([*const u8; 4]) -> [f32; 4],
) {
    let q = len.div_ceil(4);
    for i in 0..q {
        let rows: [*const u8; 4] = std::array::from_fn(|j| base.add((start + (i + j * q).min(len - 1)) * stride));
        let v = pass(rows);
        for (j, &x) in v.iter().enumerate() {
            if i + j * q < len {
                *out.add(i + j * q) = x;
            }
        }
    }
}

macro_rules! gemv_tq2_range_avx512 {
    ($name:ident, $pass:ident, $features:literal) => {
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            base: *const u8,
            stride: usize,
            start: usize,
            len: usize,
            perm: *const u8,
            da: *const f32,
            suma: *const i32,
            nb: usize,
            out: *mut f32,
        ) {
            quarter_passes(base, stride, start, len, out, |rows| $pass(rows, perm, da, suma, nb));
        }
    };
}

gemv_tq2_range_avx512!(gemv_tq2_range_avx512_gfni, gemv4_tq2_avx512_gfni, "avx512f,avx512bw,avx512vnni,avx2,f16c,gfni");
gemv_tq2_range_avx512!(gemv_tq2_range_avx512_shift, gemv4_tq2_avx512_shift, "avx512f,avx512bw,avx512vnni,avx2,f16c");

/// [`gemv4_tq2`]'s AVX-512 passes over the `out.len()` rows from `start` in one call
/// (`out[r]` = row `start + r` against the one column whose quants [`tq2_perm_acts`]
/// rearranged into `perm`). Only for Isa::Avx512Vnni.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemv_tq2_range(
    gfni: bool,
    data: &[u8],
    stride: usize,
    start: usize,
    perm: &[u8],
    cs: &ColSums,
    nb: usize,
    out: &mut [f32],
) {
    let len = out.len();
    if len == 0 {
        return;
    }
    assert!(stride >= nb * 66 && data.len() >= (start + len - 1) * stride + nb * 66);
    assert!(perm.len() >= nb * TQ2_PERM_BYTES && cs.da.len() >= nb && cs.suma.len() >= nb);
    let (p, a, da, sa, o) = (data.as_ptr(), perm.as_ptr(), cs.da.as_ptr(), cs.suma.as_ptr(), out.as_mut_ptr());
    // SAFETY: only called for Isa::Avx512Vnni (features checked by dispatch; GFNI by the
    // caller through has_gfni); the asserts bound every row (start .. start + len) and the
    // column's reads; out has len elements.
    unsafe {
        if gfni {
            gemv_tq2_range_avx512_gfni(p, stride, start, len, a, da, sa, nb, o);
        } else {
            gemv_tq2_range_avx512_shift(p, stride, start, len, a, da, sa, nb, o);
        }
    }
}

/// The 256-bit TQ2_0 mat-vec. With `$vnni` (AVX-VNNI) `vpdpbusd` sums the 2-bit codes (u8)
/// times the quants (i8) in fours into i32 lanes directly; without, `vpmaddubsw` pairs them
/// into i16 lanes (≤ 4096 a block, exact) and one `vpmaddwd` widens them per block.
macro_rules! gemv4_tq2_256 {
    ($name:ident, $features:literal, $vnni:literal, $f16c:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(rows: [*const u8; 4], act: *const u8, da: *const f32, suma: *const i32, nb: usize) -> [f32; 4] {
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
                        let v = _mm256_loadu_si256(rows[r].add(b * 66 + 32 * h) as *const __m256i);
                        let c0 = _mm256_and_si256(v, m3);
                        let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(v), m3);
                        let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m3);
                        let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(v), m3);
                        if $vnni {
                            acc[r] = _mm256_dpbusd_avx_epi32(acc[r], c0, a[0]);
                            acc[r] = _mm256_dpbusd_avx_epi32(acc[r], c1, a[1]);
                            acc[r] = _mm256_dpbusd_avx_epi32(acc[r], c2, a[2]);
                            acc[r] = _mm256_dpbusd_avx_epi32(acc[r], c3, a[3]);
                        } else {
                            let s01 = _mm256_add_epi16(_mm256_maddubs_epi16(c0, a[0]), _mm256_maddubs_epi16(c1, a[1]));
                            let s23 = _mm256_add_epi16(_mm256_maddubs_epi16(c2, a[2]), _mm256_maddubs_epi16(c3, a[3]));
                            acc[r] = _mm256_add_epi16(acc[r], _mm256_add_epi16(s01, s23));
                        }
                    }
                }
                let dw4 = if $f16c {
                    scales4_f16c(TernaryType::Tq2_0, rows, b)
                } else {
                    scales4_soft(TernaryType::Tq2_0, rows, b)
                };
                if !$vnni {
                    for a in acc.iter_mut() {
                        *a = _mm256_madd_epi16(*a, ones);
                    }
                }
                let i = reduce4_256(acc[0], acc[1], acc[2], acc[3]);
                accf = block_step_cs(accf, dw4, *da.add(b), *suma.add(b), i);
            }
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), accf);
            out
        }
    };
}

// AVX-VNNI CPUs have F16C; plain AVX2 scales by F16C where the CPU has it (all AVX2 CPUs
// made so far), in software elsewhere.
gemv4_tq2_256!(gemv4_tq2_avxvnni, "avx2,avxvnni,f16c", true, true);
gemv4_tq2_256!(gemv4_tq2_avx2_f16c, "avx2,f16c", false, true);
gemv4_tq2_256!(gemv4_tq2_avx2, "avx2", false, false);

/// f16 mat-vec: one weight row (f16 bits) against one f32 activation row `a` (values
/// exact in f16), with the 64-lane contract of `f16w.rs`. Rows are read front to back, one
/// after the other, so a thread's chunk is one sequential stream; `pf` (elements) is how
/// far ahead of each load the prefetch asks for a line (0: no software prefetch).
pub(crate) fn dot_f16(isa: crate::Isa, row: &[u16], a: &[f32], pf: usize) -> f32 {
    let k = a.len();
    assert!(row.len() >= k);
    // SAFETY: dispatch checked the features (AVX-512 F only for Avx512Vnni, F16C for Avx2
    // via f16w::effective); the assert bounds every load to `k` elements of `row` and `a`.
    let (mut s, k64) = unsafe {
        match isa {
            crate::Isa::Avx512Vnni => dot_f16_avx512(row.as_ptr(), a.as_ptr(), k, pf),
            _ => dot_f16_avx2(row.as_ptr(), a.as_ptr(), k, pf),
        }
    };
    for i in k64..k {
        s += half::f16::from_bits(row[i]).to_f32() * a[i];
    }
    s
}

/// The first `4·q` rows of `w` (f16 bits, row `r` at element `r·stride`) against one
/// activation row `a`, four at a time: pass `i` takes rows `i`, `q + i`, `2q + i` and
/// `3q + i`, so the four quarters are four sequential streams, which a Zen 4 core's
/// prefetchers keep busier than one (2B-4T's head on 2 threads: 8–15% more GB/s).
/// `store(r, v)` gets row `r`'s sum, bit for bit what [`dot_f16`] gives for it (the same
/// four 16-lane accumulators per row, the same tree, the same tail). AVX-512 only (16
/// accumulators need its 32 registers): only where [`has_dot4_f16`] says so.
pub(crate) fn dot4_f16_quarters(w: &[u16], stride: usize, q: usize, a: &[f32], mut store: impl FnMut(usize, f32)) {
    let k = a.len();
    assert!(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("f16c"));
    assert!(stride >= k && (q == 0 || w.len() >= (4 * q - 1) * stride + k));
    // SAFETY: the asserts: AVX-512 F and F16C present (AVX2 and FMA with them on every
    // AVX-512 CPU); rows below 4q lie within `w`, and `a` holds `k` elements.
    unsafe { quarters_avx512(w.as_ptr(), stride, q, a.as_ptr(), k, &mut store) }
}

/// Whether `dot4_f16_quarters` runs for `isa` (the AVX-512 level).
pub(crate) fn has_dot4_f16(isa: crate::Isa) -> bool {
    isa == crate::Isa::Avx512Vnni
}

#[target_feature(enable = "avx512f,avx2,f16c,fma")]
unsafe fn quarters_avx512(
    w: *const u16,
    stride: usize,
    q: usize,
    a: *const f32,
    k: usize,
    store: &mut impl FnMut(usize, f32),
) {
    for i in 0..q {
        let rows = [i, q + i, 2 * q + i, 3 * q + i];
        let ptrs = [w.add(rows[0] * stride), w.add(rows[1] * stride), w.add(rows[2] * stride), w.add(rows[3] * stride)];
        let (s, k64) = dot4_f16_avx512(ptrs, a, k);
        for j in 0..4 {
            let mut v = s[j];
            for e in k64..k {
                v += half::f16::from_bits(*ptrs[j].add(e)).to_f32() * *a.add(e);
            }
            store(rows[j], v);
        }
    }
}

#[target_feature(enable = "avx512f,avx2,f16c,fma")]
unsafe fn dot4_f16_avx512(w: [*const u16; 4], a: *const f32, k: usize) -> ([f32; 4], usize) {
    let k64 = k / 64 * 64;
    // acc[r][q]: lanes 16q..16q+15 of row r's 64-lane accumulator, as in dot_f16_avx512.
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    let mut c = 0;
    while c < k64 {
        for q in 0..4 {
            let aq = _mm512_loadu_ps(a.add(c + 16 * q));
            for (r, accr) in acc.iter_mut().enumerate() {
                let wq = _mm512_cvtph_ps(_mm256_loadu_si256(w[r].add(c + 16 * q) as *const __m256i));
                accr[q] = _mm512_fmadd_ps(wq, aq, accr[q]);
            }
        }
        c += 64;
    }
    let folded = [fold64_avx512(&acc[0]), fold64_avx512(&acc[1]), fold64_avx512(&acc[2]), fold64_avx512(&acc[3])];
    (folded, k64)
}

/// Lanes 0–7 of a 64-lane accumulator already folded down to 8: finish the tree.
#[target_feature(enable = "avx2")]
unsafe fn finish8(s8: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)))
}

#[target_feature(enable = "avx512f,avx2,f16c,fma")]
unsafe fn dot_f16_avx512(w: *const u16, a: *const f32, k: usize, pf: usize) -> (f32, usize) {
    let k64 = k / 64 * 64;
    // Lanes 16q..16q+15 of the 64-lane accumulator in acc[q].
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut c = 0;
    while c < k64 {
        // Two 64-byte lines per 64 elements; hints, never fault (pf 0: none).
        if pf > 0 {
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(pf + c) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(pf + c + 32) as *const i8);
        }
        for (q, aq) in acc.iter_mut().enumerate() {
            let wq = _mm512_cvtph_ps(_mm256_loadu_si256(w.add(c + 16 * q) as *const __m256i));
            *aq = _mm512_fmadd_ps(wq, _mm512_loadu_ps(a.add(c + 16 * q)), *aq);
        }
        c += 64;
    }
    (fold64_avx512(&acc), k64)
}

/// A 64-lane accumulator held as four 16-lane registers, folded with the contract's tree:
/// j + 32 → j, then j + 16 → j, then [`finish8`].
#[target_feature(enable = "avx512f,avx2")]
unsafe fn fold64_avx512(acc: &[__m512; 4]) -> f32 {
    let s16 = _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
    let lo = _mm512_castps512_ps256(s16);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s16)));
    finish8(_mm256_add_ps(lo, hi))
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn dot_f16_avx2(w: *const u16, a: *const f32, k: usize, pf: usize) -> (f32, usize) {
    let k64 = k / 64 * 64;
    // Lanes 8q..8q+7 of the 64-lane accumulator in acc[q]. No FMA needed: the products are
    // exact, so multiply-then-add rounds exactly as the fused form.
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut c = 0;
    while c < k64 {
        if pf > 0 {
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(pf + c) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(pf + c + 32) as *const i8);
        }
        for (q, aq) in acc.iter_mut().enumerate() {
            let wq = _mm256_cvtph_ps(_mm_loadu_si128(w.add(c + 8 * q) as *const __m128i));
            *aq = _mm256_add_ps(*aq, _mm256_mul_ps(wq, _mm256_loadu_ps(a.add(c + 8 * q))));
        }
        c += 64;
    }
    // j + 32 → j (acc[q] + acc[q + 4]), j + 16 → j, j + 8 → j.
    let s = |q: usize| _mm256_add_ps(acc[q], acc[q + 4]);
    let s16 = [_mm256_add_ps(s(0), s(2)), _mm256_add_ps(s(1), s(3))];
    (finish8(_mm256_add_ps(s16[0], s16[1])), k64)
}

/// Bytes of one block's permuted activations for the TQ1_0 mat-vec: 5 vectors of 64.
pub(crate) const TQ1_PERM_BYTES: usize = 5 * 64;

/// A Q8_K column's quants rearranged for the AVX-512 TQ1_0 mat-vec: vector `n` of block `b`
/// holds, in byte lane `L`, the activation of the element that base-3 digit `n` of weight
/// byte `L` encodes (lanes 0–31: `qs[0..32]`, elements `L + 32n`; lanes 32–47:
/// `qs[32..48]`, elements `160 + (L − 32) + 16n`; lanes 48–51: `qh`, elements
/// `240 + (L − 48) + 4n` for `n < 4`), and 0 in every other lane. One 52-byte load of a
/// weight block then yields, digit by digit, codes that line up with these vectors.
pub(crate) fn tq1_perm_acts(act: &[u8], nb: usize) -> Vec<u8> {
    let mut out = vec![0u8; nb * TQ1_PERM_BYTES];
    for b in 0..nb {
        let q = &act[b * Q8_K_BYTES + 4..b * Q8_K_BYTES + 4 + QK];
        for n in 0..5 {
            let o = &mut out[b * TQ1_PERM_BYTES + 64 * n..b * TQ1_PERM_BYTES + 64 * (n + 1)];
            o[..32].copy_from_slice(&q[32 * n..32 * n + 32]);
            o[32..48].copy_from_slice(&q[160 + 16 * n..160 + 16 * n + 16]);
            if n < 4 {
                o[48..52].copy_from_slice(&q[240 + 4 * n..240 + 4 * n + 4]);
            }
        }
    }
    out
}

/// Matrix-vector for TQ1_0 on AVX-512: 4 rows against one column whose activations were
/// rearranged by [`tq1_perm_acts`], decoding base-3 digits in registers (no code buffer).
/// Same arithmetic contract as the tiles.
pub(crate) fn gemv4_tq1_avx512(rows: [&[u8]; 4], act: &[u8], perm: &[u8], cs: &ColSums, nb: usize) -> [f32; 4] {
    assert!(rows.iter().all(|r| r.len() >= nb * 54) && act.len() >= nb * Q8_K_BYTES);
    assert!(perm.len() >= nb * TQ1_PERM_BYTES && cs.da.len() >= nb && cs.suma.len() >= nb);
    let p = [rows[0].as_ptr(), rows[1].as_ptr(), rows[2].as_ptr(), rows[3].as_ptr()];
    // SAFETY: only called for Isa::Avx512Vnni (features checked by dispatch); the asserts
    // bound every load (the weight loads are masked to each block's 52 code bytes).
    unsafe { gemv4_tq1_avx512_impl(p, perm.as_ptr(), cs.da.as_ptr(), cs.suma.as_ptr(), nb) }
}

/// [`gemv4_tq1_avx512`]'s passes over the `out.len()` rows from `start` of a matrix in `data`
/// (rows `stride` bytes apart) in one call (see [`quarter_passes`]). Only for Isa::Avx512Vnni.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemv_tq1_range(
    data: &[u8],
    stride: usize,
    start: usize,
    perm: &[u8],
    cs: &ColSums,
    nb: usize,
    out: &mut [f32],
) {
    let len = out.len();
    if len == 0 {
        return;
    }
    assert!(stride >= nb * 54 && data.len() >= (start + len - 1) * stride + nb * 54);
    assert!(perm.len() >= nb * TQ1_PERM_BYTES && cs.da.len() >= nb && cs.suma.len() >= nb);
    // SAFETY: only called for Isa::Avx512Vnni (features checked by dispatch); the asserts
    // bound every row of the range and the column's reads; out has len elements.
    unsafe { gemv_tq1_range_avx512_impl(data.as_ptr(), stride, start, len, perm.as_ptr(), cs, nb, out.as_mut_ptr()) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_tq1_range_avx512_impl(
    base: *const u8,
    stride: usize,
    start: usize,
    len: usize,
    perm: *const u8,
    cs: &ColSums,
    nb: usize,
    out: *mut f32,
) {
    let (da, suma) = (cs.da.as_ptr(), cs.suma.as_ptr());
    quarter_passes(base, stride, start, len, out, |rows| gemv4_tq1_avx512_impl(rows, perm, da, suma, nb));
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
unsafe fn gemv4_tq1_avx512_impl(
    rows: [*const u8; 4],
    perm: *const u8,
    da: *const f32,
    suma: *const i32,
    nb: usize,
) -> [f32; 4] {
    // Digit n of a weight byte t is the leading base-3 digit d_n = ⌊3·v_n / 256⌋ of
    // v_n = t·3ⁿ mod 256, and v_{n+1} = 3·v_n mod 256 = 3·v_n − 256·d_n. So, element by
    // element, 256·d_n·a_n = 3·v_n·a_n − v_{n+1}·a_n: two u8 × i8 products of bytes the
    // ×3 chain yields anyway, with no compare or select to form the digit. `acc` sums
    // v_n·a_n and `nxt` v_{n+1}·a_n over the block's digits (exact i32; per lane at most
    // 5·4·255·128 each), and (3·acc − nxt) / 256 is Σ d·a exactly.
    const CODE_BYTES: __mmask64 = (1 << 52) - 1;
    let times3 = |t: __m512i| _mm512_add_epi8(t, _mm512_add_epi8(t, t));
    let mut accf = _mm_setzero_ps();
    for b in 0..nb {
        let pa = perm.add(b * TQ1_PERM_BYTES);
        let a = [0, 1, 2, 3, 4].map(|n| _mm512_loadu_si512(pa.add(64 * n) as *const _));
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut nxt = [_mm512_setzero_si512(); 4];
        for r in 0..4 {
            let mut t = _mm512_maskz_loadu_epi8(CODE_BYTES, rows[r].add(b * 54) as *const i8);
            acc[r] = _mm512_dpbusd_epi32(acc[r], t, a[0]);
            for n in 1..5 {
                t = times3(t);
                nxt[r] = _mm512_dpbusd_epi32(nxt[r], t, a[n - 1]);
                acc[r] = _mm512_dpbusd_epi32(acc[r], t, a[n]);
            }
            nxt[r] = _mm512_dpbusd_epi32(nxt[r], times3(t), a[4]);
        }
        let lin = |r: usize| _mm512_sub_epi32(_mm512_add_epi32(acc[r], _mm512_add_epi32(acc[r], acc[r])), nxt[r]);
        let i = _mm_srai_epi32::<8>(reduce4_256(fold512(lin(0)), fold512(lin(1)), fold512(lin(2)), fold512(lin(3))));
        let d = |r: usize| std::ptr::read_unaligned(rows[r].add(b * 54 + 52) as *const u16) as i16;
        let dw4 = _mm_cvtph_ps(_mm_setr_epi16(d(0), d(1), d(2), d(3), 0, 0, 0, 0));
        accf = block_step_cs(accf, dw4, *da.add(b), *suma.add(b), i);
    }
    let mut out = [0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), accf);
    out
}

/// Matrix-vector for TQ1_0 on 256-bit vectors (AVX2, or AVX-VNNI): the AVX-512 kernel's
/// scheme in two halves per digit: the 32 `qs` bytes, and the 16 further `qs` bytes with the
/// 4 `qh` bytes. Activations rearranged by [`tq1_perm_acts`]; same arithmetic contract.
pub(crate) fn gemv4_tq1_256(
    isa: crate::Isa,
    rows: [&[u8]; 4],
    act: &[u8],
    perm: &[u8],
    cs: &ColSums,
    nb: usize,
) -> [f32; 4] {
    assert!(rows.iter().all(|r| r.len() >= nb * 54) && act.len() >= nb * Q8_K_BYTES);
    assert!(perm.len() >= nb * TQ1_PERM_BYTES && cs.da.len() >= nb && cs.suma.len() >= nb);
    let p = [rows[0].as_ptr(), rows[1].as_ptr(), rows[2].as_ptr(), rows[3].as_ptr()];
    let (pa, da, sa) = (perm.as_ptr(), cs.da.as_ptr(), cs.suma.as_ptr());
    // SAFETY: dispatch checked the features (the VNNI variant only for AvxVnni, whose CPUs
    // have F16C; the AVX2 F16C variant only where has_f16c said so; AVX2 for the other);
    // the asserts bound every load (each block's loads stay in its 54 bytes).
    unsafe {
        match isa {
            crate::Isa::AvxVnni => gemv4_tq1_avxvnni(p, pa, da, sa, nb),
            _ if has_f16c() => gemv4_tq1_avx2_f16c(p, pa, da, sa, nb),
            _ => gemv4_tq1_avx2(p, pa, da, sa, nb),
        }
    }
}

macro_rules! gemv4_tq1_256 {
    ($name:ident, $features:literal, $vnni:literal, $f16c:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(
            rows: [*const u8; 4],
            perm: *const u8,
            da: *const f32,
            suma: *const i32,
            nb: usize,
        ) -> [f32; 4] {
            let ones = _mm256_set1_epi16(1);
            let (flip, lo, hi) = (_mm256_set1_epi8(-128), _mm256_set1_epi8(-43), _mm256_set1_epi8(42));
            // The leading digit of t = x + 128: (t > 85) + (t > 170) = (x > −43) + (x > 42).
            let lead = |x: __m256i| {
                _mm256_sub_epi8(
                    _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_cmpgt_epi8(x, lo)),
                    _mm256_cmpgt_epi8(x, hi),
                )
            };
            let mut accf = _mm_setzero_ps();
            for b in 0..nb {
                let pa = perm.add(b * TQ1_PERM_BYTES);
                // AVX2: i16 lanes hold ≤ 10 sums of 2 products of 2·128, far from saturating.
                let mut acc = [_mm256_setzero_si256(); 4];
                for r in 0..4 {
                    let row = rows[r].add(b * 54);
                    let qh = std::ptr::read_unaligned(row.add(48) as *const i32);
                    // Work on x = t ^ 0x80 = t − 128: then 3t − 128 ≡ 3x (mod 256), so the digit
                    // step stays ×3 and the signed compares need no flip per digit.
                    let mut t0 = _mm256_xor_si256(_mm256_loadu_si256(row as *const __m256i), flip);
                    let t1 = _mm256_set_m128i(_mm_cvtsi32_si128(qh), _mm_loadu_si128(row.add(32) as *const __m128i));
                    let mut t1 = _mm256_xor_si256(t1, flip);
                    for n in 0..5 {
                        if n > 0 {
                            t0 = _mm256_add_epi8(t0, _mm256_add_epi8(t0, t0)); // ×3 mod 256: next digit up
                            t1 = _mm256_add_epi8(t1, _mm256_add_epi8(t1, t1));
                        }
                        let a0 = _mm256_loadu_si256(pa.add(64 * n) as *const __m256i);
                        let a1 = _mm256_loadu_si256(pa.add(64 * n + 32) as *const __m256i);
                        if $vnni {
                            acc[r] = _mm256_dpbusd_avx_epi32(acc[r], lead(t0), a0);
                            acc[r] = _mm256_dpbusd_avx_epi32(acc[r], lead(t1), a1);
                        } else {
                            let s = _mm256_add_epi16(
                                _mm256_maddubs_epi16(lead(t0), a0),
                                _mm256_maddubs_epi16(lead(t1), a1),
                            );
                            acc[r] = _mm256_add_epi16(acc[r], s);
                        }
                    }
                    if !$vnni {
                        acc[r] = _mm256_madd_epi16(acc[r], ones);
                    }
                }
                let dw4 = if $f16c {
                    scales4_f16c(TernaryType::Tq1_0, rows, b)
                } else {
                    scales4_soft(TernaryType::Tq1_0, rows, b)
                };
                let i = reduce4_256(acc[0], acc[1], acc[2], acc[3]);
                accf = block_step_cs(accf, dw4, *da.add(b), *suma.add(b), i);
            }
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), accf);
            out
        }
    };
}

gemv4_tq1_256!(gemv4_tq1_avx2, "avx2", false, false);
gemv4_tq1_256!(gemv4_tq1_avx2_f16c, "avx2,f16c", false, true);
gemv4_tq1_256!(gemv4_tq1_avxvnni, "avx2,avxvnni,f16c", true, true);
