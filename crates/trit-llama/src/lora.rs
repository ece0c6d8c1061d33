use std::marker::PhantomData;
use std::path::Path;
use std::ptr::NonNull;

use crate::{log, Error, Model, Result};

/// A LoRA adapter GGUF loaded by llama.cpp's own loader (`llama_adapter_lora_init`).
/// llama.cpp frees adapters with their model; this handle only borrows.
pub struct LoraAdapter<'m> {
    ptr: NonNull<trit_sys::llama_adapter_lora>,
    _model: PhantomData<&'m Model>,
}

impl<'m> LoraAdapter<'m> {
    pub fn load(model: &'m Model, path: &Path) -> Result<Self> {
        let cpath = std::ffi::CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| Error::Invalid("adapter path contains a NUL byte".into()))?;
        if !path.is_file() {
            return Err(Error::LoraLoad { path: path.into(), reason: "no such file".into() });
        }
        log::take_last_error();
        // SAFETY: valid model and C string; the adapter lives as long as the model.
        let raw = unsafe { trit_sys::llama_adapter_lora_init(model.as_ptr(), cpath.as_ptr()) };
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::LoraLoad { path: path.into(), reason: log::last_error_or("unknown error") })?;
        Ok(Self { ptr, _model: PhantomData })
    }

    pub fn as_ptr(&self) -> *mut trit_sys::llama_adapter_lora {
        self.ptr.as_ptr()
    }
}
