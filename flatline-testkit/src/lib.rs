//! Test kit for Flatline and for Rust developers embedding its core: deterministic time and randomness, an
//! in-memory implementation of every storage trait, and one conformance suite that every backend must pass.

pub mod client;
pub mod clock;
pub mod conformance;
pub mod fake_idp;
pub mod fixtures;
pub mod idp;
pub mod memory;
pub mod remote;
pub mod usernames;

pub use client::{SimClient, UsernameForm};
pub use clock::{MockClock, SeededRng};
pub use memory::MemoryStore;
pub use usernames::SimUsername;
