#version 450
// RMS_NORM for rows of a multiple of 256, one workgroup per row:
//   dst = x / sqrt(mean(x^2) + eps)   (eps = P0)
// FUSE_MUL: times B, broadcast by repetition (the norm weight MUL).
// QUANT: also written as quant_q8.comp writes it, for the ternary products that read it
// (int8 four to a word at binding 3 from element P2, row after row, then the f32 block scales
// from word P2 + P1). Every variant sums the squares in the same order, so a norm fused with
// its MUL gives the same bits as the norm alone followed by the MUL elsewhere.
// Rows are a multiple of 256. Each 256-block belongs to one cluster of C = min(subgroup, 32)
// lanes, EPL = 256 / C elements per lane (four consecutive a step, q8_block.glsl's
// norm_elem: the order mul_mv_tq.comp's NORM prologue sums them in), so a block's largest magnitude
// reduces with shuffles alone; each lane issues all its loads of a block at once. 1024
// invocations: a row of up to 32 blocks (8192) in one round.
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#define WG 1024
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
#if defined(FUSE_MUL)
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
#define W(k) b[b_base + ((k) % pc.b_ne.x) * pc.b_nb.x]
#else
#define W(k) 1.0
#endif
// dst may be A itself (ggml-alloc runs a MUL of a single-use norm in place): each element
// is read once before the lane that owns it overwrites it, and quantized from dst.
layout(std430, binding = 2) buffer BufD { float d[]; };
#if defined(QUANT)
layout(std430, binding = 3) writeonly buffer BufQ { uint qout[]; };
#endif
#if defined(PRE_MUL)
// PRE_MUL: the normalized row is A * A2 (a fused MUL of two same-shaped tensors; A2 at
// binding 4 from element d_ne.x, with A's strides), e.g. BitNet's gate * up before its
// sub-norm.
layout(std430, binding = 4) readonly buffer BufA2 { float a2[]; };
#if defined(RELU2)
// RELU2: A is the input of a ReLU then SQR whose result the MUL reads (BitNet's gate):
// relu(A)^2 * A2, the same f32 operations as relu_sqr_f32 then the MUL.
float relu2(float v) { const float r = max(v, 0.0); return r * r; }
#define X(k) (relu2(a[a_base + (k) * pc.a_nb.x]) * a2[pc.d_ne.x + a_rel + (k) * pc.a_nb.x])
#else
#define X(k) (a[a_base + (k) * pc.a_nb.x] * a2[pc.d_ne.x + a_rel + (k) * pc.a_nb.x])
#endif
#else
#define X(k) (a[a_base + (k) * pc.a_nb.x])
#endif
shared float red[WG];
#define EPL_MAX 32
#include "q8_block.glsl"

void main() {
    const uint S = gl_SubgroupSize;
    const uint fl = gl_SubgroupID * S + gl_SubgroupInvocationID;
    const uint C = min(S, 32u);
    const uint EPL = 256u / C;
    const uint cid = fl / C;
    const uint ncl = WG / C;
    const uint lc = fl % C;
    const uint row = wg_index();
    if (row >= N_ITEMS) { return; }
    const uvec4 idx = unflatten(row, uvec4(pc.a_ne.y, pc.a_ne.z, pc.a_ne.w, 1));
    const uvec4 r4 = uvec4(0, idx.x, idx.y, idx.z);
    const uint a_rel = strided(r4, pc.a_nb);
    const uint a_base = A_OFF + a_rel;
    const uint d_base = D_OFF + strided(r4, pc.d_nb);
#if defined(FUSE_MUL)
    const uint b_base = B_OFF + strided(r4 % pc.b_ne, pc.b_nb);
#endif
    const uint n = pc.a_ne.x;
    const uint nblk = n / 256;

    // Rows of at most one block per cluster, clusters of at least 8 lanes (so at most 32
    // elements per lane): a lane's elements stay in registers between the passes, all its
    // loads issued at once. The same f32 operations in the same order as the loop below.
    if (C >= 8u && nblk <= ncl) {
        const bool has = cid < nblk;
        const uint kb = cid * 256;
        float xv[EPL_MAX];
        [[unroll]] for (uint e = 0; e < EPL_MAX; ++e) { xv[e] = (has && e < EPL) ? X(kb + norm_elem(lc, e, C)) : 0.0; }
        precise float s = 0.0;
        [[unroll]] for (uint e = 0; e < EPL_MAX; ++e) {
            if (has && e < EPL) { s += xv[e] * xv[e]; }
        }
        for (uint m = 1; m < S; m <<= 1) { s += subgroupShuffleXor(s, m); }
        if (gl_SubgroupInvocationID == 0) { red[gl_SubgroupID] = s; }
        barrier();
        float total = 0.0;
        for (uint i = 0; i < gl_NumSubgroups; ++i) { total += red[i]; }
        precise float scale = inversesqrt(total / float(n) + uintBitsToFloat(P0));
        if (!has) { return; }
        float mv = 0.0;
        uint mi = 0xFFFFFFFFu;
        [[unroll]] for (uint e = 0; e < EPL_MAX; ++e) {
            if (e < EPL) {
                const uint k = kb + norm_elem(lc, e, C);
#if defined(FUSE_MUL)
                precise float y = (xv[e] * scale) * W(k);
#else
                precise float y = xv[e] * scale;
#endif
                xv[e] = y;
                d[d_base + k * pc.d_nb.x] = y;
                if (mi == 0xFFFFFFFFu || abs(y) > abs(mv)) { mv = y; mi = norm_elem(lc, e, C); }
            }
        }
#if defined(QUANT)
        cluster_max(mv, mi, C);
        const float iscale = q8_iscale(mv);
        const uint qrow = P2 + row * (n / 4) + cid * 64;
        [[unroll]] for (uint e = 0; e < EPL_MAX; e += 4) {
            if (e < EPL) {
                qout[qrow + norm_elem(lc, e, C) / 4] = q8_word(iscale, mv, vec4(xv[e], xv[e + 1], xv[e + 2], xv[e + 3]));
            }
        }
        if (lc == 0) { qout[P2 + P1 + row * nblk + cid] = floatBitsToUint(q8_scale(mv, iscale)); }
#endif
        return;
    }

    precise float s = 0.0; // no contraction: every variant sums identically
    for (uint blk = cid; blk < nblk; blk += ncl) {
        for (uint e = 0; e < EPL; ++e) { const float x = X(blk * 256 + norm_elem(lc, e, C)); s += x * x; }
    }
    for (uint m = 1; m < S; m <<= 1) { s += subgroupShuffleXor(s, m); }
    if (gl_SubgroupInvocationID == 0) { red[gl_SubgroupID] = s; }
    barrier();
    float total = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; ++i) { total += red[i]; }
    precise float scale = inversesqrt(total / float(n) + uintBitsToFloat(P0));

    for (uint blk = cid; blk < nblk; blk += ncl) {
        const uint kb = blk * 256;
        // The value of largest magnitude in the block, the first on ties.
        float mv = 0.0;
        uint mi = 0xFFFFFFFFu;
        for (uint e = 0; e < EPL; ++e) {
            const uint k = kb + norm_elem(lc, e, C);
#if defined(FUSE_MUL)
            precise float y = (X(k) * scale) * W(k);
#else
            precise float y = X(k) * scale;
#endif
            d[d_base + k * pc.d_nb.x] = y;
            if (mi == 0xFFFFFFFFu || abs(y) > abs(mv)) { mv = y; mi = norm_elem(lc, e, C); }
        }
#if defined(QUANT)
        cluster_max(mv, mi, C);
        // precise (in q8_block.glsl): no reassociation (the compiler may otherwise fold these
        // differently here and in quant_q8.comp, and a split graph would quantize differently).
        const float iscale = q8_iscale(mv);
        const uint qrow = P2 + row * (n / 4) + blk * 64;
        for (uint e = 0; e < EPL; e += 4) {
            const uint k = kb + norm_elem(lc, e, C);
            vec4 y;
            for (uint j = 0; j < 4; ++j) { y[j] = d[d_base + (k + j) * pc.d_nb.x]; }
            qout[qrow + norm_elem(lc, e, C) / 4] = q8_word(iscale, mv, y);
        }
        if (lc == 0) { qout[P2 + P1 + row * nblk + blk] = floatBitsToUint(q8_scale(mv, iscale)); }
#endif
    }
}
