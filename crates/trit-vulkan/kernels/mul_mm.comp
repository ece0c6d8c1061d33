#version 450
// Tiled matrix-matrix product for many columns (prompt processing):
// dst[r, c, i2, i3] = sum_k A[k, r, i2/ratio2, i3/ratio3] * B[k, c, i2, i3].
// A workgroup of 256 computes a 64x64 tile of dst, 4x4 outputs per invocation, stepping K in
// slices of 32 through shared memory; weights are decoded once per tile.
// A: A_F32 | A_F16 | A_TQ2 | A_TQ1 (for TQ, B holds activations already rounded as Q8_K).
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

shared float sa[BK][TM + 1];
shared float sb[BK][TN + 1];

#if defined(A_TQ2) || defined(A_TQ1)
uint byte_at(uint addr) { return (a[addr >> 2] >> ((addr & 3u) * 8u)) & 0xFFu; }
float half_at(uint addr) {
    uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}
#endif

// Weight k of the row starting at byte/element `row`.
float weight(uint row, uint k) {
#if defined(A_TQ2)
    const uint base = row + (k / 256) * TQ_CODE_STEP;
    const uint e = k % 256;
    const uint code = (byte_at(base + (e / 128) * 32 + (e % 32)) >> (2 * ((e % 128) / 32))) & 3u;
    return float(int(code) - 1) * half_at(tq_scale_at(row, k / 256));
#elif defined(A_TQ1)
    const uint base = row + (k / 256) * 54;
    const uint e = k % 256;
    uint byte_off, n;
    if (e < 160) { byte_off = e % 32; n = e / 32; }
    else if (e < 240) { byte_off = 32 + (e - 160) % 16; n = (e - 160) / 16; }
    else { byte_off = 48 + (e - 240) % 4; n = (e - 240) / 4; }
    const uint pw = n == 0 ? 1u : n == 1 ? 3u : n == 2 ? 9u : n == 3 ? 27u : 81u;
    const uint q = (byte_at(base + byte_off) * pw) & 0xFFu;
    return float(int((q * 3u) >> 8) - 1) * half_at(base + 52);
#else
    return float(a[row + k * pc.a_nb.x]);
#endif
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint K = pc.a_ne.x;
    const uint rows = pc.a_ne.y;
    const uint cols = pc.b_ne.y;
    const uint nrt = (rows + TM - 1) / TM;
    const uint nct = (cols + TN - 1) / TN;
    uint w = wg_index();
    if (w >= N_ITEMS) { return; }
    const uint rt = w % nrt; w /= nrt;
    const uint ct = w % nct; w /= nct;
    const uint i2 = w % pc.b_ne.z;
    const uint i3 = w / pc.b_ne.z;
    const uint a2 = i2 / (pc.b_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.b_ne.w / pc.a_ne.w);
    const uint r0 = rt * TM;
    const uint c0 = ct * TN;
    const uint a_base = A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;

    const uint tr = (t % 16) * 4; // this invocation's 4 rows within the tile
    const uint tc = (t / 16) * 4; // and 4 columns
    float acc[4][4];
    [[unroll]] for (uint i = 0; i < 4; ++i) { [[unroll]] for (uint j = 0; j < 4; ++j) { acc[i][j] = 0.0; } }

    for (uint k0 = 0; k0 < K; k0 += BK) {
        // 64 x 32 weights and 32 x 64 activations, 8 of each per invocation.
        [[unroll]] for (uint l = 0; l < 8; ++l) {
            const uint idx = t + l * 256;
            const uint kk = idx % BK;
            const uint rr = idx / BK;
            const uint k = k0 + kk;
            const uint r = r0 + rr;
            sa[kk][rr] = (r < rows && k < K) ? weight(a_base + r * pc.a_nb.y, k) : 0.0;
            const uint c = c0 + rr;
            float x = 0.0;
            if (c < cols && k < K) {
                x = b[b_base + k * pc.b_nb.x + c * pc.b_nb.y];
#if defined(A_F16)
                x = float(float16_t(x)); // as the CPU backend: f16 weights meet f16 activations
#endif
            }
            sb[kk][rr] = x;
        }
        barrier();
        [[unroll]] for (uint kk = 0; kk < BK; ++kk) {
            float av[4];
            float bv[4];
            [[unroll]] for (uint i = 0; i < 4; ++i) { av[i] = sa[kk][tr + i]; bv[i] = sb[kk][tc + i]; }
            [[unroll]] for (uint i = 0; i < 4; ++i) {
                [[unroll]] for (uint j = 0; j < 4; ++j) { acc[i][j] += av[i] * bv[j]; }
            }
        }
        barrier();
    }
    [[unroll]] for (uint i = 0; i < 4; ++i) {
        [[unroll]] for (uint j = 0; j < 4; ++j) {
            const uint r = r0 + tr + i;
            const uint c = c0 + tc + j;
            if (r < rows && c < cols) {
                d[D_OFF + r * pc.d_nb.x + c * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w] = acc[i][j];
            }
        }
    }
}
