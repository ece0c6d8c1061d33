#version 450
// OUT_PROD on NVIDIA tensor cores (VK_NV_cooperative_matrix, 16 x 16 x 16 f16 products
// accumulated in f32): dst[i0, i1, i2, i3] = sum_k A[i0, k, ..] * B[i1, k, i2, i3], the same
// operation as out_prod.comp, for A = a frozen weight (TQ2_0, TQ1_0 or f16) and B = an f32
// output gradient. Used only where the device lists that shape; out_prod.comp is the twin.
//
// Exactness: A's values (code - 1) * d are exact in f16 (d is an f16 block scale). B is not
// rounded to f16 once but split in two, hi = s b with its low 13 mantissa bits cleared
// (exact in f16) and lo = f16(s b - hi), and both go through the tensor cores, so each
// product carries ~22 significant bits of b, as f32 FMA does (hi is made with integer ops:
// a compiler may not fold a float round trip away). s is a power of two per column (i1, i2, i3), from `col_scale.comp` (binding 3):
// it puts the column's largest |b| in [2^14, 2^15), away from f16's overflow and underflow;
// dividing the sum by s is exact.
//
// A workgroup of 256 invocations (eight subgroups of 32) computes a 128 (i0) x 128 (i1) tile,
// k in slices of 32 through shared memory held as uvec2s (four f16 per store); subgroup g
// holds the 32 x 64 block at i0 = 32 (g % 4), i1 = 64 (g / 4) as 2 x 4 accumulators. The next
// slice's global loads are issued before the current slice's products. The tile's k range
// and the split-k layout (P0 slices of P1, partial sums at D_OFF + slice P2) are
// out_prod.comp's.
#include "common.glsl"
#include "tq_layout.glsl"
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require

#define TM 128
#define TN 128
#define BK 32
#define LDM (TM + 8) // f16 per k row of the A slice: sa[kk][i0]
#define LDN (BK + 8) // f16 per column of the B slices: sb*[i1][kk]
layout(local_size_x = 256) in;

#if defined(A_F16)
layout(std430, binding = 0) readonly buffer BufA { float16_t a[]; };
#else
layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
#endif
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
layout(std430, binding = 3) readonly buffer BufS { float col_scale[]; };

shared uvec2 sa[BK * LDM / 4];
shared uvec2 sbh[TN * LDN / 4];
shared uvec2 sbl[TN * LDN / 4];
shared float sc[8 * 256]; // one 16 x 16 accumulator per subgroup on its way out
shared float ss[TN];      // the tile's column scales

#define FMAT fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define CMAT fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

uvec2 pack4(f16vec4 v) { return uvec2(packFloat2x16(v.xy), packFloat2x16(v.zw)); }

#if !defined(A_F16)
uint tq_byte(uint addr) { return (a[addr >> 2] >> ((addr & 3u) * 8u)) & 0xFFu; }
float16_t tq_half(uint addr) {
    const uint w = a[addr >> 2];
    return float16_t(unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x);
}
#endif

// Registers between a slice's global loads and its shared-memory stores.
#if defined(A_TQ2)
uint ra_word;
float16_t ra_d;
#else
float16_t ra[16]; // four consecutive i0 of four rows
#endif
vec4 rb[4];

// The A slice k0 .. k0 + BK of the tile (zeros past K and ne0), into registers.
void load_a(uint a_base, uint tile0, uint k0, uint K, uint ne0, uint t) {
    const uint i0b = tile0 * TM;
#if defined(A_TQ2)
    // ne0 is a multiple of 256, so a row's 128 weights of the tile are the 32 bytes at
    // ((i0b & 255) >> 7) * 32 of one block: byte j holds weights j, 32 + j, 64 + j, 96 + j
    // (shifts 0, 2, 4, 6). Invocation t takes word w = t % 8 of row t / 8.
    const uint w = t % 8u, k = k0 + t / 8u;
    ra_word = 0x55555555u; // codes 1: weight 0
    ra_d = float16_t(0.0);
    if (k < K) {
        const uint arow = a_base + k * pc.a_nb.y;
        const uint addr = arow + (i0b >> 8) * TQ_CODE_STEP + ((i0b & 255u) >> 7) * 32u + 4u * w;
        const uint sh = (addr & 3u) * 8u;
        const uint lo = a[addr >> 2];
        ra_word = sh == 0u ? lo : (lo >> sh) | (a[(addr >> 2) + 1u] << (32u - sh));
        ra_d = tq_half(tq_scale_at(arow, i0b >> 8));
    }
#elif defined(A_TQ1)
    // Element-wise decode (54-byte blocks: 48 bytes of 5 trits, 4 bytes of 4, fp16 d):
    // invocation t takes i0 = 4 (t % 32) .. + 3 of rows t / 32 + 8 r.
    const uint i0 = i0b + 4u * (t % 32u);
    [[unroll]] for (uint r = 0; r < 4; ++r) {
        const uint k = k0 + t / 32u + 8u * r;
        [[unroll]] for (uint j = 0; j < 4; ++j) {
            float16_t v = float16_t(0.0);
            if (k < K && i0 + j < ne0) {
                const uint blk = a_base + k * pc.a_nb.y + ((i0 + j) >> 8) * 54u;
                const uint e = (i0 + j) & 255u;
                uint byte_ix, digit;
                if (e < 160u) {
                    byte_ix = e & 31u; digit = e >> 5;
                } else if (e < 240u) {
                    byte_ix = 32u + ((e - 160u) & 15u); digit = (e - 160u) >> 4;
                } else {
                    byte_ix = 48u + ((e - 240u) & 3u); digit = (e - 240u) >> 2;
                }
                const uint mul = digit == 0u ? 1u : digit == 1u ? 3u : digit == 2u ? 9u : digit == 3u ? 27u : 81u;
                const uint q = (tq_byte(blk + byte_ix) * mul) & 255u;
                v = float16_t(int((q * 3u) >> 8) - 1) * tq_half(blk + 52u);
            }
            ra[4u * r + j] = v;
        }
    }
#else
    // Invocation t takes i0 = 4 (t % 32) .. + 3 of rows t / 32 + 8 r (four rows per r).
    const uint i0 = i0b + 4u * (t % 32u);
    [[unroll]] for (uint r = 0; r < 4; ++r) {
        const uint k = k0 + t / 32u + 8u * r;
        [[unroll]] for (uint j = 0; j < 4; ++j) {
            ra[4u * r + j] = (k < K && i0 + j < ne0) ? a[a_base + k * pc.a_nb.y + (i0 + j) * pc.a_nb.x] : float16_t(0.0);
        }
    }
#endif
}

void store_a(uint t) {
#if defined(A_TQ2)
    const uint w = t % 8u, kk = t / 8u;
    [[unroll]] for (uint s = 0; s < 4; ++s) {
        f16vec4 v;
        [[unroll]] for (uint j = 0; j < 4; ++j) {
            v[j] = float16_t(int((ra_word >> (8u * j + 2u * s)) & 3u) - 1) * ra_d;
        }
        sa[(kk * LDM + 32u * s + 4u * w) / 4u] = pack4(v);
    }
#else
    [[unroll]] for (uint r = 0; r < 4; ++r) {
        const uint kk = t / 32u + 8u * r;
        sa[(kk * LDM) / 4u + t % 32u] = pack4(f16vec4(ra[4u * r], ra[4u * r + 1u], ra[4u * r + 2u], ra[4u * r + 3u]));
    }
#endif
}

// The B slice (zeros past K and ne1), into registers: invocation t takes k = 4 (t % 8) .. + 3
// of columns t / 8 + 32 r.
void load_b(uint b_base, uint tile1, uint k0, uint K, uint ne1, uint t) {
    const uint k = k0 + 4u * (t % 8u);
    [[unroll]] for (uint r = 0; r < 4; ++r) {
        const uint i1 = tile1 * TN + t / 8u + 32u * r;
        [[unroll]] for (uint j = 0; j < 4; ++j) {
            rb[r][j] = (k + j < K && i1 < ne1) ? b[b_base + i1 * pc.b_nb.x + (k + j) * pc.b_nb.y] : 0.0;
        }
    }
}

void store_b(uint t) {
    [[unroll]] for (uint r = 0; r < 4; ++r) {
        const uint c = t / 8u + 32u * r;
        const vec4 v = rb[r] * ss[c];
        const vec4 hi = uintBitsToFloat(floatBitsToUint(v) & 0xFFFFE000u);
        const uint at = (c * LDN + 4u * (t % 8u)) / 4u;
        sbh[at] = pack4(f16vec4(hi));
        sbl[at] = pack4(f16vec4(v - hi));
    }
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint sg = gl_SubgroupID;
    const uint ne0 = pc.d_ne.x, ne1 = pc.d_ne.y;
    const uint tiles0 = (ne0 + TM - 1) / TM;
    const uint tiles1 = (ne1 + TN - 1) / TN;
    uint g = wg_index();
    if (g >= N_ITEMS) { return; }
    const uint slices = max(P0, 1u);
    const uint slice = g % slices; g /= slices;
    const uint k_lo = slices > 1u ? slice * P1 : 0u;
    const uint K = slices > 1u ? min(pc.a_ne.y, k_lo + P1) : pc.a_ne.y;
    const uint tile0 = g % tiles0; g /= tiles0;
    const uint tile1 = g % tiles1; g /= tiles1;
    const uint i2 = g % pc.d_ne.z;
    const uint i3 = g / pc.d_ne.z;
    const uint a2 = i2 / (pc.d_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.d_ne.w / pc.a_ne.w);
    const uint a_base = A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;
    const uint col0 = (i3 * pc.d_ne.z + i2) * ne1 + tile1 * TN;
    if (t < TN) {
        ss[t] = tile1 * TN + t < ne1 ? col_scale[col0 + t] : 1.0;
    }

    const uint m_sub = 32u * (sg % 4u), n_sub = 64u * (sg / 4u);
    CMAT acc[2][4];
    [[unroll]] for (uint mi = 0; mi < 2; ++mi) {
        [[unroll]] for (uint ni = 0; ni < 4; ++ni) { acc[mi][ni] = CMAT(0.0); }
    }
    load_a(a_base, tile0, k_lo, K, ne0, t);
    load_b(b_base, tile1, k_lo, K, ne1, t);
    barrier(); // ss is written
    for (uint k0 = k_lo; k0 < K; k0 += BK) {
        store_a(t);
        store_b(t);
        barrier();
        if (k0 + BK < K) {
            load_a(a_base, tile0, k0 + BK, K, ne0, t);
            load_b(b_base, tile1, k0 + BK, K, ne1, t);
        }
        [[unroll]] for (uint ks = 0; ks < BK; ks += 16u) {
            FMAT fa[2];
            [[unroll]] for (uint mi = 0; mi < 2; ++mi) {
                coopMatLoadNV(fa[mi], sa, (ks * LDM + m_sub + 16u * mi) / 4u, LDM / 4u, true);
            }
            [[unroll]] for (uint ni = 0; ni < 4; ++ni) {
                FMAT fh, fl;
                const uint at = ((n_sub + 16u * ni) * LDN + ks) / 4u;
                coopMatLoadNV(fh, sbh, at, LDN / 4u, true);
                coopMatLoadNV(fl, sbl, at, LDN / 4u, true);
                [[unroll]] for (uint mi = 0; mi < 2; ++mi) {
                    acc[mi][ni] = coopMatMulAddNV(fa[mi], fh, acc[mi][ni]);
                    acc[mi][ni] = coopMatMulAddNV(fa[mi], fl, acc[mi][ni]);
                }
            }
        }
        barrier();
    }

    // Out through shared memory, one 16 x 16 accumulator at a time per subgroup (column-major:
    // lanes 0..15 write 16 consecutive i0), divided by the column's scale.
    const uint lane = gl_SubgroupInvocationID;
    [[unroll]] for (uint mi = 0; mi < 2; ++mi) {
        [[unroll]] for (uint ni = 0; ni < 4; ++ni) {
            coopMatStoreNV(acc[mi][ni], sc, sg * 256u, 16u, true);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < 256u; e += gl_SubgroupSize) {
                const uint m = e % 16u, n = e / 16u;
                const uint c = n_sub + 16u * ni + n;
                const uint i0 = tile0 * TM + m_sub + 16u * mi + m, i1 = tile1 * TN + c;
                if (i0 < ne0 && i1 < ne1) {
                    const float v = sc[sg * 256u + e] / ss[c];
                    if (slices > 1u) {
                        d[D_OFF + slice * P2 + ((i3 * pc.d_ne.z + i2) * ne1 + i1) * ne0 + i0] = v;
                    } else {
                        d[D_OFF + strided(uvec4(i0, i1, i2, i3), pc.d_nb)] = v;
                    }
                }
            }
            subgroupBarrier();
        }
    }
}
