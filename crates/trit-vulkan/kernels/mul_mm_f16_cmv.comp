#version 450
// f16-weight mat-mat on NVIDIA's tensor cores for operands that are contiguous along k and
// 16-byte aligned (the LM head over a training window or a prompt): the operation and the
// rounding of mul_mm_f16_cm.comp, dst[r, c, i2, i3] = sum_k A[k, r, ..] * B[k, c, i2, i3] with
// B rounded to f16 (as the CPU backend rounds activations for f16 weights; every product is
// then exact in f32, only the order of the f32 sums differs), staged for throughput:
// - 128 (r) x 128 (c) tiles, 8 subgroups as 2 (r) x 4 (c), each 64 x 32 = 4 x 2 fragments of
//   16 x 16, so six fragment loads from shared memory feed eight matrix products;
// - global loads of 16 bytes (eight f16 of A, or two vec4 of B rounded into eight f16);
// - k in slices of 32 through two shared buffers: slice s + 1 is loaded into registers and
//   stored into the other buffer while slice s is multiplied, one barrier a slice;
// - column tiles fastest in the workgroup order, so the workgroups that read one band of A
//   (the 128256 x 2560 embedding) run together and read it from memory once.
// The host picks this kernel only where K is a multiple of 8, A's and B's element strides
// along k are 1, their other strides are multiples of 8 (A, in f16) and 4 (B, in f32) and
// both bindings start 16-byte aligned (A_OFF and B_OFF are then in 16-byte units); any
// other f16 product goes to mul_mm_f16_cm.comp.
// Without COOPMAT (`_emu`): each invocation computes its fragment elements from the same
// shared memory (for tests on devices without the extension).
#include "common.glsl"
#if defined(COOPMAT)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#endif

#define TM 128
#define TN 128
#define BK 32
#define WM 2
#define WN 4
#define FM (TM / WM / 16)
#define FN (TN / WN / 16)
#define SV 5 // uvec4 per row (A) or column (B) of a slice: BK f16 = 4, plus one of padding
#define WG 256
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer BufA { uvec4 a[]; };
layout(std430, binding = 1) readonly buffer BufB { vec4 b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

shared uvec4 sa[2 * TM * SV]; // [buffer][row][k / 8]; also the fragments on their way out
shared uvec4 sb[2 * TN * SV]; // [buffer][column][k / 8]

// One slice in registers: A row it / 4, k words it % 4; B column it / 4, k words it % 4
// (it = t + WG l).
uvec4 ra[2];
uvec4 rb[2];

void load_slice(uint a_base, uint a_row, uint b_base, uint b_col, uint r0, uint c0, uint k0, uint K, uint rows,
                uint cols, uint t) {
    [[unroll]] for (uint l = 0; l < 2u; ++l) {
        const uint it = t + l * WG;
        const uint r = r0 + it / 4u;
        const uint k = k0 + 8u * (it % 4u);
        ra[l] = r < rows && k < K ? a[a_base + r * a_row + k / 8u] : uvec4(0u);
        const uint c = c0 + it / 4u;
        if (c < cols && k < K) {
            const uint at = b_base + c * b_col + k / 4u;
            const vec4 x = b[at];
            const vec4 y = b[at + 1u];
            rb[l] = uvec4(packHalf2x16(x.xy), packHalf2x16(x.zw), packHalf2x16(y.xy), packHalf2x16(y.zw));
        } else {
            rb[l] = uvec4(0u);
        }
    }
}

void store_slice(uint buf, uint t) {
    [[unroll]] for (uint l = 0; l < 2u; ++l) {
        const uint it = t + l * WG;
        sa[buf * (TM * SV) + (it / 4u) * SV + it % 4u] = ra[l];
        sb[buf * (TN * SV) + (it / 4u) * SV + it % 4u] = rb[l];
    }
}

#if !defined(COOPMAT)
// Word w (two f16, k = 2w, 2w + 1) of row or column `i` of a slice in `buf`.
vec2 a_pair(uint buf, uint i, uint w) { return unpackHalf2x16(sa[buf * (TM * SV) + i * SV + w / 4u][w % 4u]); }
vec2 b_pair(uint buf, uint i, uint w) { return unpackHalf2x16(sb[buf * (TN * SV) + i * SV + w / 4u][w % 4u]); }
#endif

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint K = pc.a_ne.x;
    const uint rows = pc.a_ne.y;
    const uint cols = pc.b_ne.y;
    const uint nrt = (rows + TM - 1) / TM;
    const uint nct = (cols + TN - 1) / TN;
    uint w = wg_index();
    if (w >= N_ITEMS) { return; }
    const uint ct = w % nct; w /= nct;
    const uint rt = w % nrt; w /= nrt;
    const uint i2 = w % pc.b_ne.z;
    const uint i3 = w / pc.b_ne.z;
    const uint a2 = i2 / (pc.b_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.b_ne.w / pc.a_ne.w);
    const uint r0 = rt * TM;
    const uint c0 = ct * TN;
    // In 16-byte units.
    const uint a_base = A_OFF + (a2 * pc.a_nb.z + a3 * pc.a_nb.w) / 8u;
    const uint b_base = B_OFF + (i2 * pc.b_nb.z + i3 * pc.b_nb.w) / 4u;
    const uint a_row = pc.a_nb.y / 8u;
    const uint b_col = pc.b_nb.y / 4u;

    const uint sg = t / 32u;
    const uint lane = t % 32u;
    const uint fr0 = (sg % WM) * (FM * 16u);
    const uint fc0 = (sg / WM) * (FN * 16u);
#if defined(COOPMAT)
    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[FM * FN];
    [[unroll]] for (uint f = 0; f < FM * FN; ++f) { acc[f] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0); }
#else
    float acc[FM * FN * 8];
    [[unroll]] for (uint i = 0; i < FM * FN * 8; ++i) { acc[i] = 0.0; }
#endif

    const uint nslices = (K + BK - 1) / BK;
    load_slice(a_base, a_row, b_base, b_col, r0, c0, 0u, K, rows, cols, t);
    store_slice(0u, t);
    barrier();
    for (uint s = 0; s < nslices; ++s) {
        const uint cur = s & 1u;
        const bool more = s + 1u < nslices;
        if (more) { load_slice(a_base, a_row, b_base, b_col, r0, c0, (s + 1u) * BK, K, rows, cols, t); }
        [[unroll]] for (uint ks = 0; ks < BK / 16u; ++ks) {
#if defined(COOPMAT)
            fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[FM];
            [[unroll]] for (uint i = 0; i < FM; ++i) {
                coopMatLoadNV(fa[i], sa, cur * (TM * SV) + (fr0 + 16u * i) * SV + ks * 2u, SV, false);
            }
            [[unroll]] for (uint j = 0; j < FN; ++j) {
                fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fb;
                coopMatLoadNV(fb, sb, cur * (TN * SV) + (fc0 + 16u * j) * SV + ks * 2u, SV, true);
                [[unroll]] for (uint i = 0; i < FM; ++i) { acc[i * FN + j] = coopMatMulAddNV(fa[i], fb, acc[i * FN + j]); }
            }
#else
            [[unroll]] for (uint f = 0; f < FM * FN; ++f) {
                for (uint e = 0; e < 8u; ++e) {
                    const uint idx = e * 32u + lane;
                    const uint r = fr0 + 16u * (f / FN) + idx % 16u;
                    const uint c = fc0 + 16u * (f % FN) + idx / 16u;
                    float sum = 0.0;
                    for (uint q = 0; q < 8u; ++q) {
                        const vec2 x = a_pair(cur, r, ks * 8u + q);
                        const vec2 y = b_pair(cur, c, ks * 8u + q);
                        sum += x.x * y.x + x.y * y.y;
                    }
                    acc[f * 8u + e] += sum;
                }
            }
#endif
        }
        if (more) { store_slice(cur ^ 1u, t); }
        barrier();
    }

    // Each fragment through this subgroup's 64 uvec4 of sa (column-major 16 x 16 f32: element
    // idx = 32 e + lane is row idx % 16, column idx / 16), then to dst with consecutive lanes
    // on consecutive rows. The loop's last barrier ended every read of sa.
    const uint sbase = sg * 64u;
    [[unroll]] for (uint f = 0; f < FM * FN; ++f) {
#if defined(COOPMAT)
        coopMatStoreNV(acc[f], sa, sbase, 4u, true);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
#endif
        [[unroll]] for (uint e = 0; e < 8u; ++e) {
            const uint idx = e * 32u + lane;
            const uint r = r0 + fr0 + 16u * (f / FN) + idx % 16u;
            const uint c = c0 + fc0 + 16u * (f % FN) + idx / 16u;
#if defined(COOPMAT)
            const float v = uintBitsToFloat(sa[sbase + idx / 4u][idx % 4u]);
#else
            const float v = acc[f * 8u + e];
#endif
            if (r < rows && c < cols) {
                d[D_OFF + r * pc.d_nb.x + c * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w] = v;
            }
        }
#if defined(COOPMAT)
        subgroupBarrier();
#endif
    }
}
