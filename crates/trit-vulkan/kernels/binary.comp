#version 450
// dst = A op B, B broadcast over A by repetition (ggml_can_repeat). f32 only.
// OP_RELU_SQR_MUL: dst = relu(A)^2 * B (BitNet's ReLU^2 gate: RELU, SQR, MUL fused).
// P0 = 0: any strides, one element per invocation (its 4-d index unflattened). P0 > 0: A, B
// and dst contiguous, four elements per invocation (256 apart, loads first) and no index
// arithmetic: B has all of dst's elements (1), one (2) or one row of ne0 repeated (3). The
// backward pass's many same-shaped products and sums are of that kind.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

float apply(float x, float y) {
#if defined(OP_ADD)
    return x + y;
#elif defined(OP_MUL)
    return x * y;
#elif defined(OP_RELU_SQR_MUL)
    const float r = x > 0.0 ? x : 0.0;
    return (r * r) * y;
#endif
}

void main() {
    if (P0 != 0u) {
        const uint base = wg_index() * 1024u + gl_LocalInvocationID.x;
        float x[4], y[4];
        [[unroll]] for (uint r = 0; r < 4; ++r) {
            const uint i = base + r * 256u;
            const bool in_range = i < N_ITEMS;
            const uint j = P0 == 1u ? i : (P0 == 2u ? 0u : i % pc.b_ne.x);
            x[r] = in_range ? a[A_OFF + i] : 0.0;
            y[r] = in_range ? b[B_OFF + j] : 0.0;
        }
        [[unroll]] for (uint r = 0; r < 4; ++r) {
            const uint i = base + r * 256u;
            if (i < N_ITEMS) {
                d[D_OFF + i] = apply(x[r], y[r]);
            }
        }
        return;
    }
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uvec4 idx = unflatten(i, pc.d_ne);
    const float x = a[A_OFF + strided(idx, pc.a_nb)];
    const float y = b[B_OFF + strided(idx % pc.b_ne, pc.b_nb)];
    d[D_OFF + strided(idx, pc.d_nb)] = apply(x, y);
}
