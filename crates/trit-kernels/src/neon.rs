//! aarch64 paths: plain NEON (`smull`/`smlal` into i16 lanes, widened once per block with
//! `saddlp`) and NEON with the dot-product extension (`sdot`, four i8 products into each i32
//! lane). Callers reach these only after `Isa::check`/`Isa::detect` found the features.
//!
//! Same contract as `scalar.rs` and `x86.rs`: the integer dot products are exact (codes
//! 0..=2 times i8 activations; the i16 lanes of the plain path take at most 32 products of
//! magnitude ≤ 256 per block, |Σ| ≤ 8192), and the per-block float step is done lane by lane
//! with the same operations in the same order (multiply, multiply, add; never fused), so
//! results equal the scalar path bit for bit.
//!
//! `sdot` and the f16→f32 widening (`fcvtl`) are written as inline assembly: their
//! intrinsics (`vdotq_s32`, `vcvt_f32_f16`) are not stable in the pinned Rust yet. Both are
//! single instructions with no side effects (`pure, nomem`), so the compiler still schedules
//! and allocates registers around them.
//!
//! No software prefetch (its intrinsic is unstable too): the matrix-vector kernels read 4
//! row streams front to back, which the prefetchers of current Arm cores follow. Speed on
//! real Arm hardware is not measured yet; the emulated tests prove correctness only.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::formats::{block_scale, ColSums, TernaryType, Q8_K_BYTES, QK};

/// `acc + Σ` of the four i8·i8 products of each 32-bit lane (`sdot v.4s, v.16b, v.16b`).
/// Only called from functions that run where dispatch found `dotprod`.
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a pure register-to-register instruction; its callers run only on CPUs with
    // the dot-product extension (the directive only lets the assembler accept it).
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Four f16 bit patterns widened to f32 (`fcvtl`, exact; part of base ARMv8 SIMD).
#[inline(always)]
unsafe fn cvt_f16x4(h: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: a pure register-to-register instruction every aarch64 CPU has.
    unsafe {
        asm!(
            "fcvtl {o:v}.4s, {i:v}.4h",
            o = lateout(vreg) out,
            i = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// One 16-lane multiply-accumulate step of a block's integer dot product. With `$dot` the
/// accumulator is four i32 lanes (`sdot`); without, it is eight i16 lanes kept in the same
/// register type (`smull` + `smlal2`, two products a lane), widened by `finish!`.
macro_rules! mac {
    ($dot:expr, $acc:expr, $c:expr, $a:expr) => {
        if $dot {
            sdot($acc, $c, $a)
        } else {
            let lo = vmlal_s8(vreinterpretq_s16_s32($acc), vget_low_s8($c), vget_low_s8($a));
            vreinterpretq_s32_s16(vmlal_high_s8(lo, $c, $a))
        }
    };
}

/// A block accumulator of `mac!` as four i32 lanes (pairwise widening for the i16 form).
macro_rules! finish {
    ($dot:expr, $acc:expr) => {
        if $dot {
            $acc
        } else {
            vpaddlq_s16(vreinterpretq_s16_s32($acc))
        }
    };
}

pub(crate) fn decode_row(ty: TernaryType, row: &[u8], codes: &mut [u8], dw: &mut [f32], stride: usize) {
    let bb = ty.block_bytes();
    let nb = codes.len() / QK;
    assert!(codes.len() == nb * QK && row.len() >= nb * bb && (nb == 0 || dw.len() > (nb - 1) * stride));
    for b in 0..nb {
        let blk = &row[b * bb..(b + 1) * bb];
        let out = &mut codes[b * QK..(b + 1) * QK];
        // SAFETY: NEON is present (dispatch checked it); `blk` holds one whole block (`bb`
        // bytes: TQ2_0 reads bytes 0..64, TQ1_0 bytes 0..52) and `out` 256 bytes.
        unsafe {
            match ty {
                TernaryType::Tq2_0 => decode_tq2(blk.as_ptr(), out.as_mut_ptr()),
                TernaryType::Tq1_0 => decode_tq1(blk.as_ptr(), out.as_mut_ptr()),
            }
        }
        dw[b * stride] = block_scale(ty, blk);
    }
}

#[target_feature(enable = "neon")]
unsafe fn decode_tq2(p: *const u8, out: *mut u8) {
    let m3 = vdupq_n_u8(3);
    // Byte m of half h holds elements 128h + 32n + m in bits 2n, 2n + 1.
    for half in 0..2 {
        for s in 0..2 {
            let v = vld1q_u8(p.add(half * 32 + 16 * s));
            let o = out.add(half * 128 + 16 * s);
            vst1q_u8(o, vandq_u8(v, m3));
            vst1q_u8(o.add(32), vandq_u8(vshrq_n_u8::<2>(v), m3));
            vst1q_u8(o.add(64), vandq_u8(vshrq_n_u8::<4>(v), m3));
            vst1q_u8(o.add(96), vshrq_n_u8::<6>(v));
        }
    }
}

/// The leading base-3 digit of each byte: (t·3) >> 8, i.e. (t > 85) + (t > 170).
#[inline(always)]
unsafe fn lead_trit(t: uint8x16_t) -> uint8x16_t {
    // The compares give 0xFF (−1) where true: 0 − m85 − m170 counts them.
    let m85 = vcgtq_u8(t, vdupq_n_u8(85));
    let m170 = vcgtq_u8(t, vdupq_n_u8(170));
    vsubq_u8(vsubq_u8(vdupq_n_u8(0), m85), m170)
}

/// `t·3 mod 256`: moves the next base-3 digit up to the leading place.
#[inline(always)]
unsafe fn times3(t: uint8x16_t) -> uint8x16_t {
    vaddq_u8(vaddq_u8(t, t), t)
}

/// Codes of elements 240..256 of a TQ1_0 block (`qh`, 4 bytes at `p + 48`): byte j holds
/// elements 240 + j + 4m, m = 0..4. Lane 4m + j gets qh[j]·3^m (mod 256), then its leading
/// digit.
#[inline(always)]
unsafe fn tq1_qh_codes(p: *const u8) -> uint8x16_t {
    const POW: [u8; 16] = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];
    let qh = vreinterpretq_u8_u32(vdupq_n_u32(std::ptr::read_unaligned(p.add(48) as *const u32)));
    lead_trit(vmulq_u8(qh, vld1q_u8(POW.as_ptr())))
}

#[target_feature(enable = "neon")]
unsafe fn decode_tq1(p: *const u8, out: *mut u8) {
    // qs[0..32]: byte m holds elements m + 32n, n = 0..5, most significant first.
    for s in 0..2 {
        let mut t = vld1q_u8(p.add(16 * s));
        for n in 0..5 {
            if n > 0 {
                t = times3(t);
            }
            vst1q_u8(out.add(32 * n + 16 * s), lead_trit(t));
        }
    }
    // qs[32..48]: byte m holds elements 160 + m + 16n.
    let mut t = vld1q_u8(p.add(32));
    for n in 0..5 {
        if n > 0 {
            t = times3(t);
        }
        vst1q_u8(out.add(160 + 16 * n), lead_trit(t));
    }
    vst1q_u8(out.add(240), tq1_qh_codes(p));
}

/// `[Σa0, Σa1, Σa2, Σa3]`.
#[inline(always)]
unsafe fn reduce4(a0: int32x4_t, a1: int32x4_t, a2: int32x4_t, a3: int32x4_t) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3))
}

/// `acc + (dw4 · da) · (isum4 − suma)` lane by lane: the contract's per-block float step.
#[inline(always)]
unsafe fn block_step(acc: float32x4_t, dw4: float32x4_t, da: f32, suma: i32, isum4: int32x4_t) -> float32x4_t {
    let isum = vsubq_s32(isum4, vdupq_n_s32(suma));
    let s = vmulq_f32(dw4, vdupq_n_f32(da));
    vaddq_f32(acc, vmulq_f32(s, vcvtq_f32_s32(isum)))
}

fn check_tile(codes: &[u8], k: usize, dw: &[f32], acts: &[&[u8]]) {
    let nb = k / QK;
    assert!(codes.len() >= 4 * k && dw.len() >= 4 * nb && (acts.len() == 1 || acts.len() == 4));
    assert!(acts.iter().all(|a| a.len() >= nb * Q8_K_BYTES));
}

/// 4 decoded rows × 1 or 4 Q8_K columns (the tiled path: prefill, and TQ decode tiles);
/// `cols[c]` holds column `c`'s block scales and sums ([`ColSums`] of `acts[c]`, prepared once
/// per column instead of summed from `bsums` in every tile).
pub(crate) fn dot_tile(
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
    assert!(cols.len() == acts.len() && cols.iter().all(|s| s.da.len() >= nb && s.suma.len() >= nb));
    let (c, d) = (codes.as_ptr(), dw.as_ptr());
    // SAFETY: dispatch checked NEON (and dotprod for NeonDot); check_tile verified that 4
    // rows of `k` codes, `4·nb` scales and `nb` Q8_K blocks per column are in bounds, the
    // assert that every column has `nb` block scales and sums.
    unsafe {
        if acts.len() == 4 {
            let a = [acts[0].as_ptr(), acts[1].as_ptr(), acts[2].as_ptr(), acts[3].as_ptr()];
            let s = [cols[0], cols[1], cols[2], cols[3]];
            *out = match isa {
                crate::Isa::NeonDot => tile_dot::<4>(c, k, d, a, s, nb),
                _ => tile_neon::<4>(c, k, d, a, s, nb),
            };
        } else {
            let a = [acts[0].as_ptr()];
            let r = match isa {
                crate::Isa::NeonDot => tile_dot::<1>(c, k, d, a, [cols[0]], nb),
                _ => tile_neon::<1>(c, k, d, a, [cols[0]], nb),
            };
            out[0] = r[0];
        }
    }
}

macro_rules! tile_kernel {
    ($name:ident, $features:literal, $dot:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name<const C: usize>(
            codes: *const u8,
            k: usize,
            dw: *const f32,
            acts: [*const u8; C],
            cols: [&ColSums; C],
            nb: usize,
        ) -> [[f32; 4]; C] {
            let mut accf = [vdupq_n_f32(0.0); C];
            for b in 0..nb {
                let mut acc = [[vdupq_n_s32(0); 4]; C];
                for j in 0..16 {
                    let mut w = [vdupq_n_s8(0); 4];
                    for r in 0..4 {
                        w[r] = vld1q_s8(codes.add(r * k + b * QK + 16 * j) as *const i8);
                    }
                    for c in 0..C {
                        let a = vld1q_s8(acts[c].add(b * Q8_K_BYTES + 4 + 16 * j) as *const i8);
                        for r in 0..4 {
                            acc[c][r] = mac!($dot, acc[c][r], w[r], a);
                        }
                    }
                }
                let dw4 = vld1q_f32(dw.add(b * 4));
                for c in 0..C {
                    let i = reduce4(
                        finish!($dot, acc[c][0]),
                        finish!($dot, acc[c][1]),
                        finish!($dot, acc[c][2]),
                        finish!($dot, acc[c][3]),
                    );
                    accf[c] = block_step(accf[c], dw4, cols[c].da[b], cols[c].suma[b], i);
                }
            }
            let mut out = [[0f32; 4]; C];
            for c in 0..C {
                vst1q_f32(out[c].as_mut_ptr(), accf[c]);
            }
            out
        }
    };
}

tile_kernel!(tile_dot, "neon,dotprod", true);
tile_kernel!(tile_neon, "neon", false);

/// Matrix-vector: 4 rows against one Q8_K column, decoding the codes in registers (no code
/// buffer). TQ2_0: 16 code bytes shifted by 0/2/4/6 are 4 × 16 consecutive elements.
/// TQ1_0: 16 bytes of `qs` give, digit by digit (×3 mod 256, leading digit), 16
/// consecutive elements each, and `qh` the last 16, so the activations need no
/// rearrangement. Same arithmetic contract as the tiles.
pub(crate) fn gemv4(
    isa: crate::Isa,
    ty: TernaryType,
    rows: [&[u8]; 4],
    act: &[u8],
    cs: &ColSums,
    nb: usize,
) -> [f32; 4] {
    assert!(rows.iter().all(|r| r.len() >= nb * ty.block_bytes()) && act.len() >= nb * Q8_K_BYTES);
    assert!(cs.da.len() >= nb && cs.suma.len() >= nb);
    let p = [rows[0].as_ptr(), rows[1].as_ptr(), rows[2].as_ptr(), rows[3].as_ptr()];
    let (a, da, sa) = (act.as_ptr(), cs.da.as_ptr(), cs.suma.as_ptr());
    // SAFETY: dispatch checked NEON (and dotprod for NeonDot); the asserts bound every load
    // (TQ2_0 reads bytes 0..66 of each block, TQ1_0 bytes 0..54).
    unsafe {
        match (isa, ty) {
            (crate::Isa::NeonDot, TernaryType::Tq2_0) => gemv4_tq2_dot(p, a, da, sa, nb),
            (_, TernaryType::Tq2_0) => gemv4_tq2_neon(p, a, da, sa, nb),
            (crate::Isa::NeonDot, TernaryType::Tq1_0) => gemv4_tq1_dot(p, a, da, sa, nb),
            (_, TernaryType::Tq1_0) => gemv4_tq1_neon(p, a, da, sa, nb),
        }
    }
}

/// The 4 rows' block scales `d` (f16 at byte `off` of block `b`) as f32.
#[inline(always)]
unsafe fn scales4(rows: [*const u8; 4], b: usize, bb: usize) -> float32x4_t {
    let mut d = [0u16; 4];
    for r in 0..4 {
        d[r] = std::ptr::read_unaligned(rows[r].add(b * bb + bb - 2) as *const u16);
    }
    cvt_f16x4(vld1_u16(d.as_ptr()))
}

macro_rules! gemv4_tq2_kernel {
    ($name:ident, $features:literal, $dot:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(rows: [*const u8; 4], act: *const u8, da: *const f32, suma: *const i32, nb: usize) -> [f32; 4] {
            let m3 = vdupq_n_u8(3);
            let mut accf = vdupq_n_f32(0.0);
            for b in 0..nb {
                let ab = act.add(b * Q8_K_BYTES + 4);
                let mut acc = [vdupq_n_s32(0); 4];
                for h in 0..2 {
                    for s in 0..2 {
                        // Elements 128h + 32n + 16s + (0..16), n = 0..4.
                        let mut a = [vdupq_n_s8(0); 4];
                        for n in 0..4 {
                            a[n] = vld1q_s8(ab.add(128 * h + 32 * n + 16 * s) as *const i8);
                        }
                        for r in 0..4 {
                            let v = vld1q_u8(rows[r].add(b * 66 + 32 * h + 16 * s));
                            let c0 = vreinterpretq_s8_u8(vandq_u8(v, m3));
                            let c1 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<2>(v), m3));
                            let c2 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<4>(v), m3));
                            let c3 = vreinterpretq_s8_u8(vshrq_n_u8::<6>(v));
                            acc[r] = mac!($dot, acc[r], c0, a[0]);
                            acc[r] = mac!($dot, acc[r], c1, a[1]);
                            acc[r] = mac!($dot, acc[r], c2, a[2]);
                            acc[r] = mac!($dot, acc[r], c3, a[3]);
                        }
                    }
                }
                let i =
                    reduce4(finish!($dot, acc[0]), finish!($dot, acc[1]), finish!($dot, acc[2]), finish!($dot, acc[3]));
                accf = block_step(accf, scales4(rows, b, 66), *da.add(b), *suma.add(b), i);
            }
            let mut out = [0f32; 4];
            vst1q_f32(out.as_mut_ptr(), accf);
            out
        }
    };
}

gemv4_tq2_kernel!(gemv4_tq2_dot, "neon,dotprod", true);
gemv4_tq2_kernel!(gemv4_tq2_neon, "neon", false);

macro_rules! gemv4_tq1_kernel {
    ($name:ident, $features:literal, $dot:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(rows: [*const u8; 4], act: *const u8, da: *const f32, suma: *const i32, nb: usize) -> [f32; 4] {
            let mut accf = vdupq_n_f32(0.0);
            for b in 0..nb {
                let ab = act.add(b * Q8_K_BYTES + 4);
                let mut a = [vdupq_n_s8(0); 16];
                for j in 0..16 {
                    a[j] = vld1q_s8(ab.add(16 * j) as *const i8);
                }
                let mut acc = [vdupq_n_s32(0); 4];
                for r in 0..4 {
                    let p = rows[r].add(b * 54);
                    // t0, t1: qs[0..16], qs[16..32] (elements 32n + (0..16), 32n + 16 + (0..16));
                    // t2: qs[32..48] (elements 160 + 16n + (0..16)).
                    let (mut t0, mut t1, mut t2) = (vld1q_u8(p), vld1q_u8(p.add(16)), vld1q_u8(p.add(32)));
                    for n in 0..5 {
                        if n > 0 {
                            (t0, t1, t2) = (times3(t0), times3(t1), times3(t2));
                        }
                        acc[r] = mac!($dot, acc[r], vreinterpretq_s8_u8(lead_trit(t0)), a[2 * n]);
                        acc[r] = mac!($dot, acc[r], vreinterpretq_s8_u8(lead_trit(t1)), a[2 * n + 1]);
                        acc[r] = mac!($dot, acc[r], vreinterpretq_s8_u8(lead_trit(t2)), a[10 + n]);
                    }
                    acc[r] = mac!($dot, acc[r], vreinterpretq_s8_u8(tq1_qh_codes(p)), a[15]);
                }
                let i =
                    reduce4(finish!($dot, acc[0]), finish!($dot, acc[1]), finish!($dot, acc[2]), finish!($dot, acc[3]));
                accf = block_step(accf, scales4(rows, b, 54), *da.add(b), *suma.add(b), i);
            }
            let mut out = [0f32; 4];
            vst1q_f32(out.as_mut_ptr(), accf);
            out
        }
    };
}

gemv4_tq1_kernel!(gemv4_tq1_dot, "neon,dotprod", true);
gemv4_tq1_kernel!(gemv4_tq1_neon, "neon", false);

/// f16 mat-vec: one weight row (f16 bits) against one f32 activation row `a` (values
/// exact in f16), with the 64-lane contract of `f16w.rs`: lanes 4q..4q+3 in register q,
/// multiply then add (the products are exact, so this rounds as the scalar path does).
pub(crate) fn dot_f16(row: &[u16], a: &[f32]) -> f32 {
    let k = a.len();
    assert!(row.len() >= k);
    // SAFETY: NEON is present (dispatch checked it); the assert bounds every load to `k`
    // elements of `row` and `a`.
    let (mut s, k64) = unsafe { dot_f16_neon(row.as_ptr(), a.as_ptr(), k) };
    for i in k64..k {
        s += half::f16::from_bits(row[i]).to_f32() * a[i];
    }
    s
}

#[target_feature(enable = "neon")]
unsafe fn dot_f16_neon(w: *const u16, a: *const f32, k: usize) -> (f32, usize) {
    let k64 = k / 64 * 64;
    let mut acc = [vdupq_n_f32(0.0); 16];
    let mut c = 0;
    while c < k64 {
        for q in 0..16 {
            let wq = cvt_f16x4(vld1_u16(w.add(c + 4 * q)));
            acc[q] = vaddq_f32(acc[q], vmulq_f32(wq, vld1q_f32(a.add(c + 4 * q))));
        }
        c += 64;
    }
    // The tree: j + 32 → j (registers q + 8 → q), j + 16 → j, j + 8 → j, j + 4 → j, then
    // within the register j + 2 → j and 1 → 0.
    for half in [8, 4, 2, 1] {
        for q in 0..half {
            acc[q] = vaddq_f32(acc[q], acc[q + half]);
        }
    }
    let s2 = vadd_f32(vget_low_f32(acc[0]), vget_high_f32(acc[0]));
    (vget_lane_f32::<0>(s2) + vget_lane_f32::<1>(s2), k64)
}
