#version 450
// Ternary mat-vec (decode) and narrow mat-mat (up to NCOLS columns):
// dst[r, c, i2, i3] = sum_k A[k, r, i2/ratio2, i3/ratio3] * B[k, c, i2, i3]
// with B already quantized by quant_q8.comp: int8 values packed four to a word, then one
// f32 scale per 256-block (at word P0 of the binding). Per block the sum is an integer
// (weights -1/0/+1 times int8), scaled by weight scale * activation scale, as the CPU's
// TQ*_0 x Q8_K dot product does.
//
// LANES invocations share one weight row, each reading 32-bit words of it (consecutive
// lanes, consecutive words); WG / LANES rows per workgroup. Lanes of a row reduce with
// subgroup shuffles; where the subgroup is narrower than LANES (lavapipe) the partial sums
// of its subgroups meet in shared memory. USE_DOT: packed int8 dot product
// (SPV_KHR_integer_dot_product) where the device has it; else a plain fallback.
// A_TQ2 | A_TQ1.
// MULTI (one column, no RES): up to three products of one activation vector in one dispatch
// (Q, K, V or gate, up), their rows concatenated: a_ne.yzw = rows of each, a_nb.xyz = byte
// offset of each weight matrix in binding 0, a_nb.w = row bytes (all share K and type),
// d_ne.xyz = element of each output in binding 2, d_nb.xyz = element of each scale in
// binding 3, d_ne.w != 0: scales are bound.
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
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

#define WG 128
#define LANES 32
#define ROWS (WG / LANES)
#ifndef U
#define U 4 // items per lane per step (`_u1` variants: 1)
#endif
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
layout(std430, binding = 1) readonly buffer BufB { uint b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
// A fused MUL by a one-element tensor (BitNet's per-tensor weight scale): d_ne.x != 0 says
// it is there, d_ne.y is its element (d_ne is otherwise unused here).
layout(std430, binding = 3) readonly buffer BufS { float sc[]; };
#if defined(RES)
// RES: a fused ADD of a same-shaped tensor (the residual) after the scale, from element
// d_ne.z of binding 4, with dst's strides.
layout(std430, binding = 4) readonly buffer BufR { float res[]; };
#endif

shared float red[NCOLS][WG];

// The 32-bit word at byte address `addr` (a multiple of 2) of A.
uint load32(uint addr) {
    const uint w = addr >> 2;
    if ((addr & 2u) == 0u) { return a[w]; }
    return (a[w] >> 16) | (a[w + 1] << 16);
}
float half_at(uint addr) {
    const uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}
// Each byte 0..2 of `codes` to the signed byte code - 1 (-1, 0, +1).
uint to_signed(uint codes) { return ((codes | 0x80808080u) - 0x01010101u) ^ 0x80808080u; }

#if defined(A_TQ2)
#define BLOCK_BYTES 66u
#define SCALE_AT 64u
#define WORDS 16u // code words per block
#else
#define BLOCK_BYTES 54u
#define SCALE_AT 52u
#define WORDS 13u
// Trit n (0..4) of every byte of `w`: ((byte * 3^n) mod 256) * 3 >> 8.
uint trits(uint w, uint pw) {
    uint lo = ((w & 0x00FF00FFu) * pw) & 0x00FF00FFu;
    uint hi = (((w >> 8) & 0x00FF00FFu) * pw) & 0x00FF00FFu;
    lo = ((lo * 3u) >> 8) & 0x00FF00FFu;
    hi = ((hi * 3u) >> 8) & 0x00FF00FFu;
    return lo | (hi << 8);
}
#endif

// Add the products of code word j of block blk (weights `cw`, scale `dw`) to acc.
void accumulate(inout float acc[NCOLS], uint cw, float dw, uint blk, uint j, uint fc0, uint c0, uint kw, uint nblocks) {
#if defined(A_TQ2)
    // Byte q of the block holds weights (q/32)*128 + l*32 + q%32, l = 0..3.
    const uint e_word = (j / 8u) * 32u + (j % 8u); // q word of weight e0 within the block
    uint s[4];
    [[unroll]] for (uint l = 0; l < 4; ++l) { s[l] = to_signed((cw >> (2u * l)) & 0x03030303u); }
    [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
        if (c0 + c < pc.b_ne.y) {
            const uint qb = B_OFF + (fc0 + c) * kw + blk * 64u + e_word;
            int isum = 0;
            [[unroll]] for (uint l = 0; l < 4; ++l) { isum += dot4(s[l], b[qb + l * 8u]); }
            const float dx = uintBitsToFloat(b[B_OFF + P0 + (fc0 + c) * nblocks + blk]);
            acc[c] += float(isum) * (dw * dx);
        }
    }
#else
    // Words 0..7: 5 trits per byte, weights 4j + 32n; 8..11: 160 + 4(j-8) + 16n;
    // word 12: 4 trits per byte, weights 240 + 4n.
    uint e_word, step, nt;
    if (j < 8u) { e_word = j; step = 8u; nt = 5u; }
    else if (j < 12u) { e_word = 40u + (j - 8u); step = 4u; nt = 5u; }
    else { e_word = 60u; step = 1u; nt = 4u; }
    uint s[5];
    uint pw = 1u;
    [[unroll]] for (uint n = 0; n < 5; ++n) { s[n] = to_signed(trits(cw, pw)); pw *= 3u; }
    [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
        if (c0 + c < pc.b_ne.y) {
            const uint qb = B_OFF + (fc0 + c) * kw + blk * 64u + e_word;
            int isum = 0;
            [[unroll]] for (uint n = 0; n < 4; ++n) { isum += dot4(s[n], b[qb + n * step]); }
            if (nt == 5u) { isum += dot4(s[4], b[qb + 4u * step]); }
            const float dx = uintBitsToFloat(b[B_OFF + P0 + (fc0 + c) * nblocks + blk]);
            acc[c] += float(isum) * (dw * dx);
        }
    }
#endif
}

void main() {
    const uint S = gl_SubgroupSize;
    // Flat invocation index by subgroup, so a row's lanes are adjacent lanes of a subgroup.
    const uint fl = gl_SubgroupID * S + gl_SubgroupInvocationID;
    const uint lane = fl % LANES;
    const uint K = pc.a_ne.x;
#if defined(MULTI)
    const uint rows = pc.a_ne.y + pc.a_ne.z + pc.a_ne.w;
#else
    const uint rows = pc.a_ne.y;
#endif
    const uint nrg = (rows + ROWS - 1) / ROWS;
    const uint ncb = (pc.b_ne.y + NCOLS - 1) / NCOLS;
    uint w = wg_index();
    const bool wg_live = w < N_ITEMS;
    const uint r = (w % nrg) * ROWS + fl / LANES;
    w /= nrg;
    const uint cb = w % ncb; w /= ncb;
    const uint i2 = w % pc.b_ne.z;
    const uint i3 = w / pc.b_ne.z;
    const bool live = wg_live && r < rows;
    const uint c0 = cb * NCOLS;
#if defined(MULTI)
    // Which product row r belongs to, and its row there.
    const uint part = r < pc.a_ne.y ? 0u : (r < pc.a_ne.y + pc.a_ne.z ? 1u : 2u);
    const uint lr = part == 0u ? r : (part == 1u ? r - pc.a_ne.y : r - pc.a_ne.y - pc.a_ne.z);
    const uint a_row = pc.a_nb[part] + lr * pc.a_nb.w;
#else
    const uint a2 = i2 / (pc.b_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.b_ne.w / pc.a_ne.w);
    const uint a_row = A_OFF + r * pc.a_nb.y + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
#endif
    const uint nblocks = K / 256;
    const uint kw = K / 4; // q words per column
    // Flat column index of column c0 (columns, then i2, then i3, as quant_q8 writes them).
    const uint fc0 = c0 + pc.b_ne.y * (i2 + pc.b_ne.z * i3);

    float acc[NCOLS];
    [[unroll]] for (uint j = 0; j < NCOLS; ++j) { acc[j] = 0.0; }

    if (live) {
        const uint items = nblocks * WORDS;
        // U items per lane per step, their weight words loaded before any is used, so each
        // lane has U loads from memory in flight.
        for (uint it0 = lane; it0 < items; it0 += LANES * U) {
            uint cws[U];
            float dws[U];
            [[unroll]] for (uint u = 0; u < U; ++u) {
                const uint it = min(it0 + u * LANES, items - 1);
                const uint base = a_row + (it / WORDS) * BLOCK_BYTES;
                cws[u] = load32(base + 4u * (it % WORDS));
                dws[u] = half_at(base + SCALE_AT);
            }
            [[unroll]] for (uint u = 0; u < U; ++u) {
                const uint it = it0 + u * LANES;
                if (it < items) { accumulate(acc, cws[u], dws[u], it / WORDS, it % WORDS, fc0, c0, kw, nblocks); }
            }
        }
    }

    // Reduce over the LANES lanes of the row: shuffles within the subgroup ...
    const uint span = min(S, uint(LANES));
    [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
        for (uint m = 1; m < span; m <<= 1) { acc[c] += subgroupShuffleXor(acc[c], m); }
    }
    // ... and, for subgroups narrower than a row, across subgroups in shared memory.
    if (S < LANES) {
        if (gl_SubgroupInvocationID == 0) {
            [[unroll]] for (uint c = 0; c < NCOLS; ++c) { red[c][gl_SubgroupID] = acc[c]; }
        }
        barrier();
        const uint per = LANES / S;
        const uint first = (fl / LANES) * per;
        [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
            float t = 0.0;
            for (uint i = 0; i < per; ++i) { t += red[c][first + i]; }
            acc[c] = t;
        }
    }
#if defined(MULTI)
    if (live && lane == 0) {
        precise float v = pc.d_ne.w != 0u ? acc[0] * sc[pc.d_nb[part]] : acc[0];
        d[pc.d_ne[part] + lr] = v;
    }
#else
    if (live && lane == 0) {
        const float scale = pc.d_ne.x != 0u ? sc[pc.d_ne.y] : 1.0;
        [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
            if (c0 + c < pc.b_ne.y) {
                precise float v = pc.d_ne.x != 0u ? acc[c] * scale : acc[c];
#if defined(RES)
                precise float vr = v + res[pc.d_ne.z + r * pc.d_nb.x + (c0 + c) * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w];
#else
                const float vr = v;
#endif
                d[D_OFF + r * pc.d_nb.x + (c0 + c) * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w] = vr;
            }
        }
    }
#endif
}
