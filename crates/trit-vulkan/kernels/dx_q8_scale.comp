#version 450
// Per-column scales of dx_q8.comp's int8 operand, in two passes over scratch.
// D_GATHER (TQ2_0 / TQ1_0 A, [ne0, K, a2, a3]): the fp16 block scales of A as f32, block
// column j of row k of A batch ab = a3 * a_ne.z + a2 at d[D_OFF + (ab * nblk + j) * K + k]
// (nblk = ne0 / 256): one row of k per block column, so the next pass reads them coalesced.
// One invocation per scale.
// Otherwise, binding 0 holds those scales (f32, from the pass above) and, for column
// c = (i3 ne2 + i2) ne1 + i1 of B ([ne1, K, ne2, ne3] in the OUT_PROD's operand order, strides
// in elements) and block column j, d[D_OFF + c * nblk + j] = max_k |B[i1, k, i2, i3] * dA[k, j]|
// (the product dx_q8.comp quantizes, computed the same way). A NaN or infinite product gives a
// NaN, so the gradient comes out NaN rather than finite and wrong. One workgroup per eight
// columns of a batch (below); invocations stride over k. Push constants: the OUT_PROD's (a_ne,
// a_nb of A; b_*; d_ne of dst).
#include "common.glsl"

layout(local_size_x = 256) in;
#if defined(D_GATHER)
layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
#else
layout(std430, binding = 0) readonly buffer BufA { float ds[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
#endif
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

#if defined(D_GATHER)
#if defined(A_TQ2)
#define BLOCK_BYTES 66u
#define SCALE_AT 64u
#else
#define BLOCK_BYTES 54u
#define SCALE_AT 52u
#endif
float half_at(uint addr) {
    const uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}

void main() {
    const uint i = wg_index() * 256u + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uint K = pc.a_ne.y, nblk = pc.a_ne.x / 256u;
    const uint k = i % K, j = (i / K) % nblk, ab = i / (K * nblk);
    const uint a2 = ab % pc.a_ne.z, a3 = ab / pc.a_ne.z;
    d[D_OFF + i] = half_at(A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w + k * pc.a_nb.y + j * BLOCK_BYTES + SCALE_AT);
}
#else
// COLS columns of one batch per workgroup, block columns in chunks of JB: each k's B elements
// are read once per chunk and each row of scales once per COLS columns (one workgroup per
// column and block column read B's column once per block column: ~20x the bytes of the
// operand for 2560-feature inputs).
#define COLS 8u
#define JB 8u
shared float part[JB * 256u];
shared float red[JB * 32u];

void main() {
    const uint item = wg_index();
    if (item >= N_ITEMS) { return; }
    const uint t = gl_LocalInvocationID.x;
    const uint nblk = pc.a_ne.x / 256u;
    const uint ne1 = pc.b_ne.x, K = pc.b_ne.y;
    const uint per_batch = (ne1 + COLS - 1u) / COLS;
    const uint bt = item / per_batch;
    const uint c0 = (item % per_batch) * COLS;
    const uint i2 = bt % pc.b_ne.z, i3 = bt / pc.b_ne.z;
    const uint a2 = i2 / (pc.d_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.d_ne.w / pc.a_ne.w);
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;
    const uint s_base = A_OFF + (a3 * pc.a_ne.z + a2) * nblk * K;
    const float INF = uintBitsToFloat(0x7f800000u);
    for (uint j0 = 0u; j0 < nblk; j0 += JB) {
        // m[c JB + jj]: largest |B[c0 + c, k] * dA[k, j0 + jj]| over this invocation's k; a NaN
        // or infinite product counts as +inf (written as NaN below)
        float m[COLS * JB];
        [[unroll]] for (uint i = 0u; i < COLS * JB; ++i) { m[i] = 0.0; }
        for (uint k = t; k < K; k += 256u) {
            float bv[COLS];
            [[unroll]] for (uint c = 0u; c < COLS; ++c) {
                bv[c] = c0 + c < ne1 ? b[b_base + (c0 + c) * pc.b_nb.x + k * pc.b_nb.y] : 0.0;
            }
            [[unroll]] for (uint jj = 0u; jj < JB; ++jj) {
                if (j0 + jj < nblk) {
                    const float dv = ds[s_base + (j0 + jj) * K + k];
                    [[unroll]] for (uint c = 0u; c < COLS; ++c) {
                        const float v = bv[c] * dv;
                        m[c * JB + jj] = max(m[c * JB + jj], (isnan(v) || isinf(v)) ? INF : abs(v));
                    }
                }
            }
        }
        [[unroll]] for (uint c = 0u; c < COLS; ++c) {
            [[unroll]] for (uint jj = 0u; jj < JB; ++jj) { part[jj * 256u + t] = m[c * JB + jj]; }
            barrier();
            {
                const uint jj = t / 32u, l = t % 32u;
                float r = 0.0;
                [[unroll]] for (uint q = 0u; q < 8u; ++q) { r = max(r, part[jj * 256u + l * 8u + q]); }
                red[jj * 32u + l] = r;
            }
            barrier();
            if (t < JB && j0 + t < nblk && c0 + c < ne1) {
                float r = 0.0;
                for (uint l = 0u; l < 32u; ++l) { r = max(r, red[t * 32u + l]); }
                d[D_OFF + (bt * ne1 + c0 + c) * nblk + j0 + t] = isinf(r) ? uintBitsToFloat(0x7fc00000u) : r;
            }
            barrier();
        }
    }
}
#endif
