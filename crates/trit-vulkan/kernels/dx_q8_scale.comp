#version 450
// Per-column scales of dx_q8.comp's int8 operand, in two passes over scratch.
// D_GATHER (TQ2_0 / TQ1_0 A, [ne0, K, a2, a3]): the fp16 block scales of A as f32, block
// column j of row k of A batch ab = a3 * a_ne.z + a2 at d[D_OFF + (ab * nblk + j) * K + k]
// (nblk = ne0 / 256): one row of k per block column, so the next pass reads them coalesced.
// One invocation per scale.
// Otherwise, binding 0 holds those scales (f32, from the pass above) and, for column
// c = (i3 ne2 + i2) ne1 + i1 of B ([ne1, K, ne2, ne3] in the OUT_PROD's operand order, strides
// in elements) and block column j, d[D_OFF + c * nblk + j] = max_k |B[i1, k, i2, i3] * dA[k, j]|
// (the product dx_q8.comp quantizes, computed the same way). A NaN or infinite product gives a
// NaN, so the gradient comes out NaN rather than finite and wrong. One workgroup per column
// and block column (item c * nblk + j); invocations stride over k. Push constants: the OUT_PROD's (a_ne, a_nb of A; b_*; d_ne of dst).
// QUANT (dx_q8.comp's PREQ form): the same maximum m goes to word D_OFF + item (f32 bits), and
// the products v = B[i1, k] * dA[k, j] quantized against it as dx_q8.comp would (x = v * 127 /
// m, hi = round(x), lo = round((x - hi) * 254)) to words D_OFF + P1 + item * 2 kw + w (hi,
// k = 4 w .. 4 w + 3 in bytes 0..3) and + kw (lo), kw = 4 ceil(K / 16) words per part (zeros
// past K). Each column and block column is quantized once instead of once per output tile.
// FLAGS (with D_GATHER, for QUANT): one workgroup per chunk of 256 k of a block column
// (item (ab * nblk + j) * chunks + chunk, chunks = ceil(K / 256)), and the chunk's flag at
// d[D_OFF + dsw + item] (dsw = nblk * K * AB rounded up to 64 words): 1 where every scale of
// block column j > 0 in the chunk has the bits of block column 0's in the same row. Where all
// chunks of j say so, every product of j equals column 0's (BitNet's weights have one scale
// per tensor or per row), so QUANT writes nothing for j but the marker -1 in place of its
// maximum, and dx_q8.comp reads block column 0's quantized parts and maximum instead: a
// tenth of the work for a 2560-wide weight.
#include "common.glsl"

layout(local_size_x = 256) in;
#if defined(D_GATHER)
layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
#else
layout(std430, binding = 0) readonly buffer BufA { float ds[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
#endif
#if defined(QUANT)
layout(std430, binding = 2) writeonly buffer BufD { uint d[]; };
#else
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
#endif

#if defined(D_GATHER)
#include "tq_layout.glsl"
float half_at(uint addr) {
    const uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}

uint bits16(uint addr) {
    const uint w = a[addr >> 2];
    return (addr & 2u) != 0u ? (w >> 16) : (w & 0xFFFFu);
}

#if defined(FLAGS)
shared uint differ;

void main() {
    const uint item = wg_index();
    if (item >= N_ITEMS) { return; }
    const uint t = gl_LocalInvocationID.x;
    const uint K = pc.a_ne.y, nblk = pc.a_ne.x / 256u, chunks = (K + 255u) / 256u;
    const uint chunk = item % chunks, j = (item / chunks) % nblk, ab = item / (chunks * nblk);
    const uint a2 = ab % pc.a_ne.z, a3 = ab / pc.a_ne.z;
    const uint k = chunk * 256u + t;
    if (t == 0u) { differ = j == 0u ? 1u : 0u; }
    barrier();
    if (k < K) {
        const uint row = A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w + k * pc.a_nb.y;
        const uint v = bits16(tq_scale_at(row, j));
        d[D_OFF + (ab * nblk + j) * K + k] = unpackHalf2x16(v).x;
        if (v != bits16(tq_scale_at(row, 0u))) { differ = 1u; }
    }
    barrier();
    if (t == 0u) {
        const uint dsw = (nblk * K * pc.a_ne.z * pc.a_ne.w + 63u) / 64u * 64u;
        d[D_OFF + dsw + item] = differ == 0u ? 1.0 : 0.0;
    }
}
#else
void main() {
    const uint i = wg_index() * 256u + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uint K = pc.a_ne.y, nblk = pc.a_ne.x / 256u;
    const uint k = i % K, j = (i / K) % nblk, ab = i / (K * nblk);
    const uint a2 = ab % pc.a_ne.z, a3 = ab / pc.a_ne.z;
    d[D_OFF + i] = half_at(tq_scale_at(A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w + k * pc.a_nb.y, j));
}
#endif
#else
shared float part[256];

void main() {
    const uint item = wg_index();
    if (item >= N_ITEMS) { return; }
    const uint t = gl_LocalInvocationID.x;
    const uint nblk = pc.a_ne.x / 256u;
    const uint c = item / nblk, j = item % nblk;
    const uint ne1 = pc.b_ne.x, K = pc.b_ne.y;
    const uint i1 = c % ne1, i2 = (c / ne1) % pc.b_ne.z, i3 = c / (ne1 * pc.b_ne.z);
    const uint b_base = B_OFF + i1 * pc.b_nb.x + i2 * pc.b_nb.z + i3 * pc.b_nb.w;
    const uint a2 = i2 / (pc.d_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.d_ne.w / pc.a_ne.w);
    const uint s_base = A_OFF + ((a3 * pc.a_ne.z + a2) * nblk + j) * K;
#if defined(QUANT)
    if (j > 0u) {
        // Block column j's scales equal column 0's in every row (the FLAGS pass): column 0's
        // quantized parts serve j too.
        const uint chunks = (K + 255u) / 256u;
        const uint dsw = (nblk * K * pc.a_ne.z * pc.a_ne.w + 63u) / 64u * 64u;
        const uint f0 = A_OFF + dsw + ((a3 * pc.a_ne.z + a2) * nblk + j) * chunks;
        bool same = true;
        for (uint q = 0; q < chunks; ++q) { same = same && ds[f0 + q] != 0.0; }
        if (same) {
            if (t == 0u) { d[D_OFF + item] = floatBitsToUint(-1.0); }
            return;
        }
    }
#endif
    // A NaN or infinite product counts as +inf here and is written as NaN: an explicit
    // constant, as a compiler may fold v - v (or a NaN's propagation through max) away, which
    // once gave such a column a finite, wrong gradient.
    const float INF = uintBitsToFloat(0x7f800000u);
    // Four k per invocation and step (independent loads in flight, not one round trip each).
    float m = 0.0;
    for (uint k4 = 4u * t; k4 < K; k4 += 1024u) {
        [[unroll]] for (uint j = 0; j < 4u; ++j) {
            const uint k = k4 + j;
            const float v = k < K ? b[b_base + k * pc.b_nb.y] * ds[s_base + k] : 0.0;
            m = max(m, (isnan(v) || isinf(v)) ? INF : abs(v));
        }
    }
    part[t] = m;
    barrier();
    [[unroll]] for (uint s = 128u; s > 0u; s >>= 1) {
        if (t < s) { part[t] = max(part[t], part[t + s]); }
        barrier();
    }
    const float mx = isinf(part[0]) ? uintBitsToFloat(0x7fc00000u) : part[0];
#if defined(QUANT)
    if (t == 0u) { d[D_OFF + item] = floatBitsToUint(mx); }
    const float inv = mx > 0.0 ? 127.0 / mx : (isnan(mx) ? mx : 0.0);
    const uint kw = (K + 15u) / 16u * 4u;
    const uint base = D_OFF + P1 + item * 2u * kw;
    for (uint w = t; w < kw; w += 256u) {
        uint wh = 0u, wl = 0u;
        [[unroll]] for (uint j = 0; j < 4u; ++j) {
            const uint k = 4u * w + j;
            const float v = k < K ? b[b_base + k * pc.b_nb.y] * ds[s_base + k] : 0.0;
            const float x = v * inv;
            const float h = clamp(round(x), -127.0, 127.0);
            const float lo = clamp(round((x - h) * 254.0), -127.0, 127.0);
            wh |= (uint(int(h)) & 0xFFu) << (8u * j);
            wl |= (uint(int(lo)) & 0xFFu) << (8u * j);
        }
        d[base + w] = wh;
        d[base + kw + w] = wl;
    }
#else
    if (t == 0u) { d[D_OFF + item] = mx; }
#endif
}
#endif
