//! trit-finetune: LoRA fine-tuning of BitNet b1.58 models on the CPU.
//!
//! Design: llama.cpp builds the model graph (the same one inference runs, so training and
//! inference cannot disagree), ggml-opt differentiates it and runs AdamW. The LoRA A/B
//! tensors of an adapter loaded with llama.cpp's own `llama_adapter_lora_init` are marked
//! as the only parameters (a small C++ shim reaches them, `shim/lora_shim.cpp`); the ternary
//! base stays frozen in TQ2_0/TQ1_0. `vendor/patches/0003-*` adds what the pinned
//! llama.cpp lacks: masked labels (loss on assistant turns only), gradient accumulators that
//! are cleared between steps, and access to the AdamW state for checkpoints.
//! `vendor/patches/0007-*` adds gradient checkpointing (`SessionParams::gradient_checkpointing`):
//! ggml-opt's backward graph recomputes each layer from the per-layer residual outputs.

pub mod adapter;
pub mod checkpoint;
pub mod data;
pub mod mem;
pub mod merge;
pub mod plot;
pub mod schedule;
pub mod session;
pub mod train;

pub use adapter::{parse_targets, InitOptions, LoraSpec, LoraWeights, ALL_TARGETS};
pub use data::{BadLine, DataOptions, Dataset, Sample, MASKED};
pub use schedule::{Schedule, ScheduleKind};
pub use session::{AdamW, CheckpointKeep, MemoryUse, OptimizerState, Session, SessionParams};
pub use train::{train, TrainOptions, TrainReport, Warmup};
