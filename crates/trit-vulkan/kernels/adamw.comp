#version 450
// OPT_STEP_ADAMW, in place on contiguous f32 tensors of one shape: per element
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
//   w = w*(1 - lr*wd) - lr * (m*b1h) / (sqrt(v*b2h) + eps)
// Bindings: 0 w (read-write), 1 g, 2 m (rw), 3 v (rw), 4 the 7 optimizer floats
// [lr, b1, b2, eps, wd, b1h, b2h] (a device tensor ggml-opt sets each step).
// Element offsets: w m0.z, g m0.w, m m1.x, v m1.y, params m1.z.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) buffer BufW { float w[]; };
layout(std430, binding = 1) readonly buffer BufG { float g[]; };
layout(std430, binding = 2) buffer BufM { float m[]; };
layout(std430, binding = 3) buffer BufV { float v[]; };
layout(std430, binding = 4) readonly buffer BufP { float prm[]; };

void main() {
    const uint i = wg_index() * 256 + gl_LocalInvocationID.x;
    if (i >= N_ITEMS) { return; }
    const uint po = pc.m1.z;
    const float lr = prm[po], b1 = prm[po + 1], b2 = prm[po + 2], eps = prm[po + 3];
    const float wd = prm[po + 4], b1h = prm[po + 5], b2h = prm[po + 6];
    const float gi = g[B_OFF + i];
    const float mi = m[pc.m1.x + i] * b1 + gi * (1.0 - b1);
    const float vi = v[pc.m1.y + i] * b2 + gi * gi * (1.0 - b2);
    m[pc.m1.x + i] = mi;
    v[pc.m1.y + i] = vi;
    const float mh = mi * b1h;
    const float vh = sqrt(vi * b2h) + eps;
    w[A_OFF + i] = w[A_OFF + i] * (1.0 - lr * wd) - lr * mh / vh;
}
