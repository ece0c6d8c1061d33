#version 450
// A measurement, not a model op (src/probe.rs, issue #4): what a decode token's chain of
// dependent mat-vecs costs when every stage is its own dispatch behind a pipeline barrier,
// against the same stages chained inside one dispatch.
//
// S stages of N rows each. Row r of stage s holds KW 16-byte words of synthetic weights,
// word q of the whole weight buffer being (h(4q), h(4q + 1), h(4q + 2), h(4q + 3)) with h the
// integer hash below (written by the INIT variant). Stage s of token t reads the N-word
// vector in slot k = (t * S + s) mod (S + 1) of X and writes slot (k + 1) mod (S + 1), so no
// slot is written twice within a token:
//   y[r] = (sum_j sum_c W[s, r, j].c * x[(4j) mod N + c]) ^ s      (uint, wrapping)
// and every way of running it must agree bit for bit with the host's reference.
//
// Dispatch mode (P0 bit 0 clear): one dispatch per stage (stage in d_nb.x), G workgroups.
// Chain mode (bit 0 set): one dispatch of S * G workgroups. Each takes the next index from a
// counter (ctr[0]) as it starts, so index order is start order: a workgroup of stage s waits
// until G workgroups of stage s - 1 have counted themselves finished in ctr[2 + s - 1], i.e.
// only for workgroups that have already started, and needs nothing from the GPU's scheduler
// but that started workgroups keep running. Every invocation polls the counter with an
// atomic read of its own, or with POLL_ONE only the first, the others then waiting at a
// workgroup barrier. (lavapipe 22.3 runs neither as written on several threads: see
// tests/chain_probe.rs, which runs it on one.) A poll gives up after d_nb.y
// reads and sets ctr[1] (the host reports it: results are then wrong). The workgroup that
// finishes the last stage resets ctr[0] and the stage counters for the next dispatch. With
// P0 bit 1 (prefetch) a workgroup loads its first PF weight words per lane before it waits.
//
// 32 lanes per row, WG / 32 rows per workgroup.
//
// Bindings: 0 W (uvec4), 1 X ((S + 1) * N words), 2 ctr (2 + S words). d_ne = (N, KW, G, S),
// d_nb.x = stage (dispatch mode), d_nb.y = poll limit, d_nb.z = INIT's invocation count,
// d_nb.w = token. The host checks N % 4 == 0, N <= MAX_N and that the weights fit.
#include "common.glsl"

#ifndef WG
#define WG 256 // invocations per workgroup (`_w` variants: 1024)
#endif
#define LANES 32
#define RPW (WG / LANES) // rows per workgroup
#define PF 8 // weight words per lane loaded before the wait
#define MAX_N 4096
layout(local_size_x = WG) in;

#ifdef INIT
layout(std430, binding = 0) writeonly buffer BufW { uvec4 w[]; };
#else
layout(std430, binding = 0) readonly buffer BufW { uvec4 w[]; };
#endif
layout(std430, binding = 1) coherent buffer BufX { uint x[]; };
layout(std430, binding = 2) coherent buffer BufC { uint ctr[]; };

uint h(uint i) {
    i ^= i >> 16;
    i *= 0x7feb352du;
    i ^= i >> 15;
    i *= 0x846ca68bu;
    i ^= i >> 16;
    return i;
}

#ifdef INIT
void main() {
    const uint total = pc.d_ne.x * pc.d_ne.y * pc.d_ne.w;
    for (uint q = wg_index() * WG + gl_LocalInvocationIndex; q < total; q += pc.d_nb.z) {
        w[q] = uvec4(h(4u * q), h(4u * q + 1u), h(4u * q + 2u), h(4u * q + 3u));
    }
}
#else
shared uint xs[MAX_N];
shared uint red[WG];
shared uint s_vid;

uint term(uvec4 q, uint j, uint N) {
    const uint e = (4u * j) % N;
    return q.x * xs[e] + q.y * xs[e + 1u] + q.z * xs[e + 2u] + q.w * xs[e + 3u];
}

// Wait until G workgroups of the previous stage have finished (counter `at`).
void wait_for(uint at, uint G) {
    uint polls = 0u;
    while (atomicOr(ctr[at], 0u) < G) {
        if (++polls >= pc.d_nb.y) {
            atomicOr(ctr[1], 1u);
            break;
        }
    }
}

void main() {
    const uint N = pc.d_ne.x, KW = pc.d_ne.y, G = pc.d_ne.z, S = pc.d_ne.w;
    const bool chain = (P0 & 1u) != 0u;
    const bool pref = (P0 & 2u) != 0u;
    const uint lid = gl_LocalInvocationIndex;
    if (chain && lid == 0u) { s_vid = atomicAdd(ctr[0], 1u); }
    barrier();
    const uint vid = chain ? s_vid : pc.d_nb.x * G + wg_index();
    const uint s = vid / G, g = vid % G;
    const uint lane = lid % LANES, row = g * RPW + lid / LANES;
    const bool live = row < N;
    const uint base = (s * N + row) * KW;

    uvec4 pre[PF];
    if (pref) {
        [[unroll]] for (uint i = 0u; i < PF; ++i) {
            const uint j = lane + i * LANES;
            pre[i] = live && j < KW ? w[base + j] : uvec4(0u);
        }
    }
    if (chain && s > 0u) {
#ifdef POLL_ONE
        if (lid == 0u) { wait_for(2u + s - 1u, G); }
        barrier();
#else
        wait_for(2u + s - 1u, G);
#endif
        memoryBarrierBuffer();
    }
    const uint slot = (pc.d_nb.w * S + s) % (S + 1u);
    for (uint i = lid; i < N; i += WG) { xs[i] = x[slot * N + i]; }
    barrier();

    uint acc = 0u;
    uint first = 0u;
    if (pref) {
        [[unroll]] for (uint i = 0u; i < PF; ++i) {
            const uint j = lane + i * LANES;
            if (live && j < KW) { acc += term(pre[i], j, N); }
        }
        first = PF * LANES;
    }
    if (live) {
        for (uint j = first + lane; j < KW; j += LANES) { acc += term(w[base + j], j, N); }
    }
    red[lid] = acc;
    barrier();
    [[unroll]] for (uint off = LANES / 2u; off > 0u; off >>= 1u) {
        if (lane < off) { red[lid] += red[lid + off]; }
        barrier();
    }
    if (live && lane == 0u) { x[(slot == S ? 0u : slot + 1u) * N + row] = red[lid] ^ s; }

    if (chain) {
        memoryBarrierBuffer();
        barrier();
        if (lid == 0u) {
            const uint done = atomicAdd(ctr[2u + s], 1u) + 1u;
            if (s == S - 1u && done == G) {
                // Every workgroup of every stage has finished: ready for the next dispatch.
                ctr[0] = 0u;
                for (uint i = 0u; i < S; ++i) { ctr[2u + i] = 0u; }
            }
        }
    }
}
#endif
