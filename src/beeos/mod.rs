//! The BeeOS client: typed calls to the BeeOS public API (`/api/v1/instances`, the deploy catalog),
//! its wire types, its errors and a client-side rate limit per credential.
//!
//! This module knows nothing of Kubernetes: it never imports `kube`, `k8s-openapi` or the `crd`
//! module. Translating a `BeeosInstance` spec into a
//! [`DeployRequest`](crate::beeos::DeployRequest) happens in the controller. The client never
//! retries on its own; every error says whether a retry may help
//! ([`Error::class`](crate::beeos::Error::class),
//! [`Error::retry_after`](crate::beeos::Error::retry_after)) and the caller decides.

mod client;
mod credential;
mod error;
mod ratelimit;
mod types;

pub use client::{BeeosClient, CallObserver, ClientOptions, DEFAULT_TIMEOUT};
pub use credential::{Credential, Fingerprint};
pub use error::{ApiError, Error, ErrorClass, Operation, parse_retry_after};
pub use ratelimit::RateLimiters;
pub use types::{
    Connectivity, DeployRequest, DesiredStatus, Instance, InstancePage, InstanceStatus, ListQuery,
    MAX_PAGE_SIZE, Model, Provider, ProviderCapabilities, ProviderMeta, Region,
};
