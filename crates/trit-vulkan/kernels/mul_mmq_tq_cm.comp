#version 450
// Ternary mat-mat for prompt processing on tensor cores: the operands, tiles and results of
// mul_mmq_tq.comp (64 x 64 outputs per workgroup) or, with BIG, mul_mmq_tq_big.comp
// (128 x 64), or with SMALL 32 x 64 (twice the workgroups of a product whose 64-row tiles
// would leave much of the GPU idle), with the integer products done by NVIDIA's cooperative matrices
// (VK_NV_cooperative_matrix, int8 x int8 -> int32, subgroup scope, 16 x NS x 32; NS = 8 or
// 16, the host picks a shape the device lists). 256 invocations: 8 subgroups of 32, laid out
// WM x WN over the tile, each computing FM x FN fragments of 16 rows x NS columns.
// K goes in steps of 128 weights (SK words of int8), two per 256-block: the step's weights,
// decoded to signed int8 in activation order, and its activations go through shared memory,
// rows (weights) and columns (activations) each with K contiguous, so the fragments load
// row-major (A) and column-major (B). After a block's second step each invocation adds the
// int32 elements it owns of each fragment, times weight scale times activation scale, to the
// same elements of an f32 fragment, as the CPU's TQ*_0 x Q8_K dot does per block. Where a
// fragment's elements live in the invocations is the implementation's choice: a fragment
// loaded once from each element's own index says which row and column each one is.
// Without COOPMAT (the `_emu` variants, for tests on devices without the extension) each
// invocation computes its fragment elements' integer sums itself from the same shared
// memory, through the same slot and scaling: everything but the matrix instructions.
// A_TQ2 | A_TQ1; RES as in mul_mmq_tq.comp.
#include "common.glsl"
#if defined(COOPMAT)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#extension GL_NV_integer_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#extension GL_KHR_shader_subgroup_basic : require
#endif

#if defined(BIG)
#define TM 128
#define WM 4
#define WN 2
#elif defined(SMALL)
#define TM 32
#define WM 2
#define WN 4
#else
#define TM 64
#define WM 2
#define WN 4
#endif
#define TN 64
#ifndef NS
#define NS 8
#endif
#define WG 256
#define FM (TM / WM / 16)
#define FN (TN / WN / NS)
#define NF (FM * FN)
#define E (16 * NS / 32) // elements of a fragment per invocation
#define SK 32 // words of int8 (128 weights) per step
#define SS (SK + 4) // row stride of sa / sb in words: a multiple of 16 bytes, as cooperative loads need
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
layout(std430, binding = 1) readonly buffer BufB { uint b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
// A fused MUL by a one-element tensor: d_ne.x != 0 says it is there, d_ne.y is its element.
layout(std430, binding = 3) readonly buffer BufS { float sc[]; };
#if defined(RES)
// RES: a fused ADD of a same-shaped tensor (the residual) after the scale, from element
// d_ne.z of binding 4, with dst's strides.
layout(std430, binding = 4) readonly buffer BufR { float res[]; };
#endif

shared uint sa[TM * SS];
shared uint sb[TN * SS];
shared float sdw[TM];
shared float sdx[TN];
shared int slot[(WG / 32) * 16 * NS]; // one fragment per subgroup, row-major

uint load32(uint addr) {
    const uint w = addr >> 2;
    if ((addr & 2u) == 0u) { return a[w]; }
    return (a[w] >> 16) | (a[w + 1] << 16);
}
float half_at(uint addr) {
    const uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}
uint to_signed(uint codes) { return ((codes | 0x80808080u) - 0x01010101u) ^ 0x80808080u; }

#include "tq_layout.glsl"
#if !defined(A_TQ2)
// The trits n of the four bytes of `w` (pw = 3^n), each as the code 0..2.
uint trits(uint w, uint pw) {
    uint lo = ((w & 0x00FF00FFu) * pw) & 0x00FF00FFu;
    uint hi = (((w >> 8) & 0x00FF00FFu) * pw) & 0x00FF00FFu;
    lo = ((lo * 3u) >> 8) & 0x00FF00FFu;
    hi = ((hi * 3u) >> 8) & 0x00FF00FFu;
    return lo | (hi << 8);
}
#endif

#if !defined(COOPMAT)
int dot4(uint x, uint y) {
    const ivec4 p = ivec4(int(x << 24) >> 24, int(x << 16) >> 24, int(x << 8) >> 24, int(x) >> 24);
    const ivec4 q = ivec4(int(y << 24) >> 24, int(y << 16) >> 24, int(y << 8) >> 24, int(y) >> 24);
    return p.x * q.x + p.y * q.y + p.z * q.z + p.w * q.w;
}
#endif

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
    const uint nblocks = K / 256;
    const uint kw_col = K / 4;
    const uint fc0 = c0 + cols * (i2 + pc.b_ne.z * i3); // flat column of c0

    // Subgroup sg (32 invocations) computes rows fr0 + [0, 16 FM) x columns fc + [0, NS FN)
    // of the tile; lane l holds elements idx = e * 32 + l (row idx / NS, column idx % NS)
    // of each fragment.
    const uint sg = t / 32u;
    const uint lane = t % 32u;
    const uint fr0 = (sg % WM) * (FM * 16u);
    const uint fcl = (sg / WM) * (FN * NS);
    const uint sbase = sg * (16u * NS);

#if defined(COOPMAT)
    // The f32 sums stay in fragments too: pos holds, in each element an invocation owns, that
    // element's index in the fragment (row-major: row pos / NS, column pos % NS), loaded once
    // from this subgroup's slot, so each block's scaling reads the integer sums where they
    // are instead of through shared memory.
    fcoopmatNV<32, gl_ScopeSubgroup, 16, NS> acc[NF];
    icoopmatNV<32, gl_ScopeSubgroup, 16, NS> cm[NF];
    [[unroll]] for (uint f = 0; f < NF; ++f) {
        acc[f] = fcoopmatNV<32, gl_ScopeSubgroup, 16, NS>(0.0);
        cm[f] = icoopmatNV<32, gl_ScopeSubgroup, 16, NS>(0);
    }
    icoopmatNV<32, gl_ScopeSubgroup, 16, NS> pos;
    for (uint e = lane; e < 16u * NS; e += 32u) { slot[sbase + e] = int(e); }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    coopMatLoadNV(pos, slot, sbase, NS, false);
#else
    float acc[NF * E];
    [[unroll]] for (uint i = 0; i < NF * E; ++i) { acc[i] = 0.0; }
    int isum[NF * E];
    [[unroll]] for (uint i = 0; i < NF * E; ++i) { isum[i] = 0; }
#endif

    for (uint blk = 0; blk < nblocks; ++blk) {
        for (uint h = 0; h < 2u; ++h) {
            // Weights of rows r0.., K step h of block blk, in activation order.
#if defined(A_TQ2)
            // Code word j (8 per step), shift l: weights ((j/8)*4 + l)*32 + (j%8)*4 .. +3 of
            // the block, i.e. word l*8 + j%8 of step j/8.
            for (uint it = t; it < TM * 8u; it += WG) {
                const uint rr = it / 8u;
                const uint jj = it % 8u;
                const uint r = r0 + rr;
                const bool ok = r < rows;
                const uint cw = ok ? load32(a_base + r * pc.a_nb.y + blk * TQ_CODE_STEP + 4u * (h * 8u + jj)) : 0u;
                [[unroll]] for (uint l = 0; l < 4u; ++l) {
                    const uint codes = ok ? (cw >> (2u * l)) & 0x03030303u : 0x01010101u; // code 1: weight 0
                    sa[rr * SS + l * 8u + jj] = to_signed(codes);
                }
            }
#else
            // Code words 0..7 (bytes 0..31) hold trits n = 0..4 of weights n*32 + 4j .. +3 (block
            // word n*8 + j); words 8..11, trits 0..4: weights 160 + n*16 + 4(j-8) (word 40 + 4n +
            // j-8); word 12, trits 0..3: weights 240 + 4n (word 60 + n). Step 0 is block words
            // 0..31: trits 0..3 of words 0..7. Step 1, words 32..63: trit 4 of words 0..7, all of
            // words 8..11 and 12; item jj takes word jj and, for jj < 5, word 8 + jj.
            for (uint it = t; it < TM * 8u; it += WG) {
                const uint rr = it / 8u;
                const uint jj = it % 8u;
                const uint r = r0 + rr;
                const bool ok = r < rows;
                const uint base = a_base + r * pc.a_nb.y + blk * TQ_CODE_STEP;
                const uint cw = ok ? load32(base + 4u * jj) : 0u;
                if (h == 0u) {
                    uint pw = 1u;
                    [[unroll]] for (uint n = 0; n < 4u; ++n) {
                        sa[rr * SS + n * 8u + jj] = ok ? to_signed(trits(cw, pw)) : 0u;
                        pw *= 3u;
                    }
                } else {
                    sa[rr * SS + jj] = ok ? to_signed(trits(cw, 81u)) : 0u;
                    if (jj < 5u) {
                        const uint cw2 = ok ? load32(base + 4u * (8u + jj)) : 0u;
                        const uint nt = jj < 4u ? 5u : 4u;
                        const uint at = jj < 4u ? 8u + jj : 28u;
                        const uint step = jj < 4u ? 4u : 1u;
                        uint pw = 1u;
                        for (uint n = 0; n < nt; ++n) {
                            sa[rr * SS + at + n * step] = ok ? to_signed(trits(cw2, pw)) : 0u;
                            pw *= 3u;
                        }
                    }
                }
            }
#endif
            for (uint it = t; it < TN * SK; it += WG) {
                const uint cc = it / SK;
                const uint kk = it % SK;
                sb[cc * SS + kk] = c0 + cc < cols ? b[B_OFF + (fc0 + cc) * kw_col + blk * 64u + h * SK + kk] : 0u;
            }
            if (h == 0u) {
                if (t < TM) {
                    const uint r = r0 + t;
                    sdw[t] = r < rows ? half_at(tq_scale_at(a_base + r * pc.a_nb.y, blk)) : 0.0;
                }
                if (t < TN) {
                    const uint c = c0 + t;
                    sdx[t] = c < cols ? uintBitsToFloat(b[B_OFF + P0 + (fc0 + t) * nblocks + blk]) : 0.0;
                }
            }
            barrier();
            [[unroll]] for (uint ks = 0; ks < SK / 8u; ++ks) {
#if defined(COOPMAT)
                icoopmatNV<8, gl_ScopeSubgroup, 16, 32> fa[FM];
                [[unroll]] for (uint i = 0; i < FM; ++i) {
                    coopMatLoadNV(fa[i], sa, (fr0 + 16u * i) * SS + ks * 8u, SS, false);
                }
                [[unroll]] for (uint j = 0; j < FN; ++j) {
                    icoopmatNV<8, gl_ScopeSubgroup, 32, NS> fb;
                    coopMatLoadNV(fb, sb, (fcl + NS * j) * SS + ks * 8u, SS, true);
                    [[unroll]] for (uint i = 0; i < FM; ++i) { cm[i * FN + j] = coopMatMulAddNV(fa[i], fb, cm[i * FN + j]); }
                }
#else
                [[unroll]] for (uint f = 0; f < NF; ++f) {
                    [[unroll]] for (uint e = 0; e < E; ++e) {
                        const uint idx = e * 32u + lane;
                        const uint ra = (fr0 + 16u * (f / FN) + idx / NS) * SS + ks * 8u;
                        const uint rb = (fcl + NS * (f % FN) + idx % NS) * SS + ks * 8u;
                        int s = 0;
                        for (uint q = 0; q < 8u; ++q) { s += dot4(sa[ra + q], sb[rb + q]); }
                        isum[f * E + e] += s;
                    }
                }
#endif
            }
            if (h == 1u) {
                // The block's integer sums times the scales (without COOPMAT through this
                // subgroup's slot, as the fragments' layout is the implementation's).
                [[unroll]] for (uint f = 0; f < NF; ++f) {
#if defined(COOPMAT)
                    for (uint i = 0; i < uint(pos.length()); ++i) {
                        const uint idx = uint(pos[i]);
                        const float dw = sdw[fr0 + 16u * (f / FN) + idx / NS];
                        const float dx = sdx[fcl + NS * (f % FN) + idx % NS];
                        acc[f][i] += float(cm[f][i]) * (dw * dx);
                    }
                    cm[f] = icoopmatNV<32, gl_ScopeSubgroup, 16, NS>(0);
#else
                    [[unroll]] for (uint e = 0; e < E; ++e) { slot[sbase + e * 32u + lane] = isum[f * E + e]; }
                    [[unroll]] for (uint e = 0; e < E; ++e) {
                        const uint idx = e * 32u + lane;
                        const float dw = sdw[fr0 + 16u * (f / FN) + idx / NS];
                        const float dx = sdx[fcl + NS * (f % FN) + idx % NS];
                        acc[f * E + e] += float(slot[sbase + idx]) * (dw * dx);
                    }
                    [[unroll]] for (uint e = 0; e < E; ++e) { isum[f * E + e] = 0; }
#endif
                }
            }
            barrier();
        }
    }
    const bool scaled = pc.d_ne.x != 0u;
    const float scale = scaled ? sc[pc.d_ne.y] : 1.0;
    [[unroll]] for (uint f = 0; f < NF; ++f) {
#if defined(COOPMAT)
        for (uint i = 0; i < uint(pos.length()); ++i) {
            const uint idx = uint(pos[i]);
            const float sum = acc[f][i];
#else
        [[unroll]] for (uint e = 0; e < E; ++e) {
            const uint idx = e * 32u + lane;
            const float sum = acc[f * E + e];
#endif
            const uint r = r0 + fr0 + 16u * (f / FN) + idx / NS;
            const uint c = c0 + fcl + NS * (f % FN) + idx % NS;
            if (r < rows && c < cols) {
                precise float v = scaled ? sum * scale : sum;
#if defined(RES)
                precise float vr = v + res[pc.d_ne.z + r * pc.d_nb.x + c * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w];
#else
                const float vr = v;
#endif
                d[D_OFF + r * pc.d_nb.x + c * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w] = vr;
            }
        }
    }
}
