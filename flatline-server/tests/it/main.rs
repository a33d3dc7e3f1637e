//! flatline-server integration tests: one binary, modules per endpoint group.

mod accounts;
mod auth;
mod keys;
mod postgres;
mod server;
mod sqlite;
mod support;
