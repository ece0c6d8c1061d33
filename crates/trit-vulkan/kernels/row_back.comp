#version 450
// Row-wise backward ops, one workgroup per row (rows of ne.x, elements contiguous):
//   RMS_NORM_BACK: A = dz (grad of the output), B = x, P0 = eps:
//       dx = rrms * (dz - x * sum(x*dz) / (sum(x*x) + eps*n)),  rrms = 1/sqrt(mean(x*x) + eps)
//   SOFT_MAX_BACK: A = dy, B = y (the softmax output), P0 = scale:
//       dx = scale * (dy - dot(y, dy)) * y
#include "common.glsl"
#define WG 256
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
shared float red[WG];
shared float red2[WG];

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint row = wg_index();
    if (row >= N_ITEMS) { return; }
    const uint n = pc.a_ne.x;
    const uvec4 r4 = uvec4(0, unflatten(row, uvec4(pc.a_ne.y, pc.a_ne.z, pc.a_ne.w, 1)).xyz);
    const uint la = A_OFF + strided(r4, pc.a_nb);
    const uint lb = B_OFF + strided(r4, pc.b_nb);
    const uint ld = D_OFF + strided(r4, pc.d_nb);
    float s1 = 0.0, s2 = 0.0;
    for (uint i = t; i < n; i += WG) {
        const float x = a[la + i * pc.a_nb.x], y = b[lb + i * pc.b_nb.x];
        s1 += x * y;
        s2 += y * y;
    }
    red[t] = s1;
    red2[t] = s2;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) {
        if (t < h) { red[t] += red[t + h]; red2[t] += red2[t + h]; }
        barrier();
    }
    const float dot_ab = red[0], sum_bb = red2[0];
    const float p0 = uintBitsToFloat(P0);
#if defined(RMS_NORM_BACK)
    const float rrms = inversesqrt(sum_bb / float(n) + p0);
    const float k = dot_ab / (sum_bb + p0 * float(n));
    for (uint i = t; i < n; i += WG) {
        d[ld + i * pc.d_nb.x] = rrms * (a[la + i * pc.a_nb.x] - b[lb + i * pc.b_nb.x] * k);
    }
#else
    for (uint i = t; i < n; i += WG) {
        d[ld + i * pc.d_nb.x] = p0 * (a[la + i * pc.a_nb.x] - dot_ab) * b[lb + i * pc.b_nb.x];
    }
#endif
}
