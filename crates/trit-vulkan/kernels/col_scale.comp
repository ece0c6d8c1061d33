#version 450
// Per-column power-of-two scales for out_prod_cm.comp: for column c = (i3 ne2 + i2) ne1 + i1
// of B ([ne1, K, ne2, ne3] in the OUT_PROD's operand order, strides in elements),
// d[D_OFF + c] = 2^e with max_k |B[i1, k, i2, i3]| * 2^e in [2^14, 2^15), or 1 for a column
// of zeros. One workgroup per column; invocations stride over k.
#include "common.glsl"

layout(local_size_x = 256) in;
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

shared float part[256];

void main() {
    const uint c = wg_index();
    if (c >= N_ITEMS) { return; }
    const uint t = gl_LocalInvocationID.x;
    const uint ne1 = pc.b_ne.x, K = pc.b_ne.y;
    const uint i1 = c % ne1, i2 = (c / ne1) % pc.b_ne.z, i3 = c / (ne1 * pc.b_ne.z);
    const uint base = B_OFF + i1 * pc.b_nb.x + i2 * pc.b_nb.z + i3 * pc.b_nb.w;
    float m = 0.0;
    for (uint k = t; k < K; k += 256u) {
        m = max(m, abs(b[base + k * pc.b_nb.y]));
    }
    part[t] = m;
    barrier();
    [[unroll]] for (uint s = 128u; s > 0u; s >>= 1) {
        if (t < s) { part[t] = max(part[t], part[t + s]); }
        barrier();
    }
    if (t == 0u) {
        const float mx = part[0];
        float scale = 1.0;
        if (mx > 0.0 && !isinf(mx) && !isnan(mx)) {
            int e;
            frexp(mx, e); // mx = f 2^e, f in [0.5, 1): mx 2^(15 - e) in [2^14, 2^15)
            scale = ldexp(1.0, clamp(15 - e, -126, 126));
        }
        d[D_OFF + c] = scale;
    }
}
