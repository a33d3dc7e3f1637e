//! Flatline's storage-agnostic core: the account, key, username and invite rules, behind storage traits.
//!
//! No HTTP, no SQL, no wall clock, no global state: time comes from a [`time::Clock`], randomness from a
//! [`random::SecureRandom`], persistence from the traits in [`store`].
#![warn(missing_docs)]
// Input paths must not panic; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod account;
pub mod attachments;
pub mod auth;
pub mod chat;
pub mod code;
pub mod contacts;
pub mod credentials;
pub mod crypto;
pub mod devices;
pub mod ids;
pub mod invites;
pub mod keys;
pub mod manifest;
pub mod messages;
pub mod profiles;
pub mod random;
pub mod ratelimit;
pub mod registration;
pub mod sealed;
pub mod server_state;
pub mod shortcodes;
pub mod store;
pub mod time;
pub mod usernames;
pub mod zk;
