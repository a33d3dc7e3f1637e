//! The instance's zkgroup key file (`[instance] zk_params_file`): the server secret params and the
//! generic server secret params, each in libsignal's exact serialization, as two PEM-style blocks.
//!
//! ```text
//! -----BEGIN ZKGROUP SERVER SECRET PARAMS-----
//! <standard base64 of the 2721-byte ServerSecretParams, 64 columns>
//! -----END ZKGROUP SERVER SECRET PARAMS-----
//! -----BEGIN ZKGROUP GENERIC SERVER SECRET PARAMS-----
//! <standard base64 of the 385-byte GenericServerSecretParams>
//! -----END ZKGROUP GENERIC SERVER SECRET PARAMS-----
//! ```
//!
//! The blobs are what Signal-Server's `zkConfig.serverSecret` / `genericZkConfig.serverSecret` hold,
//! so parameters can move between the two.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::params::{GenericServerSecretParams, ServerSecretParams};
use crate::manifest::{Fingerprint, KeyFileError};
use crate::random::{SecureRandom, random_array};

const SERVER_LABEL: &str = "ZKGROUP SERVER SECRET PARAMS";
const GENERIC_LABEL: &str = "ZKGROUP GENERIC SERVER SECRET PARAMS";
const WHAT: &str = "zkgroup server secret params";

/// Both secret parameter sets of an instance.
#[derive(Clone)]
pub struct ZkParams {
    /// Group credentials, profile key credentials, group send endorsements.
    pub server: ServerSecretParams,
    /// Call-link credentials.
    pub generic: GenericServerSecretParams,
}

fn block(text: &str, label: &str) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or(KeyFileError::NotPem)? + begin.len();
    let stop = text[start..].find(&end).ok_or(KeyFileError::NotPem)? + start;
    let body: Zeroizing<String> = Zeroizing::new(
        text[start..stop]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    STANDARD
        .decode(body.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| KeyFileError::NotPem)
}

fn write_block(out: &mut String, label: &str, bytes: &[u8]) {
    let b64 = Zeroizing::new(STANDARD.encode(bytes));
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(core::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
}

impl ZkParams {
    /// Fresh parameters from two 32-byte seeds drawn from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(random_array(rng));
        let generic_seed: Zeroizing<[u8; 32]> = Zeroizing::new(random_array(rng));
        Self {
            server: ServerSecretParams::generate(&seed),
            generic: GenericServerSecretParams::generate(&generic_seed),
        }
    }

    /// Reads the key file's text.
    pub fn from_pem(text: &str) -> Result<Self, KeyFileError> {
        let server = ServerSecretParams::from_bytes(&block(text, SERVER_LABEL)?)
            .map_err(|_| KeyFileError::WrongKey(WHAT))?;
        let generic = GenericServerSecretParams::from_bytes(&block(text, GENERIC_LABEL)?)
            .map_err(|_| KeyFileError::WrongKey(WHAT))?;
        Ok(Self { server, generic })
    }

    /// The key file's text.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::new());
        write_block(
            &mut out,
            SERVER_LABEL,
            &Zeroizing::new(self.server.to_bytes()),
        );
        write_block(
            &mut out,
            GENERIC_LABEL,
            &Zeroizing::new(self.generic.to_bytes()),
        );
        out
    }

    /// Standard base64 of the 673-byte `ServerPublicParams` (the manifest's `trustRoots.zkParams`).
    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.server.public_params().to_bytes())
    }

    /// Standard base64 of the 225-byte `GenericServerPublicParams` (`trustRoots.genericZkParams`).
    pub fn generic_public_base64(&self) -> String {
        STANDARD.encode(self.generic.public_params().to_bytes())
    }

    /// SHA-256 over both public parameter sets (`ServerPublicParams ‖ GenericServerPublicParams`), recorded in the database to detect a swapped file.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut both = self.server.public_params().to_bytes();
        both.extend_from_slice(&self.generic.public_params().to_bytes());
        Fingerprint::of_bytes(&both)
    }
}
