//! cgroups (placeholder until written)
