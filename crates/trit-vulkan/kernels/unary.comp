#version 450
// Element-wise one-input ops and copies. Source and destination are indexed by their own
// shapes (a copy may reshape); both may be strided. A_T / D_T: float or float16_t.
// P2 = 0: one element per invocation, its index unflattened per side. P2 = 1: both sides
// contiguous with as many elements, four per invocation (256 apart, loads first), no index
// arithmetic.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { A_T a[]; };
layout(std430, binding = 2) writeonly buffer BufD { D_T d[]; };

float apply(float x) {
#if defined(OP_SCALE)
    return x * uintBitsToFloat(P0) + uintBitsToFloat(P1);
#elif defined(OP_SQR)
    return x * x;
#elif defined(OP_RELU)
    return max(x, 0.0);
#elif defined(OP_RELU_SQR)
    const float r = max(x, 0.0);
    return r * r;
#elif defined(OP_STEP)
    return x > 0.0 ? 1.0 : 0.0;
#elif defined(OP_SILU)
    return x / (1.0 + exp(-x));
#else
    return x;
#endif
}

void main() {
    if (P2 == 1u) {
        const uint base = wg_index() * 1024u + gl_LocalInvocationID.x;
        float x[4];
        [[unroll]] for (uint r = 0; r < 4; ++r) {
            const uint i = base + r * 256u;
            x[r] = i < N_ITEMS ? float(a[A_OFF + i]) : 0.0;
        }
        [[unroll]] for (uint r = 0; r < 4; ++r) {
            const uint i = base + r * 256u;
            if (i < N_ITEMS) {
                d[D_OFF + i] = D_T(apply(x[r]));
            }
        }
        return;
    }
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const float x = float(a[A_OFF + strided(unflatten(i, pc.a_ne), pc.a_nb)]);
    d[D_OFF + strided(unflatten(i, pc.d_ne), pc.d_nb)] = D_T(apply(x));
}
