//! flatline-server integration tests: one binary, modules per endpoint group.

mod accounts;
mod auth;
mod contacts;
mod contacts_props;
mod fuzz_corpus;
mod keys;
mod manifest;
mod registration;
mod replay;
mod server;
mod sqlite;
mod support;
mod usernames;
