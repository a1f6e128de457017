//! Example native Rust function for fnhost (`runtime = "rust"`): greets by
//! name. `{"fail": "why"}` returns a typed error, `{"panic": true}` panics.
//!
//! Deploy: `cargo build --release -p fnhost-example-rust-hello`, copy
//! `target/release/rust-hello` into the function's code directory, and set
//! `runtime = "rust"`, `command = ["/var/task/rust-hello"]`.
#![forbid(unsafe_code)]

use std::error::Error;

use fnhost_sdk::{Context, HandlerError, Value};
use serde_json::json;

fn handler(event: Value, ctx: &Context) -> Result<Value, Box<dyn Error>> {
    if let Some(why) = event.get("fail").and_then(Value::as_str) {
        return Err(HandlerError::new("HelloError", why).into());
    }
    if event.get("panic").and_then(Value::as_bool) == Some(true) {
        panic!("asked to panic");
    }
    let name = event.get("name").and_then(Value::as_str).unwrap_or("world");
    Ok(json!({
        "message": format!("hello, {name}"),
        "function": ctx.function_name,
        "request_id": ctx.request_id,
        "memory_limit_mb": ctx.memory_limit_mb,
        "pid": std::process::id(),
    }))
}

fn main() {
    // Anything set up here is done once, in the zygote, and shared by every
    // clone; it must not start threads.
    fnhost_sdk::run(handler)
}
