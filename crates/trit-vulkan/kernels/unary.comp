#version 450
// Element-wise one-input ops and copies. Source and destination are indexed by their own
// shapes (a copy may reshape); both may be strided. A_T / D_T: float or float16_t.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { A_T a[]; };
layout(std430, binding = 2) writeonly buffer BufD { D_T d[]; };

void main() {
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const float x = float(a[A_OFF + strided(unflatten(i, pc.a_ne), pc.a_nb)]);
#if defined(OP_SCALE)
    const float y = x * uintBitsToFloat(P0) + uintBitsToFloat(P1);
#elif defined(OP_SQR)
    const float y = x * x;
#elif defined(OP_RELU)
    const float y = max(x, 0.0);
#elif defined(OP_RELU_SQR)
    const float r = max(x, 0.0);
    const float y = r * r;
#elif defined(OP_STEP)
    const float y = x > 0.0 ? 1.0 : 0.0;
#elif defined(OP_SILU)
    const float y = x / (1.0 + exp(-x));
#else
    const float y = x;
#endif
    d[D_OFF + strided(unflatten(i, pc.d_ne), pc.d_nb)] = D_T(y);
}
