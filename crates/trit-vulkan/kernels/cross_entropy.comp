#version 450
// CROSS_ENTROPY_LOSS and its backward, one workgroup per row of logits (rows of ne.x).
//   CE_ROWS: D[row] = sum_i label_i * log_softmax(logits)_i          (A logits, B labels)
//   CE_SUM:  D[0]   = -(sum of the N_ITEMS row values in A) / N_ITEMS (one workgroup)
//   CE_BACK: D = (softmax(logits) * sum(labels) - labels) * grad / rows
//            bindings 0 grad (scalar), 1 logits, 3 labels, 2 dst; element offsets
//            grad m0.z, logits m0.w, dst m1.x, labels m1.y. Scaling softmax by the label
//            mass makes an all-zero label row (a masked position, vendor patch 0003) give
//            exactly zero gradient; one-hot rows are unchanged.
// Logits, labels and dst rows are strided by *_nb.y (elements contiguous within a row).
#include "common.glsl"
#define WG 256
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) writeonly buffer BufD { float d[]; };
#if defined(CE_BACK)
layout(std430, binding = 3) readonly buffer BufL { float lab[]; };
#endif
shared float red[WG];
shared float red2[WG];

float reduce_max(float x) {
    const uint t = gl_LocalInvocationID.x;
    red[t] = x;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) { if (t < h) { red[t] = max(red[t], red[t + h]); } barrier(); }
    const float r = red[0];
    barrier();
    return r;
}

// Sums x and y over the workgroup.
vec2 reduce_sum2(float x, float y) {
    const uint t = gl_LocalInvocationID.x;
    red[t] = x;
    red2[t] = y;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) {
        if (t < h) { red[t] += red[t + h]; red2[t] += red2[t + h]; }
        barrier();
    }
    const vec2 r = vec2(red[0], red2[0]);
    barrier();
    return r;
}

void main() {
    const uint t = gl_LocalInvocationID.x;
#if defined(CE_SUM)
    float s = 0.0;
    for (uint i = t; i < N_ITEMS; i += WG) { s += a[A_OFF + i]; }
    const vec2 tot = reduce_sum2(s, 0.0);
    if (t == 0) { d[D_OFF] = -tot.x / float(N_ITEMS); }
#else
    const uint row = wg_index();
    if (row >= N_ITEMS) { return; }
    const uint n = pc.a_ne.x;
    const uvec4 r4 = uvec4(0, unflatten(row, uvec4(pc.a_ne.y, pc.a_ne.z, pc.a_ne.w, 1)).xyz);
#if defined(CE_BACK)
    const uint lo = B_OFF + strided(r4, pc.b_nb);     // logits
    const uint ll = pc.m1.y + strided(r4, pc.a_nb);   // labels (a_nb: label strides)
    const uint ld = D_OFF + strided(r4, pc.d_nb);
    float mx = -1.0 / 0.0;
    for (uint i = t; i < n; i += WG) { mx = max(mx, b[lo + i]); }
    mx = reduce_max(mx);
    float se = 0.0, sl = 0.0;
    for (uint i = t; i < n; i += WG) { se += exp(b[lo + i] - mx); sl += lab[ll + i]; }
    const vec2 s = reduce_sum2(se, sl);
    const float scale = a[A_OFF] / float(N_ITEMS);
    const float inv = 1.0 / s.x;
    for (uint i = t; i < n; i += WG) {
        const float p = exp(b[lo + i] - mx) * inv;
        d[ld + i] = (p * s.y - lab[ll + i]) * scale;
    }
#else
    const uint lo = A_OFF + strided(r4, pc.a_nb);
    const uint ll = B_OFF + strided(r4, pc.b_nb);
    float mx = -1.0 / 0.0;
    for (uint i = t; i < n; i += WG) { mx = max(mx, a[lo + i]); }
    mx = reduce_max(mx);
    float se = 0.0, sly = 0.0, sl = 0.0;
    for (uint i = t; i < n; i += WG) {
        const float y = b[ll + i];
        se += exp(a[lo + i] - mx);
        sly += y * (a[lo + i] - mx);
    }
    // sum_i y_i (x_i - max - log(sum exp)) = sum y(x-max) - log(se) * sum y
    for (uint i = t; i < n; i += WG) { sl += b[ll + i]; }
    const vec2 s = reduce_sum2(se, sly);
    const vec2 s2 = reduce_sum2(sl, 0.0);
    if (t == 0) { d[D_OFF + row] = s.y - log(s.x) * s2.x; }
#endif
#endif
}
