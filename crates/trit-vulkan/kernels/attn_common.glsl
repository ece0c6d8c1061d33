// Shared by the decode attention kernels (attn_decode.comp, attn_split.comp), included after
// their `shared float red[WG]` (one slot per subgroup at least, reused by each reduction).
#include "f16.glsl"

// Workgroup-wide maximum and sum: shuffles within each subgroup, then every invocation
// reduces the per-subgroup results in order (two barriers instead of a tree's eight).
float wg_max(float x) {
    for (uint m = 1; m < gl_SubgroupSize; m <<= 1) { x = max(x, subgroupShuffleXor(x, m)); }
    if (gl_SubgroupInvocationID == 0) { red[gl_SubgroupID] = x; }
    barrier();
    float r = red[0];
    for (uint i = 1; i < gl_NumSubgroups; ++i) { r = max(r, red[i]); }
    barrier();
    return r;
}

float wg_sum(float x) {
    for (uint m = 1; m < gl_SubgroupSize; m <<= 1) { x += subgroupShuffleXor(x, m); }
    if (gl_SubgroupInvocationID == 0) { red[gl_SubgroupID] = x; }
    barrier();
    float r = red[0];
    for (uint i = 1; i < gl_NumSubgroups; ++i) { r += red[i]; }
    barrier();
    return r;
}

float dot8(uvec4 w, vec4 a, vec4 b) {
    return dot(vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)), a) + dot(vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w)), b);
}
