//! fnhost-shim
