#version 450
// Rotary embedding, f32, positions (i32) from B indexed by dim 2 of A. Params:
// P0 n_dims, P1 mode (2 = NEOX: pairs (j, j + n_dims/2); 0 = NORM: pairs (2j, 2j+1)),
// P2 freq_base, b_nb.y freq_scale, b_nb.z attn_factor (floats as bits). No YaRN (ext_factor 0).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { int pos[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

void main() {
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uvec4 idx = unflatten(i, pc.a_ne);
    const uint n_dims = P0;
    const uint out_i = D_OFF + strided(idx, pc.d_nb);
    const uint row = A_OFF + strided(uvec4(0, idx.yzw), pc.a_nb);
    const uint i0 = idx.x;
    if (i0 >= n_dims) { d[out_i] = a[row + i0 * pc.a_nb.x]; return; }
    uint j, e0, e1; bool second;
    if (P1 == 2u) {
        const uint half_n = n_dims / 2;
        second = i0 >= half_n;
        j = second ? i0 - half_n : i0;
        e0 = j; e1 = j + half_n;
    } else {
        second = (i0 & 1u) != 0u;
        j = i0 / 2;
        e0 = 2 * j; e1 = 2 * j + 1;
    }
    const float p = float(pos[B_OFF + idx.z]);
    const float theta = p * pow(uintBitsToFloat(P2), -2.0 * float(j) / float(n_dims)) * uintBitsToFloat(pc.b_nb.y);
    const float mscale = uintBitsToFloat(pc.b_nb.z);
    const float c = cos(theta) * mscale;
    const float s = sin(theta) * mscale;
    const float x0 = a[row + e0 * pc.a_nb.x];
    const float x1 = a[row + e1 * pc.a_nb.x];
    d[out_i] = second ? x0 * s + x1 * c : x0 * c - x1 * s;
}
