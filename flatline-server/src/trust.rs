//! Server trust bootstrap (API.md §7, §8): key files, the fingerprint check against the database, the manifest
//! version, and the signed manifest that `GET /.well-known/flatline/manifest` serves.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flatline_core::manifest::{
    Descriptor, IdentityProvider, InstanceSigningKey, KeyFileError, Manifest, SealedSenderRoot,
    TrustRoots,
};
use flatline_core::random::SecureRandom;
use flatline_core::store::{FingerprintRecord, Store, StoreError};
use flatline_core::time::Timestamp;
use flatline_core::zk::ZkParams;
use sha2::{Digest, Sha256};

use crate::config::Settings;

/// The name the signing key's fingerprint is recorded under.
pub const SIGNING_KEY_NAME: &str = "instance_signing_key";
/// The name the sealed-sender trust root's fingerprint is recorded under.
pub const SEALED_SENDER_KEY_NAME: &str = "sealed_sender_trust_root";
/// The name the zkgroup parameters' fingerprint is recorded under.
pub const ZK_PARAMS_NAME: &str = "zkgroup_server_params";

/// Why the trust bootstrap failed. Every variant stops the process.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file holds something else than the expected key.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyFileError,
    },
    /// The key file's key is not the one this instance's database was set up with.
    #[error(
        "key file {path} holds a different key than this instance uses: its {name} fingerprint is sha256:{actual}, \
         the database records sha256:{recorded}. Restore the original key file (see docs/TRUST.md); refusing to start"
    )]
    KeyMismatch {
        /// Which key.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// The fingerprint of the file's key.
        actual: String,
        /// The fingerprint the database holds.
        recorded: String,
    },
    /// The key file is gone although the database records a key for this instance: a new key would change the
    /// instance's identity, so none is created.
    #[error(
        "key file {path} is missing, but the database records a {name} with fingerprint sha256:{recorded}. \
         Restore the key file from its backup (see docs/TRUST.md); refusing to start and not creating a new key"
    )]
    KeyMissing {
        /// Which key.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// The fingerprint the database holds.
        recorded: String,
    },
    /// A TLS certificate file could not be used.
    #[error("instance.tls_certificates: {path}: {message}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key file's state after [`load_or_create_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileState {
    /// It existed and was read.
    Loaded,
    /// It was absent and has been created.
    Created,
}

/// Reads the PEM key at `path`, or creates it (mode 0600, never overwriting) with `generate` when absent.
/// A process that loses a creation race reads the winner's file.
pub fn load_or_create_key<K>(
    path: &Path,
    parse: impl Fn(&str) -> Result<K, KeyFileError>,
    generate: impl FnOnce() -> K,
    to_pem: impl Fn(&K) -> zeroize::Zeroizing<String>,
) -> Result<(K, KeyFileState), TrustError> {
    let io = |source| TrustError::Io {
        path: path.to_owned(),
        source,
    };
    let read = || -> Result<K, TrustError> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        warn_if_readable_by_others(path);
        parse(&text).map_err(|source| TrustError::KeyFile {
            path: path.to_owned(),
            source,
        })
    };
    match read() {
        Ok(k) => return Ok((k, KeyFileState::Loaded)),
        Err(TrustError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = generate();
    match crate::secrets::write_private(path, to_pem(&key).as_bytes()) {
        Ok(()) => Ok((key, KeyFileState::Created)),
        // Someone else created it in between: theirs wins (it appears complete, see `write_private`).
        Err(crate::secrets::SecretError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            read().map(|k| (k, KeyFileState::Loaded))
        }
        Err(crate::secrets::SecretError::Io { source, .. }) => Err(io(source)),
        Err(e) => Err(io(std::io::Error::other(e.to_string()))),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "key file is accessible to other users; chmod 600 it");
        }
    }
}

/// Both instance keys, read or created per the configuration.
pub struct InstanceKeys {
    /// The Ed25519 signing key.
    pub signing: InstanceSigningKey,
    /// Whether the signing key file was just created.
    pub signing_state: KeyFileState,
    /// The sealed-sender trust root.
    pub sealed_sender: SealedSenderRoot,
    /// Whether the sealed-sender key file was just created.
    pub sealed_sender_state: KeyFileState,
    /// The zkgroup server parameters.
    pub zk: ZkParams,
    /// Whether the zkgroup parameters file was just created.
    pub zk_state: KeyFileState,
}

/// Reads both key files, creating absent ones.
pub fn load_keys(config: &Settings, rng: &dyn SecureRandom) -> Result<InstanceKeys, TrustError> {
    let (signing, signing_state) = load_or_create_key(
        &config.instance.signing_key_file,
        InstanceSigningKey::from_pem,
        || InstanceSigningKey::generate(rng),
        InstanceSigningKey::to_pem,
    )?;
    let (sealed_sender, sealed_sender_state) = load_or_create_key(
        &config.instance.sealed_sender_key_file,
        SealedSenderRoot::from_pem,
        || SealedSenderRoot::generate(rng),
        SealedSenderRoot::to_pem,
    )?;
    let (zk, zk_state) = load_or_create_key(
        &config.instance.zk_params_file,
        ZkParams::from_pem,
        || ZkParams::generate(rng),
        ZkParams::to_pem,
    )?;
    Ok(InstanceKeys {
        signing,
        signing_state,
        sealed_sender,
        sealed_sender_state,
        zk,
        zk_state,
    })
}

/// `sha256:<standard base64>` of the SubjectPublicKeyInfo of every certificate in a PEM file.
pub fn spki_pins(pem: &str) -> Result<Vec<String>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut pins = vec![];
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let end = after.find(END).ok_or("unterminated CERTIFICATE block")?;
        let body: String = after[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|_| "certificate is not base64")?;
        let spki = certificate_spki(&der).ok_or("not an X.509 certificate")?;
        pins.push(format!("sha256:{}", STANDARD.encode(Sha256::digest(spki))));
        rest = &after[end + END.len()..];
    }
    if pins.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(pins)
}

/// One DER element.
struct Tlv<'a> {
    tag: u8,
    /// The whole element, header included.
    whole: &'a [u8],
    /// Its contents.
    contents: &'a [u8],
    /// What follows it.
    rest: &'a [u8],
}

fn der_tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header_len = input.len() - rest.len();
    Some(Tlv {
        tag,
        whole: &input[..header_len + len],
        contents: &rest[..len],
        rest: &rest[len..],
    })
}

/// The DER SubjectPublicKeyInfo of a DER certificate (RFC 5280 §4.1: in tbsCertificate, after the optional
/// `[0] version`, serialNumber, signature, issuer, validity and subject).
fn certificate_spki(der: &[u8]) -> Option<&[u8]> {
    let cert = der_tlv(der).filter(|t| t.tag == 0x30)?;
    let tbs = der_tlv(cert.contents).filter(|t| t.tag == 0x30)?;
    let mut rest = tbs.contents;
    if der_tlv(rest)?.tag == 0xa0 {
        rest = der_tlv(rest)?.rest;
    }
    for want in [0x02, 0x30, 0x30, 0x30, 0x30] {
        rest = der_tlv(rest).filter(|t| t.tag == want)?.rest;
    }
    der_tlv(rest).filter(|t| t.tag == 0x30).map(|t| t.whole)
}

/// The manifest content the configuration describes, with version 0 and no times yet.
pub fn manifest_from_config(
    config: &Settings,
    keys: &InstanceKeys,
    identity_providers: &[IdentityProvider],
) -> Result<Manifest, TrustError> {
    let mut tls_pins = vec![];
    for path in &config.instance.tls_certificates {
        let text = std::fs::read_to_string(path).map_err(|e| TrustError::Certificate {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let pins = spki_pins(&text).map_err(|message| TrustError::Certificate {
            path: path.clone(),
            message,
        })?;
        for pin in pins {
            // Keep the first occurrence: a certificate listed twice is one pin.
            if !tls_pins.contains(&pin) {
                tls_pins.push(pin);
            }
        }
    }
    Ok(Manifest {
        version: 0,
        issued_at: 0,
        expires_at: 0,
        name: config.instance.name.clone(),
        endpoints: config.instance.endpoints.clone(),
        tls_pins,
        trust_roots: TrustRoots {
            sealed_sender: keys.sealed_sender.public_base64(),
            zk_params: Some(keys.zk.public_base64()),
            generic_zk_params: Some(keys.zk.generic_public_base64()),
        },
        identity_providers: identity_providers.to_vec(),
        signing_key: keys.signing.public_jwk(),
    })
}

/// Records each key's fingerprint in the store, or checks it against the recorded one.
pub async fn check_fingerprints(
    config: &Settings,
    keys: &InstanceKeys,
    store: &dyn Store,
    now: Timestamp,
) -> Result<(), TrustError> {
    let checks = [
        (
            SIGNING_KEY_NAME,
            keys.signing.fingerprint().to_string(),
            config.instance.signing_key_file.clone(),
        ),
        (
            SEALED_SENDER_KEY_NAME,
            keys.sealed_sender.fingerprint().to_string(),
            config.instance.sealed_sender_key_file.clone(),
        ),
        (
            ZK_PARAMS_NAME,
            keys.zk.fingerprint().to_string(),
            config.instance.zk_params_file.clone(),
        ),
    ];
    for (name, actual, path) in checks {
        match store.record_key_fingerprint(name, &actual, now).await? {
            FingerprintRecord::Recorded => {
                tracing::info!(key = name, fingerprint = %actual, "recorded key fingerprint")
            }
            FingerprintRecord::Existing(recorded) if recorded == actual => {}
            FingerprintRecord::Existing(recorded) => {
                return Err(TrustError::KeyMismatch {
                    name,
                    path,
                    actual,
                    recorded,
                });
            }
        }
    }
    Ok(())
}

/// The instance's trust material as a running server uses it: the signing key, the versioned manifest content, and
/// the last signature (re-made when less than half of its lifetime is left).
pub struct Trust {
    signing: InstanceSigningKey,
    sealed_sender: SealedSenderRoot,
    zk: ZkParams,
    content: Manifest,
    lifetime: Duration,
    descriptor: Descriptor,
    signed: Mutex<Option<(Manifest, String)>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("fingerprint", &self.signing.fingerprint())
            .field("version", &self.content.version)
            .finish_non_exhaustive()
    }
}

impl Trust {
    /// Reads (or creates) the keys, checks their fingerprints against the store, and fixes the manifest version for
    /// the configured content (bumping it when the content changed since the last start).
    pub async fn bootstrap(
        config: &Settings,
        store: &dyn Store,
        rng: &dyn SecureRandom,
        identity_providers: &[IdentityProvider],
        now: Timestamp,
    ) -> Result<Trust, TrustError> {
        // A missing key file with a recorded fingerprint is a lost key, not a first start: never mint a new one.
        // The database is read before the file is looked at: a process starting at the same moment creates the
        // file before it records the fingerprint, so a fingerprint seen first means its file is visible by now.
        for (name, path) in [
            (SIGNING_KEY_NAME, config.instance.signing_key_file.clone()),
            (
                SEALED_SENDER_KEY_NAME,
                config.instance.sealed_sender_key_file.clone(),
            ),
            (ZK_PARAMS_NAME, config.instance.zk_params_file.clone()),
        ] {
            if let Some(recorded) = store.key_fingerprint(name).await?
                && !path.exists()
            {
                return Err(TrustError::KeyMissing {
                    name,
                    path,
                    recorded,
                });
            }
        }
        let keys = load_keys(config, rng)?;
        for (state, path) in [
            (keys.signing_state, config.instance.signing_key_file.clone()),
            (
                keys.sealed_sender_state,
                config.instance.sealed_sender_key_file.clone(),
            ),
            (keys.zk_state, config.instance.zk_params_file.clone()),
        ] {
            if state == KeyFileState::Created {
                tracing::warn!(path = %path.display(), "created a new instance key file; back it up (docs/TRUST.md)");
            }
        }
        check_fingerprints(config, &keys, store, now).await?;
        let mut content = manifest_from_config(config, &keys, identity_providers)?;
        content.version = store.advance_manifest(&content.content_hash(), now).await?;
        let descriptor = Descriptor {
            manifest_url: config.instance.manifest_url.clone(),
            fingerprint: keys.signing.fingerprint(),
        };
        tracing::info!(fingerprint = %descriptor.fingerprint.with_hash_name(), version = content.version, "instance manifest ready");
        Ok(Trust {
            signing: keys.signing,
            sealed_sender: keys.sealed_sender,
            zk: keys.zk,
            content,
            lifetime: config.instance.manifest_lifetime,
            descriptor,
            signed: Mutex::new(None),
        })
    }

    /// The descriptor (`flatline://server?url=…&fp=sha256:…`).
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// The manifest version this process serves.
    pub fn version(&self) -> u64 {
        self.content.version
    }

    /// The sealed-sender trust root (for issuing server certificates).
    pub fn sealed_sender(&self) -> &SealedSenderRoot {
        &self.sealed_sender
    }

    /// The zkgroup server parameters (group and call-link credentials, group send endorsements).
    pub fn zk(&self) -> &ZkParams {
        &self.zk
    }

    /// The signed manifest valid at `now` and its payload: the cached one while more than half of its lifetime is
    /// left, else a fresh signature with `issuedAt = now`.
    pub fn signed_manifest(&self, now: Timestamp) -> (Manifest, String) {
        let mut cached = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        let half = i64::try_from(self.lifetime.as_secs() / 2).unwrap_or(i64::MAX);
        if let Some((m, jws)) = cached.as_ref()
            && now.as_secs() >= m.issued_at
            && now.as_secs() < m.issued_at.saturating_add(half)
        {
            return (m.clone(), jws.clone());
        }
        let mut m = self.content.clone();
        m.issued_at = now.as_secs();
        m.expires_at = now.plus(self.lifetime).as_secs();
        let jws = self.signing.sign(&m);
        *cached = Some((m.clone(), jws.clone()));
        (m, jws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=flatline.test`; the pin is
    // `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBhTCCASugAwIBAgIUaMF1+hTHkNrJKuDWRfA5x0EwalwwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNZmxhdGxpbmUudGVzdDAeFw0yNjExMjUwODU2NTVaFw0zNjEx
MjIwODU2NTVaMBgxFjAUBgNVBAMMDWZsYXRsaW5lLnRlc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAT1pHQmFUta7I5cgvdPj/1sMB/kGGdDmxrE0cdQTU5BzfiM
6OkSuSJSuWjImBZusrL6DF/5mWLKANgIrIrbnAbdo1MwUTAdBgNVHQ4EFgQUK6Wy
tuLiiqkf0x5iV7zWZsoNfVgwHwYDVR0jBBgwFoAUK6WytuLiiqkf0x5iV7zWZsoN
fVgwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiA59rnEovGyOBZJ
jQ4pID+c4ACViPM49UZSWsb7ItoDJgIhALlkDCRs1j7Ek94EGV+Y2CBLNXivCO/x
nE/MSB+r0YlL
-----END CERTIFICATE-----
";

    #[test]
    fn spki_pin_matches_openssl() {
        assert_eq!(
            spki_pins(CERT).unwrap(),
            vec!["sha256:JmplxJmr3IPWwm/tl2+aU/+wKjcaN2Z+8AmhTlDgHXA=".to_owned()]
        );
        assert_eq!(spki_pins(&format!("{CERT}{CERT}")).unwrap().len(), 2);
        assert!(spki_pins("nothing").is_err());
        assert!(
            spki_pins("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
    }
}
