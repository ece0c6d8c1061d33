#version 450
// Attention for a few query rows (decode) in one dispatch, as llama.cpp's unfused chain
// KQ = MUL_MAT(K, Q), SOFT_MAX(KQ * scale + mask), KQV = MUL_MAT(V, softmax) computes it,
// with the same roundings: Q is rounded to f16 for the f16 K product, the probabilities to
// f16 for the f16 V product, everything else f32. One workgroup per (query row, head):
//   s[j]   = scale * sum_d K[d, j, hk] * f16(Q[d, t, h]) + mask[j, t]
//   p[j]   = f16(exp(s[j] - max s) / sum exp(s - max s))   (0 where s[j] = -inf)
//   out[e] = sum_j V[j, e, hk] * p[j]                      (e < D; V's dim 1 is D)
// with hk = h / (H / Hkv) (grouped-query broadcast). K rows (D halves) and V rows (n_kv
// halves, the transposed cache) are read 8 halves at a time, all loads of an invocation
// issued before they are used; so D and n_kv are multiples of 8 and rows 16-byte aligned
// (the host checks, as it checks D <= MAX_D and n_kv <= MAX_KV for the shared scores).
//
// Bindings: 0 K (uvec4, A_OFF and a_nb.yz in 16-byte units), 1 Q (f32, B_OFF, b_nb),
// 2 out (f32, D_OFF), 3 mask (f32, element d_nb.w, row stride P1; P2 != 0 when bound),
// 4 V (uvec4, element d_ne.w, row stride d_ne.y and head stride d_ne.z in 16-byte units).
// a_ne = K's ne (D, n_kv, Hkv), b_ne = Q's ne (D, T, H), d_nb.xyz = out's strides for
// (e, t, h) in floats, P0 = scale (float bits).
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require

#define WG 256
#define MAX_KV 3584
#define MAX_D 128
#define D8_MAX (MAX_D / 8)
#define UV 8 // V loads in flight per invocation
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer BufK { uvec4 k[]; };
layout(std430, binding = 1) readonly buffer BufQ { float q[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
layout(std430, binding = 3) readonly buffer BufM { float m[]; };
layout(std430, binding = 4) readonly buffer BufV { uvec4 v[]; };

shared float sc[MAX_KV];
shared vec4 qs[MAX_D / 4];
shared float red[WG];

#include "attn_common.glsl"

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint row = wg_index();
    if (row >= N_ITEMS) { return; } // whole workgroups only
    const uint D = pc.a_ne.x;
    const uint D8 = D / 8;
    const uint NKV = pc.a_ne.y;
    const uint T = pc.b_ne.y;
    const uint H = pc.b_ne.z;
    const uint t = row % T;
    const uint h = row / T;
    const uint hk = h / (H / pc.a_ne.z);

    const uint q_base = B_OFF + t * pc.b_nb.y + h * pc.b_nb.z;
    if (tid < D / 4) {
        vec4 x;
        [[unroll]] for (uint i = 0; i < 4; ++i) { x[i] = r16(q[q_base + (4 * tid + i) * pc.b_nb.x]); }
        qs[tid] = x;
    }
    barrier();

    // Scores, one key per invocation at a time (its D/8 loads first); the row maximum.
    const float scale = uintBitsToFloat(P0);
    const uint k_base = A_OFF + hk * pc.a_nb.z;
    float mx = -1.0 / 0.0;
    for (uint j = tid; j < NKV; j += WG) {
        const uint kb = k_base + j * pc.a_nb.y;
        uvec4 w[D8_MAX];
        [[unroll]] for (uint c = 0; c < D8_MAX; ++c) { w[c] = c < D8 ? k[kb + c] : uvec4(0); }
        float s = 0.0;
        [[unroll]] for (uint c = 0; c < D8_MAX; ++c) {
            if (c < D8) { s += dot8(w[c], qs[2 * c], qs[2 * c + 1]); }
        }
        float x = s * scale;
        if (P2 != 0u) { x += m[pc.d_nb.w + t * P1 + j]; }
        sc[j] = x;
        mx = max(mx, x);
    }
    mx = wg_max(mx);

    float sum = 0.0;
    for (uint j = tid; j < NKV; j += WG) {
        const float x = sc[j];
        const float e = (x == -1.0 / 0.0) ? 0.0 : exp(x - mx);
        sc[j] = e;
        sum += e;
    }
    const float inv = 1.0 / wg_sum(sum);
    for (uint j = tid; j < NKV; j += WG) {
        const float e = sc[j];
        sc[j] = e == 0.0 ? 0.0 : r16(e * inv);
    }
    barrier();

    // Output e by PARTS invocations, each over a contiguous range of 8-key chunks (UV loads
    // in flight), then the parts summed in order.
    const uint parts = WG / D;
    const uint e = tid % D;
    const uint part = tid / D;
    float acc = 0.0;
    if (part < parts) {
        const uint n8 = NKV / 8;
        const uint per = (n8 + parts - 1) / parts;
        const uint c0 = part * per;
        const uint c1 = min(n8, c0 + per);
        const uint vb = pc.d_ne.w + e * pc.d_ne.y + hk * pc.d_ne.z;
        for (uint c = c0; c < c1; c += UV) {
            uvec4 w[UV];
            [[unroll]] for (uint u = 0; u < UV; ++u) { w[u] = c + u < c1 ? v[vb + c + u] : uvec4(0); }
            [[unroll]] for (uint u = 0; u < UV; ++u) {
                if (c + u < c1) {
                    const uint j = 8 * (c + u);
                    acc += dot8(w[u], vec4(sc[j], sc[j + 1], sc[j + 2], sc[j + 3]),
                                vec4(sc[j + 4], sc[j + 5], sc[j + 6], sc[j + 7]));
                }
            }
        }
    }
    red[tid] = acc;
    barrier();
    if (tid < D) {
        float o = 0.0;
        for (uint p = 0; p < parts; ++p) { o += red[p * D + tid]; }
        d[D_OFF + tid * pc.d_nb.x + t * pc.d_nb.y + h * pc.d_nb.z] = o;
    }
}
