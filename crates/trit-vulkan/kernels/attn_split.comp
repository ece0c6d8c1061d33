#version 450
// Decode attention with the keys split across workgroups ("flash decoding"): the chain
// attn_decode.comp computes (KQ = MUL_MAT(K, Q), SOFT_MAX(KQ * scale + mask), KQV =
// MUL_MAT(V, softmax)), for a few query rows, but each (query row, head) takes S workgroups,
// one per chunk of CH consecutive keys, instead of one for all its keys: on a large GPU the
// one-workgroup form runs H * T workgroups (20 for a 2B-4T token) and leaves most of the
// device idle. Workgroup (row, s) computes over its keys j in [s * CH, s * CH + CH):
//   x[j] = scale * sum_d K[d, j, hk] * f16(Q[d, t, h]) + mask[j, t]
//   m_s  = max_j x[j],  l_s = sum_j exp(x[j] - m_s),  o_s[e] = sum_j V[j, e, hk] exp(x[j] - m_s)
// (exp(-inf) terms are 0) and stores (m_s, l_s, o_s) to scratch; the last workgroup of the
// row to finish (an atomic counter per row, reset to 0 by that workgroup) combines them:
//   M = max_s m_s,  out[e] = sum_s o_s[e] exp(m_s - M) / sum_s l_s exp(m_s - M)
// (0 where every key is masked). With S = 1 the workgroup writes o / l itself. Unlike the
// one-workgroup kernel the probabilities are not rounded to f16 before the V product (they
// are not known before the combine); the difference is within f16 rounding (NMSE ~1e-8).
//
// Scores: LPK lanes per key, lane l reading 16-byte pieces l, l + LPK, ... of the key's row
// (the lanes of a key read consecutive pieces), KPP keys per pass. V: output e by PARTS
// invocations, each over a contiguous range of the chunk's 8-key pieces (V's rows hold
// keys contiguously: the transposed cache).
//
// Bindings: 0 K (uvec4, A_OFF and a_nb.yz in 16-byte units), 1 Q (f32, B_OFF, b_nb), 2 out
// (f32, D_OFF), 3 mask (f32, element d_nb.w, row stride P1; P2 != 0 when bound), 4 V (uvec4,
// element d_ne.w, row stride d_ne.y, head stride d_ne.z in 16-byte units), 5 scratch (from
// its start: CNT_WORDS counters, then the partials, D + 2 words per (row, s)).
// a_ne = K's ne (D, n_kv, Hkv), b_ne = Q's ne (D, T, H), d_nb.xyz = out's strides for
// (e, t, h) in floats, P0 = scale (float bits), d_ne.x = CH | S << 16; N_ITEMS = rows * S.
// The host checks D <= MAX_D, D and n_kv multiples of 8, CH a multiple of KPP and at most
// MAX_CH, S <= MAX_SPLITS, rows <= CNT_WORDS, (S - 1) * CH < n_kv and the partials within the scratch.
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require

#define WG 128
#define LPK 4 // lanes per key (a subgroup has at least 4 lanes)
#define KPP (WG / LPK) // keys per pass
#define MAX_CH 1024
#define MAX_D 128
#define PIECES ((MAX_D / 8) / LPK) // 16-byte pieces of a key per lane
#define UV 4 // V loads in flight per invocation
#define CNT_WORDS 1024u
#define MAX_SPLITS 32 // chunks per row at most
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer BufK { uvec4 k[]; };
layout(std430, binding = 1) readonly buffer BufQ { float q[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
layout(std430, binding = 3) readonly buffer BufM { float m[]; };
layout(std430, binding = 4) readonly buffer BufV { uvec4 v[]; };
// Written by every workgroup of a row, read by its last: coherent, so the last reads them
// from where the others' writes went, not from a stale cache of its own.
layout(std430, binding = 5) coherent buffer BufS { uint sw[]; };

shared float sc[MAX_CH];
shared vec4 qs[MAX_D / 4];
shared float red[WG];
shared bool is_last;

#include "attn_common.glsl"

// The maximum and the sum each in slots of their own, so neither needs a barrier after its
// reads (attn_common.glsl's wg_max / wg_sum reuse one array: two barriers each).
shared float red_max[WG];
shared float red_sum[WG];
float wg_max1(float x) {
    for (uint m = 1; m < gl_SubgroupSize; m <<= 1) { x = max(x, subgroupShuffleXor(x, m)); }
    if (gl_SubgroupInvocationID == 0) { red_max[gl_SubgroupID] = x; }
    barrier();
    float r = red_max[0];
    for (uint i = 1; i < gl_NumSubgroups; ++i) { r = max(r, red_max[i]); }
    return r;
}
float wg_sum1(float x) {
    for (uint m = 1; m < gl_SubgroupSize; m <<= 1) { x += subgroupShuffleXor(x, m); }
    if (gl_SubgroupInvocationID == 0) { red_sum[gl_SubgroupID] = x; }
    barrier();
    float r = red_sum[0];
    for (uint i = 1; i < gl_NumSubgroups; ++i) { r += red_sum[i]; }
    return r;
}

void main() {
    const uint item = wg_index();
    if (item >= N_ITEMS) { return; } // whole workgroups only
    // Flat index by subgroup, so the LPK lanes of a key are lanes of one subgroup.
    const uint fl = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
    const uint CH = pc.d_ne.x & 0xFFFFu;
    const uint S = pc.d_ne.x >> 16;
    const uint row = item / S;
    const uint split = item % S;
    const uint D = pc.a_ne.x;
    const uint D8 = D / 8;
    const uint NKV = pc.a_ne.y;
    const uint T = pc.b_ne.y;
    const uint H = pc.b_ne.z;
    const uint t = row % T;
    const uint h = row / T;
    const uint hk = h / (H / pc.a_ne.z);
    const uint j0 = split * CH;
    const uint nk = min(CH, NKV - j0);

    // The first pass's key pieces and the first V pieces are loaded before anything waits
    // (they do not depend on Q or the scores), so their latency overlaps Q's.
    const uint kl = fl % LPK;
    const uint kk = fl / LPK;
    const uint k_base = A_OFF + hk * pc.a_nb.z;
    uvec4 w[PIECES];
    {
        const bool has = kk < nk;
        const uint kb = k_base + (j0 + kk) * pc.a_nb.y;
        [[unroll]] for (uint i = 0; i < PIECES; ++i) {
            const uint c = i * LPK + kl;
            w[i] = (has && c < D8) ? k[kb + c] : uvec4(0);
        }
    }
    const uint parts = WG / D;
    const uint e = fl % D;
    const uint part = fl / D;
    const uint n8 = nk / 8;
    const uint per = (n8 + parts - 1) / parts;
    const uint c0 = part < parts ? part * per : n8;
    const uint c1 = part < parts ? min(n8, c0 + per) : n8;
    const uint vb = pc.d_ne.w + e * pc.d_ne.y + hk * pc.d_ne.z + j0 / 8;
    uvec4 wv[UV];
    [[unroll]] for (uint u = 0; u < UV; ++u) { wv[u] = c0 + u < c1 ? v[vb + c0 + u] : uvec4(0); }

    const uint q_base = B_OFF + t * pc.b_nb.y + h * pc.b_nb.z;
    if (fl < D / 4) {
        vec4 x;
        [[unroll]] for (uint i = 0; i < 4; ++i) { x[i] = r16(q[q_base + (4 * fl + i) * pc.b_nb.x]); }
        qs[fl] = x;
    }
    barrier();

    // Scores of the chunk, KPP keys a pass, and their maximum.
    const float scale = uintBitsToFloat(P0);
    float mx = -1.0 / 0.0;
    for (uint p = 0; p < nk; p += KPP) {
        const uint jl = p + kk;
        const bool has = jl < nk;
        if (p > 0) {
            const uint kb = k_base + (j0 + jl) * pc.a_nb.y;
            [[unroll]] for (uint i = 0; i < PIECES; ++i) {
                const uint c = i * LPK + kl;
                w[i] = (has && c < D8) ? k[kb + c] : uvec4(0);
            }
        }
        float s = 0.0;
        [[unroll]] for (uint i = 0; i < PIECES; ++i) {
            const uint c = i * LPK + kl;
            if (c < D8) { s += dot8(w[i], qs[2 * c], qs[2 * c + 1]); }
        }
        [[unroll]] for (uint o = 1; o < LPK; o <<= 1) { s += subgroupShuffleXor(s, o); }
        float x = -1.0 / 0.0;
        if (has) {
            x = s * scale;
            if (P2 != 0u) { x += m[pc.d_nb.w + t * P1 + j0 + jl]; }
            if (kl == 0) { sc[jl] = x; }
        }
        mx = max(mx, x);
    }
    mx = wg_max1(mx);

    float sum = 0.0;
    for (uint j = fl; j < nk; j += WG) {
        const float x = sc[j];
        const float e = (x == -1.0 / 0.0) ? 0.0 : exp(x - mx);
        sc[j] = e;
        sum += e;
    }
    sum = wg_sum1(sum);

    // o_s[e] by PARTS invocations over contiguous ranges of 8-key pieces (the first UV
    // loaded above).
    float acc = 0.0;
    for (uint c = c0; c < c1; c += UV) {
        if (c > c0) {
            [[unroll]] for (uint u = 0; u < UV; ++u) { wv[u] = c + u < c1 ? v[vb + c + u] : uvec4(0); }
        }
        [[unroll]] for (uint u = 0; u < UV; ++u) {
            if (c + u < c1) {
                const uint j = 8 * (c + u);
                acc += dot8(wv[u], vec4(sc[j], sc[j + 1], sc[j + 2], sc[j + 3]),
                            vec4(sc[j + 4], sc[j + 5], sc[j + 6], sc[j + 7]));
            }
        }
    }
    float o = 0.0;
    if (parts == 1u) {
        o = acc; // one part (D = WG): nothing to add up
    } else {
        red[fl] = acc;
        barrier();
        if (fl < D) {
            for (uint p = 0; p < parts; ++p) { o += red[p * D + fl]; }
        }
    }
    const uint out_at = D_OFF + fl * pc.d_nb.x + t * pc.d_nb.y + h * pc.d_nb.z;
    if (S == 1u) {
        if (fl < D) { d[out_at] = sum > 0.0 ? o / sum : 0.0; }
        return;
    }

    // This chunk's (m, l, o) to scratch; the row's last workgroup combines them all.
    const uint pb = CNT_WORDS + item * (D + 2u);
    if (fl < D) { sw[pb + 2u + fl] = floatBitsToUint(o); }
    if (fl == 0) {
        sw[pb] = floatBitsToUint(mx);
        sw[pb + 1u] = floatBitsToUint(sum);
    }
    memoryBarrierBuffer();
    barrier();
    if (fl == 0) { is_last = atomicAdd(sw[row], 1u) == S - 1u; }
    barrier();
    if (!is_last) { return; }
    memoryBarrierBuffer();
    // Every output lane loads the chunks' (m, l) (the same words: one broadcast each) with its
    // own partial sums, 8 chunks a round, all issued before use; no barrier, no shared memory.
    // M, L and O are kept for the chunks so far, rescaled when a round raises M; with up to 8
    // chunks (a decode token's 256 keys at 32 a chunk) there is one round, so M is the maximum
    // over all chunks before any is weighted, as in the formula above.
    if (fl < D) {
        const uint rb = CNT_WORDS + row * S * (D + 2u);
        float M = -1.0 / 0.0;
        float L = 0.0;
        float O = 0.0;
        for (uint s0 = 0; s0 < S; s0 += 8u) {
            float mv[8];
            float lv[8];
            float ov[8];
            [[unroll]] for (uint u = 0; u < 8u; ++u) {
                const bool has = s0 + u < S;
                const uint at = rb + (s0 + u) * (D + 2u);
                mv[u] = has ? uintBitsToFloat(sw[at]) : -1.0 / 0.0;
                lv[u] = has ? uintBitsToFloat(sw[at + 1u]) : 0.0;
                ov[u] = has ? uintBitsToFloat(sw[at + 2u + fl]) : 0.0;
            }
            float Mn = M;
            [[unroll]] for (uint u = 0; u < 8u; ++u) { Mn = max(Mn, mv[u]); }
            if (M != -1.0 / 0.0 && Mn != M) {
                const float f = exp(M - Mn);
                L *= f;
                O *= f;
            }
            [[unroll]] for (uint u = 0; u < 8u; ++u) {
                const float w = mv[u] == -1.0 / 0.0 ? 0.0 : exp(mv[u] - Mn);
                L += lv[u] * w;
                O += ov[u] * w;
            }
            M = Mn;
        }
        d[out_at] = L > 0.0 ? O / L : 0.0;
    }
    if (fl == 0) { sw[row] = 0u; }
}
