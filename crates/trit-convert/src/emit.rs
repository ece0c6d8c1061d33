//! Writing tensors row by row into the GGUF stream: ternary projections (TQ2_0 / TQ1_0 with a
//! separate scale, or dequantised F16), F32 norms and the F16 / Q8_0 embedding.

use indicatif::ProgressBar;
use trit_gguf::{quant, GgmlType, GgufStream};

use crate::error::Result;

/// Bytes buffered before handing them to the stream.
const FLUSH_BYTES: usize = 8 << 20;

/// A GGUF stream plus the progress bar that follows it.
pub(crate) struct Emitter {
    stream: GgufStream,
    bar: ProgressBar,
    buf: Vec<u8>,
}

impl Emitter {
    pub(crate) fn new(stream: GgufStream, bar: ProgressBar) -> Self {
        Emitter { stream, bar, buf: Vec::with_capacity(FLUSH_BYTES + (1 << 16)) }
    }

    fn begin(&mut self, name: &str) -> Result<()> {
        self.bar.set_message(name.to_string());
        self.stream.begin_tensor(name)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.stream.write_chunk(&self.buf)?;
        self.bar.inc(self.buf.len() as u64);
        self.buf.clear();
        Ok(())
    }

    fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        self.flush()?;
        self.stream.end_tensor()?;
        Ok(())
    }

    /// A ternary `[rows, cols]` matrix whose effective weights are `code × scale`.
    /// TQ types store the codes with block scale 1.0 (the caller declares `<name>.scale`
    /// and writes it with [`Emitter::f32_tensor`]); F16 stores `code × scale`.
    pub(crate) fn ternary(
        &mut self,
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        scale: f32,
        mut fill_row: impl FnMut(usize, &mut [i8]) -> Result<()>,
    ) -> Result<()> {
        self.begin(name)?;
        let mut codes = vec![0i8; cols];
        let mut values = Vec::with_capacity(cols);
        for r in 0..rows {
            fill_row(r, &mut codes)?;
            match ty {
                GgmlType::TQ2_0 => quant::pack_tq2_0(&codes, 1.0, &mut self.buf)
                    .expect("codes are ternary and rows a multiple of 256 (checked by the planner)"),
                GgmlType::TQ1_0 => quant::pack_tq1_0(&codes, 1.0, &mut self.buf)
                    .expect("codes are ternary and rows a multiple of 256 (checked by the planner)"),
                GgmlType::F16 => {
                    values.clear();
                    values.extend(codes.iter().map(|&c| f32::from(c) * scale));
                    quant::f32_to_f16_bytes(&values, &mut self.buf);
                }
                other => unreachable!("ternary tensors are TQ2_0, TQ1_0 or F16, not {other}"),
            }
            self.maybe_flush()?;
        }
        self.end()
    }

    /// A float matrix of `rows` rows stored as F32, F16 or Q8_0.
    pub(crate) fn float_rows(
        &mut self,
        name: &str,
        ty: GgmlType,
        rows: usize,
        mut fill_row: impl FnMut(usize, &mut Vec<f32>) -> Result<()>,
    ) -> Result<()> {
        self.begin(name)?;
        let mut row = Vec::new();
        for r in 0..rows {
            fill_row(r, &mut row)?;
            match ty {
                GgmlType::F32 => self.buf.extend(row.iter().flat_map(|v| v.to_le_bytes())),
                GgmlType::F16 => quant::f32_to_f16_bytes(&row, &mut self.buf),
                GgmlType::Q8_0 => quant::quantize_q8_0(&row, &mut self.buf)
                    .expect("row length is a multiple of 32 (checked by the planner)"),
                other => unreachable!("float tensors are F32, F16 or Q8_0, not {other}"),
            }
            self.maybe_flush()?;
        }
        self.end()
    }

    /// A small F32 tensor given whole.
    pub(crate) fn f32_tensor(&mut self, name: &str, values: &[f32]) -> Result<()> {
        self.float_rows(name, GgmlType::F32, 1, |_, row| {
            row.clear();
            row.extend_from_slice(values);
            Ok(())
        })
    }

    /// Renames the finished file into place.
    pub(crate) fn finish(self) -> Result<std::path::PathBuf> {
        self.bar.finish_and_clear();
        Ok(self.stream.finish()?)
    }
}
