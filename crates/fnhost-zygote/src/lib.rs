//! fnhost-zygote
