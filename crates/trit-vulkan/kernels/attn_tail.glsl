// Included by mul_mv_tq.comp with ATTN (a QKV dispatch with ROPE and KV): decode attention
// for one token computed by the QKV dispatch itself, so that it is not a stage of its own.
//
// The QKV rows come in row groups of ROWS rows, each inside one head (the host checks that
// ROWS divides the head size D). A KV head's "group" is its G = H / Hkv query heads' Q rows,
// its K rows and its V rows: GR = (G + 2) * D / ROWS row groups. When a workgroup has stored a
// row group (Q rotated, K rotated into the cache, V into the cache) it counts it on its
// group's counter; the workgroup that brings the counter to GR is the last of the group, and
// every row the group's attention reads (its new K and V rows, its Q) has been stored. That
// workgroup computes, for each of the group's query heads h and the NKV cache cells j:
//   x[j] = scale * sum_d K[d, j] * f16(Q[d, h]) + mask[j]
//   out[e, h] = sum_j V[e, j] exp(x[j] - max x) / sum_j exp(x[j] - max x)
// (exp(-inf) terms are 0; a head whose keys are all masked gets 0), as attn_split.comp does
// for one chunk, and resets the counter for the next dispatch. The shared memory of the
// products is free by then (every row group of this workgroup is done: the host launches
// one workgroup per row group): `sq` holds the scores, `sd` the sums; the group's Q has 2 KiB of
// its own (`att_q4`).
//
// Operands (the host checks each): K cache rows from element d_ne.z, d_ne.w halves a cell,
// head hk at hk * D, 16-byte aligned; V cache transposed (V's element r of cell j at d_ne.y
// + r * b_ne.y + j), 16-byte aligned rows; Q as the dispatch stored it (element d_ne.x + h * D
// + d); the mask's row (binding 8, element 0 on), the output (binding 9, element h * D + e),
// the counters (binding 10, one word per KV head, zero between dispatches). b_ne.x = NKV (a
// multiple of 8, G * NKV <= 2048), b_ne.z = the scale's bits. G <= 8 dividing WG, WG / G a
// multiple of the subgroup size (8 lanes or more); G * D <= 512; ATT_VP * D dividing WG, and
// (WG / (ATT_VP * D) - 1) * G * D <= 2048.

#include "f16.glsl"

layout(std430, binding = 2) coherent readonly buffer BufDQ { float dq[]; };
layout(std430, binding = 6) coherent readonly buffer BufKQ { uvec4 kq4[]; };
layout(std430, binding = 7) coherent readonly buffer BufVQ { uvec4 vq4[]; };
layout(std430, binding = 8) readonly buffer BufMask { float amask[]; };
layout(std430, binding = 9) writeonly buffer BufAO { float ao[]; };
layout(std430, binding = 10) coherent buffer BufCnt { uint acnt[]; };
shared bool att_last;
// The group's Q (G * D <= 512 values), read four at a time by the scores.
shared vec4 att_q4[128];

#define ATT_MAX_D 128u
#define ATT_MAX_G 8u   // query heads per KV head at most (the host checks)
#define ATT_LPK 4u     // lanes per cell for the scores (subgroups have 8 lanes or more here)
#define ATT_PIECES (ATT_MAX_D / 8u / ATT_LPK) // 16-byte K pieces a lane
#define ATT_VP 4u      // lanes per V element

float att_p(uint i) { return uintBitsToFloat(sq[i]); }

// Row group `w` (first row `r0`) is stored: count it, and if it is its group's last, compute
// the group's attention. Called by every invocation.
void attn_tail(uint r0) {
    const uint S = gl_SubgroupSize;
    const uint fl = gl_SubgroupID * S + gl_SubgroupInvocationID;
    const uint D = ROPE_DIMS;
    const uint G = pc.a_ne.y / pc.a_ne.w;
    const uint qrows = pc.a_ne.y;
    const uint grp = r0 < qrows ? (r0 / D) / G : (r0 < qrows + pc.a_ne.z ? (r0 - qrows) / D : (r0 - qrows - pc.a_ne.z) / D);
    const uint GR = (G + 2u) * D / ROWS;
    // The row group's stores, then its count: the last workgroup reads them after its own.
    memoryBarrierBuffer();
    barrier();
    if (fl == 0u) { att_last = atomicAdd(acnt[grp], 1u) == GR - 1u; }
    barrier();
    if (!att_last) { return; }
    memoryBarrierBuffer();

    const uint NKV = pc.b_ne.x;
    const uint D8 = D / 8u;
    // Q of the group's heads, rounded to f16 as the f16 K rows meet it.
    if (fl < G * D / 4u) {
        vec4 qv;
        [[unroll]] for (uint t = 0; t < 4u; ++t) {
            qv[t] = r16(dq[pc.d_ne.x + grp * G * D + 4u * fl + t]);
        }
        att_q4[fl] = qv;
    }
    barrier();

    // Scores: ATT_LPK adjacent lanes per cell, each reading every ATT_LPK-th 16-byte piece of
    // the cell's K row once for all G heads (4 loads in flight a lane), their sums met by
    // shuffles; x[i][j] into sq[i * NKV + j].
    const float scale = uintBitsToFloat(pc.b_ne.z);
    const uint kl = fl % ATT_LPK;
    for (uint j0 = 0; j0 < NKV; j0 += WG / ATT_LPK) {
        const uint j = j0 + fl / ATT_LPK;
        const bool has = j < NKV;
        const uint kb = (pc.d_ne.z + j * pc.d_ne.w + grp * D) / 8u;
        uvec4 kw[ATT_PIECES];
        [[unroll]] for (uint c = 0; c < ATT_PIECES; ++c) {
            const uint pc8 = c * ATT_LPK + kl;
            kw[c] = (has && pc8 < D8) ? kq4[kb + pc8] : uvec4(0);
        }
        const float m = has ? amask[j] : 0.0;
        float sc[ATT_MAX_G];
        [[unroll]] for (uint i = 0; i < ATT_MAX_G; ++i) { sc[i] = 0.0; }
        // Each K piece converted from f16 once for all the heads (the conversions, not the
        // products, bound a single workgroup's throughput here).
        [[unroll]] for (uint c = 0; c < ATT_PIECES; ++c) {
            const uint pc8 = c * ATT_LPK + kl;
            if (pc8 < D8) {
                const vec4 k0 = vec4(unpackHalf2x16(kw[c].x), unpackHalf2x16(kw[c].y));
                const vec4 k1 = vec4(unpackHalf2x16(kw[c].z), unpackHalf2x16(kw[c].w));
                [[unroll]] for (uint i = 0; i < ATT_MAX_G; ++i) {
                    if (i < G) {
                        const uint q0 = (i * D + 8u * pc8) / 4u;
                        sc[i] += dot(k0, att_q4[q0]) + dot(k1, att_q4[q0 + 1u]);
                    }
                }
            }
        }
        [[unroll]] for (uint i = 0; i < ATT_MAX_G; ++i) {
            if (i < G) {
                float x = sc[i];
                [[unroll]] for (uint o = 1; o < ATT_LPK; o <<= 1) { x += subgroupShuffleXor(x, o); }
                if (has && kl == 0u) { sq[i * NKV + j] = floatBitsToUint(x * scale + m); }
            }
        }
    }
    barrier();

    // Each head's maximum and sum: invocation (i, l) over cells l, l + HI, ...; subgroups lie
    // inside one head (HI is a multiple of S). The sums go to `sd` for the V products.
    const uint HI = WG / G;
    const uint i = fl / HI; // query head within the group
    const uint l = fl % HI;
    float mx = -1.0 / 0.0;
    for (uint j = l; j < NKV; j += HI) { mx = max(mx, uintBitsToFloat(sq[i * NKV + j])); }
    for (uint o = 1; o < S; o <<= 1) { mx = max(mx, subgroupShuffleXor(mx, o)); }
    if (gl_SubgroupInvocationID == 0u) { nred[gl_SubgroupID] = mx; }
    barrier();
    const uint sg0 = i * (HI / S);
    float M = nred[sg0];
    for (uint k = 1; k < HI / S; ++k) { M = max(M, nred[sg0 + k]); }
    float sum = 0.0;
    for (uint j = l; j < NKV; j += HI) {
        const float x = uintBitsToFloat(sq[i * NKV + j]);
        const float e = (x == -1.0 / 0.0) ? 0.0 : exp(x - M);
        sq[i * NKV + j] = floatBitsToUint(e);
        sum += e;
    }
    for (uint o = 1; o < S; o <<= 1) { sum += subgroupShuffleXor(sum, o); }
    if (gl_SubgroupInvocationID == 0u) { red[0][gl_SubgroupID] = sum; }
    barrier();
    if (l == 0u) {
        float L = red[0][sg0];
        for (uint k = 1; k < HI / S; ++k) { L += red[0][sg0 + k]; }
        sd[i] = L;
    }
    barrier();

    // out[e, h] for the G heads at once: ATT_VP adjacent lanes per element e, lane v of them
    // reading every ATT_VP-th 8-cell piece of V's row e (once for all heads, 4 loads in
    // flight), so that a warp's probability reads are ATT_VP words 8 apart (four banks, each
    // read by all the warp's elements: no bank conflicts); the cells split into WG / (ATT_VP
    // * D) ranges ("halves") whose sums meet in sq once every probability is read.
    const uint vp = fl % ATT_VP;
    const uint e = (fl / ATT_VP) % D;
    const uint vhalves = WG / (ATT_VP * D);
    const uint vhalf = fl / (ATT_VP * D);
    const uint n8 = NKV / 8u;
    const uint per = (n8 + vhalves - 1u) / vhalves;
    const uint h0 = min(n8, vhalf * per);
    const uint h1 = min(n8, h0 + per);
    const uint vb = (pc.d_ne.y + (grp * D + e) * pc.b_ne.y) / 8u;
    float acc[ATT_MAX_G];
    [[unroll]] for (uint k = 0; k < ATT_MAX_G; ++k) { acc[k] = 0.0; }
    for (uint c = h0 + vp; c < h1; c += 4u * ATT_VP) {
        uvec4 vw[4];
        [[unroll]] for (uint u = 0; u < 4u; ++u) {
            const uint cu = c + u * ATT_VP;
            vw[u] = cu < h1 ? vq4[vb + cu] : uvec4(0);
        }
        [[unroll]] for (uint u = 0; u < 4u; ++u) {
            const uint cu = c + u * ATT_VP;
            if (cu < h1) {
                const vec4 v0 = vec4(unpackHalf2x16(vw[u].x), unpackHalf2x16(vw[u].y));
                const vec4 v1 = vec4(unpackHalf2x16(vw[u].z), unpackHalf2x16(vw[u].w));
                [[unroll]] for (uint k = 0; k < ATT_MAX_G; ++k) {
                    if (k < G) {
                        const uint j = k * NKV + 8u * cu;
                        acc[k] += dot(v0, vec4(att_p(j), att_p(j + 1u), att_p(j + 2u), att_p(j + 3u)))
                            + dot(v1, vec4(att_p(j + 4u), att_p(j + 5u), att_p(j + 6u), att_p(j + 7u)));
                    }
                }
            }
        }
    }
    [[unroll]] for (uint k = 0; k < ATT_MAX_G; ++k) {
        [[unroll]] for (uint m = 1; m < ATT_VP; m <<= 1) { acc[k] += subgroupShuffleXor(acc[k], m); }
    }
    barrier(); // every probability is read: sq takes the other ranges' sums
    if (vhalf > 0u && vp == 0u) {
        [[unroll]] for (uint k = 0; k < ATT_MAX_G; ++k) {
            if (k < G) { sq[((vhalf - 1u) * G + k) * D + e] = floatBitsToUint(acc[k]); }
        }
    }
    barrier();
    if (vhalf == 0u && vp == 0u) {
        [[unroll]] for (uint k = 0; k < ATT_MAX_G; ++k) {
            if (k < G) {
                float o = acc[k];
                for (uint hh = 1; hh < vhalves; ++hh) { o += uintBitsToFloat(sq[((hh - 1u) * G + k) * D + e]); }
                const float L = sd[k];
                ao[(grp * G + k) * D + e] = L > 0.0 ? o / L : 0.0;
            }
        }
    }
    if (fl == 0u) { acnt[grp] = 0u; }
}
