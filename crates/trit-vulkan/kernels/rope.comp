#version 450
// Rotary embedding, f32, positions (i32) from B indexed by dim 2 of A. Params:
// P0 n_dims, P1 mode (2 = NEOX: pairs (j, j + n_dims/2); 0 = NORM: pairs (2j, 2j+1)),
// P2 freq_base, b_nb.y freq_scale, b_nb.z attn_factor (floats as bits). No YaRN (ext_factor 0).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { int pos[]; };
#if defined(SET_ROWS)
// SET_ROWS: the result, as rows of a_ne.x * a_ne.y (a 2-D reshape; a_ne.w is 1), is stored
// as f16 into row ids[d_ne.x + token * d_ne.y] (i64 indices, low word) of D, row stride
// d_nb.y halves (the KV cache write that follows K's rotation).
layout(std430, binding = 2) writeonly buffer BufD { float16_t d[]; };
layout(std430, binding = 3) readonly buffer BufI { uvec2 ids[]; };
#define STORE(e, v) d[drow + (e) * pc.d_nb.x] = float16_t(v)
#else
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
#define STORE(e, v) d[drow + (e) * pc.d_nb.x] = (v)
#endif

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
#if defined(SET_ROWS)
    const uint drow = D_OFF + idx.y * pc.a_ne.x * pc.d_nb.x + ids[pc.d_ne.x + idx.z * pc.d_ne.y].x * pc.d_nb.y;
#else
    const uint drow = D_OFF + strided(uvec4(0, idx.yzw), pc.d_nb);
#endif
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
        STORE(e0, x0);
        STORE(e1, x1);
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
    STORE(e0, x0 * c - x1 * s);
    STORE(e1, x0 * s + x1 * c);
}
