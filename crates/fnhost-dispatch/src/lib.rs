//! fnhost-dispatch
