//! The Flatline server: HTTP API, configuration, authentication and SQL stores around `flatline-core`.

pub mod chat;
pub mod cli;
pub mod cli_invites;
pub mod cli_sealed;
pub mod config;
pub mod dev_idp;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "fuzzing")]
pub mod fuzzing_zk;
pub mod http;
pub mod metrics;
pub mod oidc;
pub mod secrets;
pub mod serve;
pub mod state;
pub mod storage;
pub mod store;
pub mod system;
pub mod tls;
pub mod trust;
