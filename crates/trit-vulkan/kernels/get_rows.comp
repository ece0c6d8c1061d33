#version 450
// dst[i0, i1, i2, i3] = A[i0, idx[i1, i2, i3], i2, i3] with idx (i32) in B. A_T: float or float16_t.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { A_T a[]; };
layout(std430, binding = 1) readonly buffer BufB { int ids[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

void main() {
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uvec4 idx = unflatten(i, pc.d_ne);
    const uint r = uint(ids[B_OFF + strided(uvec4(idx.y, idx.z, idx.w, 0), pc.b_nb)]);
    d[D_OFF + strided(idx, pc.d_nb)] = float(a[A_OFF + strided(uvec4(idx.x, r, idx.z, idx.w), pc.a_nb)]);
}
