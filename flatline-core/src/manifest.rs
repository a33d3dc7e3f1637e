//! Server trust bootstrap (API.md §7): the instance manifest, its compact-JWS signature, the instance fingerprint,
//! the server descriptor and the key-file encoding of the instance keys.
//!
//! Choices the draft left open, fixed here:
//! * The JWS header is exactly `{"alg":"EdDSA","kid":<fingerprint>,"typ":"flatline-manifest+jwt"}`. The explicit
//!   `typ` (RFC 8725 §3.11) keeps a manifest signature from being mistaken for any other token this key might sign.
//! * `issuedAt` / `expiresAt` are integer seconds since the Unix epoch.
//! * The fingerprint is the RFC 7638 thumbprint of the public JWK `{"crv":"Ed25519","kty":"OKP","x":…}`: SHA-256,
//!   base64url without padding. Written with its hash name it is `sha256:<fingerprint>`.
//! * The content hash (what decides whether `version` must move) is SHA-256 over the canonical JSON (object keys
//!   sorted, no whitespace) of the manifest without `version`, `issuedAt` and `expiresAt`.
//! * Key files are PEM PKCS#8 (`-----BEGIN PRIVATE KEY-----`), as written by `openssl genpkey -algorithm ed25519`
//!   (signing key) or `-algorithm x25519` (sealed-sender trust root).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{KeyPair, PrivateKey, PublicKey};
use crate::random::{SecureRandom, random_array};
use crate::time::Timestamp;

/// The JWS `typ` header of a manifest.
pub const JWS_TYPE: &str = "flatline-manifest+jwt";
/// The JWS `alg` of a manifest.
pub const JWS_ALG: &str = "EdDSA";
/// The media type a manifest is served with.
pub const CONTENT_TYPE: &str = "application/jose";
/// Where a server serves its manifest.
pub const WELL_KNOWN_PATH: &str = "/.well-known/flatline/manifest";
/// The scheme and host of a server descriptor.
pub const DESCRIPTOR_PREFIX: &str = "flatline://server?";

// ---------------------------------------------------------------------------------------------------------------
// Fingerprints

/// An instance fingerprint: 32 bytes of SHA-256, shown as unpadded base64url (43 characters).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// A fingerprint string that is not `[sha256:]<43 base64url characters>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a fingerprint (want sha256:<43 base64url characters>)")]
pub struct BadFingerprint;

impl Fingerprint {
    /// The RFC 7638 thumbprint of an Ed25519 public JWK.
    pub fn of_jwk(jwk: &Jwk) -> Self {
        // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
        let canonical = format!(
            r#"{{"crv":{},"kty":{},"x":{}}}"#,
            json_string(&jwk.crv),
            json_string(&jwk.kty),
            json_string(&jwk.x)
        );
        Fingerprint(Sha256::digest(canonical.as_bytes()).into())
    }

    /// SHA-256 over arbitrary bytes (used for the sealed-sender trust root's serialized public key).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Fingerprint(Sha256::digest(bytes).into())
    }

    /// Parses `sha256:<b64url>` or a bare `<b64url>`.
    pub fn parse(s: &str) -> Result<Self, BadFingerprint> {
        let bare = s.strip_prefix("sha256:").unwrap_or(s);
        let bytes = URL_SAFE_NO_PAD.decode(bare).map_err(|_| BadFingerprint)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| BadFingerprint)?;
        Ok(Fingerprint(arr))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `sha256:<fingerprint>`, the form shown to people and put in descriptors.
    pub fn with_hash_name(&self) -> String {
        format!("sha256:{self}")
    }
}

impl fmt::Display for Fingerprint {
    /// Unpadded base64url (the JWS `kid`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

fn json_string(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------------
// The manifest

/// A public JSON Web Key of type OKP (RFC 8037). Only the required members; extra members are ignored on input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The 32-byte public key, unpadded base64url.
    pub x: String,
}

impl Jwk {
    /// The JWK of an Ed25519 public key.
    pub fn ed25519(key: &VerifyingKey) -> Self {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        }
    }

    /// The Ed25519 key this JWK describes.
    pub fn verifying_key(&self) -> Result<VerifyingKey, VerifyError> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(VerifyError::Malformed(
                "signingKey is not an OKP Ed25519 key",
            ));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.x)
            .map_err(|_| VerifyError::Malformed("signingKey.x is not base64url"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| VerifyError::Malformed("signingKey.x is not 32 bytes"))?;
        VerifyingKey::from_bytes(&arr)
            .map_err(|_| VerifyError::Malformed("signingKey.x is not a curve point"))
    }
}

/// Trust roots clients need besides the signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustRoots {
    /// The sealed-sender trust root: standard base64 of the 33-byte serialized Curve25519 public key.
    pub sealed_sender: String,
    /// zkgroup `ServerPublicParams` (standard base64 of 673 bytes); `null` in setups without zk params.
    pub zk_params: Option<String>,
    /// zkgroup `GenericServerPublicParams` (standard base64 of 225 bytes) for call-link credentials;
    /// `null` in setups without zk params.
    #[serde(default)]
    pub generic_zk_params: Option<String>,
}

/// An OpenID Connect provider clients may register through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProvider {
    /// The provider's id on this server (as used in registration requests).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The OIDC issuer URL.
    pub issuer: String,
    /// The provider's authorization endpoint.
    pub authorization_endpoint: String,
}

/// A manifest's payload (API.md §7), field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Increases whenever anything but the two times changes; never goes back.
    pub version: u64,
    /// When this signature was made, seconds since the epoch.
    pub issued_at: i64,
    /// When clients stop accepting it, seconds since the epoch.
    pub expires_at: i64,
    /// Human-readable instance name.
    pub name: String,
    /// Service endpoint URLs by name (`chat`, `cdn`, …).
    pub endpoints: BTreeMap<String, String>,
    /// TLS pinning anchors: `sha256:<standard base64 of SHA-256(SubjectPublicKeyInfo DER)>`.
    pub tls_pins: Vec<String>,
    /// Sealed-sender and zk trust roots.
    pub trust_roots: TrustRoots,
    /// OIDC providers accepted for registration.
    pub identity_providers: Vec<IdentityProvider>,
    /// The public half of the instance signing key.
    pub signing_key: Jwk,
}

/// The manifest fields that are not content: excluded from the content hash.
const NON_CONTENT: [&str; 3] = ["version", "issuedAt", "expiresAt"];

impl Manifest {
    /// SHA-256 over the canonical JSON of everything but `version`, `issuedAt` and `expiresAt`.
    ///
    /// Two manifests with the same hash are the same configuration; the store bumps `version` exactly when it
    /// changes.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            for k in NON_CONTENT {
                map.remove(k);
            }
        }
        let mut out = String::new();
        canonical_json(&value, &mut out);
        Sha256::digest(out.as_bytes()).into()
    }

    /// The fingerprint of the embedded signing key.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_jwk(&self.signing_key)
    }

    /// Whether `at` is at or past `expiresAt`.
    pub fn is_expired(&self, at: Timestamp) -> bool {
        at.as_secs() >= self.expires_at
    }
}

/// JSON with object keys sorted bytewise and no whitespace. For the ASCII keys and integer-only numbers of a
/// manifest this is the RFC 8785 canonical form; it does not depend on serde_json's map ordering feature.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(k));
                out.push(':');
                if let Some(item) = map.get(k) {
                    canonical_json(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Signing

/// The instance signing key (Ed25519). Wiped on drop; never printed.
pub struct InstanceSigningKey(SigningKey);

impl fmt::Debug for InstanceSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceSigningKey({})", self.fingerprint())
    }
}

impl InstanceSigningKey {
    /// A fresh key from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        let mut seed = random_array::<32>(rng);
        let key = Self::from_seed(&seed);
        seed.zeroize();
        key
    }

    /// The key with this 32-byte seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        InstanceSigningKey(SigningKey::from_bytes(seed))
    }

    /// Reads a PEM PKCS#8 Ed25519 private key.
    pub fn from_pem(text: &str) -> Result<Self, KeyFileError> {
        let seed = decode_pkcs8_pem(text, Pkcs8Kind::Ed25519)?;
        Ok(Self::from_seed(&seed))
    }

    /// The PEM PKCS#8 encoding of this key (what the key file holds).
    pub fn to_pem(&self) -> Zeroizing<String> {
        encode_pkcs8_pem(self.0.as_bytes(), Pkcs8Kind::Ed25519)
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> Jwk {
        Jwk::ed25519(&self.verifying_key())
    }

    /// The instance fingerprint (= manifest `kid`).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_jwk(&self.public_jwk())
    }

    /// Signs `manifest` as a compact JWS. Its `signingKey` is set to this key first, so the result always verifies.
    pub fn sign(&self, manifest: &Manifest) -> String {
        let mut manifest = manifest.clone();
        manifest.signing_key = self.public_jwk();
        let header = format!(
            r#"{{"alg":"{JWS_ALG}","kid":"{}","typ":"{JWS_TYPE}"}}"#,
            self.fingerprint()
        );
        // A struct of strings, integers, maps and vectors always serializes.
        let payload = serde_json::to_vec(&manifest).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.as_bytes()),
            URL_SAFE_NO_PAD.encode(&payload)
        );
        let signature: Signature = self.0.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// The sealed-sender trust root key pair, with its key-file encoding.
pub struct SealedSenderRoot(pub KeyPair);

impl fmt::Debug for SealedSenderRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSenderRoot({})", self.fingerprint())
    }
}

impl SealedSenderRoot {
    /// A fresh key pair from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        SealedSenderRoot(KeyPair::generate(rng))
    }

    /// Reads a PEM PKCS#8 X25519 private key.
    pub fn from_pem(text: &str) -> Result<Self, KeyFileError> {
        let raw = decode_pkcs8_pem(text, Pkcs8Kind::X25519)?;
        Ok(SealedSenderRoot(KeyPair::from_private(
            PrivateKey::from_array(*raw),
        )))
    }

    /// The PEM PKCS#8 encoding (what the key file holds).
    pub fn to_pem(&self) -> Zeroizing<String> {
        encode_pkcs8_pem(&self.0.private_key.serialize(), Pkcs8Kind::X25519)
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.0.public_key
    }

    /// Standard base64 of the 33-byte serialized public key (the manifest's `trustRoots.sealedSender`).
    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.0.public_key.serialize())
    }

    /// SHA-256 of the serialized public key, recorded in the database to detect a swapped key file.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_bytes(&self.0.public_key.serialize())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Key files: PEM PKCS#8 (RFC 5958 / RFC 8410)

/// A key file that cannot be read as the expected key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// Not a single `PRIVATE KEY` PEM block with valid base64.
    #[error("not a PEM `PRIVATE KEY` block")]
    NotPem,
    /// A PKCS#8 key of another algorithm, or an encoding this reader does not accept.
    #[error("not a PKCS#8 {0} private key")]
    WrongKey(&'static str),
}

#[derive(Clone, Copy)]
enum Pkcs8Kind {
    Ed25519,
    X25519,
}

impl Pkcs8Kind {
    /// The DER of `OneAsymmetricKey` up to the 32 key bytes: version 0, the algorithm OID (1.3.101.112 for
    /// Ed25519, 1.3.101.110 for X25519), and the OCTET STRING wrapping the raw key (RFC 8410 §7).
    fn prefix(self) -> [u8; 16] {
        let oid_last = match self {
            Pkcs8Kind::Ed25519 => 0x70,
            Pkcs8Kind::X25519 => 0x6e,
        };
        [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, oid_last, 0x04, 0x22,
            0x04, 0x20,
        ]
    }
    fn name(self) -> &'static str {
        match self {
            Pkcs8Kind::Ed25519 => "Ed25519",
            Pkcs8Kind::X25519 => "X25519",
        }
    }
}

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

fn encode_pkcs8_pem(key: &[u8; 32], kind: Pkcs8Kind) -> Zeroizing<String> {
    let mut der = Zeroizing::new(Vec::with_capacity(48));
    der.extend_from_slice(&kind.prefix());
    der.extend_from_slice(key);
    let body = Zeroizing::new(STANDARD.encode(der.as_slice()));
    Zeroizing::new(format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", body.as_str()))
}

fn decode_pkcs8_pem(text: &str, kind: Pkcs8Kind) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    let start = text.find(PEM_BEGIN).ok_or(KeyFileError::NotPem)? + PEM_BEGIN.len();
    let len = text[start..].find(PEM_END).ok_or(KeyFileError::NotPem)?;
    let body: Zeroizing<String> = Zeroizing::new(
        text[start..start + len]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    let der = Zeroizing::new(
        STANDARD
            .decode(body.as_bytes())
            .map_err(|_| KeyFileError::NotPem)?,
    );
    let prefix = kind.prefix();
    if der.len() != 48 || der[..16] != prefix {
        return Err(KeyFileError::WrongKey(kind.name()));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&der[16..]);
    Ok(key)
}

// ---------------------------------------------------------------------------------------------------------------
// Verification

/// Why a manifest is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a compact JWS with a manifest payload.
    #[error("malformed manifest: {0}")]
    Malformed(&'static str),
    /// The header's `alg` or `typ` is not what a manifest uses.
    #[error("unexpected JWS header: want alg EdDSA and typ {JWS_TYPE}")]
    Header,
    /// The header's `kid` is not the thumbprint of the embedded signing key.
    #[error("the header kid does not match the embedded signing key")]
    KidMismatch,
    /// Signed by another key than the expected fingerprint.
    #[error("signed by {actual}, not by the expected key {expected}")]
    WrongKey {
        /// What the caller pinned.
        expected: String,
        /// What the manifest carries.
        actual: String,
    },
    /// The signature does not verify (tampered payload or header, or a foreign signature).
    #[error("the signature does not verify")]
    BadSignature,
    /// Past `expiresAt`.
    #[error("expired at {expires_at} (unix seconds)")]
    Expired {
        /// The manifest's `expiresAt`.
        expires_at: i64,
    },
    /// `issuedAt` after `expiresAt`.
    #[error("issuedAt is after expiresAt")]
    BadValidity,
    /// Older than the last accepted version.
    #[error("version {version} is lower than the last accepted version {minimum}")]
    VersionTooLow {
        /// The manifest's version.
        version: u64,
        /// The last accepted one.
        minimum: u64,
    },
    /// Same version as the last accepted one, but different content.
    #[error("version {version} was already accepted with different content")]
    ContentChangedWithoutNewVersion {
        /// The version.
        version: u64,
    },
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
}

/// Checks a compact-JWS manifest: the header, that `kid` is the thumbprint of the embedded `signingKey`, that this
/// is `expected` (when given), the Ed25519 signature (strict verification), expiry at `now`, and
/// `version >= min_version` (when given). Returns the payload.
pub fn verify(
    jws: &str,
    expected: Option<&Fingerprint>,
    min_version: Option<u64>,
    now: Timestamp,
) -> Result<Manifest, VerifyError> {
    let jws = jws.trim();
    let mut parts = jws.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("not three dot-separated parts"));
    };
    let b64 = |s: &str, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| VerifyError::Malformed(what))
    };
    let header: Header = serde_json::from_slice(&b64(h64, "header is not base64url")?)
        .map_err(|_| VerifyError::Malformed("header is not a JWS header"))?;
    if header.alg != JWS_ALG || header.typ.as_deref() != Some(JWS_TYPE) {
        return Err(VerifyError::Header);
    }
    let manifest: Manifest = serde_json::from_slice(&b64(p64, "payload is not base64url")?)
        .map_err(|_| VerifyError::Malformed("payload is not a manifest"))?;
    let key = manifest.signing_key.verifying_key()?;
    let actual = manifest.fingerprint();
    if header.kid.as_deref() != Some(actual.to_string().as_str()) {
        return Err(VerifyError::KidMismatch);
    }
    if let Some(expected) = expected
        && *expected != actual
    {
        return Err(VerifyError::WrongKey {
            expected: expected.with_hash_name(),
            actual: actual.with_hash_name(),
        });
    }
    let sig: [u8; 64] = b64(s64, "signature is not base64url")?
        .try_into()
        .map_err(|_| VerifyError::BadSignature)?;
    key.verify_strict(
        format!("{h64}.{p64}").as_bytes(),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| VerifyError::BadSignature)?;
    if manifest.issued_at > manifest.expires_at {
        return Err(VerifyError::BadValidity);
    }
    if manifest.is_expired(now) {
        return Err(VerifyError::Expired {
            expires_at: manifest.expires_at,
        });
    }
    if let Some(minimum) = min_version
        && manifest.version < minimum
    {
        return Err(VerifyError::VersionTooLow {
            version: manifest.version,
            minimum,
        });
    }
    Ok(manifest)
}

/// The client rule for a refetch of an already verified manifest: a higher version is accepted; the same version
/// only with identical content (apart from the times); a lower one never.
pub fn check_update(previous: &Manifest, next: &Manifest) -> Result<(), VerifyError> {
    if next.version < previous.version {
        return Err(VerifyError::VersionTooLow {
            version: next.version,
            minimum: previous.version,
        });
    }
    if next.version == previous.version && next.content_hash() != previous.content_hash() {
        return Err(VerifyError::ContentChangedWithoutNewVersion {
            version: next.version,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Descriptor

/// A server descriptor: where the manifest is and which key must have signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The manifest's URL.
    pub manifest_url: String,
    /// The instance fingerprint.
    pub fingerprint: Fingerprint,
}

/// A string that is not a `flatline://server?url=…&fp=sha256:…` descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a server descriptor: {0}")]
pub struct BadDescriptor(&'static str);

impl Descriptor {
    /// Parses `flatline://server?url=<percent-encoded>&fp=sha256:<fingerprint>` (parameters in any order).
    pub fn parse(uri: &str) -> Result<Self, BadDescriptor> {
        let query = uri
            .strip_prefix(DESCRIPTOR_PREFIX)
            .ok_or(BadDescriptor("does not start with flatline://server?"))?;
        let (mut url, mut fp) = (None, None);
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "url" => url = Some(percent_decode(v).ok_or(BadDescriptor("bad url encoding"))?),
                "fp" => fp = Some(percent_decode(v).ok_or(BadDescriptor("bad fp encoding"))?),
                _ => {}
            }
        }
        let fp = fp.ok_or(BadDescriptor("no fp"))?;
        if !fp.starts_with("sha256:") {
            return Err(BadDescriptor("fp is not sha256:…"));
        }
        Ok(Descriptor {
            manifest_url: url.ok_or(BadDescriptor("no url"))?,
            fingerprint: Fingerprint::parse(&fp).map_err(|_| BadDescriptor("bad fingerprint"))?,
        })
    }
}

impl fmt::Display for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{DESCRIPTOR_PREFIX}url={}&fp={}",
            percent_encode(&self.manifest_url),
            self.fingerprint.with_hash_name()
        )
    }
}

/// Percent-encodes every byte but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
