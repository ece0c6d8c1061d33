#version 450
// One workgroup per row: dst = x / sqrt(mean(x^2) + eps). eps = P0 (float bits).
// FUSE_MUL: dst = (x / sqrt(mean(x^2) + eps)) * B, B broadcast by repetition (the norm
// weight), for an RMS_NORM whose only user is that MUL.
// SG: the sum of squares reduces with subgroup shuffles, then across subgroups in shared
// memory (one barrier instead of eight).
// QUANT (with FUSE_MUL and SG): also write the result quantized for the ternary products
// that read it, exactly as quant_q8.comp would (int8 four to a word at binding 3 from
// element P2, row after row; block scales from word P2 + P1), saving that dispatch.
#include "common.glsl"
#if defined(SG)
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif
#define WG 256
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
#if defined(FUSE_MUL)
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
#endif
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
#if defined(QUANT)
layout(std430, binding = 3) writeonly buffer BufQ { uint qout[]; };
shared float qv[WG];
shared uint qi[WG];
#endif
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
#if defined(SG)
    for (uint m = 1; m < gl_SubgroupSize; m <<= 1) { s += subgroupShuffleXor(s, m); }
    if (gl_SubgroupInvocationID == 0) { red[gl_SubgroupID] = s; }
    barrier();
    float total = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; ++i) { total += red[i]; }
    const float scale = inversesqrt(total / float(n) + uintBitsToFloat(P0));
#else
    red[t] = s;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) { if (t < h) { red[t] += red[t + h]; } barrier(); }
    const float scale = inversesqrt(red[0] / float(n) + uintBitsToFloat(P0));
#endif
    for (uint k = t; k < n; k += WG) {
#if defined(FUSE_MUL)
        const uvec4 bi = uvec4(k, r4.y, r4.z, r4.w) % pc.b_ne;
        d[d_base + k * pc.d_nb.x] = (a[a_base + k * pc.a_nb.x] * scale) * b[B_OFF + strided(bi, pc.b_nb)];
#else
        d[d_base + k * pc.d_nb.x] = a[a_base + k * pc.a_nb.x] * scale;
#endif
    }
#if defined(QUANT)
    // Element e of each 256-block for this invocation (WG = 256), numbered by subgroup so
    // that elements e + 1..3 are the next lanes of the same subgroup.
    const uint e = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
    const uint nblk = n / 256;
    for (uint i = 0; i < nblk; ++i) {
        const uint k = i * 256 + e;
        const uvec4 bi = uvec4(k, r4.y, r4.z, r4.w) % pc.b_ne;
        const float y = (a[a_base + k * pc.a_nb.x] * scale) * b[B_OFF + strided(bi, pc.b_nb)];
        // The value of largest magnitude, the first on ties: over the subgroup, then across.
        float mv = y;
        uint mi = e;
        for (uint m = 1; m < gl_SubgroupSize; m <<= 1) {
            const float ov = subgroupShuffleXor(mv, m);
            const uint oi = subgroupShuffleXor(mi, m);
            if (abs(ov) > abs(mv) || (abs(ov) == abs(mv) && oi < mi)) { mv = ov; mi = oi; }
        }
        if (gl_SubgroupInvocationID == 0) { qv[gl_SubgroupID] = mv; qi[gl_SubgroupID] = mi; }
        barrier();
        mv = qv[0];
        mi = qi[0];
        for (uint g = 1; g < gl_NumSubgroups; ++g) {
            if (abs(qv[g]) > abs(mv) || (abs(qv[g]) == abs(mv) && qi[g] < mi)) { mv = qv[g]; mi = qi[g]; }
        }
        barrier();
        int q = 0;
        float dq = 0.0;
        if (abs(mv) > 0.0) {
            const float iscale = -127.0 / mv;
            q = int(min(127.0, roundEven(iscale * y)));
            dq = 1.0 / iscale;
        }
        const uint qb = uint(q) & 0xFFu;
        const uint l = gl_SubgroupInvocationID;
        const uint word = qb | (subgroupShuffle(qb, l + 1) << 8) | (subgroupShuffle(qb, l + 2) << 16)
            | (subgroupShuffle(qb, l + 3) << 24);
        if (e % 4 == 0) { qout[P2 + row * (n / 4) + i * 64 + e / 4] = word; }
        if (e == 0) { qout[P2 + P1 + row * nblk + i] = floatBitsToUint(dq); }
    }
#endif
}
