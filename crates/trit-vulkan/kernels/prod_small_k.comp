#version 450
// OUT_PROD (and MUL_MAT, read transposed) with a short k, at most SMALL_K (the rank of a
// LoRA pair): dst[i0, i1, i2, i3] = sum_k A[i0, k, ..] * B[i1, k, i2, i3], strides and the
// broadcast of A over dims 2 and 3 as in out_prod.comp. Such products write much more than
// they read: the input gradient through a LoRA A ([n_in, tokens] from k = r) and the forward
// B·u ([n_out, tokens]). out_prod.comp's shared-memory tiles, k groups and their reduction are
// built for long k; here each invocation computes 4 (i0) x 4 (i1) outputs straight from
// global memory (both operands are small and stay in cache), one accumulator per output over
// ascending k, as the CPU sums. 256 invocations cover 64 x 64 outputs; an invocation's i0 are
// 16 apart, so the 16 invocations of a row store 16 consecutive elements at a time (the
// stores are most of the traffic).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint ne0 = pc.d_ne.x, ne1 = pc.d_ne.y;
    const uint tiles0 = (ne0 + 63u) / 64u;
    const uint tiles1 = (ne1 + 63u) / 64u;
    uint g = wg_index();
    if (g >= N_ITEMS) { return; }
    const uint tile0 = g % tiles0; g /= tiles0;
    const uint tile1 = g % tiles1; g /= tiles1;
    const uint i2 = g % pc.d_ne.z;
    const uint i3 = g / pc.d_ne.z;
    const uint a2 = i2 / (pc.d_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.d_ne.w / pc.a_ne.w);
    const uint a_base = A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;
    const uint K = pc.a_ne.y;
    const uint x0 = tile0 * 64u + t % 16u;
    const uint y0 = tile1 * 64u + (t / 16u) * 4u;
    // acc[c][r]: output (i0 = x0 + 16 r, i1 = y0 + c)
    vec4 acc[4];
    [[unroll]] for (uint c = 0; c < 4u; ++c) { acc[c] = vec4(0.0); }
    for (uint k = 0; k < K; ++k) {
        vec4 av;
        [[unroll]] for (uint r = 0; r < 4u; ++r) {
            av[r] = x0 + 16u * r < ne0 ? a[a_base + (x0 + 16u * r) * pc.a_nb.x + k * pc.a_nb.y] : 0.0;
        }
        [[unroll]] for (uint c = 0; c < 4u; ++c) {
            const float bv = y0 + c < ne1 ? b[b_base + (y0 + c) * pc.b_nb.x + k * pc.b_nb.y] : 0.0;
            acc[c] += av * bv;
        }
    }
    [[unroll]] for (uint c = 0; c < 4u; ++c) {
        [[unroll]] for (uint r = 0; r < 4u; ++r) {
            if (x0 + 16u * r < ne0 && y0 + c < ne1) {
                d[D_OFF + strided(uvec4(x0 + 16u * r, y0 + c, i2, i3), pc.d_nb)] = acc[c][r];
            }
        }
    }
}
