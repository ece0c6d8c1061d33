#version 450
// Per-column scales of dx_q8.comp's int8 operand: for column c = (i3 ne2 + i2) ne1 + i1 of B
// ([ne1, K, ne2, ne3] in the OUT_PROD's operand order, strides in elements) and block column
// j of the ternary A (its elements 256 j .. 256 j + 255 of every row k),
// d[D_OFF + c * (ne0 / 256) + j] = max_k |B[i1, k, i2, i3] * dA[k, j]|, dA[k, j] being the fp16
// scale of block j of row k (the product dx_q8.comp quantizes, computed the same way).
// A NaN or infinite product gives a NaN scale, so the gradient comes out NaN rather than
// finite and wrong. One workgroup per column; invocations stride over k.
#include "common.glsl"

layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

#if defined(A_TQ2)
#define BLOCK_BYTES 66u
#define SCALE_AT 64u
#else
#define BLOCK_BYTES 54u
#define SCALE_AT 52u
#endif

shared float part[256];

// max that keeps a NaN.
float nmax(float x, float y) { return (isnan(x) || isnan(y)) ? x + y : max(x, y); }

float half_at(uint addr) {
    const uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}

void main() {
    const uint c = wg_index();
    if (c >= N_ITEMS) { return; }
    const uint t = gl_LocalInvocationID.x;
    const uint ne1 = pc.b_ne.x, K = pc.b_ne.y;
    const uint i1 = c % ne1, i2 = (c / ne1) % pc.b_ne.z, i3 = c / (ne1 * pc.b_ne.z);
    const uint b_base = B_OFF + i1 * pc.b_nb.x + i2 * pc.b_nb.z + i3 * pc.b_nb.w;
    const uint a2 = i2 / (pc.d_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.d_ne.w / pc.a_ne.w);
    const uint a_base = A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint nblk = pc.a_ne.x / 256u;
    for (uint j = 0; j < nblk; ++j) {
        float m = 0.0;
        for (uint k = t; k < K; k += 256u) {
            const float v = b[b_base + k * pc.b_nb.y] * half_at(a_base + k * pc.a_nb.y + j * BLOCK_BYTES + SCALE_AT);
            m = nmax(m, isinf(v) ? v - v : abs(v));
        }
        part[t] = m;
        barrier();
        [[unroll]] for (uint s = 128u; s > 0u; s >>= 1) {
            if (t < s) { part[t] = nmax(part[t], part[t + s]); }
            barrier();
        }
        if (t == 0u) { d[D_OFF + c * nblk + j] = part[0]; }
        barrier();
    }
}
