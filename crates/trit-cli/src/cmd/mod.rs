//! One module per command of the multi-call binary.

pub mod bench;
pub mod convert;
pub mod finetune;
pub mod info;
pub mod logits;
pub mod lora;
pub mod perplexity;
pub mod run;
pub mod serve;
