//! Decode attention in one dispatch (`attn_decode.comp`): llama.cpp's unfused chain
//! KQ = MUL_MAT(K, Q), SOFT_MAX(KQ, mask, scale), KQV = MUL_MAT(V, softmax) — optionally
//! followed by PERMUTE(0, 2, 1, 3) and CONT back to rows — for a few query rows, where the
//! products and the softmax have no other user. Replaces three dependent dispatches (and
//! their barriers) per layer and token. Flash attention stays off (`-fa 0`, as llama-bench's
//! default); this only fuses the graph that setting builds.
//!
//! Two kernels: `attn_split.comp` (the default where the device has it) spreads each (query
//! row, head) over several workgroups, one per chunk of keys, and the row's last workgroup
//! combines their partial softmax sums; `attn_decode.comp` takes one workgroup per (query
//! row, head) and all its keys (`TRIT_VULKAN_ATTN_CHUNK=0`, or devices with fewer than six
//! storage bindings or subgroups under 4 lanes).

use std::sync::atomic::{AtomicU32, Ordering};

use trit_sys as sys;

use crate::dispatch::{starts_aligned, Push, Recorder};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::{fits_range, nb, ne, op_of, param_u32, src, ty, F16, F32};

/// Keys and head dimensions the one-workgroup kernel keeps in shared memory and registers
/// (MAX_KV, MAX_D there); both multiples of 8, rows 16-byte aligned (`matches`).
const MAX_KV: i64 = 3584;
const MAX_D: i64 = 128;
/// Query rows (tokens) at most: more is a prompt, where the tiled products do better.
const MAX_TOKENS: i64 = 8;
pub(crate) const KERNEL: &str = "attn_decode_f16";
pub(crate) const SPLIT_KERNEL: &str = "attn_split_f16";

/// The split kernel's limits (attn_split.comp): keys per workgroup (MAX_CH, a multiple of
/// KPP), (query row, head) pairs (CNT_WORDS, one counter each), chunks per row.
const SPLIT_MAX_CH: u64 = 1024;
const SPLIT_KPP: u64 = 32;
const SPLIT_ROWS: u64 = 1024;
const SPLIT_MAX_CHUNKS: u64 = 32;
/// Scratch of the split kernel: the counters, then room for the partial results.
pub(crate) const SPLIT_COUNTER_BYTES: u64 = SPLIT_ROWS * 4;
pub(crate) const SPLIT_SCRATCH_BYTES: u64 = SPLIT_COUNTER_BYTES + (4 << 20);

/// Fewest keys per workgroup of the split kernel (a multiple of 32; 0: the one-workgroup
/// kernel). u32::MAX: not yet read from TRIT_VULKAN_ATTN_CHUNK (default 32).
static MIN_CHUNK: AtomicU32 = AtomicU32::new(u32::MAX);

/// Tests and A/B runs: the split kernel's fewest keys per workgroup, 0 for the one-workgroup
/// kernel.
pub(crate) fn set_min_chunk(keys: u32) {
    MIN_CHUNK.store(keys.min(SPLIT_MAX_CH as u32).next_multiple_of(SPLIT_KPP as u32), Ordering::Relaxed);
}

fn min_chunk() -> u64 {
    let v = MIN_CHUNK.load(Ordering::Relaxed);
    if v != u32::MAX {
        return v as u64;
    }
    let keys = std::env::var("TRIT_VULKAN_ATTN_CHUNK").ok().and_then(|v| v.parse().ok()).unwrap_or(32u32);
    set_min_chunk(keys);
    MIN_CHUNK.load(Ordering::Relaxed) as u64
}

/// Dispatches of the split kernel recorded so far (tests).
pub(crate) static SPLIT_DISPATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How one chain is computed: split into `chunks` workgroups of `keys` keys per (query row,
/// head), or by one workgroup each.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    Split { keys: u64, chunks: u64 },
    One,
}

/// Bytes of the split kernel's scratch one dispatch uses: the counters and its partials.
fn split_scratch_bytes(d: u64, rows: u64, chunks: u64) -> u64 {
    SPLIT_COUNTER_BYTES + rows * chunks * (d + 2) * 4
}

/// The kernel for `rows` (query row, head) pairs of head size `d` over `n_kv` keys on `gpu`;
/// None if neither takes it. Chunks of at least the minimum keys, at most SPLIT_MAX_CHUNKS of
/// them, more keys each where the partials would not fit the scratch.
fn kernel_for(gpu: &Gpu, d: u64, n_kv: u64, rows: u64) -> Option<Kernel> {
    let min = min_chunk();
    let split_ok = min > 0 && gpu.has_pipeline(SPLIT_KERNEL) && gpu.subgroup_size >= 4 && rows <= SPLIT_ROWS;
    if split_ok {
        let mut keys = n_kv.div_ceil(SPLIT_MAX_CHUNKS).next_multiple_of(SPLIT_KPP).max(min);
        let fits = |keys: u64| split_scratch_bytes(d, rows, n_kv.div_ceil(keys)) <= SPLIT_SCRATCH_BYTES;
        while keys <= SPLIT_MAX_CH && !fits(keys) {
            keys *= 2;
        }
        let chunks = n_kv.div_ceil(keys);
        // The scratch is one binding: within the device's storage range.
        if keys <= SPLIT_MAX_CH && split_scratch_bytes(d, rows, chunks) + gpu.min_storage_align + 4 <= gpu.max_range() {
            return Some(Kernel::Split { keys, chunks });
        }
    }
    (n_kv <= MAX_KV as u64 && gpu.has_pipeline(KERNEL)).then_some(Kernel::One)
}

/// `kq`, `sm`, `kqv` form the chain a kernel of `gpu` computes (shapes, types, strides; not
/// uses).
pub(crate) fn matches(
    gpu: &Gpu,
    kq: *const sys::ggml_tensor,
    sm: *const sys::ggml_tensor,
    kqv: *const sys::ggml_tensor,
) -> bool {
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
        && n_kv >= 1
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
    // Every operand is one binding: within the device's storage range.
    let in_range =
        [k, q, v, kqv].iter().chain(if mask.is_null() { None } else { Some(&mask) }).all(|&t| fits_range(gpu, t));
    ok_shape && ok_params && ok_mask && in_range && kernel_for(gpu, d as u64, n_kv as u64, (t * h) as u64).is_some()
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
    match kernel_for(rec.gpu(), ne(k)[0] as u64, ne(k)[1] as u64, rows) {
        Some(Kernel::Split { keys, chunks }) => {
            p.d_ne[0] = (keys | chunks << 16) as u32;
            p.m0[1] = (rows * chunks) as u32;
            p.m0[2] = kb.elem_off;
            p.m0[3] = qb.elem_off;
            p.m1[0] = db.elem_off;
            let sb = rec.attn_scratch(split_scratch_bytes(ne(k)[0] as u64, rows, chunks))?;
            let mb = mb.unwrap_or(kb);
            SPLIT_DISPATCHES.fetch_add(1, Ordering::Relaxed);
            rec.dispatch_n(
                SPLIT_KERNEL,
                &[kb, qb, db, mb, vb, sb],
                &[false, false, true, false, false, true],
                p,
                rows * chunks,
            )
        }
        Some(Kernel::One) => {
            p.m0[1] = rows as u32;
            rec.dispatch5(KERNEL, kb, Some(qb), db, mb, false, vb, p, rows)
        }
        None => Err(crate::error::Error::Unsupported {
            node: String::new(),
            op: "attention".into(),
            why: "no attention kernel takes this shape".into(),
        }),
    }
}
