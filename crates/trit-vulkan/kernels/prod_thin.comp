#version 450
// OUT_PROD (and MUL_MAT, read transposed) in f32 with one thin output dimension, at most
// THIN_MAX (the rank of a LoRA pair), and k longer than prod_small_k.comp takes:
// dst[i0, i1, i2, i3] = sum_k A[i0, k, ..] * B[i1, k, i2, i3], strides and the broadcast of A
// over dims 2 and 3 as in out_prod.comp. These are the products of a LoRA pair that read a
// wide operand once and write little: the forward A·x and the gradient into the rank-r
// intermediate ([r, tokens], k = n_in or n_out) and the gradients of A and B ([n, r] / [r, n],
// k = tokens). out_prod.comp's 64 x 64 tiles spend three quarters of their work on padding
// there; this kernel's tile is 64 (wide) x 16 (thin).
// The thin operand is A where ne0 <= THIN_MAX (the host decides the same way), else B.
// 256 invocations: invocation t holds the outputs (wide w = t % 64, thin 4 (t / 64) .. + 3),
// one accumulator each over ascending k (the CPU's order); k goes in steps of KS through shared
// memory, each operand loaded along its contiguous dimension, the next step's loads issued
// before the current step's products.
// Split k as out_prod.comp: P0 slices of P1 rows, partial sums at D_OFF + slice * P2.
#include "common.glsl"

#define TW 64
#define TT 16
#define KS 32
#define THIN_MAX 32u
layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };

// Wide rows padded by one word (k-major stores spread over the banks); thin as vec4s.
shared float sw[KS * (TW + 1)];
shared vec4 st[KS * (TT / 4)];

bool thin_a() { return pc.d_ne.x <= THIN_MAX; }
float wide_at(uint i) { return thin_a() ? b[i] : a[i]; }
float thin_at(uint i) { return thin_a() ? a[i] : b[i]; }

// Element idx of a step's slice of an operand with n columns: (kk, c), consecutive
// invocations on consecutive c where the operand is contiguous along c, else along k.
uvec2 slice_at(uint idx, uint n, bool c_major) {
    return c_major ? uvec2(idx / n, idx % n) : uvec2(idx % KS, idx / KS);
}

struct Operand {
    uint base; // first element
    uint nc;   // stride along its column index (i0 or i1)
    uint nk;   // stride along k
    uint n;    // columns
    uint c0;   // the tile's first column
};

void load_step(Operand w, Operand th, uint k0, uint K, uint t, out float rw[8], out float rt[2]) {
    [[unroll]] for (uint r = 0; r < 8u; ++r) {
        const uvec2 kc = slice_at(t + 256u * r, TW, w.nc == 1u);
        const uint k = k0 + kc.x, c = w.c0 + kc.y;
        rw[r] = (k < K && c < w.n) ? wide_at(w.base + c * w.nc + k * w.nk) : 0.0;
    }
    [[unroll]] for (uint r = 0; r < 2u; ++r) {
        const uvec2 kc = slice_at(t + 256u * r, TT, th.nc == 1u);
        const uint k = k0 + kc.x, c = th.c0 + kc.y;
        rt[r] = (k < K && c < th.n) ? thin_at(th.base + c * th.nc + k * th.nk) : 0.0;
    }
}

void store_step(Operand w, Operand th, uint t, float rw[8], float rt[2]) {
    [[unroll]] for (uint r = 0; r < 8u; ++r) {
        const uvec2 kc = slice_at(t + 256u * r, TW, w.nc == 1u);
        sw[kc.x * (TW + 1u) + kc.y] = rw[r];
    }
    [[unroll]] for (uint r = 0; r < 2u; ++r) {
        const uvec2 kc = slice_at(t + 256u * r, TT, th.nc == 1u);
        st[kc.x * (TT / 4u) + kc.y / 4u][kc.y % 4u] = rt[r];
    }
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint ne0 = pc.d_ne.x, ne1 = pc.d_ne.y;
    const bool ta = thin_a();
    const uint nw = ta ? ne1 : ne0, nt = ta ? ne0 : ne1;
    const uint tiles_w = (nw + TW - 1u) / TW;
    const uint tiles_t = (nt + TT - 1u) / TT;
    uint g = wg_index();
    if (g >= N_ITEMS) { return; }
    const uint slices = max(P0, 1u);
    const uint slice = g % slices; g /= slices;
    const uint k_lo = slices > 1u ? slice * P1 : 0u;
    const uint K = slices > 1u ? min(pc.a_ne.y, k_lo + P1) : pc.a_ne.y;
    const uint tile_w = g % tiles_w; g /= tiles_w;
    const uint tile_t = g % tiles_t; g /= tiles_t;
    const uint i2 = g % pc.d_ne.z;
    const uint i3 = g / pc.d_ne.z;
    const uint a2 = i2 / (pc.d_ne.z / pc.a_ne.z);
    const uint a3 = i3 / (pc.d_ne.w / pc.a_ne.w);
    const uint a_base = A_OFF + a2 * pc.a_nb.z + a3 * pc.a_nb.w;
    const uint b_base = B_OFF + i2 * pc.b_nb.z + i3 * pc.b_nb.w;
    const Operand oa = Operand(a_base, pc.a_nb.x, pc.a_nb.y, ne0, 0u);
    const Operand ob = Operand(b_base, pc.b_nb.x, pc.b_nb.y, ne1, 0u);
    Operand w = ta ? ob : oa;
    Operand th = ta ? oa : ob;
    w.c0 = tile_w * TW;
    th.c0 = tile_t * TT;

    const uint wl = t % TW, q = t / TW;
    vec4 acc = vec4(0.0);
    float rw[8], rt[2];
    load_step(w, th, k_lo, K, t, rw, rt);
    for (uint k0 = k_lo; k0 < K; k0 += KS) {
        store_step(w, th, t, rw, rt);
        barrier();
        if (k0 + KS < K) { load_step(w, th, k0 + KS, K, t, rw, rt); }
        // Rows past K were stored as zeros on both sides.
        [[unroll]] for (uint kk = 0; kk < KS; ++kk) {
            acc += st[kk * (TT / 4u) + q] * sw[kk * (TW + 1u) + wl];
        }
        barrier();
    }

    const uint cw = w.c0 + wl;
    [[unroll]] for (uint j = 0; j < 4u; ++j) {
        const uint ct = th.c0 + 4u * q + j;
        const uint i0 = ta ? ct : cw, i1 = ta ? cw : ct;
        if (i0 < ne0 && i1 < ne1) {
            if (slices > 1u) {
                d[D_OFF + slice * P2 + ((i3 * pc.d_ne.z + i2) * ne1 + i1) * ne0 + i0] = acc[j];
            } else {
                d[D_OFF + strided(uvec4(i0, i1, i2, i3), pc.d_nb)] = acc[j];
            }
        }
    }
}
