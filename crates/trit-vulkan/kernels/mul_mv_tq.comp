#version 450
// Ternary mat-vec (decode) and narrow mat-mat (up to NCOLS columns):
// dst[r, c, i2, i3] = sum_k A[k, r, i2/ratio2, i3/ratio3] * B[k, c, i2, i3]
// with B already quantized by quant_q8.comp: int8 values packed four to a word, then one
// f32 scale per 256-block (at word P0 of the binding). Per block the sum is an integer
// (weights -1/0/+1 times int8), scaled by weight scale * activation scale, as the CPU's
// TQ*_0 x Q8_K dot product does.
//
// LANES invocations share one weight row, each reading 32-bit words of it (consecutive
// lanes, consecutive words; TQ2_0 rows, split and 16-byte aligned in trit's buffers
// (tq_layout.glsl), four words a load); WG / LANES rows per workgroup. Lanes of a row reduce with
// subgroup shuffles; where the subgroup is narrower than LANES (lavapipe) the partial sums
// of its subgroups meet in shared memory. USE_DOT: packed int8 dot product
// (SPV_KHR_integer_dot_product) where the device has it; else a plain fallback.
// A_TQ2 | A_TQ1.
// MULTI (one column, no RES): up to three products of one activation vector in one dispatch
// (Q, K, V or gate, up), their rows concatenated: a_ne.yzw = rows of each, a_nb.xyz = byte
// offset of each weight matrix in binding 0, a_nb.w = row bytes (all share K and type),
// d_ne.xyz = element of each output in binding 2, d_nb.xyz = element of each scale in
// binding 3, d_ne.w != 0: scales are bound.
// NORM (one column): the activation is the int8 form of RMS_NORM(x) times a norm weight,
// computed by every workgroup into shared memory before its rows (the norm and its
// quantization fused into the products that read them, one stage less per norm): binding 1
// holds f32 x from B_OFF (RELU2: relu(x)^2 * x2, x2 from element b_nb.y, BitNet's gate * up
// before the FFN sub-norm) and, with RES, the residual; binding 3 the scales and the norm
// weight from element b_nb.x; eps is P0; P1 workgroups are launched for the N_ITEMS row
// groups (each takes every P1-th). The same f32 operations in the same order as
// rms_norm_q8.comp (per 256-block lane sums, subgroup sums, their sum in subgroup order), so
// the int8 values and block scales are those it writes; K <= 8192; subgroups of 8 lanes or
// more (a lane takes 256 / min(subgroup, 32) elements of a block, four consecutive a step:
// q8_block.glsl's norm_elem). Where each lane cluster
// has one block at most (every 2B-4T norm but the 512-invocation down projection's on
// 32-wide subgroups), the one-round form of norm_one_round.glsl: input and norm weight
// loaded together, one global round trip and two barriers. WIDE (the `_w` variants, 1024
// invocations and 32 rows per workgroup): every workgroup reads the whole input, so on a
// large GPU fewer, wider workgroups halve what the prologues take from L2.
// ROPE (MULTI with NORM): the first product (Q) is rotated as rope.comp rotates it before it
// is stored (its ROPE fused into the products' epilogue, one stage less per layer): each
// workgroup of its rows takes ROWS / 2 rotation pairs of one head (`rope_row`), whose two
// values meet in shared memory. m0.z = n_dims (the head size, a multiple of ROWS) | mode << 16
// (2 = NEOX: pairs (j, j + n_dims/2), 0: pairs (2j, 2j+1)), m1.w = element of the position
// (i32, binding 4), b_nb.z = freq_base, b_nb.w = freq_scale, d_nb.w = attn_factor (floats as
// bits); the first product's rows are a multiple of n_dims.
// KV (with ROPE; Q, V, K): V and K go straight into the f16 KV cache, as llama.cpp's
// SET_ROWS of them would write it, K rotated as Q: the third product's rows are permuted and
// rotated in the same way, then stored to binding 6 from element d_ne.z, in row kvi[b_ne.w]
// of d_ne.w halves; V to binding 7 from element d_ne.y, element r in row kvi[m1.x] of b_nb.y
// halves (b_nb.y bit 31: transposed, V's element r in row kvi[m1.x + r], one half each).
// kvi (binding 5) holds i64 row indices (the low word is read). The scales are always bound.
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#if defined(USE_DOT)
#extension GL_EXT_spirv_intrinsics : require
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6016, 6018, 6019], id = 4450)
int sdot4(uint a, uint b, spirv_literal int fmt);
int dot4(uint a, uint b) { return sdot4(a, b, 0); }
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6016, 6018, 6019], id = 4452)
int sudot4_(uint a, uint b, spirv_literal int fmt);
// Signed int8 x (four to a word) times unsigned bytes u.
int sudot4(uint x, uint u) { return sudot4_(x, u, 0); }
#else
int dot4(uint a, uint b) {
    const ivec4 x = ivec4(int(a << 24) >> 24, int(a << 16) >> 24, int(a << 8) >> 24, int(a) >> 24);
    const ivec4 y = ivec4(int(b << 24) >> 24, int(b << 16) >> 24, int(b << 8) >> 24, int(b) >> 24);
    return x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
}
int sudot4(uint x, uint u) {
    const ivec4 a = ivec4(int(x << 24) >> 24, int(x << 16) >> 24, int(x << 8) >> 24, int(x) >> 24);
    const ivec4 b = ivec4(u & 0xFFu, (u >> 8) & 0xFFu, (u >> 16) & 0xFFu, u >> 24);
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}
#endif

#ifndef WG
#define WG 128
#endif
#ifndef LANES
#define LANES 32 // invocations per row
#endif
#define ROWS (WG / LANES)
#ifndef QUAD_MIN_BLOCKS
#define QUAD_MIN_BLOCKS (LANES / 2u) // a lane's two quads on average (see rows_of)
#endif
#ifndef U
#define U 4 // items per lane per step (`_u1` variants: 1)
#endif
layout(local_size_x = WG) in;

#if defined(ATTN)
// One column of one batch (b_ne.y and b_ne.z hold the attention's parameters instead), and
// the stores that the group's last workgroup reads back made coherent (attn_tail.glsl).
#define B_COLS 1u
#define B_BATCH 1u
#define ATT_COHERENT coherent
#else
#define B_COLS pc.b_ne.y
#define B_BATCH pc.b_ne.z
#define ATT_COHERENT
#endif

layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
#if defined(A_TQ2)
layout(std430, binding = 0) readonly buffer BufA4 { uvec4 a4[]; };
#endif
#if defined(NORM)
layout(std430, binding = 1) readonly buffer BufB { float xin[]; };
#else
layout(std430, binding = 1) readonly buffer BufB { uint b[]; };
#endif
layout(std430, binding = 2) ATT_COHERENT writeonly buffer BufD { float d[]; };
// A fused MUL by a one-element tensor (BitNet's per-tensor weight scale): d_ne.x != 0 says
// it is there, d_ne.y is its element (d_ne is otherwise unused here).
layout(std430, binding = 3) readonly buffer BufS { float sc[]; };
#if defined(RES)
// RES: a fused ADD of a same-shaped tensor (the residual) after the scale, from element
// d_ne.z of binding 4 (NORM: of binding 1), with dst's strides.
#if defined(NORM)
#define RESV(i) xin[i]
#else
layout(std430, binding = 4) readonly buffer BufR { float res[]; };
#define RESV(i) res[i]
#endif
#endif

#if defined(NORM)
// The int8 input (8 KiB), its block scales and item sums: with the rest, ~14 KiB of shared memory, under
// the 16 KiB every Vulkan device has.
#define NORM_MAXK 8192u
shared uint sq[NORM_MAXK / 4u];
shared float sd[NORM_MAXK / 256u];
shared float nred[256];
#if defined(A_TQ2)
// WSUMS: the sums of the int8 input that the TQ2_0 products take away once per item instead
// of turning every code into -1/0/+1 first ((c - 1) . x = c . x - sum x, the codes c = 0..2
// taken as unsigned bytes): wsum[blk * 16 + j] over the 16 values that code word j of a block
// meets (its four int8 words j % 8 + 8 l of half-block j / 8), qsum[blk * 4 + q] over the 64
// of code words 4q .. 4q + 3. Integers, so the products are the same bits as with signed codes.
#define WSUMS
shared int wsum[NORM_MAXK / 16u];
shared int qsum[NORM_MAXK / 64u];

// The item sums of block blk from a cluster of C lanes (C = 8, 16 or 32), each holding the
// int8 words norm_elem puts in its lane (word (e / 4) * C + lc of the block for its e-th
// values): hs[h] = the sum of the lane's words in half-block h. Called by every lane of the
// subgroup (shuffles); has: whether this cluster has a block.
void store_item_sums(int hs[2], uint blk, uint lc, uint C, bool has) {
    [[unroll]] for (uint h = 0; h < 2; ++h) {
        // Words j % 8 + 8 l of a half-block sit in lanes with the same lc % 8.
        for (uint m = 8; m < C; m <<= 1) { hs[h] += subgroupShuffleXor(hs[h], m); }
        int q = hs[h] + subgroupShuffleXor(hs[h], 1u);
        q += subgroupShuffleXor(q, 2u);
        if (has && lc < 8u) {
            wsum[blk * 16u + 8u * h + lc] = hs[h];
            if ((lc & 3u) == 0u) { qsum[blk * 4u + 2u * h + lc / 4u] = q; }
        }
    }
}
#endif
#define QW(i) sq[i]
#define QBASE 0u
#define QSCALE(col, blk) sd[blk]
#if defined(RELU2)
float relu2(float v) { const float r = max(v, 0.0); return r * r; }
#define NX(k) (relu2(xin[B_OFF + (k)]) * xin[pc.b_nb.y + (k)])
#else
#define NX(k) (xin[B_OFF + (k)])
#endif

// RMS_NORM of the K elements NX(k), times the norm weight, quantized as rms_norm_q8.comp
// does (int8 four to a word in sq, one f32 scale per 256-block in sd). Clusters of
// C = min(subgroup, 32) lanes own a block each, EPL = 256 / C elements per lane, as there;
// the workgroup takes WG / C blocks a round. A lane's elements are loaded all at once (the
// loops unrolled to EPL_MAX, the rest predicated off) and kept in registers within a round.
#define EPL_MAX 32
#include "q8_block.glsl"

// 1 / sqrt(mean square + eps) from the subgroups' sums of squares nred[0..nsums), added in
// order, 8 loads issued before their adds (the same additions in the same order as one at a
// time: rms_norm_q8.comp's bits).
float norm_scale(uint nsums, uint K) {
    float total = 0.0;
    for (uint i0 = 0; i0 < nsums; i0 += 8u) {
        float v[8];
        [[unroll]] for (uint j = 0; j < 8u; ++j) { v[j] = i0 + j < nsums ? nred[i0 + j] : 0.0; }
        [[unroll]] for (uint j = 0; j < 8u; ++j) {
            if (i0 + j < nsums) { total += v[j]; }
        }
    }
    precise float scale = inversesqrt(total / float(K) + uintBitsToFloat(P0));
    return scale;
}

// The f32 operands again as vec4s, for the one-round form's loads where they are 16-byte
// aligned (`norm_vec4`).
layout(std430, binding = 1) readonly buffer BufB4 { vec4 xin4[]; };
layout(std430, binding = 3) readonly buffer BufS4 { vec4 sc4[]; };
bool norm_vec4() {
#if defined(RELU2)
    return ((B_OFF | pc.b_nb.y | pc.b_nb.x) & 3u) == 0u;
#else
    return ((B_OFF | pc.b_nb.x) & 3u) == 0u;
#endif
}
// NX(k .. k + 3), k a multiple of 4: the same f32 operations, element by element.
vec4 nx4(uint k, bool v4) {
    if (v4) {
#if defined(RELU2)
        const vec4 g = max(xin4[(B_OFF + k) / 4u], vec4(0.0));
        return (g * g) * xin4[(pc.b_nb.y + k) / 4u];
#else
        return xin4[(B_OFF + k) / 4u];
#endif
    }
    return vec4(NX(k), NX(k + 1u), NX(k + 2u), NX(k + 3u));
}
// The norm weight's elements k .. k + 3.
vec4 nw4(uint k, bool v4) {
    if (v4) { return sc4[(pc.b_nb.x + k) / 4u]; }
    const uint w = pc.b_nb.x + k;
    return vec4(sc[w], sc[w + 1u], sc[w + 2u], sc[w + 3u]);
}

#define NR_EPL 8
#define NR_FN norm_one_round_8
#include "norm_one_round.glsl"
#undef NR_EPL
#undef NR_FN
#define NR_EPL 16
#define NR_FN norm_one_round_16
#include "norm_one_round.glsl"
#undef NR_EPL
#undef NR_FN
#define NR_EPL 32
#define NR_FN norm_one_round_32
#include "norm_one_round.glsl"
#undef NR_EPL
#undef NR_FN
void norm_prologue(uint K) {
    const uint S = gl_SubgroupSize;
    const uint fl = gl_SubgroupID * S + gl_SubgroupInvocationID;
    const uint C = min(S, 32u);
    const uint EPL = 256u / C;
    const uint ncl = WG / C;
    // One block per cluster at most (every decode norm of 2B-4T in the `_w` variants): the
    // one-round form (norm_one_round.glsl), the same bits.
    if (K / 256u <= ncl) {
        if (C == 32u) { norm_one_round_8(K); return; }
        if (C == 16u) { norm_one_round_16(K); return; }
        if (C == 8u) { norm_one_round_32(K); return; }
    }
    const uint cl = fl / C;
    const uint lc = fl % C;
    const uint nblk = K / 256u;
    const uint spw = WG / S;
    const uint rounds = (nblk + ncl - 1u) / ncl;
    // Subgroup g of round r sums the blocks rms_norm_q8's subgroup r * spw + g sums.
    for (uint r = 0; r < rounds; ++r) {
        const uint cid = r * ncl + cl;
        const bool has = cid < nblk;
        const uint kb = cid * 256u;
        float xv[EPL_MAX];
        [[unroll]] for (uint e = 0; e < EPL_MAX; ++e) { xv[e] = (has && e < EPL) ? NX(kb + norm_elem(lc, e, C)) : 0.0; }
        precise float s = 0.0;
        [[unroll]] for (uint e = 0; e < EPL_MAX; ++e) {
            if (has && e < EPL) { s += xv[e] * xv[e]; }
        }
        for (uint m = 1; m < S; m <<= 1) { s += subgroupShuffleXor(s, m); }
        if (gl_SubgroupInvocationID == 0) { nred[r * spw + gl_SubgroupID] = s; }
    }
    barrier();
    const float scale = norm_scale(rounds * spw, K);
    for (uint r = 0; r < rounds; ++r) {
        const uint cid = r * ncl + cl;
        const bool has = cid < nblk;
        const uint kb = cid * 256u;
        float xv[EPL_MAX];
        float wv[EPL_MAX];
        [[unroll]] for (uint e = 0; e < EPL_MAX; ++e) {
            const bool use = has && e < EPL;
            const uint k = kb + norm_elem(lc, e, C);
            xv[e] = use ? NX(k) : 0.0;
            wv[e] = use ? sc[pc.b_nb.x + k] : 0.0;
        }
        // The value of largest magnitude in the block, the first on ties.
        float mv = 0.0;
        uint mi = 0xFFFFFFFFu;
        [[unroll]] for (uint e = 0; e < EPL_MAX; ++e) {
            if (has && e < EPL) {
                precise float y = (xv[e] * scale) * wv[e];
                xv[e] = y;
                if (mi == 0xFFFFFFFFu || abs(y) > abs(mv)) { mv = y; mi = norm_elem(lc, e, C); }
            }
        }
        cluster_max(mv, mi, C);
        int hs[2] = int[2](0, 0); // WSUMS: the lane's word sums per half-block
        if (has) {
            const float iscale = q8_iscale(mv);
            [[unroll]] for (uint e = 0; e < EPL_MAX; e += 4) {
                if (e < EPL) {
                    const uint word = q8_word(iscale, mv, vec4(xv[e], xv[e + 1], xv[e + 2], xv[e + 3]));
                    sq[(kb + norm_elem(lc, e, C)) / 4u] = word;
#if defined(WSUMS)
                    hs[((e >> 2) * C) >> 5] += dot4(word, 0x01010101u);
#endif
                }
            }
            if (lc == 0) { sd[cid] = q8_scale(mv, iscale); }
        }
#if defined(WSUMS)
        store_item_sums(hs, cid, lc, C, has);
#endif
    }
    barrier();
}
#else
#define QW(i) b[i]
#define QBASE B_OFF
#define QSCALE(col, blk) uintBitsToFloat(b[B_OFF + P0 + (col) * nblocks + (blk)])
#endif

#if defined(WIDE)
shared float red[NCOLS][WG / 4]; // one per subgroup (the `_w` variants need 4 lanes or more)
#else
shared float red[NCOLS][WG];
#endif

#if defined(ROPE)
layout(std430, binding = 4) readonly buffer BufP { int pos[]; };
shared float rq[ROWS];
#define ROPE_DIMS (pc.m0.z & 0xFFFFu)
#define ROPE_MODE (pc.m0.z >> 16)

// Element (within its head) of slot s's row in Q row group g: slots s and s + ROWS/2 hold
// the two elements of rotation pair j = (g mod groups per head) * ROWS/2 + s mod ROWS/2.
uint rope_pair_elem(uint j, uint second) {
    const uint n_dims = ROPE_DIMS;
    if (ROPE_MODE == 2u) {
        return j + second * (n_dims / 2u);
    }
    return 2u * j + second;
}

uint rope_row(uint lr) {
    const uint n_dims = ROPE_DIMS;
    const uint HP = ROWS / 2u;
    const uint g = lr / ROWS;
    const uint s = lr % ROWS;
    const uint gph = n_dims / ROWS;
    const uint j = (g % gph) * HP + s % HP;
    return (g / gph) * n_dims + rope_pair_elem(j, s / HP);
}
#endif
#if defined(KV)
layout(std430, binding = 5) readonly buffer BufI { uvec2 kvi[]; };
layout(std430, binding = 6) ATT_COHERENT writeonly buffer BufK { float16_t kc[]; };
layout(std430, binding = 7) ATT_COHERENT writeonly buffer BufV { float16_t vc[]; };
#endif

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

#include "tq_layout.glsl"
#if defined(A_TQ2)
#define WORDS 16u // code words per block
#else
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
    [[unroll]] for (uint l = 0; l < 4; ++l) {
#if defined(WSUMS)
        // The codes as unsigned bytes, the input's sum taken away once (`wsum`).
        s[l] = (cw >> (2u * l)) & 0x03030303u;
#else
        s[l] = to_signed((cw >> (2u * l)) & 0x03030303u);
#endif
    }
    [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
        if (c0 + c < B_COLS) {
            const uint qb = QBASE + (fc0 + c) * kw + blk * 64u + e_word;
#if defined(WSUMS)
            int isum = -wsum[blk * 16u + j];
            [[unroll]] for (uint l = 0; l < 4; ++l) { isum += sudot4(QW(qb + l * 8u), s[l]); }
#else
            int isum = 0;
            [[unroll]] for (uint l = 0; l < 4; ++l) { isum += dot4(s[l], QW(qb + l * 8u)); }
#endif
            const float dx = QSCALE(fc0 + c, blk);
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
        if (c0 + c < B_COLS) {
            const uint qb = QBASE + (fc0 + c) * kw + blk * 64u + e_word;
            int isum = 0;
            [[unroll]] for (uint n = 0; n < 4; ++n) { isum += dot4(s[n], QW(qb + n * step)); }
            if (nt == 5u) { isum += dot4(s[4], QW(qb + 4u * step)); }
            const float dx = QSCALE(fc0 + c, blk);
            acc[c] += float(isum) * (dw * dx);
        }
    }
#endif
}

#if defined(A_TQ2)
// Add the products of code words 4q .. 4q + 3 of block blk (`cw4`, scale `dw`) to acc, their
// integer sums first (one scaled add per column). Lane `lane` of a row takes the words and
// planes in its own rotation (word r = lane / 2 mod 4 first, plane t = lane / 8 mod 4 first):
// the int8 word of code word j, plane l sits at j % 8 + 8 l of its 32-word half-block, so
// without the rotation the 32 lanes of a row read 2 of the 32 shared-memory banks at a time;
// with it, 32 different banks.
void accumulate_quad(inout float acc[NCOLS], uvec4 cw4, float dw, uint blk, uint q, uint lane, uint fc0, uint c0, uint kw, uint nblocks) {
    const uint r = (lane >> 1) & 3u;
    const uint t = (lane >> 3) & 3u;
    uint sw[4][4];
    uint at[4][4];
    [[unroll]] for (uint i = 0; i < 4; ++i) {
        const uint ii = (i + r) & 3u;
        const uint j = 4u * q + ii;
        const uint cw = cw4[ii];
        [[unroll]] for (uint l = 0; l < 4; ++l) {
            const uint ll = (l + t) & 3u;
#if defined(WSUMS)
            sw[i][l] = (cw >> (2u * ll)) & 0x03030303u;
#else
            sw[i][l] = to_signed((cw >> (2u * ll)) & 0x03030303u);
#endif
            at[i][l] = (j / 8u) * 32u + (j % 8u) + ll * 8u;
        }
    }
    [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
        if (c0 + c < B_COLS) {
            const uint qb = QBASE + (fc0 + c) * kw + blk * 64u;
#if defined(WSUMS)
            int isum = -qsum[blk * 4u + q];
            [[unroll]] for (uint i = 0; i < 4; ++i) {
                [[unroll]] for (uint l = 0; l < 4; ++l) { isum += sudot4(QW(qb + at[i][l]), sw[i][l]); }
            }
#else
            int isum = 0;
            [[unroll]] for (uint i = 0; i < 4; ++i) {
                [[unroll]] for (uint l = 0; l < 4; ++l) { isum += dot4(sw[i][l], QW(qb + at[i][l])); }
            }
#endif
            acc[c] += float(isum) * (dw * QSCALE(fc0 + c, blk));
        }
    }
}
#endif

// The rows of workgroup index `wg` (and its column block and batch).
void rows_of(uint wg) {
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
    const uint ncb = (B_COLS + NCOLS - 1) / NCOLS;
    uint w = wg;
    const bool wg_live = w < N_ITEMS;
    const uint r = (w % nrg) * ROWS + fl / LANES;
    w /= nrg;
    const uint cb = w % ncb; w /= ncb;
    const uint i2 = w % B_BATCH;
    const uint i3 = w / B_BATCH;
    const bool live = wg_live && r < rows;
    const uint c0 = cb * NCOLS;
#if defined(MULTI)
    // Which product row r belongs to, and its row there.
    const uint part = r < pc.a_ne.y ? 0u : (r < pc.a_ne.y + pc.a_ne.z ? 1u : 2u);
    const uint lr = part == 0u ? r : (part == 1u ? r - pc.a_ne.y : r - pc.a_ne.y - pc.a_ne.z);
#if defined(ROPE)
    const uint rows_first = (wg % nrg) * ROWS;
    // Rotated rows (the same in the whole workgroup): Q's, and with KV K's.
    const bool qgroup = wg_live && rows_first < pc.a_ne.y;
#if defined(KV)
    const uint k_first = pc.a_ne.y + pc.a_ne.z;
    const bool kgroup = wg_live && rows_first >= k_first;
    const bool rotated = part == 0u || part == 2u;
#else
    const uint k_first = 0u;
    const bool kgroup = false;
    const bool rotated = part == 0u;
#endif
    const uint a_row = pc.a_nb[part] + (rotated ? rope_row(lr) : lr) * pc.a_nb.w;
#else
    const uint a_row = pc.a_nb[part] + lr * pc.a_nb.w;
#endif
#else
    const uint a2 = i2 / (B_BATCH / pc.a_ne.z);
    const uint a3 = i3 / (pc.b_ne.w / pc.a_ne.w);
    const uint a_row = A_OFF + r * pc.a_nb.y + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
#endif
    const uint nblocks = K / 256;
    const uint kw = K / 4; // q words per column
    // Flat column index of column c0 (columns, then i2, then i3, as quant_q8 writes them).
    const uint fc0 = c0 + B_COLS * (i2 + B_BATCH * i3);

    float acc[NCOLS];
    [[unroll]] for (uint j = 0; j < NCOLS; ++j) { acc[j] = 0.0; }

#if defined(A_TQ2)
    // A row whose codes are 16-byte aligned (every row in trit's buffers, tq_layout.glsl):
    // four code words per load, U loads in flight per lane (a 2B-4T row's 27 blocks are 108
    // loads, one step of 32 lanes), where the row has QUAD_MIN_BLOCKS blocks or more: on
    // shorter rows the quads leave a row's lanes uneven (a 10-block row is 40 quads: 8 of 32
    // lanes take two, 16 products each) and one word a lane is faster.
    const bool quads = (a_row & 15u) == 0u && nblocks >= QUAD_MIN_BLOCKS;
    if (live && quads) {
        const uint items = nblocks * 4u;
        for (uint it0 = lane; it0 < items; it0 += LANES * U) {
            uvec4 cws[U];
            float dws[U];
            [[unroll]] for (uint u = 0; u < U; ++u) {
                const uint it = min(it0 + u * LANES, items - 1);
                cws[u] = a4[a_row / 16u + it];
                dws[u] = half_at(tq_scale_at(a_row, it / 4u));
            }
            [[unroll]] for (uint u = 0; u < U; ++u) {
                const uint it = it0 + u * LANES;
                if (it < items) { accumulate_quad(acc, cws[u], dws[u], it / 4u, it % 4u, lane, fc0, c0, kw, nblocks); }
            }
        }
    }
    if (live && !quads) {
#else
    if (live) {
#endif
        const uint items = nblocks * WORDS;
        // U items per lane per step, their weight words loaded before any is used, so each
        // lane has U loads from memory in flight.
        for (uint it0 = lane; it0 < items; it0 += LANES * U) {
            uint cws[U];
            float dws[U];
            [[unroll]] for (uint u = 0; u < U; ++u) {
                const uint it = min(it0 + u * LANES, items - 1);
                cws[u] = load32(a_row + (it / WORDS) * TQ_CODE_STEP + 4u * (it % WORDS));
                dws[u] = half_at(tq_scale_at(a_row, it / WORDS));
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
#if defined(ROPE)
    if (qgroup || kgroup) {
        // Q (K): both values of each pair to shared memory, then one lane per pair rotates
        // them with rope.comp's operations and stores both.
        const uint slot = fl / LANES;
#if defined(KV)
        precise float v = acc[0] * sc[pc.d_nb[part]];
#else
        precise float v = pc.d_ne.w != 0u ? acc[0] * sc[pc.d_nb[0]] : acc[0];
#endif
        if (lane == 0) { rq[slot] = v; }
        barrier();
        if (lane == 0 && slot < ROWS / 2u) {
            const uint n_dims = ROPE_DIMS;
            const uint g = (rows_first - (kgroup ? k_first : 0u)) / ROWS;
            const uint gph = n_dims / ROWS;
            const uint j = (g % gph) * (ROWS / 2u) + slot;
            const uint row = (g / gph) * n_dims;
            const float x0 = rq[slot];
            const float x1 = rq[slot + ROWS / 2u];
            const float p = float(pos[pc.m1.w]);
            const float theta = p * pow(uintBitsToFloat(pc.b_nb.z), -2.0 * float(j) / float(n_dims)) * uintBitsToFloat(pc.b_nb.w);
            const float mscale = uintBitsToFloat(pc.d_nb.w);
            const float c = cos(theta) * mscale;
            const float s = sin(theta) * mscale;
            const float y0 = x0 * c - x1 * s;
            const float y1 = x0 * s + x1 * c;
#if defined(KV)
            if (kgroup) {
                const uint kb = pc.d_ne.z + kvi[pc.b_ne.w].x * pc.d_ne.w + row;
                kc[kb + rope_pair_elem(j, 0u)] = float16_t(y0);
                kc[kb + rope_pair_elem(j, 1u)] = float16_t(y1);
            } else
#endif
            {
                d[pc.d_ne.x + row + rope_pair_elem(j, 0u)] = y0;
                d[pc.d_ne.x + row + rope_pair_elem(j, 1u)] = y1;
            }
        }
    } else
#endif
#if defined(KV)
    if (live && lane == 0) {
        // V, into the cache.
        precise float v = acc[0] * sc[pc.d_nb[1]];
        const bool transposed = (pc.b_nb.y >> 31) != 0u;
        const uint stride = pc.b_nb.y & 0x7FFFFFFFu;
        const uint at = transposed ? kvi[pc.m1.x + lr].x * stride : kvi[pc.m1.x].x * stride + lr;
        vc[pc.d_ne.y + at] = float16_t(v);
    }
#else
    if (live && lane == 0) {
        precise float v = pc.d_ne.w != 0u ? acc[0] * sc[pc.d_nb[part]] : acc[0];
        d[pc.d_ne[part] + lr] = v;
    }
#endif
#else
    if (live && lane == 0) {
        const float scale = pc.d_ne.x != 0u ? sc[pc.d_ne.y] : 1.0;
        [[unroll]] for (uint c = 0; c < NCOLS; ++c) {
            if (c0 + c < B_COLS) {
                precise float v = pc.d_ne.x != 0u ? acc[c] * scale : acc[c];
#if defined(RES)
                precise float vr = v + RESV(pc.d_ne.z + r * pc.d_nb.x + (c0 + c) * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w);
#else
                const float vr = v;
#endif
                d[D_OFF + r * pc.d_nb.x + (c0 + c) * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w] = vr;
            }
        }
    }
#endif
}

#if defined(ATTN)
#include "attn_tail.glsl"
#endif

void main() {
#if defined(NORM)
    norm_prologue(pc.a_ne.x);
    // The P1 workgroups launched take the N_ITEMS row groups in turn, so each computes the
    // norm once for several.
    for (uint w = wg_index(); w < N_ITEMS; w += P1) {
        rows_of(w);
        barrier(); // `red` is reused by the next row group
#if defined(ATTN)
        attn_tail(w * ROWS); // one column, one batch: row group w's first row
#endif
    }
#else
    rows_of(wg_index());
#endif
}
