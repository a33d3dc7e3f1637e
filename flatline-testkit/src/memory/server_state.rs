//! Instance-wide server state: key fingerprints and the manifest version counter.

use std::collections::HashMap;

use async_trait::async_trait;
use flatline_core::sealed::ServerCertificateRecord;
use flatline_core::store::{FingerprintRecord, ServerStateStore, StoreResult};
use flatline_core::time::Timestamp;

use super::MemoryStore;

#[derive(Default)]
pub(super) struct ServerState {
    fingerprints: HashMap<String, String>,
    manifest: Option<(u64, [u8; 32])>,
    server_certificates: Vec<ServerCertificateRecord>,
}

#[async_trait]
impl ServerStateStore for MemoryStore {
    async fn record_key_fingerprint(
        &self,
        name: &str,
        fingerprint: &str,
        _now: Timestamp,
    ) -> StoreResult<FingerprintRecord> {
        let mut s = self.state();
        match s.server.fingerprints.get(name) {
            Some(stored) => Ok(FingerprintRecord::Existing(stored.clone())),
            None => {
                s.server
                    .fingerprints
                    .insert(name.to_owned(), fingerprint.to_owned());
                Ok(FingerprintRecord::Recorded)
            }
        }
    }

    async fn key_fingerprint(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(self.state().server.fingerprints.get(name).cloned())
    }

    async fn key_fingerprints(&self) -> StoreResult<Vec<(String, String)>> {
        let mut all: Vec<_> = self
            .state()
            .server
            .fingerprints
            .iter()
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect();
        all.sort();
        Ok(all)
    }

    async fn forget_key_fingerprint(&self, name: &str) -> StoreResult<bool> {
        Ok(self.state().server.fingerprints.remove(name).is_some())
    }

    async fn advance_manifest(&self, content_hash: &[u8; 32], _now: Timestamp) -> StoreResult<u64> {
        let mut s = self.state();
        let version = match s.server.manifest {
            Some((v, h)) if h == *content_hash => v,
            Some((v, _)) => v + 1,
            None => 1,
        };
        s.server.manifest = Some((version, *content_hash));
        Ok(version)
    }

    async fn manifest_state(&self) -> StoreResult<Option<(u64, [u8; 32])>> {
        Ok(self.state().server.manifest)
    }

    async fn server_certificates(&self) -> StoreResult<Vec<ServerCertificateRecord>> {
        let mut all = self.state().server.server_certificates.clone();
        // Current first, then by retirement, newest first (ids break ties).
        all.sort_by_key(|r| {
            (
                r.retired_at.is_some(),
                std::cmp::Reverse(r.retired_at),
                std::cmp::Reverse(r.id),
            )
        });
        Ok(all)
    }

    async fn add_server_certificate(
        &self,
        record: &ServerCertificateRecord,
        replace_current: bool,
    ) -> StoreResult<bool> {
        let mut s = self.state();
        let certs = &mut s.server.server_certificates;
        if certs.iter().any(|r| r.id == record.id) {
            return Ok(false);
        }
        let current = certs.iter_mut().find(|r| r.retired_at.is_none());
        match (current, replace_current) {
            (Some(_), false) => return Ok(false),
            (Some(c), true) => c.retired_at = Some(record.created_at),
            (None, _) => {}
        }
        certs.push(ServerCertificateRecord {
            retired_at: None,
            ..record.clone()
        });
        Ok(true)
    }

    async fn prune_server_certificates(&self, retired_before: Timestamp) -> StoreResult<u64> {
        let mut s = self.state();
        let certs = &mut s.server.server_certificates;
        let before = certs.len();
        certs.retain(|r| r.retired_at.is_none_or(|t| t >= retired_before));
        Ok((before - certs.len()) as u64)
    }
}
