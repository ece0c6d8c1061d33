#version 450
// OUT_PROD of an f16 weight on NVIDIA's tensor cores for aligned operands (the tied LM head's
// input gradient over a training window, dX = W · dlogits): dst[i0, i1, i2, i3] = sum_k
// A[i0, k, ..] * B[i1, k, i2, i3], with A contiguous along i0 and B contiguous along k. The
// arithmetic is out_prod_cm.comp's: B split into hi (top 11 bits, exact in f16) and lo (the
// rest, in f16) after a power-of-two column scale from col_scale.comp (binding 3), two
// products per fragment into f32, the scale undone at the end; the split along k and its
// partial-sum layout (P0 slices of P1, slice s at D_OFF + s P2) are out_prod.comp's. The
// staging is mul_mm_f16_cmv.comp's:
// - 128 (i0) x 64 (i1) tiles, 8 subgroups as 4 (i0) x 2 (i1), each 32 x 32 = 2 x 2 fragments
//   (two A, two hi and two lo loads from shared memory feed eight products);
// - global loads of 16 bytes (eight f16 of A along i0; two vec4 of B along k, split into
//   eight hi and eight lo f16);
// - k in slices of 32 through two shared buffers, one barrier a slice.
// The host picks it only where i0's count and A's k stride are multiples of 8, A is
// contiguous along i0 and B along k, B's other strides are multiples of 4 and both bindings
// start 16-byte aligned (A_OFF and B_OFF are then in 16-byte units).
// Without COOPMAT (`_emu`): each invocation computes its fragment elements from the same
// shared memory (for tests on devices without the extension).
#include "common.glsl"
#if defined(COOPMAT)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#endif

#define TM 128
#define TN 64
#define BK 32
#define WM 4
#define FM 2
#define FN 2
#define SA 17 // uvec4 per k row of an A slice: 128 f16 of i0 = 16, plus one of padding
#define SV 5  // uvec4 per column of a B slice: BK f16 = 4, plus one of padding
#define WG 256
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer BufA { uvec4 a[]; };
layout(std430, binding = 1) readonly buffer BufB { vec4 b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
layout(std430, binding = 3) readonly buffer BufS { float col_scale[]; };

shared uvec4 sa[2 * BK * SA]; // [buffer][k][i0 / 8]; also the fragments on their way out
shared uvec4 sbh[2 * TN * SV]; // [buffer][i1][k / 8]
shared uvec4 sbl[2 * TN * SV];
shared float ss[TN]; // the tile's column scales

// One slice in registers: A k row it / 16, i0 words it % 16 (it = t + WG l); B column t / 4,
// k words t % 4 (hi and lo).
uvec4 ra[2];
uvec4 rbh;
uvec4 rbl;

uvec4 split_hi(vec4 x, vec4 y, out uvec4 lo) {
    const vec4 hx = uintBitsToFloat(floatBitsToUint(x) & 0xFFFFE000u);
    const vec4 hy = uintBitsToFloat(floatBitsToUint(y) & 0xFFFFE000u);
    lo = uvec4(packHalf2x16((x - hx).xy), packHalf2x16((x - hx).zw), packHalf2x16((y - hy).xy),
               packHalf2x16((y - hy).zw));
    return uvec4(packHalf2x16(hx.xy), packHalf2x16(hx.zw), packHalf2x16(hy.xy), packHalf2x16(hy.zw));
}

void load_slice(uint a_base, uint a_k, uint b_base, uint b_col, uint i0b, uint i1b, uint k0, uint K, uint ne0,
                uint ne1, uint t) {
    [[unroll]] for (uint l = 0; l < 2u; ++l) {
        const uint it = t + l * WG;
        const uint k = k0 + it / 16u;
        const uint i0 = i0b + 8u * (it % 16u);
        ra[l] = k < K && i0 < ne0 ? a[a_base + k * a_k + i0 / 8u] : uvec4(0u);
    }
    const uint c = t / 4u;
    const uint k = k0 + 8u * (t % 4u);
    if (i1b + c < ne1 && k < K) {
        const uint at = b_base + (i1b + c) * b_col + k / 4u;
        const float s = ss[c];
        rbh = split_hi(b[at] * s, b[at + 1u] * s, rbl);
    } else {
        rbh = uvec4(0u);
        rbl = uvec4(0u);
    }
}

void store_slice(uint buf, uint t) {
    [[unroll]] for (uint l = 0; l < 2u; ++l) {
        const uint it = t + l * WG;
        sa[buf * (BK * SA) + (it / 16u) * SA + it % 16u] = ra[l];
    }
    const uint at = buf * (TN * SV) + (t / 4u) * SV + t % 4u;
    sbh[at] = rbh;
    sbl[at] = rbl;
}

#if !defined(COOPMAT)
float half_of(uvec4 v, uint h) { return unpackHalf2x16(v[h / 2u])[h % 2u]; }
float a_at(uint buf, uint m, uint k) { return half_of(sa[buf * (BK * SA) + k * SA + m / 8u], m % 8u); }
float b_at(uint buf, uint n, uint k) {
    const uint at = buf * (TN * SV) + n * SV + k / 8u;
    return half_of(sbh[at], k % 8u) + half_of(sbl[at], k % 8u);
}
#endif

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
    // In 16-byte units.
    const uint a_base = A_OFF + (a2 * pc.a_nb.z + a3 * pc.a_nb.w) / 8u;
    const uint b_base = B_OFF + (i2 * pc.b_nb.z + i3 * pc.b_nb.w) / 4u;
    const uint a_k = pc.a_nb.y / 8u;
    const uint b_col = pc.b_nb.x / 4u;
    const uint i0b = tile0 * TM, i1b = tile1 * TN;
    const uint col0 = (i3 * pc.d_ne.z + i2) * ne1 + i1b;
    if (t < TN) {
        ss[t] = i1b + t < ne1 ? col_scale[col0 + t] : 1.0;
    }
    barrier(); // ss is written

    const uint sg = t / 32u;
    const uint lane = t % 32u;
    const uint m_sub = 32u * (sg % WM), n_sub = 32u * (sg / WM);
#if defined(COOPMAT)
    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[FM * FN];
    [[unroll]] for (uint f = 0; f < FM * FN; ++f) { acc[f] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0); }
#else
    float acc[FM * FN * 8];
    [[unroll]] for (uint i = 0; i < FM * FN * 8; ++i) { acc[i] = 0.0; }
#endif

    const uint nslices = (K - k_lo + BK - 1) / BK;
    load_slice(a_base, a_k, b_base, b_col, i0b, i1b, k_lo, K, ne0, ne1, t);
    store_slice(0u, t);
    barrier();
    for (uint s = 0; s < nslices; ++s) {
        const uint cur = s & 1u;
        const bool more = s + 1u < nslices;
        if (more) { load_slice(a_base, a_k, b_base, b_col, i0b, i1b, k_lo + (s + 1u) * BK, K, ne0, ne1, t); }
        [[unroll]] for (uint ks = 0; ks < BK / 16u; ++ks) {
#if defined(COOPMAT)
            fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[FM];
            [[unroll]] for (uint i = 0; i < FM; ++i) {
                coopMatLoadNV(fa[i], sa, cur * (BK * SA) + (ks * 16u) * SA + (m_sub + 16u * i) / 8u, SA, true);
            }
            [[unroll]] for (uint j = 0; j < FN; ++j) {
                fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fh, fl;
                const uint at = cur * (TN * SV) + (n_sub + 16u * j) * SV + ks * 2u;
                coopMatLoadNV(fh, sbh, at, SV, true);
                coopMatLoadNV(fl, sbl, at, SV, true);
                [[unroll]] for (uint i = 0; i < FM; ++i) {
                    acc[i * FN + j] = coopMatMulAddNV(fa[i], fh, acc[i * FN + j]);
                    acc[i * FN + j] = coopMatMulAddNV(fa[i], fl, acc[i * FN + j]);
                }
            }
#else
            [[unroll]] for (uint f = 0; f < FM * FN; ++f) {
                for (uint e = 0; e < 8u; ++e) {
                    const uint idx = e * 32u + lane;
                    const uint m = m_sub + 16u * (f / FN) + idx % 16u;
                    const uint n = n_sub + 16u * (f % FN) + idx / 16u;
                    float sum = 0.0;
                    for (uint q = 0; q < 16u; ++q) { sum += a_at(cur, m, ks * 16u + q) * b_at(cur, n, ks * 16u + q); }
                    acc[f * 8u + e] += sum;
                }
            }
#endif
        }
        if (more) { store_slice(cur ^ 1u, t); }
        barrier();
    }

    // Each fragment through this subgroup's 64 uvec4 of sa (column-major 16 x 16 f32: element
    // idx = 32 e + lane is i0 idx % 16, i1 idx / 16), divided by its column's scale; the
    // loop's last barrier ended every read of sa.
    const uint sbase = sg * 64u;
    [[unroll]] for (uint f = 0; f < FM * FN; ++f) {
#if defined(COOPMAT)
        coopMatStoreNV(acc[f], sa, sbase, 4u, true);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
#endif
        [[unroll]] for (uint e = 0; e < 8u; ++e) {
            const uint idx = e * 32u + lane;
            const uint c = n_sub + 16u * (f % FN) + idx / 16u;
            const uint i0 = i0b + m_sub + 16u * (f / FN) + idx % 16u, i1 = i1b + c;
#if defined(COOPMAT)
            const float sum = uintBitsToFloat(sa[sbase + idx / 4u][idx % 4u]);
#else
            const float sum = acc[f * 8u + e];
#endif
            if (i0 < ne0 && i1 < ne1) {
                const float v = sum / ss[c];
                if (slices > 1u) {
                    d[D_OFF + slice * P2 + ((i3 * pc.d_ne.z + i2) * ne1 + i1) * ne0 + i0] = v;
                } else {
                    d[D_OFF + strided(uvec4(i0, i1, i2, i3), pc.d_nb)] = v;
                }
            }
        }
#if defined(COOPMAT)
        subgroupBarrier();
#endif
    }
}
