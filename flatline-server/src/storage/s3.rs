//! The S3-compatible store (`[storage] url = "s3://<bucket>"`), through the `object_store` crate (SigV4 signing,
//! multipart uploads). It keeps the local store's invariants:
//!
//! - A finished object appears only whole: avatars by one `PUT`, attachments by completing an S3 multipart upload
//!   (or one `PUT` when smaller than a part) once the TUS upload has all its bytes. An incomplete upload is never
//!   under `objects/`, so never served.
//! - Upload state lives in the bucket, so a restart (even after kill -9) resumes where the last saved state says:
//!   `uploads/<key>/meta` (JSON: length, creation time, multipart id, finished part ETags, current tail) is the
//!   single commit point, written after the bytes it describes. S3 parts other than the last must be at least
//!   5 MiB, so bytes short of a part wait in a `uploads/<key>/tail-<n>` object between PATCHes; a new tail gets a
//!   new name, so the one the meta names is never overwritten. Bytes the meta does not yet name are simply sent
//!   again by the client (TUS resumes from the offset HEAD reports).
//! - Memory per upload stays under one part (5 MiB) whatever the attachment's size.
//!
//! Appends to one upload are serialized inside a process, as in the local store.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use flatline_core::time::Timestamp;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore as _, ObjectStoreExt as _, PutPayload,
    RetryConfig,
};
use serde::{Deserialize, Serialize};

use super::{AppendError, ByteStream, Object, ObjectStore, UploadState, safe};

/// Size of every S3 part but the last: S3's minimum, so an upload in progress holds at most this much in memory.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// Where to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint URL; `None` = AWS for the region.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: zeroize::Zeroizing<String>,
}

/// The S3-compatible store.
pub struct S3Store {
    s3: Arc<AmazonS3>,
    busy: Mutex<HashSet<String>>,
}

/// The saved state of one upload (`uploads/<key>/meta`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    length: u64,
    created: i64,
    /// The S3 multipart upload, once the first full part was sent.
    multipart: Option<String>,
    /// ETags of the finished parts, each exactly [`PART_SIZE`] bytes.
    parts: Vec<String>,
    /// Bytes after the parts, kept in `tail-<generation>`.
    tail: Option<Tail>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Tail {
    generation: u64,
    len: u64,
}

impl Meta {
    fn offset(&self) -> u64 {
        self.parts.len() as u64 * PART_SIZE as u64 + self.tail.map_or(0, |t| t.len)
    }
}

fn io_err(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(e),
    }
}

/// `Ok(None)` for a missing object.
fn found<T>(r: object_store::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

/// A strong validator in the quoted form HTTP wants (S3 sends it quoted; some servers do not).
fn etag(meta: &object_store::ObjectMeta) -> String {
    match meta.e_tag.as_deref() {
        Some(t) if t.starts_with('"') || t.starts_with("W/") => t.to_owned(),
        Some(t) => format!("\"{t}\""),
        None => format!(
            "\"{:x}-{:x}\"",
            meta.size,
            meta.last_modified.timestamp_millis()
        ),
    }
}

/// Releases an upload's append lock on drop.
struct Busy<'a>(&'a S3Store, String);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// Bytes received and not yet sent as a part, as the body's own chunks (no copying).
#[derive(Default)]
struct Pending {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Pending {
    fn push(&mut self, b: Bytes) {
        self.len += b.len();
        self.chunks.push(b);
    }
    fn take(&mut self) -> PutPayload {
        self.len = 0;
        std::mem::take(&mut self.chunks).into_iter().collect()
    }
}

impl S3Store {
    /// A store over the bucket in `settings` (no request is made yet).
    pub fn new(settings: &S3Settings) -> io::Result<Self> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(settings.secret_access_key.as_str())
            // Downloads stream for as long as the client reads: no whole-request timeout, only per read.
            .with_client_options(
                ClientOptions::new()
                    .with_timeout_disabled()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_read_timeout(Duration::from_secs(60)),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &settings.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                // Path-style requests (`{endpoint}/{bucket}/…`): what self-hosted S3 servers expect.
                .with_virtual_hosted_style_request(false);
        }
        Ok(S3Store {
            s3: Arc::new(b.build().map_err(io_err)?),
            busy: Mutex::new(HashSet::new()),
        })
    }

    fn object(key: &str) -> io::Result<Path> {
        Ok(Path::from(format!("objects/{}", safe(key)?)))
    }

    fn upload_dir(key: &str) -> io::Result<Path> {
        Ok(Path::from(format!("uploads/{}", safe(key)?)))
    }

    fn meta_path(key: &str) -> io::Result<Path> {
        Ok(Path::from(format!("uploads/{}/meta", safe(key)?)))
    }

    fn tail_path(key: &str, generation: u64) -> io::Result<Path> {
        Ok(Path::from(format!(
            "uploads/{}/tail-{generation}",
            safe(key)?
        )))
    }

    fn lock(&self, key: &str) -> Option<Busy<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.insert(key.to_owned())
            .then(|| Busy(self, key.to_owned()))
    }

    async fn read_meta(&self, key: &str) -> io::Result<Option<Meta>> {
        let Some(got) = found(self.s3.get(&Self::meta_path(key)?).await)? else {
            return Ok(None);
        };
        let bytes = got.bytes().await.map_err(io_err)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn write_meta(&self, key: &str, meta: &Meta) -> io::Result<()> {
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        self.s3
            .put(&Self::meta_path(key)?, PutPayload::from(json))
            .await
            .map_err(io_err)?;
        Ok(())
    }

    /// Deletes every object under `uploads/<key>/` but the meta, except the tail named `keep`.
    async fn delete_tails(&self, key: &str, keep: Option<u64>) -> io::Result<()> {
        let dir = Self::upload_dir(key)?;
        let keep = keep.map(|g| format!("tail-{g}"));
        let paths: Vec<Path> = self
            .s3
            .list(Some(&dir))
            .try_filter_map(|m| {
                let name = m.location.filename().unwrap_or_default();
                let drop = name != "meta" && Some(name) != keep.as_deref();
                futures_util::future::ready(Ok(drop.then_some(m.location)))
            })
            .try_collect()
            .await
            .map_err(io_err)?;
        for p in paths {
            found(self.s3.delete(&p).await)?;
        }
        Ok(())
    }

    /// Sends one full part, recording it in `meta` (and the bucket) before returning.
    async fn send_part(&self, key: &str, meta: &mut Meta, payload: PutPayload) -> io::Result<()> {
        let target = Self::object(key)?;
        let id = match &meta.multipart {
            Some(id) => id.clone(),
            None => {
                let id = self.s3.create_multipart(&target).await.map_err(io_err)?;
                // Recorded at once, so that termination and cleanup can abort it.
                meta.multipart = Some(id.clone());
                self.write_meta(key, meta).await?;
                id
            }
        };
        // Part numbers follow the saved parts: a part sent again after a crash replaces the unrecorded one.
        let part = self
            .s3
            .put_part(&target, &id, meta.parts.len(), payload)
            .await
            .map_err(io_err)?;
        meta.parts.push(part.content_id);
        // The tail's bytes went into this part.
        meta.tail = None;
        self.write_meta(key, meta).await
    }

    /// Publishes the finished object from the parts and the final bytes.
    async fn finish(&self, key: &str, meta: &Meta, last: PutPayload) -> io::Result<()> {
        let target = Self::object(key)?;
        match &meta.multipart {
            None => {
                self.s3.put(&target, last).await.map_err(io_err)?;
            }
            Some(id) => {
                let mut parts: Vec<PartId> = meta
                    .parts
                    .iter()
                    .map(|c| PartId {
                        content_id: c.clone(),
                    })
                    .collect();
                if last.content_length() > 0 {
                    parts.push(
                        self.s3
                            .put_part(&target, id, meta.parts.len(), last)
                            .await
                            .map_err(io_err)?,
                    );
                }
                self.s3
                    .complete_multipart(&target, id, parts)
                    .await
                    .map_err(io_err)?;
            }
        }
        // The object is complete; what is left of the upload is bookkeeping.
        found(self.s3.delete(&Self::meta_path(key)?).await)?;
        self.delete_tails(key, None).await
    }

    /// Removes an upload's state and its S3 multipart upload.
    async fn remove_upload(&self, key: &str, meta: Option<&Meta>) -> io::Result<()> {
        found(self.s3.delete(&Self::meta_path(key)?).await)?;
        if let Some(id) = meta.and_then(|m| m.multipart.as_ref()) {
            // Already completed or aborted: nothing to do.
            let _ = self.s3.abort_multipart(&Self::object(key)?, id).await;
        }
        self.delete_tails(key, None).await
    }

    async fn append_locked(
        &self,
        key: &str,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<u64, AppendError> {
        let Some(mut meta) = self.read_meta(key).await? else {
            return Err(match self.stat(key).await? {
                Some(_) => AppendError::Conflict,
                None => AppendError::NotFound,
            });
        };
        if self.stat(key).await?.is_some() {
            // Finished by an append whose bookkeeping a crash cut short.
            return Err(AppendError::Conflict);
        }
        let mut current = meta.offset();
        if current != offset {
            return Err(AppendError::Conflict);
        }
        let mut pending = Pending::default();
        let old_tail = meta.tail;
        if let Some(t) = old_tail {
            let got = self
                .s3
                .get(&Self::tail_path(key, t.generation)?)
                .await
                .map_err(io_err)?;
            let mut s = got.into_stream();
            while let Some(b) = s.next().await {
                pending.push(b.map_err(io_err)?);
            }
            if pending.len as u64 != t.len {
                return Err(AppendError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "upload tail has the wrong size",
                )));
            }
        }
        let generation = old_tail.map_or(1, |t| t.generation + 1);
        let mut received_new = false;
        let mut outcome = Ok(());
        while let Some(chunk) = body.next().await {
            let mut chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    outcome = Err(AppendError::Interrupted(e));
                    break;
                }
            };
            if current + chunk.len() as u64 > meta.length {
                outcome = Err(AppendError::TooLong);
                break;
            }
            current += chunk.len() as u64;
            received_new |= !chunk.is_empty();
            while pending.len + chunk.len() >= PART_SIZE {
                pending.push(chunk.split_to(PART_SIZE - pending.len));
                let payload = pending.take();
                self.send_part(key, &mut meta, payload).await?;
            }
            if !chunk.is_empty() {
                pending.push(chunk);
            }
        }
        if current == meta.length {
            self.finish(key, &meta, pending.take()).await?;
            return outcome.map(|()| current);
        }
        if received_new && pending.len > 0 {
            // Save the bytes short of a part under a fresh name, then commit them in the meta.
            let len = pending.len as u64;
            self.s3
                .put(&Self::tail_path(key, generation)?, pending.take())
                .await
                .map_err(io_err)?;
            meta.tail = Some(Tail { generation, len });
            self.write_meta(key, &meta).await?;
            self.delete_tails(key, Some(generation)).await?;
        } else if meta.tail.is_none() && old_tail.is_some() {
            // The old tail went into a part.
            self.delete_tails(key, None).await?;
        }
        outcome.map(|()| current)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, bytes: Bytes) -> io::Result<()> {
        self.s3
            .put(&Self::object(key)?, PutPayload::from(bytes))
            .await
            .map_err(io_err)?;
        Ok(())
    }

    async fn stat(&self, key: &str) -> io::Result<Option<(u64, String)>> {
        Ok(found(self.s3.head(&Self::object(key)?).await)?.map(|m| (m.size, etag(&m))))
    }

    async fn open(&self, key: &str, start: u64, end: u64) -> io::Result<Option<Object>> {
        let path = Self::object(key)?;
        if end <= start {
            // S3 refuses an empty range; an empty read needs only the metadata.
            return Ok(found(self.s3.head(&path).await)?.map(|m| Object {
                len: m.size,
                etag: etag(&m),
                body: Box::pin(futures_util::stream::empty()),
            }));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..end)),
            ..GetOptions::default()
        };
        let Some(got) = found(self.s3.get_opts(&path, options).await)? else {
            return Ok(None);
        };
        Ok(Some(Object {
            len: got.meta.size,
            etag: etag(&got.meta),
            body: Box::pin(got.into_stream().map_err(io_err)),
        }))
    }

    async fn delete(&self, key: &str) -> io::Result<bool> {
        let path = Self::object(key)?;
        if found(self.s3.head(&path).await)?.is_none() {
            return Ok(false);
        }
        found(self.s3.delete(&path).await)?;
        Ok(true)
    }

    async fn create_upload(&self, key: &str, length: u64, now: Timestamp) -> io::Result<bool> {
        let Some(_busy) = self.lock(key) else {
            return Ok(false);
        };
        if self.stat(key).await?.is_some() || self.read_meta(key).await?.is_some() {
            return Ok(false);
        }
        if length == 0 {
            self.s3
                .put(&Self::object(key)?, PutPayload::new())
                .await
                .map_err(io_err)?;
            return Ok(true);
        }
        let meta = Meta {
            length,
            created: now.as_secs(),
            multipart: None,
            parts: vec![],
            tail: None,
        };
        self.write_meta(key, &meta).await?;
        Ok(true)
    }

    async fn upload_state(&self, key: &str) -> io::Result<Option<UploadState>> {
        if let Some((len, _)) = self.stat(key).await? {
            return Ok(Some(UploadState {
                length: len,
                offset: len,
            }));
        }
        Ok(self.read_meta(key).await?.map(|m| UploadState {
            length: m.length,
            offset: m.offset(),
        }))
    }

    async fn append(&self, key: &str, offset: u64, body: ByteStream) -> Result<u64, AppendError> {
        safe(key)?;
        let _busy = self.lock(key).ok_or(AppendError::Conflict)?;
        self.append_locked(key, offset, body).await
    }

    async fn delete_upload(&self, key: &str) -> io::Result<bool> {
        let Some(_busy) = self.lock(key) else {
            return Ok(false);
        };
        let Some(meta) = self.read_meta(key).await? else {
            return Ok(false);
        };
        if self.stat(key).await?.is_some() {
            // Finished: only stale bookkeeping is left, and a finished upload cannot be terminated.
            self.remove_upload(key, None).await?;
            return Ok(false);
        }
        self.remove_upload(key, Some(&meta)).await?;
        Ok(true)
    }

    async fn cleanup(
        &self,
        uploads_before: Timestamp,
        objects_before: Timestamp,
    ) -> io::Result<u64> {
        let mut removed = 0;
        // Group what is under uploads/ by upload key: meta present or not, and the newest write.
        let uploads: Vec<object_store::ObjectMeta> = self
            .s3
            .list(Some(&Path::from("uploads")))
            .try_collect()
            .await
            .map_err(io_err)?;
        let mut groups: BTreeMap<String, (bool, i64)> = BTreeMap::new();
        for m in &uploads {
            let path = m.location.as_ref();
            let Some((dir, name)) = path.rsplit_once('/') else {
                continue;
            };
            let Some(key) = dir.strip_prefix("uploads/") else {
                continue;
            };
            let g = groups.entry(key.to_owned()).or_insert((false, i64::MIN));
            g.0 |= name == "meta";
            g.1 = g.1.max(m.last_modified.timestamp());
        }
        for (key, (has_meta, newest)) in groups {
            if safe(&key).is_err() {
                continue;
            }
            if has_meta {
                let expired = match self.read_meta(&key).await {
                    Ok(Some(meta)) => meta.created < uploads_before.as_secs(),
                    // Unreadable state: judge it by its age.
                    Ok(None) | Err(_) => newest < uploads_before.as_secs(),
                };
                if expired && self.delete_upload(&key).await? {
                    removed += 1;
                }
            } else if newest < uploads_before.as_secs() {
                // Tails left by a termination a crash cut short.
                self.delete_tails(&key, None).await?;
            }
        }
        let objects: Vec<object_store::ObjectMeta> = self
            .s3
            .list(Some(&Path::from("objects/attachments")))
            .try_collect()
            .await
            .map_err(io_err)?;
        for m in objects {
            if m.last_modified.timestamp() < objects_before.as_secs() {
                found(self.s3.delete(&m.location).await)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
