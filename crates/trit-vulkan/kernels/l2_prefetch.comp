#version 450
// Pulls a decode mat-vec's weights from memory into the GPU's L2 cache while the stage before
// it runs (src/matvec.rs, `prefetch_weights`): recorded before the barrier that waits for the
// mat-vec's input, it reads only weights and writes nothing, so it needs no barrier of its own
// and runs beside the previous stage; the mat-vec then finds its weights in L2. One 32-bit
// load per 32-byte sector (the unit L2 fills from memory), PF sectors in flight per
// invocation. Up to three tensors in binding 0: a_nb.xyz = each one's first word, a_ne.xyz =
// its sectors.
// The loads are volatile and their XOR is stored, to binding 2, only when P2 equals a value
// the host never passes, so no compiler removes them and nothing is ever written.
#include "common.glsl"

#define WG 256
#define PF 8
layout(local_size_x = WG) in;

layout(std430, binding = 0) volatile readonly buffer BufA { uint a[]; };
layout(std430, binding = 2) writeonly buffer BufD { uint d[]; };

void main() {
    const uint total = pc.a_ne.x + pc.a_ne.y + pc.a_ne.z;
    const uint first = wg_index() * (WG * PF) + gl_LocalInvocationID.x;
    uint acc = 0u;
    [[unroll]] for (uint i = 0; i < PF; ++i) {
        const uint s = first + i * WG;
        if (s < total) {
            uint word;
            if (s < pc.a_ne.x) {
                word = pc.a_nb.x + s * 8u;
            } else if (s < pc.a_ne.x + pc.a_ne.y) {
                word = pc.a_nb.y + (s - pc.a_ne.x) * 8u;
            } else {
                word = pc.a_nb.z + (s - pc.a_ne.x - pc.a_ne.y) * 8u;
            }
            acc ^= a[word];
        }
    }
    if (P2 == 0x6C327066u) {
        d[D_OFF + gl_LocalInvocationID.x] = acc;
    }
}
