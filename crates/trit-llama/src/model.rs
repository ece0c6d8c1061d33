use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use crate::{log, Error, Result, Token};

/// How to load a model (llama.cpp's `llama_model_params`, the parts trit exposes).
#[derive(Debug, Clone)]
pub struct ModelParams {
    /// Layers to offload to a GPU (`-ngl`); negative means all.
    pub n_gpu_layers: i32,
    pub use_mmap: bool,
    /// Load only the vocabulary (tokenizer tests, `/tokenize`).
    pub vocab_only: bool,
    /// Use no GPU device at all, even where one is registered (llama.cpp's `--device none`):
    /// with `-ngl 0` the scheduler would otherwise still place weightless nodes (e.g. a training
    /// graph's backward ops) on a registered GPU backend.
    pub cpu_only: bool,
    /// Where tensors go, overriding the layer placement (`-ot PATTERN=BUFFER_TYPE`, llama.cpp's
    /// `--override-tensor`): tensors whose name matches the regex PATTERN are loaded into the
    /// named buffer type (`CPU`, `TritVulkan0`, `Vulkan0`, ...). First match wins.
    pub tensor_overrides: Vec<(String, String)>,
    /// Let the CPU's extra buffer types take weights (llama.cpp's `--repack`, default on;
    /// `-nr`/`--no-repack` turns it off): with trit's kernels installed, TQ1_0 weights kept
    /// on the CPU are re-encoded as TQ2_0 at load (`trit_kernels::repack`). Training turns it
    /// off (its backward ops read the weights as stored).
    pub use_extra_bufts: bool,
}

impl Default for ModelParams {
    fn default() -> Self {
        Self {
            n_gpu_layers: -1,
            use_mmap: true,
            vocab_only: false,
            cpu_only: false,
            tensor_overrides: Vec::new(),
            use_extra_bufts: true,
        }
    }
}

/// The buffer type of a registered device (or the CPU's) called `name`.
fn buffer_type_named(name: &str) -> Result<trit_sys::ggml_backend_buffer_type_t> {
    let mut known = Vec::new();
    // SAFETY: the device registry is initialised by crate::init; devices and their buffer types
    // live for the process; names are NUL-terminated static strings.
    unsafe {
        for i in 0..trit_sys::ggml_backend_dev_count() {
            let buft = trit_sys::ggml_backend_dev_buffer_type(trit_sys::ggml_backend_dev_get(i));
            if buft.is_null() {
                continue;
            }
            let n = CStr::from_ptr(trit_sys::ggml_backend_buft_name(buft)).to_string_lossy().into_owned();
            if n.eq_ignore_ascii_case(name) {
                return Ok(buft);
            }
            known.push(n);
        }
    }
    Err(Error::Invalid(format!("unknown buffer type '{name}' in a tensor override (available: {})", known.join(", "))))
}

/// A loaded model. Freed on drop; contexts and adapters borrow it.
pub struct Model {
    ptr: NonNull<trit_sys::llama_model>,
    vocab: NonNull<trit_sys::llama_vocab>,
    path: PathBuf,
}

// SAFETY: llama.cpp models are immutable after load and may be shared between threads
// (llama-server does so); all mutation happens through contexts.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

/// One chat turn for [`Model::apply_chat_template`].
#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| Error::Invalid(format!("{}: path contains a NUL byte", path.display())))
}

impl Model {
    pub fn load(path: &Path, params: &ModelParams) -> Result<Self> {
        crate::init();
        if !path.is_file() {
            return Err(Error::ModelLoad { path: path.into(), reason: "no such file".into() });
        }
        let cpath = c_path(path)?;
        // SAFETY: plain struct returned by value.
        let mut p = unsafe { trit_sys::llama_model_default_params() };
        p.n_gpu_layers = params.n_gpu_layers;
        p.vocab_only = params.vocab_only;
        p.use_extra_bufts = params.use_extra_bufts;
        if !params.use_mmap {
            p.load_mode = trit_sys::LLAMA_LOAD_MODE_NONE;
        }
        // An empty NULL-terminated device list: CPU only. Lives until the load returns.
        let mut no_devices = [std::ptr::null_mut()];
        if params.cpu_only {
            p.devices = no_devices.as_mut_ptr();
        }
        // NULL-terminated overrides; the patterns live until the load returns.
        let patterns = params
            .tensor_overrides
            .iter()
            .map(|(pat, _)| {
                CString::new(pat.as_str())
                    .map_err(|_| Error::Invalid(format!("tensor override pattern '{pat}' contains a NUL byte")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut overrides = Vec::with_capacity(patterns.len() + 1);
        for (pat, (_, buft)) in patterns.iter().zip(&params.tensor_overrides) {
            overrides.push(trit_sys::llama_model_tensor_buft_override {
                pattern: pat.as_ptr(),
                buft: buffer_type_named(buft)?,
            });
        }
        overrides
            .push(trit_sys::llama_model_tensor_buft_override { pattern: std::ptr::null(), buft: std::ptr::null_mut() });
        if !params.tensor_overrides.is_empty() {
            p.tensor_buft_overrides = overrides.as_ptr();
        }
        log::take_last_error();
        // SAFETY: cpath is a valid C string, no_devices and overrides NULL-terminated lists whose
        // patterns are alive, all for the duration of the call; p is initialised.
        let raw = unsafe { trit_sys::llama_model_load_from_file(cpath.as_ptr(), p) };
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::ModelLoad { path: path.into(), reason: log::last_error_or("unknown error") })?;
        // SAFETY: ptr is a valid model; the vocab lives as long as the model.
        let vocab = unsafe { trit_sys::llama_model_get_vocab(ptr.as_ptr()) };
        let vocab = NonNull::new(vocab as *mut _)
            .ok_or_else(|| Error::ModelLoad { path: path.into(), reason: "model has no vocabulary".into() })?;
        Ok(Self { ptr, vocab, path: path.into() })
    }

    pub fn as_ptr(&self) -> *mut trit_sys::llama_model {
        self.ptr.as_ptr()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn vocab(&self) -> *const trit_sys::llama_vocab {
        self.vocab.as_ptr()
    }

    /// llama.cpp's one-line description, e.g. "bitnet 2B TQ2_0 - 2.06 bpw ternary".
    pub fn desc(&self) -> String {
        let mut buf = [0 as c_char; 256];
        // SAFETY: buf is writable for its length; llama.cpp NUL-terminates.
        unsafe { trit_sys::llama_model_desc(self.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        // SAFETY: NUL-terminated above.
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    }

    /// Bytes of weights.
    pub fn size(&self) -> u64 {
        // SAFETY: valid model.
        unsafe { trit_sys::llama_model_size(self.as_ptr()) }
    }

    pub fn n_params(&self) -> u64 {
        // SAFETY: valid model.
        unsafe { trit_sys::llama_model_n_params(self.as_ptr()) }
    }

    pub fn n_vocab(&self) -> usize {
        // SAFETY: valid vocab.
        unsafe { trit_sys::llama_vocab_n_tokens(self.vocab()) as usize }
    }

    pub fn n_ctx_train(&self) -> u32 {
        // SAFETY: valid model.
        unsafe { trit_sys::llama_model_n_ctx_train(self.as_ptr()) as u32 }
    }

    pub fn bos(&self) -> Token {
        // SAFETY: valid vocab.
        unsafe { trit_sys::llama_vocab_bos(self.vocab()) }
    }

    pub fn eos(&self) -> Token {
        // SAFETY: valid vocab.
        unsafe { trit_sys::llama_vocab_eos(self.vocab()) }
    }

    /// Whether the model wants a BOS token at the start of a sequence.
    pub fn add_bos(&self) -> bool {
        // SAFETY: valid vocab.
        unsafe { trit_sys::llama_vocab_get_add_bos(self.vocab()) }
    }

    /// End-of-generation token (EOS, EOT, ...).
    pub fn is_eog(&self, t: Token) -> bool {
        // SAFETY: valid vocab; llama.cpp range-checks nothing here, so check ourselves.
        (0..self.n_vocab() as Token).contains(&t) && unsafe { trit_sys::llama_vocab_is_eog(self.vocab(), t) }
    }

    /// Tokenise `text`. `add_special` adds BOS/EOS as the model asks; `parse_special`
    /// turns special-token text such as `<|eot_id|>` into its token.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        let len = i32::try_from(text.len()).map_err(|_| Error::Tokenize("text over 2 GiB".into()))?;
        let mut out: Vec<Token> = vec![0; text.len() + 2];
        for _ in 0..2 {
            // SAFETY: text is valid for len bytes; out is writable for out.len() tokens.
            let n = unsafe {
                trit_sys::llama_tokenize(
                    self.vocab(),
                    text.as_ptr() as *const c_char,
                    len,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return Ok(out);
            }
            if n == i32::MIN {
                return Err(Error::Tokenize("token count overflows".into()));
            }
            out.resize((-n) as usize, 0);
        }
        Err(Error::Tokenize("buffer size mismatch".into()))
    }

    /// The bytes of one token (special tokens rendered when `special`).
    pub fn token_bytes(&self, t: Token, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe {
                trit_sys::llama_token_to_piece(
                    self.vocab(),
                    t,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len() as i32,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize((-n) as usize, 0);
        }
    }

    /// Text of a token sequence (lossy UTF-8 only at the very end).
    pub fn detokenize(&self, tokens: &[Token], special: bool) -> String {
        let bytes: Vec<u8> = tokens.iter().flat_map(|&t| self.token_bytes(t, special)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A metadata value as a string, if the key exists.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0 as c_char; 4096];
        loop {
            // SAFETY: key is a C string; buf is writable for its length.
            let n =
                unsafe { trit_sys::llama_model_meta_val_str(self.as_ptr(), key.as_ptr(), buf.as_mut_ptr(), buf.len()) };
            if n < 0 {
                return None;
            }
            if (n as usize) < buf.len() {
                // SAFETY: NUL-terminated by llama.cpp.
                return Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned());
            }
            buf.resize(n as usize + 1, 0);
        }
    }

    /// The model's built-in chat template, if it has one.
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: valid model; a null name asks for the default template.
        let p = unsafe { trit_sys::llama_model_chat_template(self.as_ptr(), std::ptr::null()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: NUL-terminated string owned by the model.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// Render a conversation with `template` (a template name such as "llama3" or a
    /// Jinja text that llama.cpp recognises), ending with the assistant prefix when
    /// `add_assistant`.
    pub fn apply_chat_template(template: &str, messages: &[ChatMessage], add_assistant: bool) -> Result<String> {
        let tmpl = CString::new(template).map_err(|_| Error::ChatTemplate("NUL in template".into()))?;
        let owned: Vec<(CString, CString)> = messages
            .iter()
            .map(|m| {
                Ok((
                    CString::new(m.role.as_str()).map_err(|_| Error::ChatTemplate("NUL in role".into()))?,
                    CString::new(m.content.as_str()).map_err(|_| Error::ChatTemplate("NUL in message".into()))?,
                ))
            })
            .collect::<Result<_>>()?;
        let msgs: Vec<trit_sys::llama_chat_message> =
            owned.iter().map(|(r, c)| trit_sys::llama_chat_message { role: r.as_ptr(), content: c.as_ptr() }).collect();
        let mut buf = vec![0u8; 2 * messages.iter().map(|m| m.content.len() + m.role.len()).sum::<usize>() + 256];
        for _ in 0..2 {
            // SAFETY: msgs point into `owned`, alive for the call; buf is writable.
            let n = unsafe {
                trit_sys::llama_chat_apply_template(
                    tmpl.as_ptr(),
                    msgs.as_ptr(),
                    msgs.len(),
                    add_assistant,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len() as i32,
                )
            };
            if n < 0 {
                return Err(Error::ChatTemplate(
                    "llama.cpp does not recognise this chat template (pass --chat-template NAME, e.g. llama3, chatml)"
                        .into(),
                ));
            }
            if (n as usize) <= buf.len() {
                buf.truncate(n as usize);
                return String::from_utf8(buf).map_err(|_| Error::ChatTemplate("template output is not UTF-8".into()));
            }
            buf.resize(n as usize, 0);
        }
        Err(Error::ChatTemplate("buffer size mismatch".into()))
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_model_load_from_file and is freed once;
        // contexts and adapters borrow the model and are gone by now.
        unsafe { trit_sys::llama_model_free(self.ptr.as_ptr()) };
    }
}
