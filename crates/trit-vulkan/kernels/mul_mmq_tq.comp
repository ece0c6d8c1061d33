#version 450
// Ternary mat-mat for prompt processing, integer arithmetic:
// dst[r, c, i2, i3] = sum_k A[k, r, i2/ratio2, i3/ratio3] * B[k, c, i2, i3]
// with B quantized by quant_q8.comp (int8 packed four to a word, then f32 block scales
// from word P0). A workgroup of 256 computes a 64x64 tile of dst, 4x4 outputs per
// invocation (rows tr + 16i, columns tc + 16j), one 256-weight block at a time: the block's
// weights, decoded to signed int8 (-1/0/+1) and reordered to activation order, and its
// activations go through shared memory; each output sums integer dot products over the
// block, then adds sum * weight scale * activation scale, as the CPU's TQ*_0 x Q8_K dot.
// A_TQ2 | A_TQ1; USE_DOT: packed int8 dot product (SPV_KHR_integer_dot_product).
#include "common.glsl"
#if defined(USE_DOT)
#extension GL_EXT_spirv_intrinsics : require
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6016, 6018, 6019], id = 4450)
int sdot4(uint a, uint b, spirv_literal int fmt);
int dot4(uint a, uint b) { return sdot4(a, b, 0); }
#else
int dot4(uint a, uint b) {
    const ivec4 x = ivec4(int(a << 24) >> 24, int(a << 16) >> 24, int(a << 8) >> 24, int(a) >> 24);
    const ivec4 y = ivec4(int(b << 24) >> 24, int(b << 16) >> 24, int(b << 8) >> 24, int(b) >> 24);
    return x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
}
#endif

#define TM 64
#define TN 64
#define KW 64 // words of int8 per 256-block
layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
layout(std430, binding = 1) readonly buffer BufB { uint b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
// A fused MUL by a one-element tensor: d_ne.x != 0 says it is there, d_ne.y is its element.
layout(std430, binding = 3) readonly buffer BufS { float sc[]; };
#if defined(RES)
// RES: a fused ADD of a same-shaped tensor (the residual) after the scale, from element
// d_ne.z of binding 4, with dst's strides.
layout(std430, binding = 4) readonly buffer BufR { float res[]; };
#endif

shared uint sa[TM][KW + 1];
shared uint sb[TN][KW + 1];
shared float sdw[TM];
shared float sdx[TN];

uint load32(uint addr) {
    const uint w = addr >> 2;
    if ((addr & 2u) == 0u) { return a[w]; }
    return (a[w] >> 16) | (a[w + 1] << 16);
}
float half_at(uint addr) {
    const uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}
uint to_signed(uint codes) { return ((codes | 0x80808080u) - 0x01010101u) ^ 0x80808080u; }

#include "tq_layout.glsl"
#if defined(A_TQ2)
#define WORDS 16u
#else
#define WORDS 13u
uint trits(uint w, uint pw) {
    uint lo = ((w & 0x00FF00FFu) * pw) & 0x00FF00FFu;
    uint hi = (((w >> 8) & 0x00FF00FFu) * pw) & 0x00FF00FFu;
    lo = ((lo * 3u) >> 8) & 0x00FF00FFu;
    hi = ((hi * 3u) >> 8) & 0x00FF00FFu;
    return lo | (hi << 8);
}
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
    const uint rt = w % nrt; w /= nrt;
    const uint ct = w % nct; w /= nct;
    const uint i2 = w % pc.b_ne.z;
    const uint i3 = w / pc.b_ne.z;
    const uint a2 = i2 / (pc.b_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.b_ne.w / pc.a_ne.w);
    const uint r0 = rt * TM;
    const uint c0 = ct * TN;
    const uint a_base = A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint nblocks = K / 256;
    const uint kw_col = K / 4;
    const uint fc0 = c0 + cols * (i2 + pc.b_ne.z * i3); // flat column of c0

    const uint tr = t % 16;
    const uint tc = t / 16;
    float acc[4][4];
    [[unroll]] for (uint i = 0; i < 4; ++i) { [[unroll]] for (uint j = 0; j < 4; ++j) { acc[i][j] = 0.0; } }

    for (uint blk = 0; blk < nblocks; ++blk) {
        // Weights: each code word of the block, decoded to the activation order.
        for (uint it = t; it < TM * WORDS; it += 256) {
            const uint rr = it / WORDS;
            const uint j = it % WORDS;
            const uint r = r0 + rr;
            const bool ok = r < rows;
            const uint base = a_base + r * pc.a_nb.y + blk * TQ_CODE_STEP;
            const uint cw = ok ? load32(base + 4u * j) : 0u;
#if defined(A_TQ2)
            // Code word j, shift l: weights e0 = ((j/8)*4 + l)*32 + (j%8)*4 .. +3.
            [[unroll]] for (uint l = 0; l < 4; ++l) {
                const uint codes = ok ? (cw >> (2u * l)) & 0x03030303u : 0x01010101u; // code 1: weight 0
                sa[rr][((j / 8u) * 4u + l) * 8u + (j % 8u)] = to_signed(codes);
            }
#else
            uint e_word, step, nt;
            if (j < 8u) { e_word = j; step = 8u; nt = 5u; }
            else if (j < 12u) { e_word = 40u + (j - 8u); step = 4u; nt = 5u; }
            else { e_word = 60u; step = 1u; nt = 4u; }
            uint pw = 1u;
            for (uint n = 0; n < nt; ++n) {
                sa[rr][e_word + n * step] = ok ? to_signed(trits(cw, pw)) : 0u;
                pw *= 3u;
            }
#endif
        }
        if (t < TM) {
            const uint r = r0 + t;
            sdw[t] = r < rows ? half_at(tq_scale_at(a_base + r * pc.a_nb.y, blk)) : 0.0;
        } else if (t < TM + TN) {
            const uint c = c0 + (t - TM);
            sdx[t - TM] = c < cols ? uintBitsToFloat(b[B_OFF + P0 + (fc0 + t - TM) * nblocks + blk]) : 0.0;
        }
        // Activations: 64 words of each column.
        for (uint it = t; it < TN * KW; it += 256) {
            const uint cc = it / KW;
            const uint kk = it % KW;
            sb[cc][kk] = c0 + cc < cols ? b[B_OFF + (fc0 + cc) * kw_col + blk * KW + kk] : 0u;
        }
        barrier();
        int isum[4][4];
        [[unroll]] for (uint i = 0; i < 4; ++i) { [[unroll]] for (uint j = 0; j < 4; ++j) { isum[i][j] = 0; } }
        for (uint kk = 0; kk < KW; ++kk) {
            uint av[4];
            uint bv[4];
            [[unroll]] for (uint i = 0; i < 4; ++i) { av[i] = sa[tr + 16 * i][kk]; bv[i] = sb[tc + 16 * i][kk]; }
            [[unroll]] for (uint i = 0; i < 4; ++i) {
                [[unroll]] for (uint j = 0; j < 4; ++j) { isum[i][j] += dot4(av[i], bv[j]); }
            }
        }
        [[unroll]] for (uint i = 0; i < 4; ++i) {
            [[unroll]] for (uint j = 0; j < 4; ++j) {
                acc[i][j] += float(isum[i][j]) * (sdw[tr + 16 * i] * sdx[tc + 16 * j]);
            }
        }
        barrier();
    }
    const bool scaled = pc.d_ne.x != 0u;
    const float scale = scaled ? sc[pc.d_ne.y] : 1.0;
    [[unroll]] for (uint i = 0; i < 4; ++i) {
        [[unroll]] for (uint j = 0; j < 4; ++j) {
            const uint r = r0 + tr + 16 * i;
            const uint c = c0 + tc + 16 * j;
            if (r < rows && c < cols) {
                precise float v = scaled ? acc[i][j] * scale : acc[i][j];
#if defined(RES)
                precise float vr = v + res[pc.d_ne.z + r * pc.d_nb.x + c * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w];
#else
                const float vr = v;
#endif
                d[D_OFF + r * pc.d_nb.x + c * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w] = vr;
            }
        }
    }
}
