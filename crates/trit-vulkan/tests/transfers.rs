//! Host <-> device transfers through the staging buffer (what a discrete GPU uses): deferred
//! small uploads and GPU fills must land in call order, also where they overlap, and be seen
//! by reads, large (chunked) uploads and graphs that follow them.

mod common;

use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use trit_sys as sys;

/// Both the device tensor and `want` (the host model of it) get the same operation.
struct Mirror {
    t: T,
    want: Vec<u8>,
}

impl Mirror {
    fn set(&mut self, at: usize, bytes: &[u8]) {
        // SAFETY: t is allocated and at + len is inside it (checked by the caller's sizes).
        unsafe { sys::ggml_backend_tensor_set(self.t, bytes.as_ptr() as *const _, at, bytes.len()) };
        self.want[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn memset(&mut self, at: usize, len: usize, value: u8) {
        // SAFETY: as above.
        unsafe { sys::ggml_backend_tensor_memset(self.t, value, at, len) };
        self.want[at..at + len].fill(value);
    }
    fn check(&self, at: usize, len: usize, what: &str) {
        let mut got = vec![0u8; len];
        // SAFETY: as above.
        unsafe { sys::ggml_backend_tensor_get(self.t, got.as_mut_ptr() as *mut _, at, len) };
        let bad = got.iter().zip(&self.want[at..at + len]).position(|(a, b)| a != b);
        assert!(bad.is_none(), "{what}: first difference at byte {}", at + bad.unwrap_or(0));
    }
}

#[test]
fn staged_uploads_fills_and_reads_keep_their_order() {
    let Some((_g, b)) = setup() else { return };
    trit_vulkan::set_force_staging(true);
    let mut rng = StdRng::seed_from_u64(7);
    // 5M floats (20 MB): larger than the 16 MiB staging buffer, so whole-tensor uploads and
    // reads go in chunks.
    let n: i64 = 5_000_000;
    // SAFETY: standard ggml usage; everything is freed at the end.
    unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: 8 * sys::ggml_tensor_overhead() + sys::ggml_graph_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let t = sys::ggml_new_tensor_1d(ctx, F32, n);
        let small = sys::ggml_new_tensor_1d(ctx, F32, 1000);
        let out = sys::ggml_scale(ctx, small, 2.0);
        let buf = sys::ggml_backend_alloc_ctx_tensors(ctx, b.vk);
        assert!(!buf.is_null());
        let bytes = n as usize * 4;
        let mut m = Mirror { t, want: vec![0u8; bytes] };
        let noise: Vec<u8> = (0..bytes).map(|_| rng.gen()).collect();
        m.set(0, &noise);
        m.check(0, bytes, "a chunked upload");
        // A GPU fill, then aligned 4-byte writes over it, some to the same place: the label
        // upload of a training step.
        m.memset(0, bytes, 0);
        for i in 0..700 {
            let at = if i % 7 == 0 { 4 * 100 } else { 4 * rng.gen_range(0..n as usize) };
            m.set(at, &rng.gen::<f32>().to_le_bytes());
        }
        m.check(0, bytes, "aligned writes over a fill");
        // Unaligned writes and memsets, overlapping each other and aligned ones.
        for i in 0..60usize {
            let at = 4 * 200 + (i % 5) + 4 * (i % 2);
            m.set(at, &rng.gen::<f32>().to_le_bytes()[..1 + i % 4]);
            m.set(4 * 201, &rng.gen::<f32>().to_le_bytes());
        }
        m.memset(4 * 100 + 1, 6, 0x3f);
        m.memset(4 * 2000, 4 * 3000, 0x41);
        m.check(0, 4 * 10_000, "unaligned writes and fills over writes");
        // Small writes pending before a large upload that covers some of them, and after it.
        for _ in 0..50 {
            let at = 4 * rng.gen_range(0..n as usize);
            m.set(at, &rng.gen::<f32>().to_le_bytes());
        }
        let big: Vec<u8> = (0..18 << 20).map(|_| rng.gen()).collect();
        m.set(1024, &big);
        for _ in 0..50 {
            let at = 4 * rng.gen_range(0..n as usize);
            m.set(at, &rng.gen::<f32>().to_le_bytes());
        }
        m.check(0, bytes, "a large upload between small writes");
        // A large, mostly-zero upload (a one-hot matrix): zero blocks become fills.
        let mut sparse = vec![0u8; bytes - 8];
        for r in 0..300 {
            let at = 4 * rng.gen_range(0..sparse.len() / 4);
            sparse[at..at + 4].copy_from_slice(&(r as f32 + 1.0).to_le_bytes());
        }
        sparse[..4].copy_from_slice(&7f32.to_le_bytes());
        m.set(4, &sparse);
        m.check(0, bytes, "a sparse upload");

        // A graph reads what the pending writes left.
        let mut s = Mirror { t: small, want: vec![0u8; 4000] };
        s.memset(0, 4000, 0);
        for i in 0..1000usize {
            if i % 3 == 0 {
                s.set(4 * i, &(i as f32).to_le_bytes());
            }
        }
        let gf = sys::ggml_new_graph(ctx);
        sys::ggml_build_forward_expand(gf, out);
        assert_eq!(sys::ggml_backend_graph_compute(b.vk, gf), sys::GGML_STATUS_SUCCESS);
        let mut got = vec![0f32; 1000];
        sys::ggml_backend_tensor_get(out, got.as_mut_ptr() as *mut _, 0, 4000);
        for (i, g) in got.iter().enumerate() {
            let want = if i % 3 == 0 { 2.0 * i as f32 } else { 0.0 };
            assert_eq!(*g, want, "graph output {i}");
        }
        sys::ggml_backend_buffer_free(buf);
        sys::ggml_free(ctx);
    }
    trit_vulkan::set_force_staging(false);
}
