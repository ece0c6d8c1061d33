//! Ternary tensors in trit-vulkan buffers: TQ2_0 rows held split into codes and scales, TQ1_0
//! re-encoded as TQ2_0 and split as well (unless `TRIT_VULKAN_TQ1_AS_TQ2=0`, which
//! `scripts/test.sh` also runs); read and written as ggml's bytes, and computed from as the
//! CPU computes from ggml's bytes.

mod common;

use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use trit_sys as sys;

const NMSE_TQ: f64 = 1e-9;

fn get(t: T, at: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // SAFETY: t is allocated; the callers keep at + len inside ggml_nbytes(t).
    unsafe { sys::ggml_backend_tensor_get(t, out.as_mut_ptr() as *mut _, at, len) };
    out
}

#[test]
fn ternary_bytes_round_trip_and_partial_blocks_are_refused() {
    let Some((_g, b)) = setup() else { return };
    println!("TQ1_0 held as TQ2_0: {}", trit_vulkan::tq1_as_tq2());
    for ty in [TQ2, TQ1] {
        round_trip(&b, ty);
    }
}

fn round_trip(b: &Backends, ty: sys::ggml_type) {
    let on = ty == TQ2 || trit_vulkan::tq1_as_tq2();
    let name = if ty == TQ2 { "TQ2_0" } else { "TQ1_0" };
    let (k, rows) = (768i64, 40i64);
    // SAFETY: standard ggml usage; everything is freed at the end.
    unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: 8 * sys::ggml_tensor_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let w = sys::ggml_new_tensor_2d(ctx, ty, k, rows);
        // Placed after the weights: a write past their re-encoded end would show here.
        let after = sys::ggml_new_tensor_1d(ctx, F32, 1000);
        let buf = sys::ggml_backend_alloc_ctx_tensors(ctx, b.vk);
        assert!(!buf.is_null());
        let n = sys::ggml_nbytes(w);
        let alloc = sys::ggml_backend_buft_get_alloc_size(sys::ggml_backend_buffer_get_type(buf), w);
        // Split rows: 3 blocks' 198 bytes padded to 208.
        assert_eq!(alloc, if on { rows as usize * 208 } else { n }, "allocation size of a {name} tensor");

        // ggml's own bytes for random weights (canonical digits, as files hold).
        let mut rng = StdRng::seed_from_u64(11);
        let vals: Vec<f32> = (0..k * rows).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mut bytes = vec![0u8; n];
        sys::ggml_quantize_chunk(ty, vals.as_ptr(), bytes.as_mut_ptr() as *mut _, 0, rows, k, std::ptr::null());
        let marks: Vec<u8> = (0..4000).map(|i| (i * 7 % 251) as u8).collect();
        sys::ggml_backend_tensor_set(after, marks.as_ptr() as *const _, 0, marks.len());
        sys::ggml_backend_tensor_set(w, bytes.as_ptr() as *const _, 0, n);

        assert!(get(w, 0, n) == bytes, "the {name} bytes read back differ from those written");
        let row = n / rows as usize;
        let blk = row / 3;
        assert!(get(w, 3 * row, 2 * row) == bytes[3 * row..5 * row], "rows 3..5 read alone differ");
        assert!(
            get(w, 4 * row + blk, 3 * blk) == bytes[4 * row + blk..5 * row + blk],
            "blocks across rows read alone differ"
        );
        // Rows 7..9 rewritten alone (whole blocks at an offset).
        let mut other = bytes.clone();
        other[7 * row..9 * row].copy_from_slice(&bytes[20 * row..22 * row]);
        sys::ggml_backend_tensor_set(w, bytes[20 * row..].as_ptr() as *const _, 7 * row, 2 * row);
        assert!(get(w, 0, n) == other, "a two-row write landed wrong");
        // Blocks 1..2 of row 12 and block 0 of row 13: the rows' other blocks keep theirs.
        other[12 * row + blk..13 * row + blk].copy_from_slice(&bytes[30 * row..30 * row + row]);
        sys::ggml_backend_tensor_set(w, bytes[30 * row..].as_ptr() as *const _, 12 * row + blk, row);
        assert!(get(w, 0, n) == other, "a write of blocks inside rows landed wrong");

        // Part of a block: refused where the rows are held split (the tensor keeps its
        // weights), written as given where they are not.
        let junk = [0xAAu8; 100];
        sys::ggml_backend_tensor_set(w, junk.as_ptr() as *const _, 10, junk.len());
        if on {
            assert!(get(w, 0, n) == other, "a partial-block write changed the tensor");
        } else {
            other[10..110].fill(0xAA);
            assert!(get(w, 0, n) == other, "a plain write of stored {name} bytes went wrong");
        }
        assert!(get(after, 0, marks.len()) == marks, "the tensor after the weights was overwritten");
        sys::ggml_backend_buffer_free(buf);
        sys::ggml_free(ctx);
    }
}

/// Products over a view of ternary weights that starts at a row (the view's offset scales to
/// the split layout) and over the whole tensor, one and several columns, against the CPU.
#[test]
fn products_over_ternary_views_match_the_cpu() {
    let Some((_g, b)) = setup() else { return };
    for (ty, tn) in [(TQ2, "tq2"), (TQ1, "tq1")] {
        for cols in [1i64, 5, 40] {
            for view in [true, false] {
                let name = if view { "rows 6..22 (a view)" } else { "all 40 rows" };
                check(
                    &b,
                    &format!("{tn} {name} x {cols} cols"),
                    &|ctx, ins| {
                        let a = input(ctx, ins, ty, &[768, 40], Fill::Uniform);
                        let x = input(ctx, ins, F32, &[768, cols], Fill::Uniform);
                        // SAFETY: ctx is live; the view lies inside `a`.
                        unsafe {
                            let nb1 = (*a).nb[1];
                            let w = if view { sys::ggml_view_2d(ctx, a, 768, 16, nb1, 6 * nb1) } else { a };
                            sys::ggml_mul_mat(ctx, w, x)
                        }
                    },
                    NMSE_TQ,
                );
            }
        }
    }
}
