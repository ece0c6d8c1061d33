//! Process-wide on/off switches: tests and A/B runs set them; otherwise each takes its
//! default once, on first use (from an environment variable, mostly), and keeps it.

use std::sync::atomic::{AtomicU8, Ordering};

/// 0: not decided yet, 1: on, 2: off.
pub(crate) struct Switch(AtomicU8);

impl Switch {
    pub const fn new() -> Switch {
        Switch(AtomicU8::new(0))
    }

    /// On or off: as set, else `default()`, decided the first time (or after `reset`).
    pub fn get(&self, default: impl FnOnce() -> bool) -> bool {
        match self.0.load(Ordering::Relaxed) {
            0 => {
                let on = default();
                self.set(on);
                on
            }
            v => v == 1,
        }
    }

    pub fn set(&self, on: bool) {
        self.0.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    }

    /// Undo `set`: the default is decided again on next use.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}
