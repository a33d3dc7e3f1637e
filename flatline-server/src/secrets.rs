//! Server secrets from files or the environment. Secret files are created with mode 0600 when absent.

use std::io::Write;
use std::path::Path;

use flatline_core::random::SecureRandom;
use zeroize::Zeroizing;

/// A secret could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// File I/O failed.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The content is not what we expect.
    #[error("secret {0}: {1}")]
    Invalid(String, &'static str),
    /// A named environment variable is unset.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a hex-encoded random secret from `path`, creating it (mode 0600) with `len` fresh bytes when absent.
pub fn load_or_create_hex(
    path: &Path,
    len: usize,
    rng: &dyn SecureRandom,
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    match std::fs::read_to_string(path).map(Zeroizing::new) {
        Ok(text) => {
            warn_if_readable_by_others(path);
            let bytes = Zeroizing::new(
                hex::decode(text.trim())
                    .map_err(|_| SecretError::Invalid(path.display().to_string(), "not hex"))?,
            );
            if bytes.len() < 32 {
                return Err(SecretError::Invalid(
                    path.display().to_string(),
                    "shorter than 32 bytes",
                ));
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = Zeroizing::new(vec![0u8; len]);
            rng.fill(&mut bytes);
            let hex_text = Zeroizing::new(hex::encode(&*bytes));
            match write_private(path, hex_text.as_bytes()) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "created a new secret file; back it up");
                    Ok(bytes)
                }
                // Another process starting at the same moment created it first: use theirs.
                Err(SecretError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    load_or_create_hex(path, len, rng)
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(io(path)(e)),
    }
}

/// Logs a warning when a secret file can be read by its group or others.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "secret file is readable by other users; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Writes `content` to a new file readable only by its owner. The file appears complete or not at all (written
/// to a temporary name, then hard-linked), so a process racing to create the same file never reads half of it; if
/// the file exists already the error has kind `AlreadyExists`.
pub fn write_private(path: &Path, content: &[u8]) -> Result<(), SecretError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(path))?;
    }
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    // `create_new` (O_CREAT|O_EXCL) never follows a symlink planted at the temporary name (F-19).
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = match options.open(&tmp) {
            // A leftover of a crashed run with our pid, or something planted: unlink it (never its target).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&tmp)?;
                options.open(&tmp).map_err(|e| {
                    std::io::Error::other(format!("temporary file {}: {e}", tmp.display()))
                })?
            }
            other => other?,
        };
        file.write_all(content)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(io(path))
}

/// A secret string from a file (trimmed) or a named environment variable.
pub fn read_secret(
    file: Option<&Path>,
    env_var: Option<&str>,
) -> Result<Zeroizing<String>, SecretError> {
    let value = match (file, env_var) {
        (Some(path), _) => Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(io(path))?
                .trim()
                .to_owned(),
        ),
        (None, Some(var)) => {
            Zeroizing::new(std::env::var(var).map_err(|_| SecretError::MissingEnv(var.to_owned()))?)
        }
        (None, None) => {
            return Err(SecretError::Invalid(
                "client secret".into(),
                "no source configured",
            ));
        }
    };
    if value.is_empty() {
        return Err(SecretError::Invalid("client secret".into(), "empty"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ones;
    impl SecureRandom for Ones {
        fn fill(&self, dest: &mut [u8]) {
            dest.fill(1);
        }
    }

    #[test]
    fn creates_private_file_once_then_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.key");
        let first = load_or_create_hex(&path, 32, &Ones).unwrap();
        assert_eq!(*first, vec![1u8; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(*load_or_create_hex(&path, 32, &Ones).unwrap(), *first);
        std::fs::write(dir.path().join("short"), "abcd").unwrap();
        assert!(load_or_create_hex(&dir.path().join("short"), 32, &Ones).is_err());
    }
}
