// Shared by every trit kernel: one push-constant block (128 bytes, the minimum every
// Vulkan device guarantees), storage-buffer bindings A = src0, B = src1, D = dst (and 3, an
// extra read operand of fused kernels).
// Sizes (ne) and strides (nb) are in elements of the bound type; for quantized A the
// strides and A_OFF are in bytes. Rust fills the block in `src/dispatch.rs` (`Push`).
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_control_flow_attributes : enable

layout(push_constant) uniform Push {
    uvec4 a_ne; uvec4 a_nb;
    uvec4 b_ne; uvec4 b_nb;
    uvec4 d_ne; uvec4 d_nb;
    uvec4 m0;   // wg_base, n_items, a_off, b_off
    uvec4 m1;   // d_off, p0, p1, p2
} pc;

#define WG_BASE pc.m0.x
#define N_ITEMS pc.m0.y
#define A_OFF pc.m0.z
#define B_OFF pc.m0.w
#define D_OFF pc.m1.x
#define P0 pc.m1.y
#define P1 pc.m1.z
#define P2 pc.m1.w

// Workgroup index, including the base of the tile this dispatch covers (dispatches larger
// than maxComputeWorkGroupCount[0] are split by the host).
uint wg_index() { return gl_WorkGroupID.x + WG_BASE; }

uvec4 unflatten(uint i, uvec4 ne) {
    uvec4 r;
    r.x = i % ne.x; i /= ne.x;
    r.y = i % ne.y; i /= ne.y;
    r.z = i % ne.z;
    r.w = i / ne.z;
    return r;
}

uint strided(uvec4 idx, uvec4 nb) { return idx.x * nb.x + idx.y * nb.y + idx.z * nb.z + idx.w * nb.w; }
