//! The same library as a Node.js addon (N-API): node's shim loads it with
//! `process.dlopen` and gets `serve` and `initFailed`. The N-API and libuv
//! functions are looked up in the running node at registration (`dlsym`),
//! so the library has no undefined symbols and Python can still load it.

use std::ffi::{c_char, c_void, CStr};
use std::os::raw::c_int;
use std::ptr;
use std::sync::OnceLock;

type Env = *mut c_void;
type Value = *mut c_void;
type CallbackInfo = *mut c_void;
type Status = c_int;
type Callback = unsafe extern "C" fn(Env, CallbackInfo) -> Value;

type CreateFunction =
    unsafe extern "C" fn(Env, *const c_char, usize, Callback, *mut c_void, *mut Value) -> Status;
type SetNamedProperty = unsafe extern "C" fn(Env, Value, *const c_char, Value) -> Status;
type GetCbInfo = unsafe extern "C" fn(
    Env,
    CallbackInfo,
    *mut usize,
    *mut Value,
    *mut Value,
    *mut *mut c_void,
) -> Status;
type GetValueInt64 = unsafe extern "C" fn(Env, Value, *mut i64) -> Status;
type CreateInt64 = unsafe extern "C" fn(Env, i64, *mut Value) -> Status;
type GetValueStringUtf8 =
    unsafe extern "C" fn(Env, Value, *mut c_char, usize, *mut usize) -> Status;
type GetUvEventLoop = unsafe extern "C" fn(Env, *mut *mut c_void) -> Status;
type ThrowError = unsafe extern "C" fn(Env, *const c_char, *const c_char) -> Status;
type UvLoopFork = unsafe extern "C" fn(*mut c_void) -> c_int;

/// The few N-API and libuv entry points the addon uses.
struct Api {
    create_function: CreateFunction,
    set_named_property: SetNamedProperty,
    get_cb_info: GetCbInfo,
    get_value_int64: GetValueInt64,
    create_int64: CreateInt64,
    get_value_string_utf8: GetValueStringUtf8,
    get_uv_event_loop: GetUvEventLoop,
    throw_error: ThrowError,
    uv_loop_fork: UvLoopFork,
}

static API: OnceLock<Option<Api>> = OnceLock::new();

/// `name`'s address in the process (node exports N-API and libuv).
fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

macro_rules! resolve {
    ($name:literal, $ty:ty) => {{
        let address = lookup($name)?;
        // SAFETY: node exports this symbol with the documented N-API / libuv
        // C signature that `$ty` declares.
        unsafe { std::mem::transmute::<*mut c_void, $ty>(address) }
    }};
}

fn api() -> Option<&'static Api> {
    API.get_or_init(|| {
        Some(Api {
            create_function: resolve!(c"napi_create_function", CreateFunction),
            set_named_property: resolve!(c"napi_set_named_property", SetNamedProperty),
            get_cb_info: resolve!(c"napi_get_cb_info", GetCbInfo),
            get_value_int64: resolve!(c"napi_get_value_int64", GetValueInt64),
            create_int64: resolve!(c"napi_create_int64", CreateInt64),
            get_value_string_utf8: resolve!(c"napi_get_value_string_utf8", GetValueStringUtf8),
            get_uv_event_loop: resolve!(c"napi_get_uv_event_loop", GetUvEventLoop),
            throw_error: resolve!(c"napi_throw_error", ThrowError),
            uv_loop_fork: resolve!(c"uv_loop_fork", UvLoopFork),
        })
    })
    .as_ref()
}

/// Up to `N` arguments of the call (missing ones are null).
///
/// # Safety
/// `env` and `info` must be the ones node passed to the running callback.
unsafe fn args<const N: usize>(api: &Api, env: Env, info: CallbackInfo) -> [Value; N] {
    let mut argv = [ptr::null_mut(); N];
    let mut argc = N;
    // SAFETY: argv has room for argc values; the other outputs may be null.
    unsafe {
        (api.get_cb_info)(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    argv
}

/// # Safety
/// `env` must be the running callback's and `value` one of its values.
unsafe fn int64(api: &Api, env: Env, value: Value) -> Option<i64> {
    let mut out = 0i64;
    // SAFETY: the caller passes a live env and value; out is writable.
    let status = unsafe { (api.get_value_int64)(env, value, &mut out) };
    (status == 0).then_some(out)
}

/// # Safety
/// `env` must be the running callback's and `value` one of its values.
unsafe fn utf8(api: &Api, env: Env, value: Value) -> Option<Vec<u8>> {
    let mut len = 0usize;
    // SAFETY: a null buffer asks for the length only.
    let status = unsafe { (api.get_value_string_utf8)(env, value, ptr::null_mut(), 0, &mut len) };
    if status != 0 {
        return None;
    }
    let mut buf = vec![0u8; len + 1];
    // SAFETY: buf holds len bytes plus the terminating NUL node writes.
    let status = unsafe {
        (api.get_value_string_utf8)(env, value, buf.as_mut_ptr().cast(), buf.len(), &mut len)
    };
    buf.truncate(len);
    (status == 0).then_some(buf)
}

/// # Safety
/// `env` must be the running callback's.
unsafe fn int_value(api: &Api, env: Env, n: i64) -> Value {
    let mut out = ptr::null_mut();
    // SAFETY: the caller passes a live env; out is writable.
    unsafe { (api.create_int64)(env, n, &mut out) };
    out
}

/// # Safety
/// `env` must be the running callback's.
unsafe fn throw(api: &Api, env: Env, message: &CStr) -> Value {
    // SAFETY: the caller passes a live env; both strings are NUL-terminated.
    unsafe { (api.throw_error)(env, ptr::null(), message.as_ptr()) };
    ptr::null_mut()
}

/// `serve(controlFd, importUs)`: becomes the fork server; returns only in a
/// fresh clone, with its invocation socket's descriptor, after giving the
/// clone an event loop of its own.
unsafe extern "C" fn serve(env: Env, info: CallbackInfo) -> Value {
    let Some(api) = api() else {
        return ptr::null_mut();
    };
    // SAFETY: env and info are this callback's.
    let [control, import_us] = unsafe { args::<2>(api, env, info) };
    // SAFETY: env and the values are this callback's.
    let (control, import_us) = unsafe { (int64(api, env, control), int64(api, env, import_us)) };
    let (Some(control), Some(import_us)) = (control, import_us) else {
        // SAFETY: env is this callback's.
        return unsafe { throw(api, env, c"serve(controlFd, importUs) takes two integers") };
    };
    // Found once, in the zygote, while it is idle and the lock free.
    let signal_lock = crate::uv_signal_lock::find();
    if let Err(why) = &signal_lock {
        eprintln!("fnhost: libuv's signal lock is not renewed per clone: {why}");
    }
    let fd = crate::fnhost_zygote_serve(control as c_int, import_us.max(0) as u64);
    // In the clone now: a signal lock of its own (see uv_signal_lock).
    if let Ok(lock) = signal_lock {
        if let Err(e) = crate::uv_signal_lock::renew(lock) {
            eprintln!("fnhost: cannot give the clone a signal lock of its own: {e}");
            fnhost_sandbox::sys::exit_immediately(1);
        }
    }
    // In the clone now. libuv's epoll instance, its wake-up eventfd and
    // signal pipe are the zygote's (and every sibling clone's): without
    // new ones a clone would see other clones' events and lose its own
    // wake-ups. uv_loop_fork makes them anew and re-registers the watchers.
    let mut event_loop = ptr::null_mut();
    // SAFETY: env is this callback's; event_loop is writable.
    let status = unsafe { (api.get_uv_event_loop)(env, &mut event_loop) };
    // SAFETY: event_loop is node's live main loop; only this thread runs.
    if status != 0 || unsafe { (api.uv_loop_fork)(event_loop) } != 0 {
        eprintln!("fnhost: cannot give the clone an event loop of its own (uv_loop_fork failed)");
        fnhost_sandbox::sys::exit_immediately(1);
    }
    // SAFETY: env is this callback's.
    unsafe { int_value(api, env, i64::from(fd)) }
}

/// `initFailed(controlFd, json)`: reports that the handler could not be
/// loaded; returns 0, or -1 if the report could not be sent.
unsafe extern "C" fn init_failed(env: Env, info: CallbackInfo) -> Value {
    let Some(api) = api() else {
        return ptr::null_mut();
    };
    // SAFETY: env and info are this callback's.
    let [control, json] = unsafe { args::<2>(api, env, info) };
    // SAFETY: env and the values are this callback's.
    let (control, json) = unsafe { (int64(api, env, control), utf8(api, env, json)) };
    let (Some(control), Some(json)) = (control, json) else {
        // SAFETY: env is this callback's.
        return unsafe {
            throw(
                api,
                env,
                c"initFailed(controlFd, json) takes an integer and a string",
            )
        };
    };
    // SAFETY: json is a live buffer of json.len() bytes.
    let sent =
        unsafe { crate::fnhost_zygote_init_failed(control as c_int, json.as_ptr(), json.len()) };
    // SAFETY: env is this callback's.
    unsafe { int_value(api, env, i64::from(sent)) }
}

/// `exit(code)`: ends the clone at once. Node's own exit joins the V8
/// platform's worker threads, which exist only in the zygote: in a clone
/// it would wait forever.
unsafe extern "C" fn exit(env: Env, info: CallbackInfo) -> Value {
    let code = api().and_then(|api| {
        // SAFETY: env and info are this callback's.
        let [code] = unsafe { args::<1>(api, env, info) };
        // SAFETY: env and the value are this callback's.
        unsafe { int64(api, env, code) }
    });
    fnhost_sandbox::sys::exit_immediately(code.unwrap_or(1) as i32)
}

/// Node's entry point for an N-API addon: adds `serve`, `initFailed` and `exit` to
/// `exports`. Returns null (node then throws) outside node.
///
/// # Safety
/// Called by node only, with a live env and exports object.
#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: Env, exports: Value) -> Value {
    let Some(api) = api() else {
        return ptr::null_mut();
    };
    let functions = [
        (c"serve", serve as Callback),
        (c"initFailed", init_failed),
        (c"exit", exit),
    ];
    for (name, callback) in functions {
        let mut function = ptr::null_mut();
        // SAFETY: env is node's; the name is NUL-terminated (length
        // NAPI_AUTO_LENGTH = usize::MAX); function is writable.
        let created = unsafe {
            (api.create_function)(
                env,
                name.as_ptr(),
                usize::MAX,
                callback,
                ptr::null_mut(),
                &mut function,
            )
        };
        if created != 0 {
            return ptr::null_mut();
        }
        // SAFETY: exports and function are live values of env.
        let set = unsafe { (api.set_named_property)(env, exports, name.as_ptr(), function) };
        if set != 0 {
            return ptr::null_mut();
        }
    }
    exports
}
