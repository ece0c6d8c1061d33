#version 450
// Pulls a decode mat-vec's weights from memory into the GPU's L2 cache while the stage before
// it runs (src/matvec.rs, `prefetch_weights`): recorded before the barrier that waits for the
// mat-vec's input, it reads only weights and writes nothing, so it needs no barrier of its own
// and runs beside the previous stage; the mat-vec then finds its weights in L2. One 32-bit
// load per 32-byte sector (the unit L2 fills from memory), PF sectors in flight per
// invocation. Up to three tensors in binding 0 (the weights): a_nb.xyz = each one's first
// word, a_ne.xyz = its sectors; up to four in binding 1 (the f32 constants the mat-vec reads:
// the per-tensor weight scales and the norm weight, evicted from L2 by the rest of a token as
// the weights are): b_nb / b_ne in the same way.
// The loads are volatile and their XOR is stored, to binding 2, only when P2 equals a value
// the host never passes, so no compiler removes them and nothing is ever written.
#include "common.glsl"

#define WG 256
#define PF 8
layout(local_size_x = WG) in;

layout(std430, binding = 0) volatile readonly buffer BufA { uint a[]; };
layout(std430, binding = 1) volatile readonly buffer BufC { uint c[]; };
layout(std430, binding = 2) writeonly buffer BufD { uint d[]; };

// The first word of sector s of the ranges (ne: sectors, nb: first words) laid end to end.
uint sector_word(uint s, uvec4 ne, uvec4 nb) {
    if (s < ne.x) { return nb.x + s * 8u; }
    s -= ne.x;
    if (s < ne.y) { return nb.y + s * 8u; }
    s -= ne.y;
    if (s < ne.z) { return nb.z + s * 8u; }
    return nb.w + (s - ne.z) * 8u;
}

void main() {
    const uint na = pc.a_ne.x + pc.a_ne.y + pc.a_ne.z;
    const uint total = na + pc.b_ne.x + pc.b_ne.y + pc.b_ne.z + pc.b_ne.w;
    const uint first = wg_index() * (WG * PF) + gl_LocalInvocationID.x;
    uint acc = 0u;
    [[unroll]] for (uint i = 0; i < PF; ++i) {
        const uint s = first + i * WG;
        if (s < na) {
            acc ^= a[sector_word(s, uvec4(pc.a_ne.xyz, 0u), pc.a_nb)];
        } else if (s < total) {
            acc ^= c[sector_word(s - na, pc.b_ne, pc.b_nb)];
        }
    }
    if (P2 == 0x6C327066u) {
        d[D_OFF + gl_LocalInvocationID.x] = acc;
    }
}
