#version 450
// dst[r, c, i2, i3] = sum_k A[k, r, i2/ratio2, i3/ratio3] * B[k, c, i2, i3]
// One workgroup: one row r of A times NCOLS columns of B (the weight row is decoded once
// and used NCOLS times: NCOLS = 1 is the mat-vec form, 8 the mat-mat tile).
// A: A_F32 | A_F16 | A_TQ2 (2-bit codes) | A_TQ1 (base-3 packed); B, D: f32.
#include "common.glsl"
#include "tq_layout.glsl"

#define WG 64
layout(local_size_x = WG) in;

#if defined(A_F32)
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
#elif defined(A_F16)
layout(std430, binding = 0) readonly buffer BufA { float16_t a[]; };
#else
layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
#endif
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

shared float red[NCOLS][WG];

#if defined(A_TQ2) || defined(A_TQ1)
uint byte_at(uint addr) { return (a[addr >> 2] >> ((addr & 3u) * 8u)) & 0xFFu; }
float half_at(uint addr) {
    uint w = a[addr >> 2];
    return unpackHalf2x16((addr & 2u) != 0u ? (w >> 16) : w).x;
}
#endif

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint K = pc.a_ne.x;
    const uint rows = pc.a_ne.y;
    const uint ncb = (pc.b_ne.y + NCOLS - 1) / NCOLS;
    uint w = wg_index();
    if (w >= N_ITEMS) { return; }
    const uint r = w % rows; w /= rows;
    const uint cb = w % ncb; w /= ncb;
    const uint i2 = w % pc.b_ne.z;
    const uint i3 = w / pc.b_ne.z;
    const uint a2 = i2 / (pc.b_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.b_ne.w / pc.a_ne.w);
    const uint c0 = cb * NCOLS;
    const uint a_row = A_OFF + r * pc.a_nb.y + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;

    float acc[NCOLS];
    [[unroll]] for (uint j = 0; j < NCOLS; ++j) { acc[j] = 0.0; }
    bool live[NCOLS];
    [[unroll]] for (uint j = 0; j < NCOLS; ++j) { live[j] = c0 + j < pc.b_ne.y; }

#if defined(A_TQ2)
    // Block: 64 bytes of 2-bit codes, its fp16 scale apart (tq_layout.glsl).
    // Byte q of the block holds weights (q/32)*128 + l*32 + q%32 for l = 0..3.
    const uint nblocks = K / 256;
    const uint q = t; // 64 threads, one byte each
    for (uint blk = 0; blk < nblocks; ++blk) {
        const uint base = a_row + blk * TQ_CODE_STEP;
        const uint code = byte_at(base + q);
        const float scale = half_at(tq_scale_at(a_row, blk));
        const uint e0 = blk * 256 + (q / 32) * 128 + (q % 32);
        [[unroll]] for (uint l = 0; l < 4; ++l) {
            const float wv = float(int((code >> (2 * l)) & 3u) - 1) * scale;
            const uint k = e0 + l * 32;
            [[unroll]] for (uint j = 0; j < NCOLS; ++j) {
                if (live[j]) { acc[j] += wv * b[b_base + k * pc.b_nb.x + (c0 + j) * pc.b_nb.y]; }
            }
        }
    }
#elif defined(A_TQ1)
    // Block: 48 bytes of 5 trits each, 4 bytes of 4 trits each, fp16 scale (54 bytes).
    // A trit n of byte v is ((v * 3^n) mod 256) * 3 >> 8 (the top base-3 digit after n shifts).
    const uint nblocks = K / 256;
    uint byte_off, ntrit, e_first, e_step;
    if (t < 32) { byte_off = t; ntrit = 5; e_first = t; e_step = 32; }
    else if (t < 48) { byte_off = t; ntrit = 5; e_first = 160 + (t - 32); e_step = 16; }
    else if (t < 52) { byte_off = t; ntrit = 4; e_first = 240 + (t - 48); e_step = 4; }
    else { ntrit = 0; byte_off = 0; e_first = 0; e_step = 0; }
    for (uint blk = 0; blk < nblocks && ntrit > 0; ++blk) {
        const uint base = a_row + blk * 54;
        const uint v = byte_at(base + byte_off);
        const float scale = half_at(base + 52);
        uint pw = 1;
        for (uint n = 0; n < ntrit; ++n) {
            const uint qv = (v * pw) & 0xFFu;
            const float wv = float(int((qv * 3u) >> 8) - 1) * scale;
            const uint k = blk * 256 + e_first + n * e_step;
            [[unroll]] for (uint j = 0; j < NCOLS; ++j) {
                if (live[j]) { acc[j] += wv * b[b_base + k * pc.b_nb.x + (c0 + j) * pc.b_nb.y]; }
            }
            pw *= 3u;
        }
    }
#else
    for (uint k = t; k < K; k += WG) {
        const float wv = float(a[a_row + k * pc.a_nb.x]);
        [[unroll]] for (uint j = 0; j < NCOLS; ++j) {
            if (live[j]) {
                const float x = b[b_base + k * pc.b_nb.x + (c0 + j) * pc.b_nb.y];
#if defined(A_F16)
                // As the CPU backend: f16 weights meet activations rounded to f16.
                acc[j] += wv * float(float16_t(x));
#else
                acc[j] += wv * x;
#endif
            }
        }
    }
#endif

    [[unroll]] for (uint j = 0; j < NCOLS; ++j) { red[j][t] = acc[j]; }
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (t < s) {
            [[unroll]] for (uint j = 0; j < NCOLS; ++j) { red[j][t] += red[j][t + s]; }
        }
        barrier();
    }
    if (t < NCOLS && c0 + t < pc.b_ne.y) {
        d[D_OFF + r * pc.d_nb.x + (c0 + t) * pc.d_nb.y + i2 * pc.d_nb.z + i3 * pc.d_nb.w] = red[t][0];
    }
}
