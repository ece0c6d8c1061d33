#version 450
// Quantize f32 activations for the ternary mat-vec as the CPU backend's Q8_K does (per
// 256-block: q = min(127, roundEven(x * -127/max)), d = 1/(-127/max), max the first value of
// largest magnitude) and write them packed: q as int8, four to a word, columns contiguous
// (K/4 words each), then the block scales d as f32 from word P0 of the binding. One
// workgroup per block; A is strided (ne, nb in elements).
#include "common.glsl"
#define WG 256
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 2) writeonly buffer BufD { uint d[]; };
shared float s_abs[WG];
shared uint s_idx[WG];
shared float s_val[WG];
shared uint s_q[WG];

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint w = wg_index();
    if (w >= N_ITEMS) { return; }
    const uint nblk = pc.a_ne.x / 256;
    const uint row = w / nblk;
    const uint blk = w % nblk;
    const uvec4 r = unflatten(row, uvec4(pc.a_ne.y, pc.a_ne.z, pc.a_ne.w, 1));
    const uint k = blk * 256 + t;
    const float x = a[A_OFF + k * pc.a_nb.x + r.x * pc.a_nb.y + r.y * pc.a_nb.z + r.z * pc.a_nb.w];
    s_abs[t] = abs(x);
    s_idx[t] = t;
    s_val[t] = x;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) {
        if (t < h) {
            const float o = s_abs[t + h];
            const uint oi = s_idx[t + h];
            if (o > s_abs[t] || (o == s_abs[t] && oi < s_idx[t])) {
                s_abs[t] = o;
                s_idx[t] = oi;
                s_val[t] = s_val[t + h];
            }
        }
        barrier();
    }
    int q = 0;
    precise float scale = 0.0; // precise: the same bits as the fused norm's quantization
    if (s_abs[0] > 0.0) {
        precise float iscale = -127.0 / s_val[0];
        precise float v = iscale * x;
        q = int(min(127.0, roundEven(v)));
        scale = 1.0 / iscale;
    }
    s_q[t] = uint(q) & 0xFFu;
    barrier();
    if (t < 64) {
        const uint word = s_q[4 * t] | (s_q[4 * t + 1] << 8) | (s_q[4 * t + 2] << 16) | (s_q[4 * t + 3] << 24);
        d[D_OFF + row * (pc.a_ne.x / 4) + blk * 64 + t] = word;
    }
    if (t == 0) { d[D_OFF + P0 + row * nblk + blk] = floatBitsToUint(scale); }
}
