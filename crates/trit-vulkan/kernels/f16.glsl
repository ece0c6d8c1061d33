// f16 helpers for kernels without the Float16 capability (attn_common.glsl, attn_tail.glsl).
#ifndef TRIT_F16_GLSL
#define TRIT_F16_GLSL
// x rounded to f16.
float r16(float x) { return unpackHalf2x16(packHalf2x16(vec2(x, 0.0))).x; }
#endif
