//! Decode attention in one dispatch (`attn_decode.comp`): llama.cpp's unfused chain
//! KQ = MUL_MAT(K, Q), SOFT_MAX(KQ, mask, scale), KQV = MUL_MAT(V, softmax) — optionally
//! followed by PERMUTE(0, 2, 1, 3) and CONT back to rows — for a few query rows, where the
//! products and the softmax have no other user. Replaces three dependent dispatches (and
//! their barriers) per layer and token. Flash attention stays off (`-fa 0`, as llama-bench's
//! default); this only fuses the graph that setting builds.

use trit_sys as sys;

use crate::dispatch::{starts_aligned, Push, Recorder};
use crate::error::Result;
use crate::ops::{nb, ne, op_of, param_u32, src, ty, F16, F32};

/// Keys and head dimensions the kernel keeps in shared memory and registers (MAX_KV,
/// MAX_D there); both multiples of 8, rows 16-byte aligned (`matches`).
const MAX_KV: i64 = 3584;
const MAX_D: i64 = 128;
/// Query rows (tokens) at most: more is a prompt, where the tiled products do better.
const MAX_TOKENS: i64 = 8;
pub(crate) const KERNEL: &str = "attn_decode_f16";

/// `kq`, `sm`, `kqv` form the chain this kernel computes (shapes, types, strides; not uses).
pub(crate) fn matches(kq: *const sys::ggml_tensor, sm: *const sys::ggml_tensor, kqv: *const sys::ggml_tensor) -> bool {
    if op_of(kq) != sys::GGML_OP_MUL_MAT || op_of(sm) != sys::GGML_OP_SOFT_MAX || op_of(kqv) != sys::GGML_OP_MUL_MAT {
        return false;
    }
    if src(sm, 0) != kq || src(kqv, 1) != sm || !src(sm, 2).is_null() {
        return false;
    }
    let (k, q, v, mask) = (src(kq, 0), src(kq, 1), src(kqv, 0), src(sm, 1));
    if ty(k) != F16 || ty(v) != F16 || ty(q) != F32 || [kq, sm, kqv].iter().any(|&t| ty(t) != F32) {
        return false;
    }
    let ([d, n_kv, hkv, k3], [qd, t, h, q3]) = (ne(k), ne(q));
    let ok_shape = qd == d
        && k3 == 1
        && q3 == 1
        && (1..=MAX_D).contains(&d)
        && (1..=MAX_KV).contains(&n_kv)
        && (1..=MAX_TOKENS).contains(&t)
        && hkv >= 1
        && h % hkv == 0
        && ne(kq) == [n_kv, t, h, 1]
        && ne(sm) == ne(kq)
        && ne(v) == [n_kv, d, hkv, 1]
        && ne(kqv) == [d, t, h, 1];
    // f32 max_bias (ALiBi) must be 0. K rows and V rows (the transposed cache: keys
    // contiguous) are read 8 halves at a time from 16-byte aligned addresses.
    let aligned =
        |t: *const sys::ggml_tensor| nb(t)[0] == 2 && nb(t)[1] % 16 == 0 && nb(t)[2] % 16 == 0 && starts_aligned(t, 16);
    let ok_params = f32::from_bits(param_u32(sm, 1)) == 0.0
        && d % 8 == 0
        && n_kv % 8 == 0
        && aligned(k)
        && aligned(v)
        && nb(q).iter().all(|&x| x % 4 == 0);
    let ok_mask = mask.is_null()
        || (ty(mask) == F32
            && ne(mask)[0] >= n_kv
            && ne(mask)[1] >= t
            && ne(mask)[2..] == [1, 1]
            && nb(mask)[0] == 4
            && nb(mask)[1] % 4 == 0);
    ok_shape && ok_params && ok_mask
}

/// Record the chain at `kq`, `sm`, `kqv` (checked by [`matches`]); the result goes to `out`
/// with element strides `strides` for (dim, token, head) — the KQV node's own or, with the
/// PERMUTE and CONT folded in, the CONT's.
pub(crate) fn encode(
    rec: &mut Recorder,
    kq: *const sys::ggml_tensor,
    sm: *const sys::ggml_tensor,
    kqv: *const sys::ggml_tensor,
    out: *const sys::ggml_tensor,
    strides: [u32; 3],
) -> Result<()> {
    let (k, q, v, mask) = (src(kq, 0), src(kq, 1), src(kqv, 0), src(sm, 1));
    let u16b = |t: *const sys::ggml_tensor| nb(t).map(|x| (x / 16) as u32);
    let mut p = Push {
        a_ne: ne(k).map(|x| x as u32),
        a_nb: u16b(k),
        b_ne: ne(q).map(|x| x as u32),
        b_nb: nb(q).map(|x| (x / 4) as u32),
        ..Default::default()
    };
    let vnb = u16b(v);
    let (kb, qb, db, vb) = (rec.bind_vec(k, 16)?, rec.bind(q, 4)?, rec.bind(out, 4)?, rec.bind_vec(v, 16)?);
    p.d_ne = [vnb[0], vnb[1], vnb[2], vb.elem_off];
    p.d_nb = [strides[0], strides[1], strides[2], 0];
    p.m1[1] = param_u32(sm, 0);
    let mb = if mask.is_null() {
        None
    } else {
        let mb = rec.bind(mask, 4)?;
        p.d_nb[3] = mb.elem_off;
        p.m1[2] = (nb(mask)[1] / 4) as u32;
        p.m1[3] = 1;
        Some(mb)
    };
    let rows = (ne(q)[1] * ne(q)[2]) as u64;
    p.m0[1] = rows as u32;
    rec.dispatch5(KERNEL, kb, Some(qb), db, mb, false, vb, p, rows)
}
