//! Avatar and attachment uploads hosted by Flatline itself (M§4 avatar form, M§6 attachments v4 / TUS): object
//! keys, the avatar POST policy and the TUS upload token. Pure: time and randomness are passed in.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::random::{SecureRandom, random_array};
use crate::time::Timestamp;

/// Largest avatar (`content-length-range 1..10 MiB`).
pub const MAX_AVATAR_BYTES: u64 = 10 * 1024 * 1024;
/// How long an avatar form is valid.
pub const AVATAR_FORM_LIFETIME_SECS: i64 = 30 * 60;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], parts: &[&[u8]]) -> Option<HmacSha256> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret).ok()?;
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    Some(m)
}

/// A fresh attachment key: base64url (unpadded) of 15 random bytes, 20 characters (M§6).
pub fn new_attachment_key(rng: &dyn SecureRandom) -> String {
    URL_SAFE_NO_PAD.encode(random_array::<15>(rng))
}

/// Whether `key` has the form of an attachment key (20 base64url characters).
pub fn is_attachment_key(key: &str) -> bool {
    key.len() == 20 && key.bytes().all(is_url_safe)
}

/// Whether `key` has the form of an avatar key (`profiles/` + 22 base64url characters).
pub fn is_avatar_key(key: &str) -> bool {
    key.strip_prefix(crate::profiles::AVATAR_PREFIX)
        .is_some_and(|id| id.len() == 22 && id.bytes().all(is_url_safe))
}

fn is_url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The bearer token of a TUS upload: binds the key, the largest length and the expiry.
/// Form: `<expires secs>.<max length>.<base64url HMAC>`.
pub fn upload_token(secret: &[u8], key: &str, max_len: u64, expires: Timestamp) -> String {
    let (e, l) = (expires.as_secs().to_string(), max_len.to_string());
    let tag = mac(
        secret,
        &[b"tus", key.as_bytes(), l.as_bytes(), e.as_bytes()],
    )
    .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
    .unwrap_or_default();
    format!("{e}.{l}.{tag}")
}

/// Checks a TUS bearer token for `key` at `now`; returns the largest length it allows. Constant-time tag check.
pub fn verify_upload_token(secret: &[u8], token: &str, key: &str, now: Timestamp) -> Option<u64> {
    let mut it = token.splitn(3, '.');
    let (e, l, tag) = (it.next()?, it.next()?, it.next()?);
    let expires: i64 = e.parse().ok()?;
    let max_len: u64 = l.parse().ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(
        secret,
        &[b"tus", key.as_bytes(), l.as_bytes(), e.as_bytes()],
    )?
    .verify_slice(&tag)
    .ok()?;
    (now.as_secs() < expires).then_some(max_len)
}

/// `ProfileAvatarUploadAttributes` (S3 POST-policy shaped; `signature` is our HMAC, hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarForm {
    /// The object key.
    pub key: String,
    /// `<date>/flatline/profiles` (informational).
    pub credential: String,
    /// Always `private`.
    pub acl: String,
    /// `AWS4-HMAC-SHA256`, as clients expect.
    pub algorithm: String,
    /// `yyyyMMdd'T'HHmmss'Z'`.
    pub date: String,
    /// Base64 of the JSON policy.
    pub policy: String,
    /// Hex HMAC-SHA256 over `policy`.
    pub signature: String,
}

fn policy_signature(secret: &[u8], policy: &str) -> Option<HmacSha256> {
    mac(secret, &[b"avatar-policy", policy.as_bytes()])
}

/// Builds the avatar form for `key`, valid 30 minutes from `now`, allowing 1..=10 MiB.
pub fn avatar_form(secret: &[u8], key: &str, now: Timestamp) -> AvatarForm {
    let expires = Timestamp::from_secs(now.as_secs() + AVATAR_FORM_LIFETIME_SECS);
    let date = compact_date(now);
    let policy = serde_json::json!({
        "expiration": iso8601(expires),
        "conditions": [
            {"bucket": "profiles"},
            ["eq", "$key", key],
            {"acl": "private"},
            ["starts-with", "$Content-Type", ""],
            ["content-length-range", 1, MAX_AVATAR_BYTES],
        ],
        // Machine-readable expiry, so verification needs no date parsing.
        "expiresAt": expires.as_secs(),
    });
    let policy = STANDARD.encode(policy.to_string());
    let signature = policy_signature(secret, &policy)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    AvatarForm {
        key: key.to_owned(),
        credential: format!("{}/flatline/profiles", &date[..8]),
        acl: "private".into(),
        algorithm: "AWS4-HMAC-SHA256".into(),
        date,
        policy,
        signature,
    }
}

/// Why an avatar POST was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AvatarFormError {
    /// Bad signature, expired policy, or a key other than the policy's (403).
    #[error("the form's policy does not allow this upload")]
    Forbidden,
    /// Size outside the policy's range, or a malformed form (400).
    #[error("the upload is outside the policy's size range or malformed")]
    BadRequest,
}

/// Checks an avatar POST: the signature over `policy` (constant time), its expiry at `now`, that `key` is the
/// policy's exact key, and that `size` is in its content-length range. Returns the key to store under.
pub fn verify_avatar_form(
    secret: &[u8],
    policy: &str,
    signature_hex: &str,
    key: &str,
    size: u64,
    now: Timestamp,
) -> Result<(), AvatarFormError> {
    let sig = hex::decode(signature_hex).map_err(|_| AvatarFormError::Forbidden)?;
    policy_signature(secret, policy)
        .ok_or(AvatarFormError::Forbidden)?
        .verify_slice(&sig)
        .map_err(|_| AvatarFormError::Forbidden)?;
    let json: serde_json::Value = STANDARD
        .decode(policy)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AvatarFormError::Forbidden)?;
    let expires = json["expiresAt"]
        .as_i64()
        .ok_or(AvatarFormError::Forbidden)?;
    if now.as_secs() >= expires {
        return Err(AvatarFormError::Forbidden);
    }
    let conditions = json["conditions"]
        .as_array()
        .ok_or(AvatarFormError::Forbidden)?;
    let mut key_ok = false;
    let mut range = None;
    for c in conditions {
        match c.as_array().map(Vec::as_slice) {
            Some([op, field, value]) if op == "eq" && field == "$key" => {
                key_ok = value.as_str() == Some(key);
            }
            Some([op, lo, hi]) if op == "content-length-range" => {
                range = lo.as_u64().zip(hi.as_u64());
            }
            _ => {}
        }
    }
    if !key_ok || !is_avatar_key(key) {
        return Err(AvatarFormError::Forbidden);
    }
    match range {
        Some((lo, hi)) if (lo..=hi).contains(&size) => Ok(()),
        _ => Err(AvatarFormError::BadRequest),
    }
}

/// Days since the epoch → (year, month, day) (proleptic Gregorian; Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn parts(t: Timestamp) -> (i64, u32, u32, i64, i64, i64) {
    let secs = t.as_secs();
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

/// `yyyyMMdd'T'HHmmss'Z'`.
pub fn compact_date(t: Timestamp) -> String {
    let (y, mo, d, h, mi, s) = parts(t);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`.
pub fn iso8601(t: Timestamp) -> String {
    let (y, mo, d, h, mi, s) = parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u8);
    impl SecureRandom for Fixed {
        fn fill(&self, dest: &mut [u8]) {
            dest.fill(self.0);
        }
    }

    #[test]
    fn keys() {
        let k = new_attachment_key(&Fixed(0xfb));
        assert_eq!(k.len(), 20);
        assert!(is_attachment_key(&k));
        assert!(!is_attachment_key("../../../etc/passwd12"));
        assert!(is_avatar_key("profiles/AAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!is_avatar_key("profiles/../AAAAAAAAAAAAAAAAAAA"));
    }

    #[test]
    fn dates() {
        assert_eq!(compact_date(Timestamp::from_secs(0)), "19700101T000000Z");
        assert_eq!(
            iso8601(Timestamp::from_secs(1_796_277_658)),
            "2026-12-03T06:00:58.000Z"
        );
        assert_eq!(
            compact_date(Timestamp::from_secs(951_782_400)),
            "20000229T000000Z"
        );
    }

    #[test]
    fn upload_tokens_bind_key_length_and_expiry() {
        let now = Timestamp::from_secs(1000);
        let t = upload_token(b"s", "AAAAAAAAAAAAAAAAAAAA", 5, Timestamp::from_secs(2000));
        assert_eq!(
            verify_upload_token(b"s", &t, "AAAAAAAAAAAAAAAAAAAA", now),
            Some(5)
        );
        assert_eq!(
            verify_upload_token(b"s", &t, "BAAAAAAAAAAAAAAAAAAA", now),
            None
        );
        assert_eq!(
            verify_upload_token(b"x", &t, "AAAAAAAAAAAAAAAAAAAA", now),
            None
        );
        assert_eq!(
            verify_upload_token(b"s", &t, "AAAAAAAAAAAAAAAAAAAA", Timestamp::from_secs(2000)),
            None
        );
        let forged = t.replacen(".5.", ".9.", 1);
        assert_eq!(
            verify_upload_token(b"s", &forged, "AAAAAAAAAAAAAAAAAAAA", now),
            None
        );
    }

    #[test]
    fn avatar_policy() {
        let key = "profiles/AAAAAAAAAAAAAAAAAAAAAA";
        let now = Timestamp::from_secs(1_796_277_658);
        let f = avatar_form(b"s", key, now);
        assert_eq!(f.date, "20261203T060058Z");
        let ok =
            |key: &str, size, at| verify_avatar_form(b"s", &f.policy, &f.signature, key, size, at);
        assert_eq!(ok(key, 1, now), Ok(()));
        assert_eq!(ok(key, MAX_AVATAR_BYTES, now), Ok(()));
        assert_eq!(ok(key, 0, now), Err(AvatarFormError::BadRequest));
        assert_eq!(
            ok(key, MAX_AVATAR_BYTES + 1, now),
            Err(AvatarFormError::BadRequest)
        );
        assert_eq!(
            ok("profiles/BAAAAAAAAAAAAAAAAAAAAA", 1, now),
            Err(AvatarFormError::Forbidden)
        );
        assert_eq!(
            ok(key, 1, Timestamp::from_secs(now.as_secs() + 1800)),
            Err(AvatarFormError::Forbidden)
        );
        assert_eq!(
            verify_avatar_form(b"x", &f.policy, &f.signature, key, 1, now),
            Err(AvatarFormError::Forbidden)
        );
    }
}
