//! Where avatars and attachments live: an object store behind [`ObjectStore`], a local directory by default.
//!
//! Layout of [`LocalStore`] under `[storage] path`:
//! - `objects/<key>`: finished objects (`profiles/<id>` avatars, `attachments/<key>` attachments). An object only
//!   ever appears there by an atomic rename of a complete, flushed file, so no partial object is ever served, even
//!   after a crash (kill -9) in the middle of an upload.
//! - `uploads/<key>.part` and `uploads/<key>.len`: a TUS upload in progress (bytes so far; declared length and
//!   creation time). Unfinished uploads older than `upload_expiry_seconds` are deleted by [`Storage::cleanup`].
//!
//! Appends to one upload are serialized inside a process; several processes sharing one directory should each own
//! their uploads (the key is random and bound to the token). [`s3::S3Store`] implements the same trait over an
//! S3-compatible bucket (`[storage] url`), with the same layout and invariants.

pub mod s3;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use flatline_core::time::Timestamp;
use futures_util::{Stream, StreamExt};
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::config::{ObjectStorage, SecretSource, StorageSettings};

/// Bytes gathered before one write of an upload to its file.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Bytes of an upload after which writeback to disk is started in the background.
const SYNC_EVERY: usize = 8 * 1024 * 1024;
/// Bytes read from a file per download chunk (one trip to the blocking pool each).
const READ_CHUNK: usize = 256 * 1024;

/// A stream of body chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// State of a TUS upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadState {
    /// Declared total length.
    pub length: u64,
    /// Bytes received so far (`length` once complete).
    pub offset: u64,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// No such upload (never created, deleted, expired).
    #[error("no such upload")]
    NotFound,
    /// `Upload-Offset` is not the current offset, or another append is running (409).
    #[error("offset mismatch")]
    Conflict,
    /// The body would go past the declared length (413).
    #[error("body exceeds Upload-Length")]
    TooLong,
    /// The request body broke off (the client's connection dropped); what arrived before stays.
    #[error("the request body broke off: {0}")]
    Interrupted(io::Error),
    /// I/O failure.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A finished object opened for reading.
pub struct Object {
    /// Its size.
    pub len: u64,
    /// A strong validator (size and modification time).
    pub etag: String,
    /// The bytes `[start, start + len)` requested from [`ObjectStore::open`].
    pub body: ByteStream,
}

/// Object storage as Flatline needs it: whole objects (avatars), resumable uploads (TUS) and ranged reads.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Stores a whole object atomically (replacing one under the same key).
    async fn put(&self, key: &str, bytes: Bytes) -> io::Result<()>;
    /// Size and validator of a finished object.
    async fn stat(&self, key: &str) -> io::Result<Option<(u64, String)>>;
    /// Opens `[start, end)` of a finished object for streaming.
    async fn open(&self, key: &str, start: u64, end: u64) -> io::Result<Option<Object>>;
    /// Deletes a finished object; false when absent.
    async fn delete(&self, key: &str) -> io::Result<bool>;
    /// Starts an upload of `length` bytes; false when one (or an object) already exists under `key`.
    async fn create_upload(&self, key: &str, length: u64, now: Timestamp) -> io::Result<bool>;
    /// The upload's state; a finished object reports `offset == length`.
    async fn upload_state(&self, key: &str) -> io::Result<Option<UploadState>>;
    /// Appends `body` at `offset`; when the upload reaches its length the object is published atomically.
    /// Returns the new offset. On a failure mid-body, what was written stays (the client resumes from HEAD).
    async fn append(&self, key: &str, offset: u64, body: ByteStream) -> Result<u64, AppendError>;
    /// Deletes an unfinished upload (TUS termination); false when absent.
    async fn delete_upload(&self, key: &str) -> io::Result<bool>;
    /// Deletes unfinished uploads created before `uploads_before` and attachments older than `objects_before`.
    async fn cleanup(
        &self,
        uploads_before: Timestamp,
        objects_before: Timestamp,
    ) -> io::Result<u64>;
}

/// The local-directory store.
pub struct LocalStore {
    root: PathBuf,
    busy: Mutex<HashSet<String>>,
}

/// Releases an upload's append lock on drop.
struct Busy<'a>(&'a LocalStore, String);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

fn safe(key: &str) -> io::Result<&str> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(key)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad object key",
        ))
    }
}

fn etag_of(meta: &std::fs::Metadata) -> String {
    let nanos = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", meta.len(), nanos)
}

fn not_found<T>(e: io::Error) -> io::Result<Option<T>> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(e)
    }
}

impl LocalStore {
    /// A store under `root` (created lazily).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore {
            root: root.into(),
            busy: Mutex::new(HashSet::new()),
        }
    }

    fn object(&self, key: &str) -> io::Result<PathBuf> {
        Ok(self.root.join("objects").join(safe(key)?))
    }

    fn upload(&self, key: &str, ext: &str) -> io::Result<PathBuf> {
        Ok(self
            .root
            .join("uploads")
            .join(format!("{}.{ext}", safe(key)?.replace('/', "+"))))
    }

    async fn publish(&self, from: &Path, key: &str) -> io::Result<()> {
        let to = self.object(key)?;
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).await?;
        }
        fs::rename(from, &to).await
    }

    async fn read_len(&self, key: &str) -> io::Result<Option<(u64, i64)>> {
        match fs::read_to_string(self.upload(key, "len")?).await {
            Ok(s) => {
                let mut it = s.split_whitespace().map(str::parse::<i64>);
                match (it.next(), it.next()) {
                    (Some(Ok(len)), Some(Ok(created))) if len >= 0 => {
                        Ok(Some((len.unsigned_abs(), created)))
                    }
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad upload metadata",
                    )),
                }
            }
            Err(e) => not_found(e),
        }
    }

    fn lock(&self, key: &str) -> Option<Busy<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.insert(key.to_owned())
            .then(|| Busy(self, key.to_owned()))
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, bytes: Bytes) -> io::Result<()> {
        let dir = self.root.join("uploads");
        fs::create_dir_all(&dir).await?;
        let tmp = dir.join(format!("put-{}.tmp", uuid::Uuid::new_v4()));
        let mut f = fs::File::create(&tmp).await?;
        f.write_all(&bytes).await?;
        f.sync_all().await?;
        drop(f);
        self.publish(&tmp, key).await
    }

    async fn stat(&self, key: &str) -> io::Result<Option<(u64, String)>> {
        match fs::metadata(self.object(key)?).await {
            Ok(m) if m.is_file() => Ok(Some((m.len(), etag_of(&m)))),
            Ok(_) => Ok(None),
            Err(e) => not_found(e),
        }
    }

    async fn open(&self, key: &str, start: u64, end: u64) -> io::Result<Option<Object>> {
        let mut file = match fs::File::open(self.object(key)?).await {
            Ok(f) => f,
            Err(e) => return not_found(e),
        };
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Ok(None);
        }
        file.seek(io::SeekFrom::Start(start)).await?;
        let remaining = end.saturating_sub(start);
        let body = futures_util::stream::unfold((file, remaining), |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left.min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
            let mut buf = vec![0u8; want];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        });
        Ok(Some(Object {
            len: meta.len(),
            etag: etag_of(&meta),
            body: Box::pin(body),
        }))
    }

    async fn delete(&self, key: &str) -> io::Result<bool> {
        match fs::remove_file(self.object(key)?).await {
            Ok(()) => Ok(true),
            Err(e) => not_found(e).map(|_: Option<()>| false),
        }
    }

    async fn create_upload(&self, key: &str, length: u64, now: Timestamp) -> io::Result<bool> {
        if self.stat(key).await?.is_some() || self.read_len(key).await?.is_some() {
            return Ok(false);
        }
        fs::create_dir_all(self.root.join("uploads")).await?;
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.upload(key, "part")?)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        }
        // The length file is written last and atomically: an upload exists once it does.
        let tmp = self.upload(key, "len.tmp")?;
        fs::write(&tmp, format!("{length} {}", now.as_secs())).await?;
        fs::rename(&tmp, self.upload(key, "len")?).await?;
        if length == 0 {
            self.publish(&self.upload(key, "part")?, key).await?;
            let _ = fs::remove_file(self.upload(key, "len")?).await;
        }
        Ok(true)
    }

    async fn upload_state(&self, key: &str) -> io::Result<Option<UploadState>> {
        if let Some((length, _)) = self.read_len(key).await? {
            match fs::metadata(self.upload(key, "part")?).await {
                Ok(m) => {
                    return Ok(Some(UploadState {
                        length,
                        offset: m.len(),
                    }));
                }
                // Published, and a crash came before the length file was removed: the object answers below.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.stat(key).await?.map(|(len, _)| UploadState {
            length: len,
            offset: len,
        }))
    }

    async fn append(
        &self,
        key: &str,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<u64, AppendError> {
        let _busy = self.lock(key).ok_or(AppendError::Conflict)?;
        let Some((length, _)) = self.read_len(key).await? else {
            return Err(match self.stat(key).await? {
                Some(_) => AppendError::Conflict,
                None => AppendError::NotFound,
            });
        };
        let part = self.upload(key, "part")?;
        let file = match fs::OpenOptions::new().append(true).open(&part).await {
            Ok(f) => f,
            // Published, and a crash came before the length file was removed.
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.stat(key).await?.is_some() => {
                return Err(AppendError::Conflict);
            }
            Err(e) => return Err(e.into()),
        };
        let mut current = file.metadata().await?.len();
        if current != offset {
            return Err(AppendError::Conflict);
        }
        // Body chunks are small (often 16 KiB); each tokio file write is a trip to the blocking pool, so they are
        // gathered into writes of up to WRITE_BUFFER bytes.
        let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut unsynced = 0;
        let mut outcome = Ok(());
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    outcome = Err(AppendError::Interrupted(e));
                    break;
                }
            };
            if current + chunk.len() as u64 > length {
                outcome = Err(AppendError::TooLong);
                break;
            }
            file.write_all(&chunk).await?;
            current += chunk.len() as u64;
            unsynced += chunk.len();
            if unsynced >= SYNC_EVERY && current < length {
                // Start writing back what is on the file so far while more arrives, so that the fsync at the end
                // (before the object is published) has little left to do. Nothing waits for it.
                unsynced = 0;
                if let Ok(f) = file.get_ref().try_clone().await {
                    tokio::spawn(async move { f.sync_data().await });
                }
            }
        }
        file.flush().await?;
        if current == length {
            let file = file.into_inner();
            file.sync_all().await?;
            drop(file);
            self.publish(&part, key).await?;
            let _ = fs::remove_file(self.upload(key, "len")?).await;
        }
        outcome.map(|()| current)
    }

    async fn delete_upload(&self, key: &str) -> io::Result<bool> {
        let Some(_busy) = self.lock(key) else {
            return Ok(false);
        };
        if self.read_len(key).await?.is_none() {
            return Ok(false);
        }
        fs::remove_file(self.upload(key, "len")?).await?;
        let _ = fs::remove_file(self.upload(key, "part")?).await;
        Ok(true)
    }

    async fn cleanup(
        &self,
        uploads_before: Timestamp,
        objects_before: Timestamp,
    ) -> io::Result<u64> {
        let mut removed = 0;
        let uploads = self.root.join("uploads");
        if let Ok(mut dir) = fs::read_dir(&uploads).await {
            while let Some(entry) = dir.next_entry().await? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(stem) = name.strip_suffix(".len") else {
                    continue;
                };
                let key = stem.replace('+', "/");
                if let Ok(Some((_, created))) = self.read_len(&key).await
                    && created < uploads_before.as_secs()
                    && self.delete_upload(&key).await?
                {
                    removed += 1;
                }
            }
        }
        let attachments = self.root.join("objects").join("attachments");
        let cutoff = std::time::UNIX_EPOCH
            + Duration::from_secs(objects_before.as_secs().max(0).unsigned_abs());
        if let Ok(mut dir) = fs::read_dir(&attachments).await {
            while let Some(entry) = dir.next_entry().await? {
                let meta = entry.metadata().await?;
                if meta.is_file() && meta.modified().is_ok_and(|m| m < cutoff) {
                    fs::remove_file(entry.path()).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Why the configured object store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StorageSetupError {
    /// The S3 secret access key could not be read.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// The S3 client could not be built.
    #[error("S3 storage: {0}")]
    S3(io::Error),
}

/// The object store `[storage]` chose: the S3-compatible bucket of `url`, else the local directory.
pub fn from_settings(objects: &ObjectStorage) -> Result<Box<dyn ObjectStore>, StorageSetupError> {
    let s3 = match objects {
        ObjectStorage::Local(path) => return Ok(Box::new(LocalStore::new(path.clone()))),
        ObjectStorage::S3(s3) => s3,
    };
    let secret = match &s3.secret_access_key {
        SecretSource::File(path) => crate::secrets::read_secret(Some(path), None),
        SecretSource::Env(var) => crate::secrets::read_secret(None, Some(var)),
    }?;
    let settings = s3::S3Settings {
        bucket: s3.bucket.clone(),
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        access_key_id: s3.access_key_id.clone(),
        secret_access_key: zeroize::Zeroizing::new(secret.to_string()),
    };
    Ok(Box::new(
        s3::S3Store::new(&settings).map_err(StorageSetupError::S3)?,
    ))
}

/// The storage the HTTP layer uses: the object store, the secret that signs forms and tokens, and the limits.
pub struct Storage {
    /// The object store.
    pub objects: Box<dyn ObjectStore>,
    /// Signs avatar policies and TUS tokens; derived from the principal secret, so every process agrees.
    pub secret: zeroize::Zeroizing<Vec<u8>>,
    /// `[storage]`.
    pub config: StorageSettings,
    last_cleanup: Mutex<Option<Timestamp>>,
}

impl Storage {
    /// Storage over `objects`.
    pub fn new(objects: Box<dyn ObjectStore>, secret: Vec<u8>, config: StorageSettings) -> Self {
        Storage {
            objects,
            secret: zeroize::Zeroizing::new(secret),
            config,
            last_cleanup: Mutex::new(None),
        }
    }

    /// Removes expired uploads and attachments past retention, at most once per `cleanup_interval_seconds`.
    pub async fn cleanup(&self, now: Timestamp) -> io::Result<u64> {
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        {
            let mut last = self.last_cleanup.lock().unwrap_or_else(|e| e.into_inner());
            if last
                .is_some_and(|l| now.as_secs() - l.as_secs() < secs(self.config.cleanup_interval))
            {
                return Ok(0);
            }
            *last = Some(now);
        }
        let uploads_before = Timestamp::from_secs(
            now.as_secs()
                .saturating_sub(secs(self.config.upload_expiry)),
        );
        let objects_before = Timestamp::from_secs(
            now.as_secs()
                .saturating_sub(secs(self.config.attachment_retention)),
        );
        self.objects.cleanup(uploads_before, objects_before).await
    }
}

/// The storage secret: SHA-256 over a label and the principal secret (one secret file fewer to keep in sync).
pub fn derive_secret(principal_secret: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::new()
        .chain_update(b"flatline storage secret v1\0")
        .chain_update(principal_secret)
        .finalize()
        .to_vec()
}
