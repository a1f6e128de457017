//! The native library a zygote's language runtime loads (Python: through
//! ctypes; Node.js: as an N-API addon, see [`node`]) to become a fork
//! server. It only exposes a C ABI over `fnhost_zygote::forkserver`; all
//! sandbox logic lives in Rust there.

use std::os::fd::BorrowedFd;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use fnhost_zygote::protocol::InitFailure;
use fnhost_zygote::{arenas, forkserver};

pub mod node;
pub mod uv_signal_lock;

/// Serves clone requests on `control_fd`. Returns only in a new, isolated
/// clone: the descriptor of its invocation socket. The zygote itself never
/// returns (it exits when the daemon closes the control socket).
#[no_mangle]
pub extern "C" fn fnhost_zygote_serve(control_fd: c_int, import_us: u64) -> c_int {
    match catch_unwind(AssertUnwindSafe(|| {
        forkserver::serve(control_fd, import_us)
    })) {
        Ok(fd) => fd,
        Err(_) => std::process::abort(),
    }
}

/// Reports that the runtime could not import the function. `json` points to
/// `len` bytes of `{"stage", "errorType", "errorMessage", "stackTrace"}`.
/// Returns 0 on success, -1 if the report could not be sent.
///
/// # Safety
/// `json` must be valid for reads of `len` bytes.
#[no_mangle]
// SAFETY: unsafe to call; the contract is the `# Safety` section above.
pub unsafe extern "C" fn fnhost_zygote_init_failed(
    control_fd: c_int,
    json: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: the caller guarantees `json` is valid for `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(json, len) };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let failure: InitFailure = serde_json_from(bytes)?;
        // SAFETY: the runtime passes its inherited control descriptor.
        let control = unsafe { BorrowedFd::borrow_raw(control_fd) };
        forkserver::report_init_failure(control, failure).ok()
    }));
    match result {
        Ok(Some(())) => 0,
        _ => -1,
    }
}

/// CPython's `PyObjectArenaAllocator.alloc`: an arena of `size` bytes from
/// huge-page chunks ([`fnhost_zygote::arenas`]); NULL when out of memory.
#[no_mangle]
pub extern "C" fn fnhost_arena_alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    match catch_unwind(|| arenas::alloc(size as u64)) {
        Ok(addr) => addr as *mut c_void,
        Err(_) => std::process::abort(),
    }
}

/// CPython's `PyObjectArenaAllocator.free`.
///
/// # Safety
/// `ptr` is an arena of `size` bytes the runtime no longer uses, from
/// [`fnhost_arena_alloc`] or the allocator the runtime had before.
#[no_mangle]
// SAFETY: unsafe to call; the contract is the `# Safety` section above.
pub unsafe extern "C" fn fnhost_arena_free(_ctx: *mut c_void, ptr: *mut c_void, size: usize) {
    // SAFETY: forwarded from the caller.
    let freed = catch_unwind(|| unsafe { arenas::free(ptr as u64, size as u64) });
    if freed.is_err() {
        std::process::abort();
    }
}

fn serde_json_from(bytes: &[u8]) -> Option<InitFailure> {
    fnhost_zygote::protocol::parse_init_failure(bytes)
}
