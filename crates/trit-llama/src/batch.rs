use crate::{Error, Result, Token};

/// A batch of tokens for [`crate::Context::decode`], owning llama.cpp's buffers.
pub struct Batch {
    raw: trit_sys::llama_batch,
    capacity: usize,
}

impl Batch {
    /// A batch for up to `capacity` tokens, each in one sequence.
    pub fn new(capacity: usize) -> Self {
        // SAFETY: allocates token/pos/seq/logits arrays for `capacity` entries, one seq id each.
        let raw = unsafe { trit_sys::llama_batch_init(capacity as i32, 0, 1) };
        Self { raw, capacity }
    }

    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    pub fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append a token at position `pos` of sequence `seq`; `logits` asks for its output.
    pub fn push(&mut self, token: Token, pos: i32, seq: i32, logits: bool) -> Result<()> {
        let i = self.len();
        if i >= self.capacity {
            return Err(Error::Invalid(format!("batch is full ({} tokens)", self.capacity)));
        }
        // SAFETY: i < capacity, and llama_batch_init allocated every array for capacity
        // entries (seq_id[i] for one id).
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = logits as i8;
        }
        self.raw.n_tokens += 1;
        Ok(())
    }

    pub(crate) fn raw(&self) -> trit_sys::llama_batch {
        self.raw
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: raw came from llama_batch_init and is freed once.
        unsafe { trit_sys::llama_batch_free(self.raw) };
    }
}
