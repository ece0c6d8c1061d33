#version 450
// OUT_PROD: dst[i0, i1, i2, i3] = sum_k A[i0, k, i2/r2, i3/r3] * B[i1, k, i2, i3]
// (A: [ne0, K], B: [ne1, K]; r2, r3 = broadcast ratios of A over dims 2 and 3).
// For a frozen weight W ([n_in, n_out] in ggml order) and an output gradient dY this is
// dX = W^T dY, read straight from the packed ternary blocks: A_TQ2 / A_TQ1 decode each k slice
// of the tile into shared memory, never a dequantised copy of W (`a_at` is the element-wise
// decoder; TQ2_0 uses the word-wise one in main). A_F32 / A_F16: strided A.
// A workgroup of 256 computes a 64 (i0) x 64 (i1) tile, stepping k in slices of BK through
// shared memory held as vec4s. The 256 invocations are four k groups of 64; group g takes
// rows 8g..8g+7 of every slice, and each invocation holds 8 x 8 outputs, so a k step is four
// vec4 reads for 64 multiply-adds; at the end the groups' partial sums are added (3 into 2
// into 1 into 0) through shared memory. Every output thus sums k in ascending order within
// each group, as four interleaved partial sums (the CPU sums k in one ascending run: only the
// last bits differ). MICRO4: the earlier layout, 4 x 4 outputs per invocation over all of k.
// TQ2_0 slices are decoded a 32-bit word (eight weights) per invocation; TQ1_0, f32 and f16
// elementwise. The next slice's global loads are issued before the current slice's products
// (registers, then shared memory), and full slices run unrolled.
// Split k (P0 = slices > 1, for outputs of few tiles and a long k, such as the rank-r gradient
// through a LoRA B): workgroup slice s sums k in [s P1, s P1 + P1) and writes its partial
// sums contiguously at D_OFF + s P2 (P2 = elements of dst); `grad_misc.comp` (OP_SPLIT_SUM)
// adds the slices in order into dst.
// Strides in elements of the bound type (bytes for TQ). B and dst may be strided.
#include "common.glsl"
#include "tq_layout.glsl"

#define TM 64
#define TN 64
#define BK 32
layout(local_size_x = 256) in;

#if defined(A_F32)
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
#elif defined(A_F16)
layout(std430, binding = 0) readonly buffer BufA { float16_t a[]; };
#else
layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
#endif
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

// The A and B slices, rows padded by one vec4 (the k-major stores of a warp spread over the
// banks); after the k loop the same memory carries the partial sums of the k groups.
#define ROW (TM / 4 + 1)
shared vec4 sm[2 * BK * ROW];
#define SA(kk, c) sm[(kk) * ROW + (c)]
#define SB(kk, c) sm[(BK + (kk)) * ROW + (c)]

#if defined(A_TQ2) || defined(A_TQ1)
uint tq_byte(uint addr) { return (a[addr >> 2] >> ((addr & 3u) * 8u)) & 0xFFu; }
float tq_half(uint addr) {
    const uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}
#endif

// Element i0 of the A row starting at `row` (bytes for TQ, elements otherwise).
float a_at(uint row, uint i0) {
#if defined(A_TQ2)
    // 64 bytes of 2-bit codes a block (4 groups of 32 elements per byte column), fp16 d apart
    // (tq_layout.glsl).
    const uint blk = row + (i0 >> 8) * TQ_CODE_STEP;
    const uint e = i0 & 255u;
    const uint byte_ix = (e >> 7) * 32u + (e & 31u);
    const uint shift = ((e & 127u) >> 5) * 2u;
    const int code = int((tq_byte(blk + byte_ix) >> shift) & 3u);
    return float(code - 1) * tq_half(tq_scale_at(row, i0 >> 8));
#elif defined(A_TQ1)
    // 54-byte block: 48 bytes of 5 trits (160 elements), 4 bytes of 4 trits (16), fp16 d.
    const uint blk = row + (i0 >> 8) * 54u;
    const uint e = i0 & 255u;
    uint byte_ix, digit;
    if (e < 160u) {
        byte_ix = e & 31u; digit = e >> 5;
    } else if (e < 240u) {
        byte_ix = 32u + ((e - 160u) & 15u); digit = (e - 160u) >> 4;
    } else {
        byte_ix = 48u + ((e - 240u) & 3u); digit = (e - 240u) >> 2;
    }
    uint mul = 1u;
    for (uint t = 0u; t < digit; ++t) { mul *= 3u; }
    const uint q = (tq_byte(blk + byte_ix) * mul) & 255u;
    return float(int((q * 3u) >> 8) - 1) * tq_half(blk + 52u);
#else
    return float(a[row + i0 * pc.a_nb.x]);
#endif
}

// Element idx of a slice: (kk, c) with consecutive invocations on consecutive c (c_major) or
// on consecutive kk, whichever walks the operand's contiguous dimension (coalesced loads).
uvec2 slice_at(uint idx, uint n, bool c_major) {
    return c_major ? uvec2(idx / n, idx % n) : uvec2(idx % BK, idx / BK);
}

#if defined(A_TQ2)
// Slice k0 of the A tile, TQ2_0: ne0 is a multiple of 256, so the tile's 64 weights of row k
// lie in one block: bytes j (0..31) of its 32-byte column group hold weight j at shift s0 and
// weight 32 + j at s0 + 2. Invocation t loads bytes 4w..4w+3 (w = t % 8) of row kk = t / 8 and
// the block's scale (0 past K).
void load_a_tq2(uint a_base, uint tile0, uint k0, uint K, uint t, out uint bytes, out float dq) {
    const uint k = k0 + t / 8u, w = t % 8u;
    const uint i0b = tile0 * TM;
    bytes = 0u;
    dq = 0.0;
    if (k < K) {
        const uint arow = a_base + k * pc.a_nb.y;
        const uint addr = arow + (i0b >> 8) * TQ_CODE_STEP + ((i0b & 255u) >> 7) * 32u + 4u * w;
        const uint sh = (addr & 3u) * 8u;
        const uint wlo = a[addr >> 2];
        bytes = sh == 0u ? wlo : (wlo >> sh) | (a[(addr >> 2) + 1u] << (32u - sh));
        dq = tq_half(tq_scale_at(arow, i0b >> 8));
    }
}
void store_a_tq2(uint tile0, uint t, uint bytes, float dq) {
    const uint kk = t / 8u, w = t % 8u;
    const uint s0 = (((tile0 * TM) & 127u) >> 5) * 2u;
    vec4 lo, hi;
    [[unroll]] for (uint j = 0; j < 4; ++j) {
        const uint by = bytes >> (8u * j);
        lo[j] = float(int((by >> s0) & 3u) - 1) * dq;
        hi[j] = float(int((by >> (s0 + 2u)) & 3u) - 1) * dq;
    }
    SA(kk, w) = lo;
    SA(kk, 8u + w) = hi;
}
#else
#if defined(A_F32) || defined(A_F16)
// A k-contiguous (a transposed view: the rank-r factor of a LoRA product) is read along k.
bool a_c_major() { return pc.a_nb.y != 1u; }
#else
bool a_c_major() { return true; }
#endif
// Slice k0 of the A tile: BK x TM, 8 per invocation.
void load_a(uint a_base, uint tile0, uint k0, uint K, uint ne0, uint t, out float ra[8]) {
    const bool cm = a_c_major();
    [[unroll]] for (uint r = 0; r < 8; ++r) {
        const uvec2 kc = slice_at(t + r * 256u, TM, cm);
        const uint k = k0 + kc.x, i0 = tile0 * TM + kc.y;
        ra[r] = (k < K && i0 < ne0) ? a_at(a_base + k * pc.a_nb.y, i0) : 0.0;
    }
}
void store_a(uint t, float ra[8]) {
    const bool cm = a_c_major();
    [[unroll]] for (uint r = 0; r < 8; ++r) {
        const uvec2 kc = slice_at(t + r * 256u, TM, cm);
        SA(kc.x, kc.y / 4u)[kc.y % 4u] = ra[r];
    }
}
#endif

// Slice k0 of the B tile: BK x TN, 8 per invocation, read along k, or along i1 where that is
// B's contiguous dimension (an output gradient dY as the B of dW-like products).
void load_b(uint b_base, uint tile1, uint k0, uint K, uint ne1, uint t, out float rb[8]) {
    const bool cm = pc.b_nb.x == 1u;
    [[unroll]] for (uint r = 0; r < 8; ++r) {
        const uvec2 kc = slice_at(t + r * 256u, TN, cm);
        const uint k = k0 + kc.x, i1 = tile1 * TN + kc.y;
        rb[r] = (k < K && i1 < ne1) ? b[b_base + i1 * pc.b_nb.x + k * pc.b_nb.y] : 0.0;
    }
}
void store_b(uint t, float rb[8]) {
    const bool cm = pc.b_nb.x == 1u;
    [[unroll]] for (uint r = 0; r < 8; ++r) {
        const uvec2 kc = slice_at(t + r * 256u, TN, cm);
        SB(kc.x, kc.y / 4u)[kc.y % 4u] = rb[r];
    }
}

#if !defined(MICRO4)
// One k step of an invocation's 8 x 8 outputs: four vec4 reads, 64 multiply-adds.
// acc[(h1 * 4 + c) * 2 + h0][r] is output (i0 = 32 h0 + 4 tx + r, i1 = 32 h1 + 4 ty + c).
void product(uint kk, uint tx, uint ty, inout vec4 acc[16]) {
    const vec4 a0 = SA(kk, tx), a1 = SA(kk, 8u + tx);
    const vec4 b0 = SB(kk, ty), b1 = SB(kk, 8u + ty);
    [[unroll]] for (uint c = 0; c < 4; ++c) {
        acc[c * 2u] += a0 * b0[c];
        acc[c * 2u + 1u] += a1 * b0[c];
        acc[(4u + c) * 2u] += a0 * b1[c];
        acc[(4u + c) * 2u + 1u] += a1 * b1[c];
    }
}
#endif

void store_out(uint i0, uint i1, uint i2, uint i3, uint slices, uint slice, float v) {
    if (i0 < pc.d_ne.x && i1 < pc.d_ne.y) {
        if (slices > 1u) {
            d[D_OFF + slice * P2 + ((i3 * pc.d_ne.z + i2) * pc.d_ne.y + i1) * pc.d_ne.x + i0] = v;
        } else {
            d[D_OFF + strided(uvec4(i0, i1, i2, i3), pc.d_nb)] = v;
        }
    }
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint ne0 = pc.d_ne.x, ne1 = pc.d_ne.y;
    const uint tiles0 = (ne0 + TM - 1) / TM;
    const uint tiles1 = (ne1 + TN - 1) / TN;
    uint g = wg_index();
    if (g >= N_ITEMS) { return; }
    const uint slices = max(P0, 1u);
    const uint slice = g % slices; g /= slices;
    const uint k_lo = slices > 1u ? slice * P1 : 0u;
    const uint K = slices > 1u ? min(pc.a_ne.y, k_lo + P1) : pc.a_ne.y;
    const uint tile0 = g % tiles0; g /= tiles0;
    const uint tile1 = g % tiles1; g /= tiles1;
    const uint i2 = g % pc.d_ne.z;
    const uint i3 = g / pc.d_ne.z;
    const uint a2 = i2 / (pc.d_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.d_ne.w / pc.a_ne.w);
    const uint a_base = A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;
#if defined(MICRO4)
    const uint tx = t % 16u, ty = t / 16u;
    vec4 acc[4];
    [[unroll]] for (uint j = 0; j < 4; ++j) { acc[j] = vec4(0.0); }
#else
    // Four k groups of 64 invocations (kk = 8 grp .. 8 grp + 7 of each slice), 8 x 8 outputs
    // per invocation: i0 = 4 tx + r and 32 + 4 tx + r, i1 = 4 ty + c and 32 + 4 ty + c.
    const uint grp = t / 64u, tx = t % 8u, ty = (t % 64u) / 8u;
    vec4 acc[16];
    [[unroll]] for (uint j = 0; j < 16; ++j) { acc[j] = vec4(0.0); }
#endif
    // Software pipelining: the global loads of slice k0 + BK are issued before the products
    // of slice k0 and land in registers (ra*, rb) while those run; they go to shared memory
    // after the slice's second barrier.
#if defined(A_TQ2)
    uint ra_bytes;
    float ra_d;
    load_a_tq2(a_base, tile0, k_lo, K, t, ra_bytes, ra_d);
#else
    float ra[8];
    load_a(a_base, tile0, k_lo, K, ne0, t, ra);
#endif
    float rb[8];
    load_b(b_base, tile1, k_lo, K, ne1, t, rb);
    for (uint k0 = k_lo; k0 < K; k0 += BK) {
#if defined(A_TQ2)
        store_a_tq2(tile0, t, ra_bytes, ra_d);
#else
        store_a(t, ra);
#endif
        store_b(t, rb);
        barrier();
        if (k0 + BK < K) {
#if defined(A_TQ2)
            load_a_tq2(a_base, tile0, k0 + BK, K, t, ra_bytes, ra_d);
#else
            load_a(a_base, tile0, k0 + BK, K, ne0, t, ra);
#endif
            load_b(b_base, tile1, k0 + BK, K, ne1, t, rb);
        }
        const uint kn = min(BK, K - k0);
#if defined(MICRO4)
        if (kn == BK) {
            [[unroll]] for (uint kk = 0; kk < BK; ++kk) {
                const vec4 av = SA(kk, tx), bv = SB(kk, ty);
                [[unroll]] for (uint c = 0; c < 4; ++c) { acc[c] += av * bv[c]; }
            }
        } else {
            for (uint kk = 0; kk < kn; ++kk) {
                const vec4 av = SA(kk, tx), bv = SB(kk, ty);
                [[unroll]] for (uint c = 0; c < 4; ++c) { acc[c] += av * bv[c]; }
            }
        }
#else
        const uint kb = 8u * grp;
        const uint ke = min(kb + 8u, kn);
        if (ke == kb + 8u) {
            [[unroll]] for (uint q = 0; q < 8; ++q) { product(kb + q, tx, ty, acc); }
        } else {
            for (uint kk = kb; kk < ke; ++kk) { product(kk, tx, ty, acc); }
        }
#endif
        barrier();
    }
#if defined(MICRO4)
    [[unroll]] for (uint c = 0; c < 4; ++c) {
        [[unroll]] for (uint r = 0; r < 4; ++r) {
            store_out(tile0 * TM + 4u * tx + r, tile1 * TN + 4u * ty + c, i2, i3, slices, slice, acc[c][r]);
        }
    }
#else
    // Sum the groups' partials, 3 into 2, 2 into 1, 1 into 0, through shared memory (the
    // loop ended on a barrier); group 0 writes the tile.
    const uint l = t % 64u;
    [[unroll]] for (uint from = 3; from > 0; --from) {
        if (grp == from) {
            [[unroll]] for (uint j = 0; j < 16; ++j) { sm[j * 64u + l] = acc[j]; }
        }
        barrier();
        if (grp == from - 1u) {
            [[unroll]] for (uint j = 0; j < 16; ++j) { acc[j] += sm[j * 64u + l]; }
        }
        barrier();
    }
    if (grp == 0u) {
        [[unroll]] for (uint h1 = 0; h1 < 2; ++h1) {
            [[unroll]] for (uint c = 0; c < 4; ++c) {
                const uint i1 = tile1 * TN + 32u * h1 + 4u * ty + c;
                [[unroll]] for (uint h0 = 0; h0 < 2; ++h0) {
                    [[unroll]] for (uint r = 0; r < 4; ++r) {
                        store_out(tile0 * TM + 32u * h0 + 4u * tx + r, i1, i2, i3, slices, slice, acc[(h1 * 4u + c) * 2u + h0][r]);
                    }
                }
            }
        }
    }
#endif
}
