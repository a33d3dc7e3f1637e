//! flatline-server integration tests: one binary, modules per endpoint group.

mod accounts;
mod auth;
mod contacts;
mod contacts_props;
mod invites;
mod invites_cli;
mod invites_props;
mod keys;
mod manifest;
mod registration;
mod server;
mod sqlite;
mod support;
mod usernames;
