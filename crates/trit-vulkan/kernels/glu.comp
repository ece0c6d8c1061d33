#version 450
// Gated units on contiguous rows: dst = act(x) * g. With a second input, x = A and g = B;
// otherwise each A row holds both halves and P0 (swapped) picks which is gated.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

void main() {
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uint nc = pc.d_ne.x;
    const uint c = i % nc;
    const uint row = i / nc;
    float x, g;
    if (P1 != 0u) {
        x = a[A_OFF + row * pc.a_nb.y + c];
        g = b[B_OFF + row * pc.b_nb.y + c];
    } else {
        const uint base = A_OFF + row * pc.a_nb.y;
        x = a[base + c + (P0 != 0u ? nc : 0u)];
        g = a[base + c + (P0 != 0u ? 0u : nc)];
    }
#if defined(OP_SWIGLU)
    const float y = x / (1.0 + exp(-x)) * g;
#elif defined(OP_REGLU)
    const float y = max(x, 0.0) * g;
#endif
    d[D_OFF + row * pc.d_nb.y + c] = y;
}
