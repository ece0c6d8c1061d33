//! trit-gguf: pure-Rust GGUF v3 support for trit.
//!
//! * [`GgufFile`]: memory-mapped reader with validated tensor data access,
//! * [`GgufWriter`] / [`GgufStream`]: streaming writer (header first, then one tensor at a
//!   time, atomically renamed into place on [`GgufStream::finish`]),
//! * [`GgmlType`]: ggml tensor types with ids, block sizes and byte sizes,
//! * [`quant`]: TQ2_0 / TQ1_0 ternary packers (bit-identical to ggml's reference quantisers),
//!   Q8_0 and half-float conversions,
//! * [`ModelSummary`]: the `trit info` summary.

mod cursor;
mod error;
mod ggml_type;
mod info;
pub mod quant;
mod reader;
mod value;
mod writer;

pub use error::{GgufError, QuantError, Result};
pub use ggml_type::GgmlType;
pub use info::{file_type_name, ModelSummary, TypeTally};
pub use reader::{GgufFile, TensorInfo};
pub use value::{Value, ValueType};
pub use writer::{GgufStream, GgufWriter};

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// The version this crate writes.
pub const GGUF_VERSION: u32 = 3;
/// Tensor data alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

pub const KEY_ALIGNMENT: &str = "general.alignment";
pub const KEY_ARCHITECTURE: &str = "general.architecture";
pub const KEY_NAME: &str = "general.name";
pub const KEY_FILE_TYPE: &str = "general.file_type";
pub const KEY_QUANTIZATION_VERSION: &str = "general.quantization_version";
