//! The error discipline every `trit_*` entry point follows: return codes, a thread-local
//! last-error string, and `catch_unwind` so that no panic crosses into C.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const TRIT_OK: c_int = 0;
/// A NULL pointer where a value is required, a string that is not UTF-8, or a value out of range.
pub const TRIT_ERR_INVALID_ARGUMENT: c_int = -1;
/// The operation itself failed (missing file, bad model or data, training error); see trit_last_error().
pub const TRIT_ERR_FAILED: c_int = -2;
/// A bug inside libtrit (a Rust panic), caught at the boundary; see trit_last_error().
pub const TRIT_ERR_INTERNAL: c_int = -3;

/// Why a call failed; each kind maps to one return code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl CallError {
    fn code(&self) -> c_int {
        match self {
            CallError::InvalidArgument(_) => TRIT_ERR_INVALID_ARGUMENT,
            CallError::Failed(_) => TRIT_ERR_FAILED,
        }
    }
}

pub(crate) type CallResult<T> = Result<T, CallError>;

pub(crate) fn invalid(msg: impl Into<String>) -> CallError {
    CallError::InvalidArgument(msg.into())
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Store `msg` as this thread's last error (interior NUL bytes become spaces).
pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::default());
}

/// Pointer to this thread's last error; valid until this thread's next `trit_*` call.
/// While the thread is being torn down (its thread-locals gone) the message is "".
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.try_with(|e| e.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

/// For entry points that cannot fail (constants, getters): `f` under `catch_unwind` all the
/// same, so that not even a bug lets a panic unwind into C; `fallback` if it panics.
pub(crate) fn no_panic<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into());
    format!("internal error (panic caught at the FFI boundary): {what}")
}

/// Run `f` for an entry point returning a status code: the last error is cleared first, then
/// set from an error or a caught panic; the result is `TRIT_OK` or a negative `TRIT_ERR_*`.
pub(crate) fn call(name: &str, f: impl FnOnce() -> CallResult<()>) -> c_int {
    call_value(name, |code| code, || f().map(|()| TRIT_OK))
}

/// Like [`call`] for an entry point whose successful result is a non-negative number.
/// `on_err` turns the negative code into the entry point's return value.
pub(crate) fn call_value<T>(name: &str, on_err: impl Fn(c_int) -> T, f: impl FnOnce() -> CallResult<T>) -> T {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            let msg = format!("{name}: {e}");
            tracing::debug!("{msg}");
            set_last_error(&msg);
            on_err(e.code())
        }
        Err(payload) => {
            let msg = format!("{name}: {}", panic_message(payload.as_ref()));
            tracing::error!("{msg}");
            set_last_error(&msg);
            on_err(TRIT_ERR_INTERNAL)
        }
    }
}

/// A required, NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> CallResult<&'a str> {
    if p.is_null() {
        return Err(invalid(format!("{name} must not be NULL")));
    }
    // SAFETY: non-null and NUL-terminated by this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| invalid(format!("{name} is not valid UTF-8")))
}

/// An optional string argument: NULL is `None`.
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(p: *const c_char, name: &str) -> CallResult<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { str_arg(p, name) }.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: last_error_ptr is a NUL-terminated string alive until the next call.
        unsafe { CStr::from_ptr(last_error_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let rc = call("trit_test", || panic!("boom {}", 42));
        assert_eq!(rc, TRIT_ERR_INTERNAL);
        assert!(last_error().starts_with("trit_test: internal error") && last_error().contains("boom 42"));
        let v = call_value("trit_test", i64::from, || -> CallResult<i64> { panic!("static str") });
        assert_eq!(v, TRIT_ERR_INTERNAL as i64);
        assert!(last_error().contains("static str"));
    }

    #[test]
    fn errors_map_to_codes_and_success_clears_the_message() {
        assert_eq!(call("f", || Err(invalid("bad x"))), TRIT_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error(), "f: bad x");
        let e = anyhow::anyhow!("root cause").context("outer");
        assert_eq!(call("g", || Err(e.into())), TRIT_ERR_FAILED);
        assert_eq!(last_error(), "g: outer: root cause");
        assert_eq!(call("h", || Ok(())), TRIT_OK);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn the_last_error_is_per_thread() {
        call("main", || Err(invalid("here")));
        std::thread::spawn(|| {
            assert_eq!(last_error(), "");
            call("other", || Err(invalid("there")));
        })
        .join()
        .unwrap();
        assert_eq!(last_error(), "main: here");
    }

    #[test]
    fn no_panic_returns_the_fallback() {
        assert_eq!(no_panic(7, || -> i32 { panic!("x") }), 7);
        assert_eq!(no_panic(7, || 3), 3);
    }

    #[test]
    fn nul_bytes_in_messages_do_not_lose_the_message() {
        set_last_error("a\0b");
        assert_eq!(last_error(), "a b");
    }
}
