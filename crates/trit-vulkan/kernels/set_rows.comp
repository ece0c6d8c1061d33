#version 450
// dst[i0, idx[i1, i2 % ne11, i3 % ne12], i2, i3] = A[i0, i1, i2, i3]; A f32, D_T float or
// float16_t; indices in B are i64 (IDX64: low word read, rows < 2^32) or i32.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
#if defined(IDX64)
layout(std430, binding = 1) readonly buffer BufB { uvec2 ids[]; };
#else
layout(std430, binding = 1) readonly buffer BufB { uint ids[]; };
#endif
layout(std430, binding = 2) writeonly buffer BufD { D_T d[]; };

void main() {
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uvec4 idx = unflatten(i, pc.a_ne);
    const uint at = B_OFF + strided(uvec4(idx.y, idx.z % pc.b_ne.y, idx.w % pc.b_ne.z, 0), pc.b_nb);
#if defined(IDX64)
    const uint r = ids[at].x;
#else
    const uint r = ids[at];
#endif
    d[D_OFF + strided(uvec4(idx.x, r, idx.z, idx.w), pc.d_nb)] = D_T(a[A_OFF + strided(idx, pc.a_nb)]);
}
