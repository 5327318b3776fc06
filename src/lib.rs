//! beeos-operator: runs BeeOS AI-agent instances from `BeeosInstance` resources.

/// The BeeOS API client: wire types, errors, credential and per-credential rate limit.
pub mod beeos;
