// Included by mul_mv_tq.comp (NORM) once per cluster width, with NR_EPL (elements per lane:
// 256 / C for clusters of C = 32, 16 or 8 lanes) and NR_FN (the function's name) defined.
//
// norm_prologue for an input of at most one block per cluster (one round): the same f32
// operations in the same order as the general loop there, so the same int8 words and block
// scales, but each lane loads its elements of the input and of the norm weight together,
// before the first barrier, and keeps both in registers (arrays of exactly NR_EPL, so no
// predicated-off slots hold registers), instead of reading the input again (or from shared
// memory) and the weight from global memory after the sum of squares is known. One global
// round trip and, in the `_w` variants, one barrier less on the path of every row.
// A lane's elements are norm_elem's (q8_block.glsl): four consecutive a step, the cluster's
// lanes side by side, loaded as vec4 where the operands are 16-byte aligned (`nx4`, `nw4`),
// so a cluster's load of a step is one contiguous run, not one 32-byte sector a lane.
void NR_FN(uint K) {
    const uint S = gl_SubgroupSize;
    const uint fl = gl_SubgroupID * S + gl_SubgroupInvocationID;
    const uint C = 256u / NR_EPL;
    const uint cid = fl / C;
    const uint lc = fl % C;
    const uint nblk = K / 256u;
    const bool has = cid < nblk;
    const uint kb = cid * 256u;
    const bool v4 = norm_vec4();
    float xv[NR_EPL];
    float wv[NR_EPL];
    [[unroll]] for (uint e = 0; e < NR_EPL; e += 4) {
        const uint k = kb + norm_elem(lc, e, C);
        const vec4 x4 = has ? nx4(k, v4) : vec4(0.0);
        const vec4 w4 = has ? nw4(k, v4) : vec4(0.0);
        [[unroll]] for (uint j = 0; j < 4; ++j) {
            xv[e + j] = x4[j];
            wv[e + j] = w4[j];
        }
    }
    precise float s = 0.0;
    [[unroll]] for (uint e = 0; e < NR_EPL; ++e) {
        if (has) { s += xv[e] * xv[e]; }
    }
    for (uint m = 1; m < S; m <<= 1) { s += subgroupShuffleXor(s, m); }
    if (gl_SubgroupInvocationID == 0) { nred[gl_SubgroupID] = s; }
    barrier();
    const float scale = norm_scale(WG / S, K);
    // The value of largest magnitude in the block, the first on ties.
    float mv = 0.0;
    uint mi = 0xFFFFFFFFu;
    [[unroll]] for (uint e = 0; e < NR_EPL; ++e) {
        precise float y = (xv[e] * scale) * wv[e];
        xv[e] = y;
        if (has && (mi == 0xFFFFFFFFu || abs(y) > abs(mv))) { mv = y; mi = norm_elem(lc, e, C); }
    }
    cluster_max(mv, mi, C);
    int hs[2] = int[2](0, 0); // WSUMS: the lane's word sums per half-block
    if (has) {
        const float iscale = q8_iscale(mv);
        [[unroll]] for (uint e = 0; e < NR_EPL; e += 4) {
            const uint word = q8_word(iscale, mv, vec4(xv[e], xv[e + 1], xv[e + 2], xv[e + 3]));
            sq[(kb + norm_elem(lc, e, C)) / 4u] = word;
#if defined(WSUMS)
            hs[((e >> 2) * C) >> 5] += dot4(word, 0x01010101u);
#endif
        }
        if (lc == 0) { sd[cid] = q8_scale(mv, iscale); }
    }
#if defined(WSUMS)
    store_item_sums(hs, cid, lc, C, has);
#endif
    barrier();
}
