#version 450
// dst = A op B, B broadcast over A by repetition (ggml_can_repeat). f32 only.
// OP_RELU_SQR_MUL: dst = relu(A)^2 * B (BitNet's ReLU^2 gate: RELU, SQR, MUL fused).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

void main() {
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uvec4 idx = unflatten(i, pc.d_ne);
    const float x = a[A_OFF + strided(idx, pc.a_nb)];
    const float y = b[B_OFF + strided(idx % pc.b_ne, pc.b_nb)];
#if defined(OP_ADD)
    d[D_OFF + strided(idx, pc.d_nb)] = x + y;
#elif defined(OP_MUL)
    d[D_OFF + strided(idx, pc.d_nb)] = x * y;
#elif defined(OP_RELU_SQR_MUL)
    const float r = x > 0.0 ? x : 0.0;
    d[D_OFF + strided(idx, pc.d_nb)] = (r * r) * y;
#endif
}
