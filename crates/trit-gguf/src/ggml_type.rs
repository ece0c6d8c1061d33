//! ggml tensor element types: on-disk ids, block sizes and block byte sizes.
//!
//! Values follow `enum ggml_type` (ggml/include/ggml.h) and the `type_traits` table of the
//! pinned ggml; ids that ggml has retired are not representable.

use std::fmt;

/// One ggml tensor type as stored in a GGUF tensor info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    Q2_0,
}

/// (type, id, name, elements per block, bytes per block)
const TABLE: &[(GgmlType, u32, &str, u64, u64)] = &[
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
    (GgmlType::NVFP4, 40, "NVFP4", 64, 36),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 18),
    (GgmlType::Q2_0, 42, "Q2_0", 64, 18),
];

impl GgmlType {
    fn row(self) -> &'static (GgmlType, u32, &'static str, u64, u64) {
        TABLE.iter().find(|r| r.0 == self).expect("every GgmlType variant has a table row")
    }

    /// Looks a type up by its on-disk id; `None` for ids ggml does not (or no longer) define.
    pub fn from_id(id: u32) -> Option<Self> {
        TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// Looks a type up by name, case-insensitively (`"tq2_0"`, `"F16"`).
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE.iter().find(|r| r.2.eq_ignore_ascii_case(name)).map(|r| r.0)
    }

    /// The id written to GGUF tensor infos.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// Upper-case display name, as llama.cpp prints it.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for plain scalar types).
    pub fn block_size(self) -> u64 {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.row().4
    }

    /// Whether the type stores ternary weights (TQ1_0, TQ2_0).
    pub fn is_ternary(self) -> bool {
        matches!(self, GgmlType::TQ1_0 | GgmlType::TQ2_0)
    }

    /// Bytes taken by a row of `n` elements, or `None` when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size();
        (n % bs == 0).then(|| n / bs * self.type_size())
    }

    /// Bytes taken by a tensor of shape `ne` (ggml order: `ne[0]` is the contiguous row), or
    /// `None` when the row length is not a whole number of blocks or the size overflows.
    pub fn tensor_bytes(self, ne: &[u64]) -> Option<u64> {
        let row = self.row_bytes(*ne.first().unwrap_or(&1))?;
        ne.iter().skip(1).try_fold(row, |acc, &d| acc.checked_mul(d))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_sizes_match_ggml() {
        assert_eq!(GgmlType::F32.id(), 0);
        assert_eq!(GgmlType::F16.id(), 1);
        assert_eq!(GgmlType::Q8_0.id(), 8);
        assert_eq!(GgmlType::Q8_K.id(), 15);
        assert_eq!(GgmlType::BF16.id(), 30);
        assert_eq!(GgmlType::TQ1_0.id(), 34);
        assert_eq!(GgmlType::TQ2_0.id(), 35);
        assert_eq!(GgmlType::TQ2_0.type_size(), 66);
        assert_eq!(GgmlType::TQ1_0.type_size(), 54);
        assert_eq!(GgmlType::Q8_0.type_size(), 34);
        assert_eq!(GgmlType::from_id(31), None);
        assert_eq!(GgmlType::from_name("tq2_0"), Some(GgmlType::TQ2_0));
    }

    #[test]
    fn every_id_round_trips() {
        for r in TABLE {
            assert_eq!(GgmlType::from_id(r.1), Some(r.0));
            assert_eq!(r.0.id(), r.1);
        }
    }

    #[test]
    fn tensor_bytes_checks_blocks() {
        assert_eq!(GgmlType::TQ2_0.tensor_bytes(&[512, 3]), Some(2 * 66 * 3));
        assert_eq!(GgmlType::TQ2_0.tensor_bytes(&[100, 3]), None);
        assert_eq!(GgmlType::F32.tensor_bytes(&[1]), Some(4));
    }
}
