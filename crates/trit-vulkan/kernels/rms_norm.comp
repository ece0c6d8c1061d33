#version 450
// One workgroup per row: dst = x / sqrt(mean(x^2) + eps). eps = P0 (float bits).
// FUSE_MUL: dst = (x / sqrt(mean(x^2) + eps)) * B, B broadcast by repetition (the norm
// weight), for an RMS_NORM whose only user is that MUL.
// (Rows of a multiple of 256 on devices with subgroups: rms_norm_q8.comp.)
#include "common.glsl"
#define WG 256
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
#if defined(FUSE_MUL)
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
#endif
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
shared float red[WG];

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint row = wg_index();
    if (row >= N_ITEMS) { return; }
    const uvec4 idx = unflatten(row, uvec4(pc.a_ne.y, pc.a_ne.z, pc.a_ne.w, 1));
    const uvec4 r4 = uvec4(0, idx.x, idx.y, idx.z);
    const uint a_base = A_OFF + strided(r4, pc.a_nb);
    const uint d_base = D_OFF + strided(r4, pc.d_nb);
    const uint n = pc.a_ne.x;
    float s = 0.0;
    for (uint k = t; k < n; k += WG) { const float x = a[a_base + k * pc.a_nb.x]; s += x * x; }
    red[t] = s;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) { if (t < h) { red[t] += red[t + h]; } barrier(); }
    precise float scale = inversesqrt(red[0] / float(n) + uintBitsToFloat(P0));
    for (uint k = t; k < n; k += WG) {
#if defined(FUSE_MUL)
        const uvec4 bi = uvec4(k, r4.y, r4.z, r4.w) % pc.b_ne;
        precise float y = (a[a_base + k * pc.a_nb.x] * scale) * b[B_OFF + strided(bi, pc.b_nb)];
        d[d_base + k * pc.d_nb.x] = y; // precise: as the norm alone, then the MUL
#else
        d[d_base + k * pc.d_nb.x] = a[a_base + k * pc.a_nb.x] * scale;
#endif
    }
}
