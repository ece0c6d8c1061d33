//! Where a graph's temporaries go in the recorder's scratch buffer.
//!
//! Three parts, in this order:
//! * the split-k ring (`Recorder::split_scratch`): `SPLIT_RING` slots reused in turn;
//! * the rounded activations of ternary products (`Recorder::rounded_scratch`), one region
//!   per source tensor, placed by liveness: a region is live from the first to the last
//!   recording unit that writes or reads it, and regions whose lives do not overlap share
//!   memory (first fit by offset). The scratch then holds about the largest few live at
//!   once instead of the sum over the graph (a training step rounds ~4 inputs per layer,
//!   twice with gradient checkpointing, and each is dead a layer later);
//! * bump-allocated scratch for everything else (`Recorder::scratch`: per-row losses).
//!
//! Reuse is safe because the recorder checks every dispatch's bound ranges against the
//! reads and writes since the last barrier: the dispatch that writes a region anew (a
//! quantization, or a fused norm's quantized output) conflicts with the earlier products'
//! reads of the same bytes (write after read) and gets a barrier before it.
//!
//! `TRIT_VULKAN_SCRATCH_REUSE=0` (or [`set_reuse`]) gives every region its own memory, as
//! before (for comparison).

use crate::switch::Switch;

use trit_sys as sys;

/// One rounded activation: its source tensor and where its two forms live (the packed int8
/// form at `q8`, the f32 form at `f32` where the plain kernels may need it), with their sizes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rounded {
    pub tensor: *const sys::ggml_tensor,
    pub q8: u64,
    pub q8_bytes: u64,
    pub f32: Option<(u64, u64)>,
}

/// The scratch layout of one graph.
#[derive(Clone, Debug, Default)]
pub(crate) struct Layout {
    /// Bytes to reserve in all.
    pub bytes: u64,
    /// Bytes of one split-k slot (the ring starts at 0).
    pub split_slot: u64,
    /// Bytes of one slot of the int8 input gradient's ring (after the split-k ring).
    pub dxq_slot: u64,
    /// Planned rounded activations.
    pub rounded: Vec<Rounded>,
    /// Where bump-allocated scratch starts.
    pub bump_start: u64,
    /// Bytes the rounded activations would take with no reuse (every region its own).
    pub unshared: u64,
}

/// Bytes of the two rings at the start of scratch: `SPLIT_RING` split-k slots, then
/// `DXQ_RING` slots for the int8 input gradient's quantized operands.
pub(crate) fn ring_bytes(split_slot: u64, dxq_slot: u64) -> u64 {
    crate::dispatch::SPLIT_RING * split_slot + crate::dispatch::DXQ_RING * dxq_slot
}

impl Layout {
    /// Bytes the same graph would reserve if no two rounded activations shared memory.
    pub fn without_reuse(&self) -> u64 {
        let pool = self.bump_start - ring_bytes(self.split_slot, self.dxq_slot);
        self.bytes - pool + self.unshared
    }
}

/// Bytes of scratch the last graph recorded by any backend of this process reserved (tests).
pub(crate) static LAST_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// On unless TRIT_VULKAN_SCRATCH_REUSE=0 or `set_reuse(false)`.
static REUSE: Switch = Switch::new();

pub(crate) fn set_reuse(on: bool) {
    REUSE.set(on);
}

pub(crate) fn reuse() -> bool {
    REUSE.get(|| std::env::var("TRIT_VULKAN_SCRATCH_REUSE").map_or(true, |v| v != "0"))
}

/// A region to place: live from recording unit `first` to `last` (inclusive), `bytes` long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Life {
    pub first: usize,
    pub last: usize,
    pub bytes: u64,
}

/// Offsets for `lives` (each a multiple of `unit`) such that two regions overlap in memory
/// only if their lives do not overlap, and the end of the highest one (the pool's size).
/// First fit: regions by first unit, each at the lowest gap among the regions still live.
pub(crate) fn place(lives: &[Life], unit: u64) -> (Vec<u64>, u64) {
    let unit = unit.max(1);
    let mut order: Vec<usize> = (0..lives.len()).collect();
    order.sort_by_key(|&i| (lives[i].first, std::cmp::Reverse(lives[i].bytes)));
    let mut offsets = vec![0u64; lives.len()];
    // Live regions: (offset, end, last unit), kept sorted by offset.
    let mut live: Vec<(u64, u64, usize)> = Vec::new();
    let mut peak = 0;
    for i in order {
        let l = lives[i];
        live.retain(|r| r.2 >= l.first);
        let size = l.bytes.next_multiple_of(unit);
        let mut at = 0;
        let mut slot = live.len();
        for (k, r) in live.iter().enumerate() {
            if at + size <= r.0 {
                slot = k;
                break;
            }
            at = at.max(r.1);
        }
        live.insert(slot, (at, at + size, l.last));
        offsets[i] = at;
        peak = peak.max(at + size);
    }
    (offsets, peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lives: &[Life], unit: u64) -> u64 {
        let (off, peak) = place(lives, unit);
        for (i, a) in lives.iter().enumerate() {
            assert_eq!(off[i] % unit, 0);
            assert!(off[i] + a.bytes <= peak);
            for (j, b) in lives.iter().enumerate().skip(i + 1) {
                let lives_overlap = a.first <= b.last && b.first <= a.last;
                let mem_overlap = off[i] < off[j] + b.bytes && off[j] < off[i] + a.bytes;
                assert!(!(lives_overlap && mem_overlap), "regions {i} and {j} collide: {a:?} {b:?} at {off:?}");
            }
        }
        peak
    }

    #[test]
    fn disjoint_lives_share_one_region() {
        let lives: Vec<Life> = (0..20).map(|i| Life { first: 2 * i, last: 2 * i + 1, bytes: 1000 }).collect();
        assert_eq!(check(&lives, 256), 1024);
    }

    #[test]
    fn overlapping_lives_get_their_own() {
        let lives: Vec<Life> = (0..5).map(|i| Life { first: i, last: 10, bytes: 256 }).collect();
        assert_eq!(check(&lives, 256), 5 * 256);
    }

    #[test]
    fn pool_is_bounded_by_what_is_live_at_once() {
        // Pseudo-random lives of at most 3 units: at most a few live at any unit.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let lives: Vec<Life> = (0..300)
            .map(|i| {
                let len = (next() % 3) as usize;
                Life { first: i, last: i + len, bytes: 256 * (1 + next() % 8) }
            })
            .collect();
        let peak = check(&lives, 256);
        let most_live = (0..310)
            .map(|u| lives.iter().filter(|l| l.first <= u && u <= l.last).map(|l| l.bytes).sum::<u64>())
            .max()
            .unwrap_or(0);
        let sum: u64 = lives.iter().map(|l| l.bytes).sum();
        assert!(peak >= most_live);
        assert!(peak <= 3 * most_live, "peak {peak}, most live at once {most_live}");
        assert!(peak * 20 < sum, "peak {peak}, sum {sum}");
    }
}
