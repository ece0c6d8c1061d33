#version 450
// The input gradient through a frozen ternary weight, dX = W^T dY (OUT_PROD of A = W, TQ2_0
// or TQ1_0, [ne0 = n_in, K = n_out], and B = dY^T, f32 [ne1, K]), as int8 products on NVIDIA's
// cooperative matrices (VK_NV_cooperative_matrix, int8 x int8 -> int32, 16 x NS x 32).
// A workgroup computes the 64 (i0) x 64 (i1) tile of out_prod.comp; its 64 i0 lie in one
// 256-block column j of W, so along k every weight is code * dA[k, j] (dA: the block's fp16
// scale). The kernel folds dA[k, j] into B and quantizes v = B[i1, k] * dA[k, j] per column
// in two int8 parts against m = max_k |v| (dx_q8_scale.comp): with x = v * 127 / m,
// hi = round(x) and lo = round((x - hi) * 254), so v = (hi + lo / 254) * m / 127 to within
// m / 64516 (about 15 bits of the column's largest element; bf16 keeps 8 bits of each).
// The codes (-1, 0, 1) are exact in int8, the two integer sums over all of k are exact in
// int32, and dX = (sum_hi + sum_lo / 254) * m / 127 at the end.
// 256 invocations: 8 subgroups of 32, 2 (i0) x 4 (i1) over the tile, each FM x FN fragments
// of 16 x NS. K goes in steps of 64 rows through shared memory: A column-major (each k row's
// 64 codes contiguous), B hi and lo column-major too (each column's k contiguous).
// Split k as out_prod.comp (P0 slices of P1 rows, partial sums at D_OFF + slice * P2).
// Without COOPMAT (`_emu`): each invocation computes its fragment elements from the same
// shared memory (everything but the matrix instructions, for tests on any device).
// PREQ: B arrives already quantized (dx_q8_scale.comp's QUANT form: per column and block
// column, hi and lo bytes of kw = 4 ceil(K / 16) words each, zeros past K; binding 1 as
// uvec4s from B_OFF), so a step only copies bytes: without PREQ every one of the four output
// tiles of a block column quantized the same B values again, which left the kernel bound by
// that arithmetic rather than by its products. A maximum of -1 (a negative number) marks a
// block column whose scales equal block column 0's in every row: its parts and maxima are
// block column 0's.
// WIDE (TQ2_0 with PREQ): 128 (i0) x 64 (i1) tiles, 8 subgroups as 4 x 2, each 32 x 32 (so
// ten fragment loads feed sixteen products instead of six for eight), all four 2-bit fields
// of a code word used per load, and two shared buffers: step s + 1 is stored into the other
// buffer while step s is multiplied, one barrier a step.
#include "common.glsl"
#if defined(COOPMAT)
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#extension GL_NV_integer_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#extension GL_KHR_shader_subgroup_basic : require
#endif

#if defined(WIDE)
#define TM 128
#define WM 4
#define WN 2
#define NBUF 2
#else
#define TM 64
#define WM 2
#define WN 4
#define NBUF 1
#endif
#define TN 64
#define KS 64
#ifndef NS
#define NS 8
#endif
#define WG 256
#define FM (TM / WM / 16)
#define FN (TN / WN / NS)
#define NF (FM * FN)
#define E (16 * NS / 32) // elements of a fragment per invocation
#define SAS (TM / 4 + 4) // words per k row of A (a multiple of 16 bytes, as cooperative loads need)
#define SBS (KS / 4 + 4) // words per column of B
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
#if defined(PREQ)
layout(std430, binding = 1) readonly buffer BufB { uvec4 bq[]; };
#else
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
#endif
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
layout(std430, binding = 3) readonly buffer BufS { float col_max[]; };

#include "tq_layout.glsl"

shared uint sa[NBUF * KS * SAS];
shared uint sbh[NBUF * TN * SBS];
shared uint sbl[NBUF * TN * SBS];
#if !defined(PREQ)
shared float sinv[TN]; // 127 / m per column (0 for a column of zeros)
#endif
shared float sm[TN];   // m / 127
shared int slot[(WG / 32) * 16 * NS]; // one fragment per subgroup, column-major

uint load32(uint addr) {
    const uint w = addr >> 2;
    if ((addr & 2u) == 0u) { return a[w]; }
    return (a[w] >> 16) | (a[w + 1] << 16);
}
float half_at(uint addr) {
    const uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}
// Codes 0..2 in four bytes to the signed weights -1..1.
uint to_signed(uint codes) { return ((codes | 0x80808080u) - 0x01010101u) ^ 0x80808080u; }

#if defined(A_TQ1)
// The trits n of the four bytes of `w` (pw = 3^n), each as the code 0..2.
uint trits(uint w, uint pw) {
    uint lo = ((w & 0x00FF00FFu) * pw) & 0x00FF00FFu;
    uint hi = (((w >> 8) & 0x00FF00FFu) * pw) & 0x00FF00FFu;
    lo = ((lo * 3u) >> 8) & 0x00FF00FFu;
    hi = ((hi * 3u) >> 8) & 0x00FF00FFu;
    return lo | (hi << 8);
}
// Codes of elements e .. e + 3 (e a multiple of 4) of the TQ1_0 block at `blk`: 48 bytes of
// 5 trits (elements 0..159: byte e % 32, trit e / 32), 4 bytes of 4 trits (elements 160..239:
// byte 32 + (e - 160) % 16, trit (e - 160) / 16; 240..255: byte 48 + (e - 240) % 4, trit
// (e - 240) / 4); four consecutive elements are four consecutive bytes.
uint codes4(uint blk, uint e) {
    uint byte_ix, digit;
    if (e < 160u) {
        byte_ix = e & 31u; digit = e >> 5;
    } else if (e < 240u) {
        byte_ix = 32u + ((e - 160u) & 15u); digit = (e - 160u) >> 4;
    } else {
        byte_ix = 48u + ((e - 240u) & 3u); digit = (e - 240u) >> 2;
    }
    uint pw = 1u;
    for (uint n = 0; n < digit; ++n) { pw *= 3u; }
    return trits(load32(blk + byte_ix), pw);
}
#endif

#if !defined(COOPMAT)
int byte_at(uint w, uint i) { return int(w << (24u - 8u * i)) >> 24; }
#endif

// Byte i of a signed value in -127..127.
uint pack_byte(float v, uint i) { return (uint(int(v)) & 0xFFu) << (8u * i); }

// Registers between a step's global loads and its shared-memory stores: A's int8 codes
// (TQ2_0: words w and 8 + w of rows it / 8, it = t + 256 l; TQ1_0: word it % 16 of row
// it / 16, it = t + 256 l) and B's values times their rows' block scales (column
// (t + 256 l) / 16, rows 4 (t % 16) + j).
#if defined(WIDE)
uint ra[8]; // words w of rows it / 8 (it = t + 256 l) at shifts 0, 2, 4, 6
#else
uint ra[4];
#endif
#if defined(PREQ)
uvec4 rq[2]; // hi, lo: 16 bytes (k) of column (t / 4) at step bytes 16 (t % 4)
#else
float rv[16];
#endif

// Step k0 (rows k0 .. k0 + KS - 1, zeros past K) of the tile into the registers. PREQ: b_base
// is the uvec4 index of column c0's quantized parts and b_col the uvec4s between columns.
void load_step(uint a_base, uint b_base, uint b_col, uint blk, uint e0, uint c0, uint ne1, uint k0, uint K, uint t) {
#if defined(A_TQ2)
    // TQ2_0: byte x (0..31) of 32-byte group g holds elements 128 g + 32 s + x at bit 2 s,
    // so the word at bytes 4w .. 4w + 3 of group e0 / 128 holds elements e0 + 4w .. +3 at
    // bit s0 = 2 (e0 % 128) / 32 and e0 + 32 + 4w .. +3 at bit s0 + 2.
    const uint s0 = ((e0 & 127u) >> 5) * 2u;
    [[unroll]] for (uint l = 0; l < 2u; ++l) {
        const uint it = t + l * WG;
        const uint k = k0 + it / 8u, w = it % 8u;
        const uint cw = k < K ? load32(a_base + k * pc.a_nb.y + blk * TQ_CODE_STEP + (e0 >> 7) * 32u + 4u * w) : 0x55555555u;
#if defined(WIDE)
        // e0 % 128 == 0: shift 2 s holds elements e0 + 32 s + 4 w .. + 3 (code 1 past K: weight 0).
        [[unroll]] for (uint sh = 0; sh < 4u; ++sh) { ra[4u * l + sh] = to_signed((cw >> (2u * sh)) & 0x03030303u); }
#else
        ra[2u * l] = to_signed((cw >> s0) & 0x03030303u);
        ra[2u * l + 1u] = to_signed((cw >> (s0 + 2u)) & 0x03030303u);
#endif
    }
#else
    [[unroll]] for (uint l = 0; l < 4u; ++l) {
        const uint it = t + l * WG;
        const uint k = k0 + it / 16u;
        ra[l] = k < K ? to_signed(codes4(a_base + k * pc.a_nb.y + blk * TQ_CODE_STEP, e0 + 4u * (it % 16u))) : 0u;
    }
#endif
#if defined(PREQ)
    {
        // K: the slice's end, a multiple of 32, or the last (the parts are zeros past it).
        const uint cc = t / 4u, kb = k0 + 16u * (t % 4u);
        const bool ok = c0 + cc < ne1 && kb < K;
        const uint at = b_base + cc * b_col + kb / 16u;
        rq[0] = ok ? bq[at] : uvec4(0u);
        rq[1] = ok ? bq[at + (pc.a_ne.y + 15u) / 16u] : uvec4(0u);
    }
#else
    // B: four consecutive k per item; an invocation's items share their k (WG is a multiple
    // of KS / 4), so it reads those four block scales once.
    const uint q = t % (KS / 4u);
    float da[4];
    [[unroll]] for (uint j = 0; j < 4u; ++j) {
        const uint k = k0 + 4u * q + j;
        da[j] = k < K ? half_at(tq_scale_at(a_base + k * pc.a_nb.y, blk)) : 0.0;
    }
    [[unroll]] for (uint l = 0; l < 4u; ++l) {
        const uint i1 = c0 + (t + l * WG) / (KS / 4u);
        [[unroll]] for (uint j = 0; j < 4u; ++j) {
            const uint k = k0 + 4u * q + j;
            rv[4u * l + j] = (k < K && i1 < ne1) ? b[b_base + i1 * pc.b_nb.x + k * pc.b_nb.y] * da[j] : 0.0;
        }
    }
#endif
}

// The registers into shared memory (buffer `buf`): A's codes, B's values quantized against
// their column's largest (hi and lo int8).
void store_step(uint buf, uint t) {
    const uint ab = buf * (KS * SAS), bb = buf * (TN * SBS);
#if defined(A_TQ2) && defined(WIDE)
    [[unroll]] for (uint l = 0; l < 2u; ++l) {
        const uint it = t + l * WG;
        [[unroll]] for (uint sh = 0; sh < 4u; ++sh) { sa[ab + (it / 8u) * SAS + 8u * sh + it % 8u] = ra[4u * l + sh]; }
    }
#elif defined(A_TQ2)
    [[unroll]] for (uint l = 0; l < 2u; ++l) {
        const uint it = t + l * WG;
        sa[ab + (it / 8u) * SAS + it % 8u] = ra[2u * l];
        sa[ab + (it / 8u) * SAS + 8u + it % 8u] = ra[2u * l + 1u];
    }
#else
    [[unroll]] for (uint l = 0; l < 4u; ++l) {
        const uint it = t + l * WG;
        sa[ab + (it / 16u) * SAS + it % 16u] = ra[l];
    }
#endif
#if defined(PREQ)
    {
        const uint cc = t / 4u, w0 = 4u * (t % 4u);
        [[unroll]] for (uint w = 0; w < 4u; ++w) {
            sbh[bb + cc * SBS + w0 + w] = rq[0][w];
            sbl[bb + cc * SBS + w0 + w] = rq[1][w];
        }
    }
#else
    const uint q = t % (KS / 4u);
    [[unroll]] for (uint l = 0; l < 4u; ++l) {
        const uint cc = (t + l * WG) / (KS / 4u);
        const float inv = sinv[cc];
        uint wh = 0u, wl = 0u;
        [[unroll]] for (uint j = 0; j < 4u; ++j) {
            const float x = rv[4u * l + j] * inv;
            const float h = clamp(round(x), -127.0, 127.0);
            const float lo = clamp(round((x - h) * 254.0), -127.0, 127.0);
            wh |= pack_byte(h, j);
            wl |= pack_byte(lo, j);
        }
        sbh[bb + cc * SBS + q] = wh;
        sbl[bb + cc * SBS + q] = wl;
    }
#endif
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint ne0 = pc.d_ne.x, ne1 = pc.d_ne.y;
    const uint tiles0 = ne0 / TM;
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
    const uint nblk = ne0 / 256u;
#if defined(PREQ)
    // Column c = (i3 ne2 + i2) ne1 + i1 and block column j are item c nblk + j of the
    // quantized parts, 2 kw words each.
    const uint b_col = nblk * 2u * ((pc.a_ne.y + 15u) / 16u);
    const uint col0 = (i3 * pc.d_ne.z + i2) * ne1 + tile1 * TN;
    const uint jq = col_max[col0 * nblk + (tile0 * TM >> 8)] < 0.0 ? 0u : (tile0 * TM >> 8);
    const uint b_base = B_OFF + (col0 * nblk + jq) * (b_col / nblk);
#else
    const uint b_col = 0u;
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;
#endif
    const uint i00 = tile0 * TM;
    const uint blk = i00 >> 8;  // the tile's block column of W
    const uint e0 = i00 & 255u; // its first element in the block
    const uint c0 = tile1 * TN;

    if (t < TN) {
        const uint i1 = c0 + t;
#if defined(PREQ)
        const uint jm = jq; // block column 0's maxima where the marker says so
#else
        const uint jm = blk;
#endif
        const float m = i1 < ne1 ? col_max[((i3 * pc.b_ne.z + i2) * ne1 + i1) * nblk + jm] : 0.0;
#if !defined(PREQ)
        sinv[t] = m > 0.0 ? 127.0 / m : (isnan(m) ? m : 0.0);
#endif
        sm[t] = m / 127.0;
    }

    const uint sg = t / 32u;
    const uint lane = t % 32u;
    const uint fr0 = (sg % WM) * (FM * 16u);
    const uint fcl = (sg / WM) * (FN * NS);
    const uint sbase = sg * (16u * NS);
#if defined(COOPMAT)
    icoopmatNV<32, gl_ScopeSubgroup, 16, NS> ch[NF], cl[NF];
    [[unroll]] for (uint f = 0; f < NF; ++f) {
        ch[f] = icoopmatNV<32, gl_ScopeSubgroup, 16, NS>(0);
        cl[f] = icoopmatNV<32, gl_ScopeSubgroup, 16, NS>(0);
    }
#else
    int sh[NF * E], sl[NF * E];
    [[unroll]] for (uint i = 0; i < NF * E; ++i) { sh[i] = 0; sl[i] = 0; }
#endif
    barrier(); // sinv, sm

    // Software pipelining: the global loads of step k0 + KS go to registers while the
    // products of step k0 run. One buffer: they go to shared memory after the step's second
    // barrier. Two (WIDE): into the other buffer right after the products, one barrier a step.
    load_step(a_base, b_base, b_col, blk, e0, c0, ne1, k_lo, K, t);
#if NBUF == 2
    store_step(0u, t);
    barrier();
#endif
    uint cur = 0u;
    for (uint k0 = k_lo; k0 < K; k0 += KS) {
        const bool more = k0 + KS < K;
#if NBUF == 1
        store_step(0u, t);
        barrier();
#endif
        if (more) { load_step(a_base, b_base, b_col, blk, e0, c0, ne1, k0 + KS, K, t); }
        const uint ab = cur * (KS * SAS), bb = cur * (TN * SBS);
        [[unroll]] for (uint ks = 0; ks < KS / 32u; ++ks) {
#if defined(COOPMAT)
            icoopmatNV<8, gl_ScopeSubgroup, 16, 32> fa[FM];
            [[unroll]] for (uint i = 0; i < FM; ++i) {
                coopMatLoadNV(fa[i], sa, ab + ks * 32u * SAS + (fr0 + 16u * i) / 4u, SAS, true);
            }
            [[unroll]] for (uint j = 0; j < FN; ++j) {
                icoopmatNV<8, gl_ScopeSubgroup, 32, NS> fh, fl;
                coopMatLoadNV(fh, sbh, bb + (fcl + NS * j) * SBS + ks * 8u, SBS, true);
                coopMatLoadNV(fl, sbl, bb + (fcl + NS * j) * SBS + ks * 8u, SBS, true);
                [[unroll]] for (uint i = 0; i < FM; ++i) {
                    ch[i * FN + j] = coopMatMulAddNV(fa[i], fh, ch[i * FN + j]);
                    cl[i * FN + j] = coopMatMulAddNV(fa[i], fl, cl[i * FN + j]);
                }
            }
#else
            [[unroll]] for (uint f = 0; f < NF; ++f) {
                for (uint e = 0; e < E; ++e) {
                    const uint idx = e * 32u + lane;
                    const uint r = fr0 + 16u * (f / FN) + idx % 16u;
                    const uint c = fcl + NS * (f % FN) + idx / 16u;
                    int s_h = 0, s_l = 0;
                    for (uint kq = 0; kq < 32u; ++kq) {
                        const int wa = byte_at(sa[ab + (ks * 32u + kq) * SAS + r / 4u], r % 4u);
                        s_h += wa * byte_at(sbh[bb + c * SBS + ks * 8u + kq / 4u], kq % 4u);
                        s_l += wa * byte_at(sbl[bb + c * SBS + ks * 8u + kq / 4u], kq % 4u);
                    }
                    sh[f * E + e] += s_h;
                    sl[f * E + e] += s_l;
                }
            }
#endif
        }
#if NBUF == 2
        if (more) { store_step(cur ^ 1u, t); }
        cur ^= 1u;
#endif
        barrier();
    }

    // The integer sums, through this subgroup's slot (column-major: lane l of element e holds
    // row idx % 16, column idx / 16 of the fragment, idx = 32 e + l), scaled and stored.
    [[unroll]] for (uint f = 0; f < NF; ++f) {
        int hs[E], ls[E];
#if defined(COOPMAT)
        coopMatStoreNV(ch[f], slot, sbase, 16u, true);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        [[unroll]] for (uint e = 0; e < E; ++e) { hs[e] = slot[sbase + e * 32u + lane]; }
        subgroupBarrier();
        coopMatStoreNV(cl[f], slot, sbase, 16u, true);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        [[unroll]] for (uint e = 0; e < E; ++e) { ls[e] = slot[sbase + e * 32u + lane]; }
        subgroupBarrier();
#else
        [[unroll]] for (uint e = 0; e < E; ++e) { hs[e] = sh[f * E + e]; ls[e] = sl[f * E + e]; }
#endif
        [[unroll]] for (uint e = 0; e < E; ++e) {
            const uint idx = e * 32u + lane;
            const uint cl_ = fcl + NS * (f % FN) + idx / 16u;
            const uint i0 = i00 + fr0 + 16u * (f / FN) + idx % 16u;
            const uint i1 = c0 + cl_;
            if (i1 < ne1) {
                const float v = (float(hs[e]) + float(ls[e]) * (1.0 / 254.0)) * sm[cl_];
                if (slices > 1u) {
                    d[D_OFF + slice * P2 + ((i3 * pc.d_ne.z + i2) * ne1 + i1) * ne0 + i0] = v;
                } else {
                    d[D_OFF + strided(uvec4(i0, i1, i2, i3), pc.d_nb)] = v;
                }
            }
        }
    }
}
