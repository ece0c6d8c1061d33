#version 450
// One workgroup per row: dst = softmax(x * scale + mask). scale = P0 (float bits);
// P1 != 0 when a mask is bound (M_T: float or float16_t), broadcast over dims 2 and 3.
#include "common.glsl"
#define WG 256
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { M_T m[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
shared float red[WG];

float logit(uint a_base, uint m_base, uint k) {
    float x = a[a_base + k * pc.a_nb.x] * uintBitsToFloat(P0);
    if (P1 != 0u) { x += float(m[m_base + k * pc.b_nb.x]); }
    return x;
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint row = wg_index();
    if (row >= N_ITEMS) { return; }
    const uvec4 idx = unflatten(row, uvec4(pc.a_ne.y, pc.a_ne.z, pc.a_ne.w, 1));
    const uvec4 r4 = uvec4(0, idx.x, idx.y, idx.z);
    const uint a_base = A_OFF + strided(r4, pc.a_nb);
    const uint d_base = D_OFF + strided(r4, pc.d_nb);
    const uint m_base = B_OFF + strided(uvec4(0, idx.x, idx.y % pc.b_ne.z, idx.z % pc.b_ne.w), pc.b_nb);
    const uint n = pc.a_ne.x;
    float mx = -1.0 / 0.0;
    for (uint k = t; k < n; k += WG) { mx = max(mx, logit(a_base, m_base, k)); }
    red[t] = mx;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) { if (t < h) { red[t] = max(red[t], red[t + h]); } barrier(); }
    mx = red[0];
    barrier();
    float s = 0.0;
    for (uint k = t; k < n; k += WG) {
        const float x = logit(a_base, m_base, k);
        s += (x == -1.0 / 0.0) ? 0.0 : exp(x - mx);
    }
    red[t] = s;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) { if (t < h) { red[t] += red[t + h]; } barrier(); }
    const float inv = 1.0 / red[0];
    for (uint k = t; k < n; k += WG) {
        const float x = logit(a_base, m_base, k);
        d[d_base + k * pc.d_nb.x] = (x == -1.0 / 0.0) ? 0.0 : exp(x - mx) * inv;
    }
}
