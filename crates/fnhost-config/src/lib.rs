//! fnhost-config
