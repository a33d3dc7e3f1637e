//! flatline-server integration tests: one binary, modules per endpoint group.

mod accounts;
mod auth;
mod contacts;
mod contacts_props;
mod dev;
mod e2e;
mod fuzz_corpus;
mod invites;
mod invites_cli;
mod invites_props;
mod jwks_refresh;
mod keys;
mod manifest;
mod multiprocess;
mod openapi;
mod postgres;
mod registration;
mod replay;
mod secrets;
mod server;
mod socket;
mod sqlite;
mod support;
mod usernames;
