//! Client-side username work for the simulated client: picking a username, its hash and zero-knowledge proof,
//! the request bodies, and username link blobs that decrypt exactly like libsignal's `username_links`.
//!
//! Link blob construction (libsignal `create_for_username` / `decrypt_username`): keys are HKDF-SHA256 over the
//! 32-byte entropy (no salt) with the infos below; the plaintext is the protobuf `UsernameData { 1: username,
//! 2: padding }` with `48 - len(username)` zero bytes of padding (none when longer; an empty field is omitted) and
//! must stay under four AES blocks; the blob is `IV(16) ‖ AES-256-CBC-PKCS7(plaintext) ‖ HMAC-SHA256(IV ‖ ct)`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use flatline_core::crypto::{
    USERNAME_HASH_LEN, USERNAME_PROOF_LEN, UsernameError, generate_username_proof, username_hash,
};
use flatline_core::random::{SecureRandom, random_array};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Size of the link entropy (the key material in the link URL).
pub const LINK_ENTROPY_LEN: usize = 32;
const IV_LEN: usize = 16;
const MAC_LEN: usize = 32;
const AES_BLOCK: usize = 16;
const ENCRYPTION_INFO: &[u8] = b"Signal Username Link Encryption Key";
const AUTHENTICATION_INFO: &[u8] = b"Signal Username Link Authentication Key";

/// Why a link blob could not be made or opened (libsignal's `UsernameLinkError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The username does not fit in four AES blocks.
    InputDataTooLong,
    /// The blob is no longer than IV and MAC.
    DataTooShort,
    /// The MAC does not match (wrong entropy or tampering).
    HmacMismatch,
    /// The ciphertext does not decrypt (bad padding or length).
    BadCiphertext,
    /// The plaintext is not a `UsernameData` protobuf.
    InvalidDecryptedDataStructure,
}

fn hkdf(entropy: &[u8; LINK_ENTROPY_LEN], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hkdf::Hkdf::<Sha256>::new(None, entropy).expand(info, &mut out);
    out
}

fn mac(key: &[u8; 32], data: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(data);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Encodes `UsernameData { username, padding }` (proto3: empty fields are omitted).
fn encode_username_data(username: &str, padding: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if !username.is_empty() {
        out.push(0x0a);
        put_varint(&mut out, username.len());
        out.extend_from_slice(username.as_bytes());
    }
    if padding > 0 {
        out.push(0x12);
        put_varint(&mut out, padding);
        out.resize(out.len() + padding, 0);
    }
    out
}

/// Decodes the `username` field of `UsernameData`, skipping unknown fields as prost does.
fn decode_username_data(data: &[u8]) -> Option<String> {
    let mut pos = 0;
    let mut username = String::new();
    while pos < data.len() {
        let key = get_varint(data, &mut pos)?;
        match key & 7 {
            0 => {
                get_varint(data, &mut pos)?;
            }
            1 => pos = pos.checked_add(8).filter(|&p| p <= data.len())?,
            5 => pos = pos.checked_add(4).filter(|&p| p <= data.len())?,
            2 => {
                let len = usize::try_from(get_varint(data, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|&e| e <= data.len())?;
                if key >> 3 == 1 {
                    username = String::from_utf8(data[pos..end].to_vec()).ok()?;
                }
                pos = end;
            }
            _ => return None,
        }
    }
    Some(username)
}

/// Encrypts `username` for a link with `entropy`, using a random IV from `rng`.
pub fn create_username_link(
    rng: &dyn SecureRandom,
    username: &str,
    entropy: &[u8; LINK_ENTROPY_LEN],
) -> Result<Vec<u8>, LinkError> {
    let padding = (AES_BLOCK * 3).saturating_sub(username.len());
    let plaintext = encode_username_data(username, padding);
    if plaintext.len() >= AES_BLOCK * 4 {
        return Err(LinkError::InputDataTooLong);
    }
    let iv: [u8; IV_LEN] = random_array(rng);
    let key = hkdf(entropy, ENCRYPTION_INFO);
    let ciphertext = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_vec::<Pkcs7>(&plaintext);
    let mut blob = iv.to_vec();
    blob.extend_from_slice(&ciphertext);
    let tag = mac(&hkdf(entropy, AUTHENTICATION_INFO), &blob);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// Decrypts a link blob with `entropy`: length, then the MAC (constant time), then the ciphertext.
pub fn decrypt_username_link(
    entropy: &[u8; LINK_ENTROPY_LEN],
    blob: &[u8],
) -> Result<String, LinkError> {
    if blob.len() <= IV_LEN + MAC_LEN {
        return Err(LinkError::DataTooShort);
    }
    let (signed, tag) = blob.split_at(blob.len() - MAC_LEN);
    let expected = mac(&hkdf(entropy, AUTHENTICATION_INFO), signed);
    if !bool::from(expected.ct_eq(tag)) {
        return Err(LinkError::HmacMismatch);
    }
    let (iv, ciphertext) = signed.split_at(IV_LEN);
    let key = hkdf(entropy, ENCRYPTION_INFO);
    let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| LinkError::BadCiphertext)?;
    let plaintext = cbc::Decryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .decrypt_padded_vec::<Pkcs7>(ciphertext)
        .map_err(|_| LinkError::BadCiphertext)?;
    decode_username_data(&plaintext).ok_or(LinkError::InvalidDecryptedDataStructure)
}

/// A username a simulated client owns: its text, hash and link entropy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimUsername {
    /// `nickname.discriminator`.
    pub name: String,
    /// The 32-byte hash the server sees.
    pub hash: [u8; USERNAME_HASH_LEN],
    /// The link entropy (kept by the client, put in the link URL).
    pub entropy: [u8; LINK_ENTROPY_LEN],
}

impl SimUsername {
    /// `nickname` with a random discriminator (10..10^9, as clients draw them) and fresh link entropy.
    pub fn pick(nickname: &str, rng: &dyn SecureRandom) -> Self {
        let n = u64::from_le_bytes(random_array(rng));
        Self::new(&format!("{nickname}.{}", 10 + n % 999_999_990), rng)
            .expect("picked usernames are valid")
    }

    /// A given username with fresh link entropy.
    pub fn new(name: &str, rng: &dyn SecureRandom) -> Result<Self, UsernameError> {
        Ok(SimUsername {
            name: name.to_owned(),
            hash: username_hash(name)?,
            entropy: random_array(rng),
        })
    }

    /// A fresh 128-byte proof of this username's hash.
    pub fn proof(&self, rng: &dyn SecureRandom) -> [u8; USERNAME_PROOF_LEN] {
        generate_username_proof(&self.name, &random_array(rng)).expect("valid username")
    }

    /// A fresh link blob of this username.
    pub fn link_blob(&self, rng: &dyn SecureRandom) -> Vec<u8> {
        create_username_link(rng, &self.name, &self.entropy).expect("usernames fit in a link")
    }

    /// The hash, URL-safe base64 without padding (as on the wire and in lookup paths).
    pub fn hash_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.hash)
    }

    /// A `PUT /v1/accounts/username_hash/reserve` body for `candidates`, in order.
    pub fn reserve_body(candidates: &[&SimUsername]) -> Value {
        let hashes: Vec<String> = candidates.iter().map(|c| c.hash_b64()).collect();
        json!({ "usernameHashes": hashes })
    }

    /// A `PUT /v1/accounts/username_hash/confirm` body, with a link blob when `with_link`.
    pub fn confirm_body(&self, rng: &dyn SecureRandom, with_link: bool) -> Value {
        let mut body = json!({
            "usernameHash": self.hash_b64(),
            "zkProof": URL_SAFE_NO_PAD.encode(self.proof(rng)),
        });
        if with_link {
            body["encryptedUsername"] = Value::String(URL_SAFE_NO_PAD.encode(self.link_blob(rng)));
        }
        body
    }

    /// A `PUT /v1/accounts/username_link` body.
    pub fn link_body(&self, rng: &dyn SecureRandom, keep_link_handle: bool) -> Value {
        json!({
            "usernameLinkEncryptedValue": URL_SAFE_NO_PAD.encode(self.link_blob(rng)),
            "keepLinkHandle": keep_link_handle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SeededRng;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// libsignal's vectors, as copied into the repository (identical to shared/vectors/usernames.json).
    fn vector() -> Value {
        let text = include_str!("../../flatline-core/testdata/usernames.json");
        serde_json::from_str::<Value>(text).unwrap()["username_link"].clone()
    }

    #[test]
    fn decrypts_libsignal_vector() {
        let v = vector();
        let entropy: [u8; 32] = unhex(v["entropy_hex"].as_str().unwrap())
            .try_into()
            .unwrap();
        let blob = unhex(v["encrypted_username_hex"].as_str().unwrap());
        assert_eq!(blob.len() as u64, v["encrypted_len"].as_u64().unwrap());
        assert_eq!(
            decrypt_username_link(&entropy, &blob).unwrap(),
            v["decrypted"].as_str().unwrap()
        );
        // Tampering anywhere, or the wrong entropy, fails the MAC.
        for i in [0, 20, blob.len() - 1] {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert_eq!(
                decrypt_username_link(&entropy, &bad),
                Err(LinkError::HmacMismatch)
            );
        }
        let mut other = entropy;
        other[0] ^= 1;
        assert_eq!(
            decrypt_username_link(&other, &blob),
            Err(LinkError::HmacMismatch)
        );
        assert_eq!(
            decrypt_username_link(&entropy, &blob[..48]),
            Err(LinkError::DataTooShort)
        );
    }

    #[test]
    fn our_blobs_round_trip_with_libsignal_lengths() {
        let rng = SeededRng::new(3);
        let v = vector();
        for case in v["lengths_by_username"].as_array().unwrap() {
            let name = case["username"].as_str().unwrap();
            let entropy = random_array(&rng);
            let blob = create_username_link(&rng, name, &entropy).unwrap();
            assert_eq!(
                blob.len() as u64,
                case["encrypted_len"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(decrypt_username_link(&entropy, &blob).unwrap(), name);
        }
        // The plaintext of the vector's username is byte-identical to libsignal's (decrypt the vector, re-encode).
        assert_eq!(encode_username_data("flatline.42", 37).len(), 52);
        assert_eq!(
            decode_username_data(&encode_username_data("flatline.42", 37)).as_deref(),
            Some("flatline.42")
        );
        let long = "a".repeat(70);
        assert_eq!(
            create_username_link(&rng, &long, &[0; 32]),
            Err(LinkError::InputDataTooLong)
        );
    }

    #[test]
    fn picked_usernames_prove_their_hash() {
        let rng = SeededRng::new(4);
        let u = SimUsername::pick("flatline", &rng);
        assert!(u.name.starts_with("flatline."));
        assert_eq!(u.hash, username_hash(&u.name).unwrap());
        flatline_core::crypto::verify_username_proof(&u.proof(&rng), &u.hash).unwrap();
        assert_eq!(
            decrypt_username_link(&u.entropy, &u.link_blob(&rng)).unwrap(),
            u.name
        );
    }
}
