//! poksho: Schnorr-style proofs of knowledge of discrete-log relations, made non-interactive
//! with SHO-HMAC-SHA256 (Fiat–Shamir), byte-compatible with Signal's `poksho::Statement`.
//!
//! A statement is a list of equations `P_lhs = Σ s_i · P_j` over named scalars (the witness)
//! and named points (`G`, the Ristretto basepoint, is point 0). Names are numbered in order of
//! first use; the statement's encoding is `n_eq ‖ (lhs ‖ n_terms ‖ (scalar ‖ point)*)*`.
//!
//! Proof bytes are `challenge ‖ response_0 ‖ …`, 32-byte canonical scalars.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{MultiscalarMul, VartimeMultiscalarMul};
use subtle::ConstantTimeEq;

use super::ZkError;
use super::sho::{Sho, ShoHmacSha256};

const LABEL: &[u8] = b"POKSHO_Ristretto_SHOHMACSHA256";

struct Equation {
    lhs: u8,
    rhs: Vec<(u8, u8)>,
}

/// A poksho statement with named scalars and points.
pub(crate) struct Statement {
    equations: Vec<Equation>,
    scalars: Vec<&'static str>,
    points: Vec<&'static str>,
}

fn index_of(names: &mut Vec<&'static str>, name: &'static str) -> u8 {
    let i = match names.iter().position(|n| *n == name) {
        Some(i) => i,
        None => {
            names.push(name);
            names.len() - 1
        }
    };
    // Statements are compile-time constants of a few dozen names; poksho caps them at 255.
    debug_assert!(i < 256);
    i as u8
}

impl Statement {
    pub(crate) fn new() -> Self {
        Self {
            equations: Vec::new(),
            scalars: Vec::new(),
            points: vec!["G"],
        }
    }

    /// Adds `lhs = Σ scalar · point`.
    pub(crate) fn add(&mut self, lhs: &'static str, rhs: &[(&'static str, &'static str)]) {
        let lhs = index_of(&mut self.points, lhs);
        let rhs = rhs
            .iter()
            .map(|(s, p)| {
                let s = index_of(&mut self.scalars, s);
                (s, index_of(&mut self.points, p))
            })
            .collect();
        self.equations.push(Equation { lhs, rhs });
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![self.equations.len() as u8];
        for e in &self.equations {
            v.push(e.lhs);
            v.push(e.rhs.len() as u8);
            for (s, p) in &e.rhs {
                v.push(*s);
                v.push(*p);
            }
        }
        v
    }

    fn sorted_points(
        &self,
        args: &[(&str, RistrettoPoint)],
    ) -> Result<Vec<RistrettoPoint>, ZkError> {
        if args.len() + 1 != self.points.len() {
            return Err(ZkError::BadArguments);
        }
        let mut out = Vec::with_capacity(self.points.len());
        out.push(RISTRETTO_BASEPOINT_POINT);
        for name in &self.points[1..] {
            let (_, p) = args
                .iter()
                .find(|(n, _)| n == name)
                .ok_or(ZkError::BadArguments)?;
            out.push(*p);
        }
        Ok(out)
    }

    fn sorted_scalars(&self, args: &[(&str, Scalar)]) -> Result<Vec<Scalar>, ZkError> {
        if args.len() != self.scalars.len() {
            return Err(ZkError::BadArguments);
        }
        self.scalars
            .iter()
            .map(|name| {
                args.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| *s)
                    .ok_or(ZkError::BadArguments)
            })
            .collect()
    }

    fn transcript(&self, points: &[RistrettoPoint]) -> ShoHmacSha256 {
        let mut sho = ShoHmacSha256::new(LABEL);
        sho.absorb(&self.to_bytes());
        for p in points {
            sho.absorb(p.compress().as_bytes());
        }
        sho.ratchet();
        sho
    }

    fn challenge(mut sho: ShoHmacSha256, commitment: &[RistrettoPoint], message: &[u8]) -> Scalar {
        for p in commitment {
            sho.absorb(p.compress().as_bytes());
        }
        sho.absorb_and_ratchet(message);
        Sho::get_scalar(&mut sho)
    }

    /// Proves knowledge of `scalars` for the statement over `points`, deterministic in
    /// `randomness` (poksho's synthetic nonces: randomness, witness and message all feed them).
    pub(crate) fn prove(
        &self,
        scalars: &[(&str, Scalar)],
        points: &[(&str, RistrettoPoint)],
        message: &[u8],
        randomness: &[u8; 32],
    ) -> Result<Vec<u8>, ZkError> {
        let witness = self.sorted_scalars(scalars)?;
        let all_points = self.sorted_points(points)?;
        let sho = self.transcript(&all_points);

        let mut nonce_sho = sho.clone();
        nonce_sho.absorb(randomness);
        for w in &witness {
            nonce_sho.absorb(w.as_bytes());
        }
        nonce_sho.ratchet();
        nonce_sho.absorb_and_ratchet(message);
        let mut wide = vec![0u8; witness.len() * 64];
        nonce_sho.squeeze_into(&mut wide);
        let nonces: Vec<Scalar> = wide
            .chunks_exact(64)
            .map(|c| {
                let mut b = [0u8; 64];
                b.copy_from_slice(c);
                Scalar::from_bytes_mod_order_wide(&b)
            })
            .collect();

        // Constant time: the nonces are as secret as the witness.
        let commitment: Vec<RistrettoPoint> = self
            .equations
            .iter()
            .map(|e| {
                RistrettoPoint::multiscalar_mul(
                    e.rhs.iter().map(|(s, _)| nonces[*s as usize]),
                    e.rhs.iter().map(|(_, p)| all_points[*p as usize]),
                )
            })
            .collect();
        let c = Self::challenge(sho, &commitment, message);

        let mut proof = Vec::with_capacity(32 * (witness.len() + 1));
        proof.extend_from_slice(c.as_bytes());
        for (n, w) in nonces.iter().zip(&witness) {
            proof.extend_from_slice((n + c * w).as_bytes());
        }
        // As poksho does: a proof that does not verify means inconsistent arguments.
        self.verify_with(&proof, &all_points, message)
            .map_err(|_| ZkError::BadArguments)?;
        Ok(proof)
    }

    /// Verifies `proof` for the statement over the public `points`.
    pub(crate) fn verify(
        &self,
        proof: &[u8],
        points: &[(&str, RistrettoPoint)],
        message: &[u8],
    ) -> Result<(), ZkError> {
        let all_points = self.sorted_points(points)?;
        self.verify_with(proof, &all_points, message)
    }

    fn verify_with(
        &self,
        proof: &[u8],
        all_points: &[RistrettoPoint],
        message: &[u8],
    ) -> Result<(), ZkError> {
        if !proof.len().is_multiple_of(32) || proof.len() / 32 != self.scalars.len() + 1 {
            return Err(ZkError::Verification);
        }
        let mut scalars = Vec::with_capacity(proof.len() / 32);
        for chunk in proof.chunks_exact(32) {
            let mut b = [0u8; 32];
            b.copy_from_slice(chunk);
            let s: Option<Scalar> = Scalar::from_canonical_bytes(b).into();
            scalars.push(s.ok_or(ZkError::Verification)?);
        }
        let (c, response) = scalars.split_first().ok_or(ZkError::Verification)?;
        let sho = self.transcript(all_points);
        let commitment: Vec<RistrettoPoint> = self
            .equations
            .iter()
            .map(|e| {
                RistrettoPoint::vartime_multiscalar_mul(
                    e.rhs
                        .iter()
                        .map(|(s, _)| response[*s as usize])
                        .chain(core::iter::once(-c)),
                    e.rhs
                        .iter()
                        .map(|(_, p)| all_points[*p as usize])
                        .chain(core::iter::once(all_points[e.lhs as usize])),
                )
            })
            .collect();
        let expected = Self::challenge(sho, &commitment, message);
        if bool::from(expected.ct_eq(c)) {
            Ok(())
        } else {
            Err(ZkError::Verification)
        }
    }
}
