//! fnhost-layers
