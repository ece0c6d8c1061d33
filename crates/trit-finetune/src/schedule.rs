//! Learning-rate schedules: linear warm-up, then constant, linear or cosine decay to lr_min.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ScheduleKind {
    #[default]
    Constant,
    Linear,
    Cosine,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            _ => Err(format!("learning-rate schedule '{s}' (expected constant, cosine or linear)")),
        }
    }
}

/// The smallest rate handed to ggml-opt, which asserts a strictly positive AdamW alpha.
pub const MIN_LR: f32 = 1e-12;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr: f32,
    pub lr_min: f32,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl Schedule {
    /// Rate for optimizer step `step` (0-based). Warm-up rises linearly from lr/warmup to lr.
    pub fn lr_at(&self, step: u64) -> f32 {
        let lr = if step < self.warmup_steps {
            self.lr * (step + 1) as f32 / self.warmup_steps as f32
        } else {
            let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
            let p = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
            let (hi, lo) = (self.lr as f64, self.lr_min as f64);
            (match self.kind {
                ScheduleKind::Constant => hi,
                ScheduleKind::Linear => lo + (hi - lo) * (1.0 - p),
                ScheduleKind::Cosine => lo + (hi - lo) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
            }) as f32
        };
        lr.max(MIN_LR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = Schedule { kind: ScheduleKind::Cosine, lr: 1e-3, lr_min: 1e-5, warmup_steps: 4, total_steps: 104 };
        assert!((s.lr_at(0) - 2.5e-4).abs() < 1e-9);
        assert!((s.lr_at(3) - 1e-3).abs() < 1e-9);
        assert!((s.lr_at(4) - 1e-3).abs() < 1e-9);
        assert!((s.lr_at(54) - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-8);
        assert!(s.lr_at(103) > 1e-5 && s.lr_at(103) < 2e-5);
        let l = Schedule { kind: ScheduleKind::Linear, lr_min: 0.0, ..s };
        assert!(l.lr_at(10_000) >= MIN_LR);
    }
}
