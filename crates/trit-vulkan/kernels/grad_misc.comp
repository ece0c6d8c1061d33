#version 450
// Small gradient-graph ops, f32 unless noted, one invocation per output element:
//   REPEAT_BACK:   D[i] = sum of A over every copy of D that A repeats (ggml_can_repeat(D, A)).
//   GET_ROWS_BACK: D[c, r] = sum over j with idx(B)[j] == r of A[c, j]   (B: i32 row ids).
//   ACC_ADD:       D[P2 + strided(idx, (1, P0, P1, b_nb.x))] += A[idx]   (idx over A; D read-write;
//                  D already holds the copy of src0; P0, P1, b_nb.x: ACC's nb1..nb3 in floats).
//   SPLIT_SUM:     D[idx] = sum over s < P0 of A[s P2 + flat(idx)] in ascending s (the partial
//                  sums of a split-k OUT_PROD; idx over D, A contiguous).
//   ARGMAX:        D(i32)[row] = first index of the largest element of row `row` of A.
//   COUNT_EQUAL:   D(i64, as two u32)[0] = number of equal i32 elements of A and B (one workgroup).
#include "common.glsl"
#define WG 256
layout(local_size_x = WG) in;
#if defined(OP_COUNT_EQUAL)
layout(std430, binding = 0) readonly buffer BufA { int a[]; };
#else
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
#endif
layout(std430, binding = 1) readonly buffer BufB { int b[]; };
#if defined(OP_ARGMAX) || defined(OP_COUNT_EQUAL)
layout(std430, binding = 2) writeonly buffer BufD { uint d[]; };
#elif defined(OP_ACC_ADD)
layout(std430, binding = 2) buffer BufD { float d[]; };
#else
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
#endif
shared float redf[WG];
shared uint redu[WG];

void main() {
    const uint t = gl_LocalInvocationID.x;
#if defined(OP_COUNT_EQUAL)
    uint c = 0;
    for (uint i = t; i < N_ITEMS; i += WG) {
        const uvec4 idx = unflatten(i, pc.a_ne);
        c += a[A_OFF + strided(idx, pc.a_nb)] == b[B_OFF + strided(idx, pc.b_nb)] ? 1u : 0u;
    }
    redu[t] = c;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) { if (t < h) { redu[t] += redu[t + h]; } barrier(); }
    if (t == 0) { d[D_OFF] = redu[0]; d[D_OFF + 1] = 0u; }
#elif defined(OP_ARGMAX)
    const uint row = wg_index();
    if (row >= N_ITEMS) { return; }
    const uint base = A_OFF + row * pc.a_nb.y;
    float best = -1.0 / 0.0;
    uint bi = 0xFFFFFFFFu;
    for (uint i = t; i < pc.a_ne.x; i += WG) {
        const float x = a[base + i * pc.a_nb.x];
        if (bi == 0xFFFFFFFFu || x > best) { best = x; bi = i; }
    }
    redf[t] = best;
    redu[t] = bi;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) {
        if (t < h) {
            const float o = redf[t + h];
            const uint oi = redu[t + h];
            if (oi != 0xFFFFFFFFu && (redu[t] == 0xFFFFFFFFu || o > redf[t] || (o == redf[t] && oi < redu[t]))) {
                redf[t] = o; redu[t] = oi;
            }
        }
        barrier();
    }
    if (t == 0) { d[D_OFF + row] = redu[0]; }
#else
    const uint i = wg_index() * WG + t;
    if (i >= N_ITEMS) { return; }
#if defined(OP_REPEAT_BACK)
    const uvec4 idx = unflatten(i, pc.d_ne);
    const uvec4 nr = pc.a_ne / pc.d_ne;
    float s = 0.0;
    for (uint k3 = 0; k3 < nr.w; ++k3) {
        for (uint k2 = 0; k2 < nr.z; ++k2) {
            for (uint k1 = 0; k1 < nr.y; ++k1) {
                for (uint k0 = 0; k0 < nr.x; ++k0) {
                    s += a[A_OFF + strided(idx + uvec4(k0, k1, k2, k3) * pc.d_ne, pc.a_nb)];
                }
            }
        }
    }
    d[D_OFF + strided(idx, pc.d_nb)] = s;
#elif defined(OP_GET_ROWS_BACK)
    const uint c = i % pc.d_ne.x;
    const uint r = i / pc.d_ne.x;
    float s = 0.0;
    for (uint j = 0; j < pc.b_ne.x; ++j) {
        if (uint(b[B_OFF + j * pc.b_nb.x]) == r) { s += a[A_OFF + c * pc.a_nb.x + j * pc.a_nb.y]; }
    }
    d[D_OFF + c * pc.d_nb.x + r * pc.d_nb.y] = s;
#elif defined(OP_SPLIT_SUM)
    float s = 0.0;
    for (uint j = 0; j < P0; ++j) { s += a[A_OFF + j * P2 + i]; }
    d[D_OFF + strided(unflatten(i, pc.d_ne), pc.d_nb)] = s;
#elif defined(OP_ACC_ADD)
    const uvec4 idx = unflatten(i, pc.a_ne);
    const uint o = D_OFF + P2 + idx.x + idx.y * P0 + idx.z * P1 + idx.w * pc.b_nb.x;
    d[o] += a[A_OFF + strided(idx, pc.a_nb)];
#endif
#endif
}
