//! Expiring profile key credentials: the client's `ProfileKeyCommitment` and
//! `ProfileKeyCredentialRequest` (its proof is verified), and the server's blind issuance of an
//! `ExpiringProfileKeyCredentialResponse` with its issuance proof.
//!
//! Layouts: commitment `0 ‖ J1 ‖ J2 ‖ J3` (97); request `0 ‖ Y ‖ D1 ‖ D2 ‖ E1 ‖ E2 ‖ u64 len ‖
//! proof` (329); response `0 ‖ t ‖ U ‖ S1 ‖ S2 ‖ expiration u64 ‖ u64 len ‖ proof` (497).
#![allow(non_snake_case)]

use std::sync::OnceLock;

use curve25519_dalek::ristretto::RistrettoPoint;

use super::bytes::{Reader, Writer};
use super::params::{ServerSecretParams, legacy_system};
use super::poksho::Statement;
use super::sho::{Sho, sho_hmac};
use super::uid::UidStruct;
use super::{SECONDS_PER_DAY, ZkError};
use crate::ids::{Aci, ServiceId};

/// Length of a `ProfileKeyCommitment`.
pub const PROFILE_KEY_COMMITMENT_LEN: usize = 97;
/// Length of a `ProfileKeyCredentialRequest`.
pub const PROFILE_KEY_CREDENTIAL_REQUEST_LEN: usize = 329;
/// Length of an `ExpiringProfileKeyCredentialResponse`.
pub const EXPIRING_PROFILE_KEY_CREDENTIAL_RESPONSE_LEN: usize = 497;

struct CommitmentSystem {
    G_j1: RistrettoPoint,
    G_j2: RistrettoPoint,
    G_j3: RistrettoPoint,
}

fn commitment_system() -> &'static CommitmentSystem {
    static S: OnceLock<CommitmentSystem> = OnceLock::new();
    S.get_or_init(|| {
        let mut sho = sho_hmac(
            b"Signal_ZKGroup_20200424_Constant_ProfileKeyCommitment_SystemParams_Generate",
            b"",
        );
        CommitmentSystem {
            G_j1: sho.get_point(),
            G_j2: sho.get_point(),
            G_j3: sho.get_point(),
        }
    })
}

/// A client's commitment to its profile key (and ACI).
#[derive(Clone, Copy)]
pub struct ProfileKeyCommitment {
    J1: RistrettoPoint,
    J2: RistrettoPoint,
    J3: RistrettoPoint,
}

impl ProfileKeyCommitment {
    /// Parses the 97-byte serialization.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        let mut r = Reader::new(bytes);
        r.version(0)?;
        let c = Self {
            J1: r.point()?,
            J2: r.point()?,
            J3: r.point()?,
        };
        r.finish()?;
        Ok(c)
    }

    /// The 97-byte serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8];
        out.put_point(&self.J1);
        out.put_point(&self.J2);
        out.put_point(&self.J3);
        out
    }
}

/// A client's blinded request for a profile key credential, with its proof of well-formedness.
#[derive(Clone)]
pub struct ProfileKeyCredentialRequest {
    Y: RistrettoPoint,
    D1: RistrettoPoint,
    D2: RistrettoPoint,
    E1: RistrettoPoint,
    E2: RistrettoPoint,
    proof: Vec<u8>,
}

fn request_statement() -> Statement {
    let mut st = Statement::new();
    st.add("Y", &[("y", "G")]);
    st.add("D1", &[("r1", "G")]);
    st.add("E1", &[("r2", "G")]);
    st.add("J3", &[("j3", "G_j3")]);
    st.add("D2-J1", &[("r1", "Y"), ("j3", "-G_j1")]);
    st.add("E2-J2", &[("r2", "Y"), ("j3", "-G_j2")]);
    st
}

fn issuance_statement() -> Statement {
    let mut st = Statement::new();
    st.add("C_W", &[("w", "G_w"), ("wprime", "G_wprime")]);
    st.add(
        "G_V-I",
        &[
            ("x0", "G_x0"),
            ("x1", "G_x1"),
            ("y1", "G_y1"),
            ("y2", "G_y2"),
            ("y3", "G_y3"),
            ("y4", "G_y4"),
            ("y5", "G_y5"),
        ],
    );
    st.add("S1", &[("y3", "D1"), ("y4", "E1"), ("rprime", "G")]);
    st.add(
        "S2",
        &[
            ("y3", "D2"),
            ("y4", "E2"),
            ("rprime", "Y"),
            ("w", "G_w"),
            ("x0", "U"),
            ("x1", "tU"),
            ("y1", "M1"),
            ("y2", "M2"),
            ("y5", "M5"),
        ],
    );
    st
}

impl ProfileKeyCredentialRequest {
    /// Parses the 329-byte serialization (the proof is checked by [`Self::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        let mut r = Reader::new(bytes);
        r.version(0)?;
        let req = Self {
            Y: r.point()?,
            D1: r.point()?,
            D2: r.point()?,
            E1: r.point()?,
            E2: r.point()?,
            proof: r.bytes()?.to_vec(),
        };
        r.finish()?;
        Ok(req)
    }

    /// Verifies the request proof against the commitment stored with the profile.
    pub fn verify(&self, commitment: &ProfileKeyCommitment) -> Result<(), ZkError> {
        let s = commitment_system();
        request_statement()
            .verify(
                &self.proof,
                &[
                    ("Y", self.Y),
                    ("D1", self.D1),
                    ("E1", self.E1),
                    ("J3", commitment.J3),
                    ("G_j3", s.G_j3),
                    ("D2-J1", self.D2 - commitment.J1),
                    ("-G_j1", -s.G_j1),
                    ("E2-J2", self.E2 - commitment.J2),
                    ("-G_j2", -s.G_j2),
                ],
                &[],
            )
            .map_err(|_| ZkError::Verification)
    }
}

/// `m5` of an expiration time.
fn timestamp_m(expiration: u64) -> curve25519_dalek::scalar::Scalar {
    sho_hmac(
        b"Signal_ZKGroup_20220524_Timestamp_Calc_m",
        &expiration.to_be_bytes(),
    )
    .get_scalar()
}

/// `ServerZkProfileOperations.issueExpiringProfileKeyCredential`: verifies the request against
/// the commitment, then issues a blinded credential for `aci` expiring at `expiration`
/// (epoch seconds, day-aligned: clients reject anything else). Returns the serialized response.
pub fn issue_expiring_profile_key_credential(
    params: &ServerSecretParams,
    randomness: &[u8; 32],
    request: &ProfileKeyCredentialRequest,
    aci: Aci,
    commitment: &ProfileKeyCommitment,
    expiration: u64,
) -> Result<Vec<u8>, ZkError> {
    if !expiration.is_multiple_of(SECONDS_PER_DAY) {
        return Err(ZkError::Verification);
    }
    let mut sho = sho_hmac(
        b"Signal_ZKGroup_20220508_Random_ServerSecretParams_IssueExpiringProfileKeyCredential",
        randomness,
    );
    request.verify(commitment)?;

    let k = &params.expiring_profile;
    let [y1, y2, y3, y4, y5] = match k.y.as_slice() {
        [a, b, c, d, e] => [*a, *b, *c, *d, *e],
        _ => return Err(ZkError::BadArguments),
    };
    let uid = UidStruct::new(ServiceId::Aci(aci));
    let sys = legacy_system();

    let t = sho.get_scalar();
    let U = sho.get_point();
    let M5 = timestamp_m(expiration) * sys.G_m5;
    let Vprime = k.W + (k.x0 + k.x1 * t) * U + y1 * uid.M1 + y2 * uid.M2 + y5 * M5;
    let rprime = sho.get_scalar();
    let R1 = RistrettoPoint::mul_base(&rprime);
    let R2 = rprime * request.Y + Vprime;
    let S1 = R1 + y3 * request.D1 + y4 * request.E1;
    let S2 = R2 + y3 * request.D2 + y4 * request.E2;

    let mut proof_randomness = [0u8; 32];
    sho.squeeze_into(&mut proof_randomness);
    let proof = issuance_statement().prove(
        &[
            ("w", k.w),
            ("wprime", k.wprime),
            ("x0", k.x0),
            ("x1", k.x1),
            ("y1", y1),
            ("y2", y2),
            ("y3", y3),
            ("y4", y4),
            ("y5", y5),
            ("rprime", rprime),
        ],
        &issuance_points(k.C_W, k.I, request, S1, S2, U, t * U, uid, M5),
        &[],
        &proof_randomness,
    )?;

    let mut out = Vec::with_capacity(EXPIRING_PROFILE_KEY_CREDENTIAL_RESPONSE_LEN);
    out.push(0);
    out.put_scalar(&t);
    out.put_point(&U);
    out.put_point(&S1);
    out.put_point(&S2);
    out.put_u64(expiration);
    out.put_bytes(&proof);
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn issuance_points(
    C_W: RistrettoPoint,
    I: RistrettoPoint,
    request: &ProfileKeyCredentialRequest,
    S1: RistrettoPoint,
    S2: RistrettoPoint,
    U: RistrettoPoint,
    tU: RistrettoPoint,
    uid: UidStruct,
    M5: RistrettoPoint,
) -> Vec<(&'static str, RistrettoPoint)> {
    let s = legacy_system();
    vec![
        ("C_W", C_W),
        ("G_w", s.G_w),
        ("G_wprime", s.G_wprime),
        ("G_V-I", s.G_V - I),
        ("G_x0", s.G_x0),
        ("G_x1", s.G_x1),
        ("G_y1", s.G_y[0]),
        ("G_y2", s.G_y[1]),
        ("G_y3", s.G_y[2]),
        ("G_y4", s.G_y[3]),
        ("G_y5", s.G_y[4]),
        ("S1", S1),
        ("D1", request.D1),
        ("E1", request.E1),
        ("S2", S2),
        ("D2", request.D2),
        ("E2", request.E2),
        ("Y", request.Y),
        ("U", U),
        ("tU", tU),
        ("M1", uid.M1),
        ("M2", uid.M2),
        ("M5", M5),
    ]
}

/// The client's check of a response (`receiveExpiringProfileKeyCredential` without the
/// unblinding): parses it and verifies the issuance proof. For tests and the test kit.
pub fn verify_expiring_profile_key_credential_response(
    public: &super::ServerPublicParams,
    request: &ProfileKeyCredentialRequest,
    aci: Aci,
    response: &[u8],
) -> Result<u64, ZkError> {
    let mut r = Reader::new(response);
    r.version(0)?;
    let t = r.scalar()?;
    let U = r.point()?;
    let S1 = r.point()?;
    let S2 = r.point()?;
    let expiration = r.u64()?;
    let proof = r.bytes()?;
    r.finish()?;
    if !expiration.is_multiple_of(SECONDS_PER_DAY) {
        return Err(ZkError::Verification);
    }
    let uid = UidStruct::new(ServiceId::Aci(aci));
    let M5 = timestamp_m(expiration) * legacy_system().G_m5;
    let key = public.expiring_profile;
    issuance_statement()
        .verify(
            proof,
            &issuance_points(key.C_W, key.I, request, S1, S2, U, t * U, uid, M5),
            &[],
        )
        .map_err(|_| ZkError::Verification)?;
    Ok(expiration)
}
