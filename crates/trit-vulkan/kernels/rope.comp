#version 450
// Rotary embedding, f32, positions (i32) from B indexed by dim 2 of A. Params:
// P0 n_dims, P1 mode (2 = NEOX: pairs (j, j + n_dims/2); 0 = NORM: pairs (2j, 2j+1)),
// P2 freq_base, b_nb.y freq_scale, b_nb.z attn_factor (floats as bits). No YaRN (ext_factor 0).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { int pos[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

// One invocation per pair of elements: it reads both before writing both, so the op is
// safe when ggml-alloc runs it in place (dst aliasing src0).
void main() {
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uint half_ne0 = pc.a_ne.x / 2;
    const uvec4 idx = unflatten(i, uvec4(half_ne0, pc.a_ne.y, pc.a_ne.z, pc.a_ne.w));
    const uint n_dims = P0;
    const uint j = idx.x;
    const uint row = A_OFF + strided(uvec4(0, idx.yzw), pc.a_nb);
    const uint drow = D_OFF + strided(uvec4(0, idx.yzw), pc.d_nb);
    uint e0, e1;
    if (2 * j >= n_dims) {
        e0 = 2 * j; e1 = 2 * j + 1; // past the rotated dimensions: copied
    } else if (P1 == 2u) {
        e0 = j; e1 = j + n_dims / 2;
    } else {
        e0 = 2 * j; e1 = 2 * j + 1;
    }
    const float x0 = a[row + e0 * pc.a_nb.x];
    const float x1 = a[row + e1 * pc.a_nb.x];
    if (2 * j >= n_dims) {
        d[drow + e0 * pc.d_nb.x] = x0;
        d[drow + e1 * pc.d_nb.x] = x1;
        return;
    }
    const float p = float(pos[B_OFF + idx.z]);
    const float theta = p * pow(uintBitsToFloat(P2), -2.0 * float(j) / float(n_dims)) * uintBitsToFloat(pc.b_nb.y);
    const float mscale = uintBitsToFloat(pc.b_nb.z);
    const float c = cos(theta) * mscale;
#if defined(ROPE_BACK)
    const float s = -sin(theta) * mscale; // ROPE_BACK: the inverse rotation
#else
    const float s = sin(theta) * mscale;
#endif
    d[drow + e0 * pc.d_nb.x] = x0 * c - x1 * s;
    d[drow + e1 * pc.d_nb.x] = x0 * s + x1 * c;
}
