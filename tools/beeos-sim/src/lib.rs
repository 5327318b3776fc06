//! A simulator of the BeeOS public API (instances and deploy catalog) for tests and the demo:
//! owner-scoped tokens, lifecycle timing, pagination and search, the contract's validation
//! errors, 409, 413, 429 with `Retry-After`, injected faults including "created, but the
//! response was lost", and a test-only admin API under `/_sim/`. Not shipped.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use beeos_sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default().with_token("oag_test", "alice")).await?;
//! let base = sim.base_url(); // http://127.0.0.1:PORT
//! # Ok(()) }
//! ```

mod admin;
mod api;
mod app;
/// The built-in catalog: providers, regions, models and variants.
pub mod catalog;
mod config;
mod deploy;
mod dto;
mod errors;
mod faults;
mod ratelimit;
mod route;
mod server;
mod store;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{Settings, SettingsPatch, SimConfig, parse_token_pair, parse_tokens_file};
pub use deploy::BODY_LIMIT;
pub use faults::{
    DEFAULT_HOLD_MS, DropDeployResponse, DropMode, FAULT_STATUSES, Faults, RouteFault,
    parse_fault_flag,
};
pub use route::Route;
pub use server::serve;

/// A simulator running on the current tokio runtime, on `127.0.0.1` and a free port.
/// Dropping it stops the server and closes every connection.
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Simulator {
    /// Binds `127.0.0.1:0` and starts serving `config` in a task of the current runtime.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = serve(listener, config).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        Ok(Simulator { addr, task })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
