// Int8 quantization of a 256-block held by a cluster of C lanes (C a power of two, at most
// the subgroup), as quant_q8.comp quantizes (ggml's Q8_K rule): the value of largest
// magnitude, the first on ties, gives iscale = -127 / max; q = min(127, roundEven(iscale *
// x)); the block scale is 1 / iscale. Shared by rms_norm_q8.comp and the `NORM` prologue of
// mul_mv_tq.comp, so that both give the same bits. Needs GL_KHR_shader_subgroup_shuffle.

// Element (within its 256-block) that lane lc of a cluster of C lanes holds as its e-th: four
// consecutive elements a step, the cluster's lanes side by side, so a cluster's loads of one
// step are one contiguous run of 16 C bytes (a lane's four loads of a step, or one vec4 load,
// touch a single 32-byte sector) and each lane's four values of a step pack into one int8
// word. Every kernel that quantizes a normed block (rms_norm_q8.comp, mul_mv_tq.comp's NORM
// prologue) sums its squares in this order, lane by lane and e by e, so they agree bit for
// bit.
uint norm_elem(uint lc, uint e, uint C) { return (e >> 2) * (4u * C) + lc * 4u + (e & 3u); }

// The cluster's value of largest magnitude and its index (the lowest on ties), from each
// lane's own (mv, mi); mi = 0xFFFFFFFF marks a lane without one.
void cluster_max(inout float mv, inout uint mi, uint C) {
    for (uint m = 1; m < C; m <<= 1) {
        const float ov = subgroupShuffleXor(mv, m);
        const uint oi = subgroupShuffleXor(mi, m);
        if (abs(ov) > abs(mv) || (abs(ov) == abs(mv) && oi < mi)) { mv = ov; mi = oi; }
    }
}

// The block's iscale from its value of largest magnitude mv (0 for an all-zero block).
float q8_iscale(float mv) {
    precise float iscale = abs(mv) > 0.0 ? -127.0 / mv : 0.0;
    return iscale;
}

// Four consecutive values quantized with iscale (mv: as for q8_iscale), packed into one word,
// the first in the low byte.
uint q8_word(float iscale, float mv, vec4 x) {
    uint word = 0;
    [[unroll]] for (uint j = 0; j < 4; ++j) {
        precise float v = iscale * x[j];
        const int q = abs(mv) > 0.0 ? int(min(127.0, roundEven(v))) : 0;
        word |= (uint(q) & 0xFFu) << (8 * j);
    }
    return word;
}

// The block scale stored with the int8 values.
float q8_scale(float mv, float iscale) {
    precise float dq = abs(mv) > 0.0 ? 1.0 / iscale : 0.0;
    return dq;
}
