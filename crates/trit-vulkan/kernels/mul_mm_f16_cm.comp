#version 450
// f16-weight mat-mat for many columns on NVIDIA's tensor cores (VK_NV_cooperative_matrix,
// f16 16 x 16 x 16 products accumulated in f32): dst[r, c, i2, i3] = sum_k A[k, r, ..] *
// B[k, c, i2, i3], the operation of mul_mm.comp's A_F16 variant (the LM head over a prompt
// or a training window, attention's f16 products). As there, and as the CPU backend, the
// activations are rounded to f16, so every product is exact in f32; only the order of the
// f32 sums differs.
// A workgroup of 256 invocations (8 subgroups of 32, 4 over rows x 2 over columns) computes
// a 128 (r) x 64 (c) tile, each subgroup 2 x 2 fragments of 16 x 16; k goes in slices of 32
// through shared memory, two f16 per word: weights row-major (each row's k contiguous),
// activations column-major (each column's k contiguous). The next slice's global loads are
// issued before the current slice's products.
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
#define TN 64
#define BK 32
#define WM 4
#define WN 2
#define FM (TM / WM / 16)
#define FN (TN / WN / 16)
#define SS (BK / 2 + 4) // words per row of A / column of B (a multiple of 16 bytes)
#define WG 256
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer BufA { float16_t a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

shared uint sa[TM * SS];
shared uint sb[TN * SS];
shared float slot[(WG / 32) * 256]; // one 16 x 16 fragment per subgroup, column-major

// Slice registers: A, 8 words (row it / 16, k pair it % 16 for it = t + 256 l); B, 4 words.
uint ra[8];
uint rb[4];

void load_slice(uint a_base, uint b_base, uint r0, uint c0, uint k0, uint K, uint rows, uint cols, uint t) {
    [[unroll]] for (uint l = 0; l < 8u; ++l) {
        const uint it = t + l * WG;
        const uint r = r0 + it / 16u;
        const uint k = k0 + 2u * (it % 16u);
        float x0 = 0.0, x1 = 0.0;
        if (r < rows) {
            const uint row = a_base + r * pc.a_nb.y;
            if (k < K) { x0 = float(a[row + k * pc.a_nb.x]); }
            if (k + 1u < K) { x1 = float(a[row + (k + 1u) * pc.a_nb.x]); }
        }
        ra[l] = packHalf2x16(vec2(x0, x1));
    }
    [[unroll]] for (uint l = 0; l < 4u; ++l) {
        const uint it = t + l * WG;
        const uint c = c0 + it / 16u;
        const uint k = k0 + 2u * (it % 16u);
        float x0 = 0.0, x1 = 0.0;
        if (c < cols) {
            const uint col = b_base + c * pc.b_nb.y;
            if (k < K) { x0 = b[col + k * pc.b_nb.x]; }
            if (k + 1u < K) { x1 = b[col + (k + 1u) * pc.b_nb.x]; }
        }
        rb[l] = packHalf2x16(vec2(x0, x1)); // f16 activations, as the CPU rounds them
    }
}

void store_slice(uint t) {
    [[unroll]] for (uint l = 0; l < 8u; ++l) {
        const uint it = t + l * WG;
        sa[(it / 16u) * SS + it % 16u] = ra[l];
    }
    [[unroll]] for (uint l = 0; l < 4u; ++l) {
        const uint it = t + l * WG;
        sb[(it / 16u) * SS + it % 16u] = rb[l];
    }
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint K = pc.a_ne.x;
    const uint rows = pc.a_ne.y;
    const uint cols = pc.b_ne.y;
    const uint nrt = (rows + TM - 1) / TM;
    const uint nct = (cols + TN - 1) / TN;
    uint w = wg_index();
    if (w >= N_ITEMS) { return; }
    const uint rt = w % nrt; w /= nrt;
    const uint ct = w % nct; w /= nct;
    const uint i2 = w % pc.b_ne.z;
    const uint i3 = w / pc.b_ne.z;
    const uint a2 = i2 / (pc.b_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.b_ne.w / pc.a_ne.w);
    const uint r0 = rt * TM;
    const uint c0 = ct * TN;
    const uint a_base = A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;

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

    load_slice(a_base, b_base, r0, c0, 0u, K, rows, cols, t);
    for (uint k0 = 0; k0 < K; k0 += BK) {
        store_slice(t);
        barrier();
        if (k0 + BK < K) { load_slice(a_base, b_base, r0, c0, k0 + BK, K, rows, cols, t); }
        [[unroll]] for (uint ks = 0; ks < BK / 16u; ++ks) {
#if defined(COOPMAT)
            fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[FM];
            [[unroll]] for (uint i = 0; i < FM; ++i) {
                coopMatLoadNV(fa[i], sa, (fr0 + 16u * i) * SS + ks * 8u, SS, false);
            }
            [[unroll]] for (uint j = 0; j < FN; ++j) {
                fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fb;
                coopMatLoadNV(fb, sb, (fc0 + 16u * j) * SS + ks * 8u, SS, true);
                [[unroll]] for (uint i = 0; i < FM; ++i) { acc[i * FN + j] = coopMatMulAddNV(fa[i], fb, acc[i * FN + j]); }
            }
#else
            [[unroll]] for (uint f = 0; f < FM * FN; ++f) {
                for (uint e = 0; e < 8u; ++e) {
                    const uint idx = e * 32u + lane;
                    const uint r = fr0 + 16u * (f / FN) + idx % 16u;
                    const uint c = fc0 + 16u * (f % FN) + idx / 16u;
                    float s = 0.0;
                    for (uint q = 0; q < 8u; ++q) {
                        const vec2 x = unpackHalf2x16(sa[r * SS + ks * 8u + q]);
                        const vec2 y = unpackHalf2x16(sb[c * SS + ks * 8u + q]);
                        s += x.x * y.x + x.y * y.y;
                    }
                    acc[f * 8u + e] += s;
                }
            }
#endif
        }
        barrier();
    }

    // Each fragment through this subgroup's slot (column-major: element idx = 32 e + lane is
    // row idx % 16, column idx / 16), then to dst with consecutive lanes on consecutive rows.
    const uint sbase = sg * 256u;
    [[unroll]] for (uint f = 0; f < FM * FN; ++f) {
#if defined(COOPMAT)
        coopMatStoreNV(acc[f], slot, sbase, 16u, true);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
#endif
        [[unroll]] for (uint e = 0; e < 8u; ++e) {
            const uint idx = e * 32u + lane;
            const uint r = r0 + fr0 + 16u * (f / FN) + idx % 16u;
            const uint c = c0 + fc0 + 16u * (f % FN) + idx / 16u;
#if defined(COOPMAT)
            const float v = slot[sbase + idx];
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
