//! fnhost-pool
