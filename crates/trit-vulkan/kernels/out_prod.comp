#version 450
// OUT_PROD: dst[i0, i1, i2, i3] = sum_k A[i0, k, i2/r2, i3/r3] * B[i1, k, i2, i3]
// (A: [ne0, K], B: [ne1, K]; r2, r3 = broadcast ratios of A over dims 2 and 3).
// For a frozen weight W ([n_in, n_out] in ggml order) and an output gradient dY this is
// dX = W^T dY, read straight from the packed ternary blocks: A_TQ2 / A_TQ1 decode each k slice
// of the tile into shared memory, never a dequantised copy of W (`a_at` is the element-wise
// decoder; TQ2_0 uses the word-wise one in main). A_F32 / A_F16: strided A.
// A workgroup of 256 computes a 64 (i0) x 64 (i1) tile, 4 x 4 outputs per invocation (i0 =
// 4 tx + r, i1 = 4 ty + c), stepping k in slices of BK through shared memory held as vec4s, so
// each k step of an invocation is two vec4 reads and sixteen multiply-adds; every output sums k
// in ascending order as the CPU does. TQ2_0 slices are decoded a 32-bit word (eight weights)
// per invocation; TQ1_0, f32 and f16 elementwise.
// Split k (P0 = slices > 1, for outputs of few tiles and a long k, such as the rank-r gradient
// through a LoRA B): workgroup slice s sums k in [s P1, s P1 + P1) and writes its partial
// sums contiguously at D_OFF + s P2 (P2 = elements of dst); `grad_misc.comp` (OP_SPLIT_SUM)
// adds the slices in order into dst.
// Strides in elements of the bound type (bytes for TQ). B and dst may be strided.
#include "common.glsl"

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

// Rows padded by one vec4: the k-major stores of a warp spread over the banks.
shared vec4 sa[BK][TM / 4 + 1];
shared vec4 sb[BK][TN / 4 + 1];

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
    // 66-byte block: 64 bytes of 2-bit codes (4 groups of 32 elements per byte column), fp16 d.
    const uint blk = row + (i0 >> 8) * 66u;
    const uint e = i0 & 255u;
    const uint byte_ix = (e >> 7) * 32u + (e & 31u);
    const uint shift = ((e & 127u) >> 5) * 2u;
    const int code = int((tq_byte(blk + byte_ix) >> shift) & 3u);
    return float(code - 1) * tq_half(blk + 64u);
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
    const uint tx = t % 16u;
    const uint ty = t / 16u;
    vec4 acc[4];
    [[unroll]] for (uint c = 0; c < 4; ++c) { acc[c] = vec4(0.0); }
    for (uint k0 = k_lo; k0 < K; k0 += BK) {
#if defined(A_TQ2)
        {
            // ne0 is a multiple of 256, so the tile's 64 weights of row k lie in one block:
            // bytes j (0..31) of its 32-byte column group hold weight j at shift s0 and weight
            // 32 + j at s0 + 2. Invocation t decodes bytes 4w..4w+3 (w = t % 8) of row kk = t / 8.
            const uint kk = t / 8u, w = t % 8u;
            const uint k = k0 + kk;
            const uint i0b = tile0 * TM;
            const uint e0 = i0b & 255u;
            const uint s0 = ((e0 & 127u) >> 5) * 2u;
            vec4 lo = vec4(0.0), hi = vec4(0.0);
            if (k < K) {
                const uint blk = a_base + k * pc.a_nb.y + (i0b >> 8) * 66u;
                const uint addr = blk + (e0 >> 7) * 32u + 4u * w;
                const uint sh = (addr & 3u) * 8u;
                const uint wlo = a[addr >> 2];
                const uint bytes = sh == 0u ? wlo : (wlo >> sh) | (a[(addr >> 2) + 1u] << (32u - sh));
                const float dq = tq_half(blk + 64u);
                [[unroll]] for (uint j = 0; j < 4; ++j) {
                    const uint by = bytes >> (8u * j);
                    lo[j] = float(int((by >> s0) & 3u) - 1) * dq;
                    hi[j] = float(int((by >> (s0 + 2u)) & 3u) - 1) * dq;
                }
            }
            sa[kk][w] = lo;
            sa[kk][8u + w] = hi;
        }
#else
        // A slice: BK x TM, 8 per invocation (consecutive invocations: consecutive i0).
        [[unroll]] for (uint r = 0; r < 8; ++r) {
            const uint idx = t + r * 256u;
            const uint kk = idx / TM, c = idx % TM;
            const uint k = k0 + kk, i0 = tile0 * TM + c;
            sa[kk][c / 4u][c % 4u] = (k < K && i0 < ne0) ? a_at(a_base + k * pc.a_nb.y, i0) : 0.0;
        }
#endif
        // B slice: BK x TN, 8 per invocation (consecutive invocations: consecutive k).
        [[unroll]] for (uint r = 0; r < 8; ++r) {
            const uint idx = t + r * 256u;
            const uint kk = idx % BK, c = idx / BK;
            const uint k = k0 + kk, i1 = tile1 * TN + c;
            sb[kk][c / 4u][c % 4u] = (k < K && i1 < ne1) ? b[b_base + i1 * pc.b_nb.x + k * pc.b_nb.y] : 0.0;
        }
        barrier();
        const uint kn = min(BK, K - k0);
        for (uint kk = 0; kk < kn; ++kk) {
            const vec4 av = sa[kk][tx];
            const vec4 bv = sb[kk][ty];
            [[unroll]] for (uint c = 0; c < 4; ++c) { acc[c] += av * bv[c]; }
        }
        barrier();
    }
    [[unroll]] for (uint c = 0; c < 4; ++c) {
        const uint i1 = tile1 * TN + 4u * ty + c;
        [[unroll]] for (uint r = 0; r < 4; ++r) {
            const uint i0 = tile0 * TM + 4u * tx + r;
            if (i0 < ne0 && i1 < ne1) {
                if (slices > 1u) {
                    d[D_OFF + slice * P2 + ((i3 * pc.d_ne.z + i2) * ne1 + i1) * ne0 + i0] = acc[c][r];
                } else {
                    d[D_OFF + strided(uvec4(i0, i1, i2, i3), pc.d_nb)] = acc[c][r];
                }
            }
        }
    }
}
