#version 450
// f16-weight mat-vec (the LM head, attention in decode):
// dst[r, c, i2, i3] = sum_k A[k, r, i2/ratio2, i3/ratio3] * f16(B[k, c, i2, i3])
// (activations rounded to f16, as the CPU backend does). A is read 8 halves at a time and B
// 4 floats at a time, so the host only picks this kernel for contiguous rows (K, strides
// and offsets multiples of 8 halves / 4 floats): A_OFF, a_nb in uvec4 units, B_OFF, b_nb in
// vec4 units. LANES invocations per row, WG / LANES rows per workgroup; the lanes of a row
// reduce with subgroup shuffles, and in shared memory where subgroups are narrower.
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require

#define WG 128
#define LANES 32
#define ROWS (WG / LANES)
#define U 4
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer BufA { uvec4 a[]; };
layout(std430, binding = 1) readonly buffer BufB { vec4 b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
// A fused MUL by a one-element tensor (BitNet's per-tensor weight scale): d_ne.x != 0 says
// it is there, d_ne.y is its element (d_ne is otherwise unused here).
layout(std430, binding = 3) readonly buffer BufS { float sc[]; };

shared float red[NCOLS][WG];

vec4 round_f16(vec4 v) {
    return vec4(unpackHalf2x16(packHalf2x16(v.xy)), unpackHalf2x16(packHalf2x16(v.zw)));
}

void main() {
    const uint S = gl_SubgroupSize;
    const uint fl = gl_SubgroupID * S + gl_SubgroupInvocationID;
    const uint lane = fl % LANES;
    const uint K8 = pc.a_ne.x / 8;
    const uint rows = pc.a_ne.y;
    const uint nrg = (rows + ROWS - 1) / ROWS;
    const uint ncb = (pc.b_ne.y + NCOLS - 1) / NCOLS;
    uint w = wg_index();
    const bool wg_live = w < N_ITEMS;
    const uint r = (w % nrg) * ROWS + fl / LANES;
    w /= nrg;
    const uint cb = w % ncb; w /= ncb;
    const uint i2 = w % pc.b_ne.z;
    const uint i3 = w / pc.b_ne.z;
    const bool live = wg_live && r < rows;
    const uint a2 = i2 / (pc.b_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.b_ne.w / pc.a_ne.w);
    const uint c0 = cb * NCOLS;
    const uint a_row = A_OFF + r * pc.a_nb.y + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;

    float acc[NCOLS];
    [[unroll]] for (uint j = 0; j < NCOLS; ++j) { acc[j] = 0.0; }
    if (live) {
        // U loads of 16 bytes in flight per lane before any is used.
        for (uint i0 = lane; i0 < K8; i0 += LANES * U) {
            uvec4 qs[U];
            [[unroll]] for (uint u = 0; u < U; ++u) { qs[u] = a[a_row + min(i0 + u * LANES, K8 - 1)]; }
            [[unroll]] for (uint u = 0; u < U; ++u) {
                const uint i = i0 + u * LANES;
                if (i < K8) {
                    const uvec4 q = qs[u];
                    const vec4 w0 = vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y));
                    const vec4 w1 = vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w));
                    [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
                        if (c0 + c < pc.b_ne.y) {
                            const uint bb = b_base + (c0 + c) * pc.b_nb.y + 2 * i;
                            acc[c] += dot(w0, round_f16(b[bb])) + dot(w1, round_f16(b[bb + 1]));
                        }
                    }
                }
            }
        }
    }
    const uint span = min(S, uint(LANES));
    [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
        for (uint m = 1; m < span; m <<= 1) { acc[c] += subgroupShuffleXor(acc[c], m); }
    }
    if (S < LANES) {
        if (gl_SubgroupInvocationID == 0) {
            [[unroll]] for (uint c = 0; c < NCOLS; ++c) { red[c][gl_SubgroupID] = acc[c]; }
        }
        barrier();
        const uint per = LANES / S;
        const uint first = (fl / LANES) * per;
        [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
            float t = 0.0;
            for (uint i = 0; i < per; ++i) { t += red[c][first + i]; }
            acc[c] = t;
        }
    }
    if (live && lane == 0) {
        const float scale = pc.d_ne.x != 0u ? sc[pc.d_ne.y] : 1.0;
        [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
            if (c0 + c < pc.b_ne.y) {
                precise float v = pc.d_ne.x != 0u ? acc[c] * scale : acc[c];
                d[D_OFF + r * pc.d_nb.x + (c0 + c) * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w] = v;
            }
        }
    }
}
