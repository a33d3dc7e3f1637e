//! zkcredential's `IssuanceProofBuilder` (issuer side and verifier): a MAC credential over
//! hidden attribute points and hashed public attributes, with a poksho proof that it was made
//! with the key behind the public parameters.
//!
//! Response layout: `credential (t ‖ U ‖ V) ‖ u64 len ‖ poksho proof`.
#![allow(non_snake_case)]

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;

use super::ZkError;
use super::bytes::{Reader, Writer};
use super::params::{CredentialKeyPair, CredentialPublicKey, NUM_SUPPORTED_ATTRS, zkc_system};
use super::poksho::Statement;
use super::sho::{Sho, ShoHmacSha256, sho_hmac};

/// A zkcredential MAC `(t, U, V)`.
#[derive(Clone, Copy)]
pub(crate) struct Credential {
    pub(crate) t: Scalar,
    pub(crate) U: RistrettoPoint,
    pub(crate) V: RistrettoPoint,
}

impl Credential {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.put_scalar(&self.t);
        out.put_point(&self.U);
        out.put_point(&self.V);
    }
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ZkError> {
        Ok(Self {
            t: r.scalar()?,
            U: r.point()?,
            V: r.point()?,
        })
    }
}

/// A credential with its issuance proof.
pub(crate) struct IssuanceProof {
    pub(crate) credential: Credential,
    pub(crate) poksho_proof: Vec<u8>,
}

impl IssuanceProof {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        self.credential.write(out);
        out.put_bytes(&self.poksho_proof);
    }
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ZkError> {
        Ok(Self {
            credential: Credential::read(r)?,
            poksho_proof: r.bytes()?.to_vec(),
        })
    }
}

const Y_NAMES: [&str; NUM_SUPPORTED_ATTRS] = ["y0", "y1", "y2", "y3", "y4", "y5", "y6"];
const G_Y_NAMES: [&str; NUM_SUPPORTED_ATTRS] =
    ["G_y0", "G_y1", "G_y2", "G_y3", "G_y4", "G_y5", "G_y6"];
const M_NAMES: [&str; NUM_SUPPORTED_ATTRS] = ["M0", "M1", "M2", "M3", "M4", "M5", "M6"];

/// Builds the attribute list of one credential type.
pub(crate) struct IssuanceProofBuilder {
    public_attrs: ShoHmacSha256,
    attr_points: Vec<RistrettoPoint>,
}

impl IssuanceProofBuilder {
    pub(crate) fn new(label: &[u8]) -> Self {
        Self {
            public_attrs: ShoHmacSha256::new(label),
            attr_points: vec![RistrettoPoint::identity()],
        }
    }

    /// A hidden attribute of two points.
    pub(crate) fn add_attribute(mut self, points: [RistrettoPoint; 2]) -> Self {
        self.attr_points.extend(points);
        self
    }

    /// A public attribute: its bytes are hashed into the aggregate point `M0`.
    pub(crate) fn add_public_attribute(mut self, bytes: &[u8]) -> Self {
        self.public_attrs.absorb_and_ratchet(bytes);
        self
    }

    fn statement(&self) -> Statement {
        let n = self.attr_points.len();
        let mut st = Statement::new();
        st.add("C_W", &[("w", "G_w"), ("wprime", "G_wprime")]);
        let mut gv: Vec<(&'static str, &'static str)> = vec![("x0", "G_x0"), ("x1", "G_x1")];
        gv.extend(
            Y_NAMES
                .iter()
                .zip(G_Y_NAMES.iter())
                .take(n)
                .map(|(a, b)| (*a, *b)),
        );
        st.add("G_V-I", &gv);
        let mut v: Vec<(&'static str, &'static str)> =
            vec![("w", "G_w"), ("x0", "U"), ("x1", "tU")];
        v.extend(
            Y_NAMES
                .iter()
                .zip(M_NAMES.iter())
                .take(n)
                .map(|(a, b)| (*a, *b)),
        );
        st.add("V", &v);
        st
    }

    fn finalize(&mut self) -> Result<(), ZkError> {
        if self.attr_points.len() > NUM_SUPPORTED_ATTRS || self.attr_points.len() < 2 {
            return Err(ZkError::BadArguments);
        }
        self.attr_points[0] = self.public_attrs.get_point();
        Ok(())
    }

    fn point_args(
        &self,
        key: &CredentialPublicKey,
        credential: &Credential,
    ) -> Result<Vec<(&'static str, RistrettoPoint)>, ZkError> {
        let s = zkc_system();
        let n = self.attr_points.len();
        let I = key.I(n).ok_or(ZkError::BadArguments)?;
        let mut args = vec![
            ("C_W", key.C_W),
            ("G_w", s.G_w),
            ("G_wprime", s.G_wprime),
            ("G_V-I", s.G_V - I),
            ("G_x0", s.G_x0),
            ("G_x1", s.G_x1),
        ];
        args.extend(
            G_Y_NAMES
                .iter()
                .zip(s.G_y.iter())
                .take(n)
                .map(|(a, b)| (*a, *b)),
        );
        args.push(("V", credential.V));
        args.push(("U", credential.U));
        args.push(("tU", credential.t * credential.U));
        args.extend(
            M_NAMES
                .iter()
                .zip(self.attr_points.iter())
                .map(|(a, b)| (*a, *b)),
        );
        Ok(args)
    }

    /// Issues the credential with `key`, deterministic in `randomness`.
    pub(crate) fn issue(
        mut self,
        key: &CredentialKeyPair,
        randomness: &[u8; 32],
    ) -> Result<IssuanceProof, ZkError> {
        self.finalize()?;
        let k = &key.private;
        let mut sho = sho_hmac(b"Signal_ZKCredential_Issuance_20230410", randomness);
        let t = sho.get_scalar();
        let U = sho.get_point();
        let mut V = k.W + (k.x0 + k.x1 * t) * U;
        for (y, M) in k.y.iter().zip(&self.attr_points) {
            V += y * M;
        }
        let credential = Credential { t, U, V };

        let mut scalars = vec![("w", k.w), ("wprime", k.wprime), ("x0", k.x0), ("x1", k.x1)];
        scalars.extend(
            Y_NAMES
                .iter()
                .zip(k.y.iter())
                .take(self.attr_points.len())
                .map(|(a, b)| (*a, *b)),
        );
        let points = self.point_args(&key.public, &credential)?;
        let mut proof_randomness = [0u8; 32];
        sho.squeeze_into(&mut proof_randomness);
        let poksho_proof = self
            .statement()
            .prove(&scalars, &points, &[], &proof_randomness)?;
        Ok(IssuanceProof {
            credential,
            poksho_proof,
        })
    }

    /// Verifies an issuance proof against the public key (the client's `receive`).
    pub(crate) fn verify(
        mut self,
        key: &CredentialPublicKey,
        proof: &IssuanceProof,
    ) -> Result<Credential, ZkError> {
        self.finalize()?;
        let points = self.point_args(key, &proof.credential)?;
        self.statement()
            .verify(&proof.poksho_proof, &points, &[])
            .map_err(|_| ZkError::Verification)?;
        Ok(proof.credential)
    }
}
