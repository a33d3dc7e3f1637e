//! Server parameters: the hardcoded system generators, the (mostly legacy) key pairs of
//! `ServerSecretParams`, their public halves, notary signatures, and `GenericServerSecretParams`.
//!
//! Layouts (bincode, see [`super::bytes`]):
//! * legacy MAC key pair: `w ‖ w' ‖ W ‖ x0 ‖ x1 ‖ y_1..y_n ‖ C_W ‖ I` (224 + 32n), public `C_W ‖ I`;
//! * signing key pair: `sk ‖ PK`, public `PK`;
//! * zkcredential key pair: private key only, `w ‖ w' ‖ W ‖ x0 ‖ x1 ‖ y_0..y_6` (384), the public
//!   key `C_W ‖ I_2..I_7` (224) is recomputed;
//! * endorsement root key pair: `sk` only (32), public `PK`.
#![allow(non_snake_case)]

use std::sync::OnceLock;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use zeroize::Zeroize;

use super::ZkError;
use super::bytes::{Reader, Writer};
use super::poksho::Statement;
use super::sho::{Sho, ShoHmacSha256, ShoSha256, sho_hmac};

/// Length of a serialized `ServerSecretParams`.
pub const SERVER_SECRET_PARAMS_LEN: usize = 2721;
/// Length of a serialized `ServerPublicParams`.
pub const SERVER_PUBLIC_PARAMS_LEN: usize = 673;
/// Length of a serialized `GenericServerSecretParams` (legacy version).
pub const GENERIC_SERVER_SECRET_PARAMS_LEN: usize = 385;
/// Length of a serialized `GenericServerPublicParams` (legacy version).
pub const GENERIC_SERVER_PUBLIC_PARAMS_LEN: usize = 225;
/// Length of a notary signature.
pub const NOTARY_SIGNATURE_LEN: usize = 64;

/// zkgroup's legacy credential generators (`crypto::credentials::SystemParams`).
pub(crate) struct LegacySystem {
    pub(crate) G_w: RistrettoPoint,
    pub(crate) G_wprime: RistrettoPoint,
    pub(crate) G_x0: RistrettoPoint,
    pub(crate) G_x1: RistrettoPoint,
    /// `G_y1..G_y6` (index 0 is `G_y1`).
    pub(crate) G_y: [RistrettoPoint; 6],
    pub(crate) G_m5: RistrettoPoint,
    pub(crate) G_V: RistrettoPoint,
}

pub(crate) fn legacy_system() -> &'static LegacySystem {
    static S: OnceLock<LegacySystem> = OnceLock::new();
    S.get_or_init(|| {
        let mut sho = sho_hmac(
            b"Signal_ZKGroup_20200424_Constant_Credentials_SystemParams_Generate",
            b"",
        );
        let G_w = sho.get_point();
        let G_wprime = sho.get_point();
        let G_x0 = sho.get_point();
        let G_x1 = sho.get_point();
        let y1 = sho.get_point();
        let y2 = sho.get_point();
        let y3 = sho.get_point();
        let y4 = sho.get_point();
        let _G_m1 = sho.get_point();
        let _G_m2 = sho.get_point();
        let _G_m3 = sho.get_point();
        let _G_m4 = sho.get_point();
        let G_V = sho.get_point();
        let _G_z = sho.get_point();
        // Points added later come last so existing ones never change.
        let y5 = sho.get_point();
        let y6 = sho.get_point();
        let G_m5 = sho.get_point();
        LegacySystem {
            G_w,
            G_wprime,
            G_x0,
            G_x1,
            G_y: [y1, y2, y3, y4, y5, y6],
            G_m5,
            G_V,
        }
    })
}

/// Number of attribute slots of a zkcredential key (one aggregate public, three two-point hidden).
pub(crate) const NUM_SUPPORTED_ATTRS: usize = 7;

/// zkcredential's generators (`credentials::SystemParams`).
pub(crate) struct ZkcSystem {
    pub(crate) G_w: RistrettoPoint,
    pub(crate) G_wprime: RistrettoPoint,
    pub(crate) G_x0: RistrettoPoint,
    pub(crate) G_x1: RistrettoPoint,
    pub(crate) G_V: RistrettoPoint,
    pub(crate) G_y: [RistrettoPoint; NUM_SUPPORTED_ATTRS],
}

pub(crate) fn zkc_system() -> &'static ZkcSystem {
    static S: OnceLock<ZkcSystem> = OnceLock::new();
    S.get_or_init(|| {
        let mut sho = ShoSha256::new(b"Signal_ZKCredential_ConstantSystemParams_generate_20230410");
        let G_w = sho.get_point();
        let G_wprime = sho.get_point();
        let G_x0 = sho.get_point();
        let G_x1 = sho.get_point();
        let G_V = sho.get_point();
        let _G_z = sho.get_point();
        let G_y = core::array::from_fn(|_| sho.get_point());
        ZkcSystem {
            G_w,
            G_wprime,
            G_x0,
            G_x1,
            G_V,
            G_y,
        }
    })
}

/// A legacy zkgroup MAC key pair with `y.len()` stored scalars, of which the first
/// `num_attrs` enter `I`.
#[derive(Clone)]
pub(crate) struct LegacyKeyPair {
    pub(crate) w: Scalar,
    pub(crate) wprime: Scalar,
    pub(crate) W: RistrettoPoint,
    pub(crate) x0: Scalar,
    pub(crate) x1: Scalar,
    /// `y_1..y_n` (index 0 is `y_1`).
    pub(crate) y: Vec<Scalar>,
    pub(crate) C_W: RistrettoPoint,
    pub(crate) I: RistrettoPoint,
}

impl Drop for LegacyKeyPair {
    fn drop(&mut self) {
        self.w.zeroize();
        self.wprime.zeroize();
        self.x0.zeroize();
        self.x1.zeroize();
        self.y.iter_mut().for_each(Zeroize::zeroize);
    }
}

impl LegacyKeyPair {
    fn generate(sho: &mut ShoHmacSha256, stored: usize, num_attrs: usize) -> Self {
        let s = legacy_system();
        let w = sho.get_scalar();
        let W = w * s.G_w;
        let wprime = sho.get_scalar();
        let x0 = sho.get_scalar();
        let x1 = sho.get_scalar();
        let y: Vec<Scalar> = (0..stored).map(|_| sho.get_scalar()).collect();
        let C_W = W + wprime * s.G_wprime;
        let mut I = s.G_V - x0 * s.G_x0 - x1 * s.G_x1;
        for (yn, G) in y.iter().zip(&s.G_y).take(num_attrs) {
            I -= yn * G;
        }
        Self {
            w,
            wprime,
            W,
            x0,
            x1,
            y,
            C_W,
            I,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.put_scalar(&self.w);
        out.put_scalar(&self.wprime);
        out.put_point(&self.W);
        out.put_scalar(&self.x0);
        out.put_scalar(&self.x1);
        for y in &self.y {
            out.put_scalar(y);
        }
        out.put_point(&self.C_W);
        out.put_point(&self.I);
    }

    fn read(r: &mut Reader<'_>, stored: usize) -> Result<Self, ZkError> {
        let w = r.scalar()?;
        let wprime = r.scalar()?;
        let W = r.point()?;
        let x0 = r.scalar()?;
        let x1 = r.scalar()?;
        let y = (0..stored).map(|_| r.scalar()).collect::<Result<_, _>>()?;
        let C_W = r.point()?;
        let I = r.point()?;
        Ok(Self {
            w,
            wprime,
            W,
            x0,
            x1,
            y,
            C_W,
            I,
        })
    }

    fn public(&self) -> LegacyPublicKey {
        LegacyPublicKey {
            C_W: self.C_W,
            I: self.I,
        }
    }
}

/// The public half of a legacy key pair.
#[derive(Clone, Copy)]
pub(crate) struct LegacyPublicKey {
    pub(crate) C_W: RistrettoPoint,
    pub(crate) I: RistrettoPoint,
}

impl LegacyPublicKey {
    fn write(&self, out: &mut Vec<u8>) {
        out.put_point(&self.C_W);
        out.put_point(&self.I);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ZkError> {
        Ok(Self {
            C_W: r.point()?,
            I: r.point()?,
        })
    }
}

/// A zkcredential private key (legacy compatibility mode: `y0` is used as stored).
#[derive(Clone)]
pub(crate) struct CredentialPrivateKey {
    pub(crate) w: Scalar,
    pub(crate) wprime: Scalar,
    pub(crate) W: RistrettoPoint,
    pub(crate) x0: Scalar,
    pub(crate) x1: Scalar,
    pub(crate) y: [Scalar; NUM_SUPPORTED_ATTRS],
}

impl Drop for CredentialPrivateKey {
    fn drop(&mut self) {
        self.w.zeroize();
        self.wprime.zeroize();
        self.x0.zeroize();
        self.x1.zeroize();
        self.y.iter_mut().for_each(Zeroize::zeroize);
    }
}

impl CredentialPrivateKey {
    fn generate(randomness: &[u8; 32]) -> Self {
        let mut sho = sho_hmac(
            b"Signal_ZKCredential_CredentialPrivateKey_generate_20230410",
            randomness,
        );
        let s = zkc_system();
        let w = sho.get_scalar();
        let W = w * s.G_w;
        let wprime = sho.get_scalar();
        let x0 = sho.get_scalar();
        let x1 = sho.get_scalar();
        let y = core::array::from_fn(|_| sho.get_scalar());
        Self {
            w,
            wprime,
            W,
            x0,
            x1,
            y,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.put_scalar(&self.w);
        out.put_scalar(&self.wprime);
        out.put_point(&self.W);
        out.put_scalar(&self.x0);
        out.put_scalar(&self.x1);
        for y in &self.y {
            out.put_scalar(y);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ZkError> {
        let w = r.scalar()?;
        let wprime = r.scalar()?;
        let W = r.point()?;
        let x0 = r.scalar()?;
        let x1 = r.scalar()?;
        let mut y = [Scalar::ZERO; NUM_SUPPORTED_ATTRS];
        for slot in &mut y {
            *slot = r.scalar()?;
        }
        Ok(Self {
            w,
            wprime,
            W,
            x0,
            x1,
            y,
        })
    }

    fn public(&self) -> CredentialPublicKey {
        let s = zkc_system();
        let C_W = self.W + self.wprime * s.G_wprime;
        let mut partial = s.G_V - self.x0 * s.G_x0 - self.x1 * s.G_x1 - self.y[0] * s.G_y[0];
        let I = core::array::from_fn(|i| {
            partial -= self.y[i + 1] * s.G_y[i + 1];
            partial
        });
        CredentialPublicKey { C_W, I }
    }
}

/// A zkcredential public key: `C_W` and `I` for 2..=7 attributes.
#[derive(Clone)]
pub(crate) struct CredentialPublicKey {
    pub(crate) C_W: RistrettoPoint,
    I: [RistrettoPoint; NUM_SUPPORTED_ATTRS - 1],
}

impl CredentialPublicKey {
    /// `I` for a credential over `num_attrs` (2..=7) attribute points.
    pub(crate) fn I(&self, num_attrs: usize) -> Option<RistrettoPoint> {
        num_attrs
            .checked_sub(2)
            .and_then(|i| self.I.get(i))
            .copied()
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.put_point(&self.C_W);
        for i in &self.I {
            out.put_point(i);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ZkError> {
        let C_W = r.point()?;
        let mut I = [RISTRETTO_BASEPOINT_POINT; NUM_SUPPORTED_ATTRS - 1];
        for slot in &mut I {
            *slot = r.point()?;
        }
        Ok(Self { C_W, I })
    }
}

/// A zkcredential key pair in legacy compatibility mode.
#[derive(Clone)]
pub(crate) struct CredentialKeyPair {
    pub(crate) private: CredentialPrivateKey,
    pub(crate) public: CredentialPublicKey,
}

impl CredentialKeyPair {
    fn generate(randomness: &[u8; 32]) -> Self {
        Self::from_private(CredentialPrivateKey::generate(randomness))
    }
    fn from_private(private: CredentialPrivateKey) -> Self {
        let public = private.public();
        Self { private, public }
    }
}

/// The endorsement root key pair (group send endorsements).
#[derive(Clone)]
pub(crate) struct EndorsementRootKeyPair {
    pub(crate) sk: Scalar,
    pub(crate) PK: RistrettoPoint,
}

impl Drop for EndorsementRootKeyPair {
    fn drop(&mut self) {
        self.sk.zeroize();
    }
}

impl EndorsementRootKeyPair {
    fn generate(randomness: &[u8; 32]) -> Self {
        let mut sho = sho_hmac(
            b"Signal_ZKCredential_Endorsements_ServerRootKeyPair_generate_20240207",
            randomness,
        );
        Self::from_raw(sho.get_scalar())
    }
    fn from_raw(sk: Scalar) -> Self {
        Self {
            sk,
            PK: RistrettoPoint::mul_base(&sk),
        }
    }
}

fn signature_statement() -> Statement {
    let mut st = Statement::new();
    st.add("public_key", &[("private_key", "G")]);
    st
}

/// The server's zkgroup secret parameters (`ServerSecretParams`, 2721 bytes).
#[derive(Clone)]
pub struct ServerSecretParams {
    auth: LegacyKeyPair,
    profile: LegacyKeyPair,
    sig_sk: Scalar,
    sig_pk: RistrettoPoint,
    receipt: LegacyKeyPair,
    pni: LegacyKeyPair,
    pub(crate) expiring_profile: LegacyKeyPair,
    auth_with_pni: LegacyKeyPair,
    pub(crate) generic: CredentialKeyPair,
    pub(crate) endorsement: EndorsementRootKeyPair,
}

impl Drop for ServerSecretParams {
    fn drop(&mut self) {
        self.sig_sk.zeroize();
    }
}

// (stored scalars, attributes in I) of the legacy key pairs, in struct order.
const AUTH: (usize, usize) = (4, 3);
const PROFILE: (usize, usize) = (4, 4);
const RECEIPT: (usize, usize) = (4, 2);
const PNI: (usize, usize) = (6, 6);
const EXPIRING_PROFILE: (usize, usize) = (5, 5);
const AUTH_WITH_PNI: (usize, usize) = (5, 5);

impl ServerSecretParams {
    /// Derives all parameters from a 32-byte seed, as `ServerSecretParams::generate` does.
    pub fn generate(randomness: &[u8; 32]) -> Self {
        let mut sho = sho_hmac(
            b"Signal_ZKGroup_20200424_Random_ServerSecretParams_Generate",
            randomness,
        );
        let auth = LegacyKeyPair::generate(&mut sho, AUTH.0, AUTH.1);
        let profile = LegacyKeyPair::generate(&mut sho, PROFILE.0, PROFILE.1);
        let sig_sk = sho.get_scalar();
        let sig_pk = RistrettoPoint::mul_base(&sig_sk);
        let receipt = LegacyKeyPair::generate(&mut sho, RECEIPT.0, RECEIPT.1);
        let pni = LegacyKeyPair::generate(&mut sho, PNI.0, PNI.1);
        let expiring_profile =
            LegacyKeyPair::generate(&mut sho, EXPIRING_PROFILE.0, EXPIRING_PROFILE.1);
        let auth_with_pni = LegacyKeyPair::generate(&mut sho, AUTH_WITH_PNI.0, AUTH_WITH_PNI.1);
        Self {
            auth,
            profile,
            sig_sk,
            sig_pk,
            receipt,
            pni,
            expiring_profile,
            auth_with_pni,
            generic: CredentialKeyPair::generate(randomness),
            endorsement: EndorsementRootKeyPair::generate(randomness),
        }
    }

    /// The 2721-byte serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SERVER_SECRET_PARAMS_LEN);
        out.push(0);
        self.auth.write(&mut out);
        self.profile.write(&mut out);
        out.put_scalar(&self.sig_sk);
        out.put_point(&self.sig_pk);
        self.receipt.write(&mut out);
        self.pni.write(&mut out);
        self.expiring_profile.write(&mut out);
        self.auth_with_pni.write(&mut out);
        self.generic.private.write(&mut out);
        out.put_scalar(&self.endorsement.sk);
        out
    }

    /// Parses the 2721-byte serialization (canonical scalars, valid points, nothing trailing).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        let mut r = Reader::new(bytes);
        r.version(0)?;
        let auth = LegacyKeyPair::read(&mut r, AUTH.0)?;
        let profile = LegacyKeyPair::read(&mut r, PROFILE.0)?;
        let sig_sk = r.scalar()?;
        let sig_pk = r.point()?;
        let receipt = LegacyKeyPair::read(&mut r, RECEIPT.0)?;
        let pni = LegacyKeyPair::read(&mut r, PNI.0)?;
        let expiring_profile = LegacyKeyPair::read(&mut r, EXPIRING_PROFILE.0)?;
        let auth_with_pni = LegacyKeyPair::read(&mut r, AUTH_WITH_PNI.0)?;
        let generic = CredentialKeyPair::from_private(CredentialPrivateKey::read(&mut r)?);
        let endorsement = EndorsementRootKeyPair::from_raw(r.scalar()?);
        r.finish()?;
        Ok(Self {
            auth,
            profile,
            sig_sk,
            sig_pk,
            receipt,
            pni,
            expiring_profile,
            auth_with_pni,
            generic,
            endorsement,
        })
    }

    /// The public parameters clients are configured with.
    pub fn public_params(&self) -> ServerPublicParams {
        ServerPublicParams {
            auth: self.auth.public(),
            profile: self.profile.public(),
            sig_pk: self.sig_pk,
            receipt: self.receipt.public(),
            pni: self.pni.public(),
            expiring_profile: self.expiring_profile.public(),
            auth_with_pni: self.auth_with_pni.public(),
            generic: self.generic.public.clone(),
            endorsement: self.endorsement.PK,
        }
    }

    /// A notary signature over `message` (`ServerSecretParams::sign`), deterministic in `randomness`.
    pub fn sign(
        &self,
        randomness: &[u8; 32],
        message: &[u8],
    ) -> Result<[u8; NOTARY_SIGNATURE_LEN], ZkError> {
        let mut sho = sho_hmac(
            b"Signal_ZKGroup_20200424_Random_ServerSecretParams_Sign",
            randomness,
        );
        let nonce_randomness: [u8; 32] = {
            let mut b = [0u8; 32];
            sho.squeeze_into(&mut b);
            b
        };
        let proof = signature_statement().prove(
            &[("private_key", self.sig_sk)],
            &[("public_key", self.sig_pk)],
            message,
            &nonce_randomness,
        )?;
        proof.try_into().map_err(|_| ZkError::BadArguments)
    }
}

/// The server's zkgroup public parameters (`ServerPublicParams`, 673 bytes).
#[derive(Clone)]
pub struct ServerPublicParams {
    auth: LegacyPublicKey,
    profile: LegacyPublicKey,
    sig_pk: RistrettoPoint,
    receipt: LegacyPublicKey,
    pni: LegacyPublicKey,
    pub(crate) expiring_profile: LegacyPublicKey,
    auth_with_pni: LegacyPublicKey,
    pub(crate) generic: CredentialPublicKey,
    pub(crate) endorsement: RistrettoPoint,
}

impl ServerPublicParams {
    /// The 673-byte serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SERVER_PUBLIC_PARAMS_LEN);
        out.push(0);
        self.auth.write(&mut out);
        self.profile.write(&mut out);
        out.put_point(&self.sig_pk);
        self.receipt.write(&mut out);
        self.pni.write(&mut out);
        self.expiring_profile.write(&mut out);
        self.auth_with_pni.write(&mut out);
        self.generic.write(&mut out);
        out.put_point(&self.endorsement);
        out
    }

    /// Parses the 673-byte serialization.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        let mut r = Reader::new(bytes);
        r.version(0)?;
        let auth = LegacyPublicKey::read(&mut r)?;
        let profile = LegacyPublicKey::read(&mut r)?;
        let sig_pk = r.point()?;
        let receipt = LegacyPublicKey::read(&mut r)?;
        let pni = LegacyPublicKey::read(&mut r)?;
        let expiring_profile = LegacyPublicKey::read(&mut r)?;
        let auth_with_pni = LegacyPublicKey::read(&mut r)?;
        let generic = CredentialPublicKey::read(&mut r)?;
        let endorsement = r.point()?;
        r.finish()?;
        Ok(Self {
            auth,
            profile,
            sig_pk,
            receipt,
            pni,
            expiring_profile,
            auth_with_pni,
            generic,
            endorsement,
        })
    }

    /// Verifies a notary signature (`ServerPublicParams::verifySignature`).
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), ZkError> {
        if signature.len() != NOTARY_SIGNATURE_LEN {
            return Err(ZkError::Verification);
        }
        signature_statement().verify(signature, &[("public_key", self.sig_pk)], message)
    }

    /// The endorsement public key as libsignal exposes it (`getEndorsementPublicKey`, 33 bytes:
    /// a reserved zero byte and the point).
    pub fn endorsement_public_key(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[1..].copy_from_slice(self.endorsement.compress().as_bytes());
        out
    }
}

/// `GenericServerSecretParams` (legacy version 0, 385 bytes): the key of call-link credentials.
#[derive(Clone)]
pub struct GenericServerSecretParams {
    pub(crate) key: CredentialKeyPair,
}

impl GenericServerSecretParams {
    /// Derives the parameters from a 32-byte seed.
    pub fn generate(randomness: &[u8; 32]) -> Self {
        Self {
            key: CredentialKeyPair::generate(randomness),
        }
    }

    /// The 385-byte serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GENERIC_SERVER_SECRET_PARAMS_LEN);
        out.push(0);
        self.key.private.write(&mut out);
        out
    }

    /// Parses the legacy (version 0) serialization; version 1 (standard mode) is not supported.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        let mut r = Reader::new(bytes);
        r.version(0)?;
        let private = CredentialPrivateKey::read(&mut r)?;
        r.finish()?;
        Ok(Self {
            key: CredentialKeyPair::from_private(private),
        })
    }

    /// The public parameters.
    pub fn public_params(&self) -> GenericServerPublicParams {
        GenericServerPublicParams {
            key: self.key.public.clone(),
        }
    }
}

/// `GenericServerPublicParams` (legacy version 0, 225 bytes).
#[derive(Clone)]
pub struct GenericServerPublicParams {
    pub(crate) key: CredentialPublicKey,
}

impl GenericServerPublicParams {
    /// The 225-byte serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GENERIC_SERVER_PUBLIC_PARAMS_LEN);
        out.push(0);
        self.key.write(&mut out);
        out
    }

    /// Parses the legacy (version 0) serialization.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        let mut r = Reader::new(bytes);
        r.version(0)?;
        let key = CredentialPublicKey::read(&mut r)?;
        r.finish()?;
        Ok(Self { key })
    }
}
