//! `UidStruct`: a service id as the two points credentials carry, `M1 = H(service id)` and
//! `M2 = lizard(uuid)`.
#![allow(non_snake_case)]

use curve25519_dalek::ristretto::RistrettoPoint;
use sha2::Sha256;

use super::sho::{Sho, ShoHmacSha256};
use crate::ids::ServiceId;

/// libsignal's `ServiceId::service_id_binary`: the 16 UUID bytes for an ACI, `0x01 ‖ uuid` for a PNI.
pub(crate) fn service_id_binary(id: ServiceId) -> Vec<u8> {
    match id {
        ServiceId::Aci(a) => a.0.as_bytes().to_vec(),
        ServiceId::Pni(p) => {
            let mut v = Vec::with_capacity(17);
            v.push(0x01);
            v.extend_from_slice(p.0.as_bytes());
            v
        }
    }
}

/// `M1` of a service id, from a clone of the prepared seed (the group-send sum hashes many).
pub(crate) fn calc_m1_from(seed: &ShoHmacSha256, id: ServiceId) -> RistrettoPoint {
    let mut sho = seed.clone();
    sho.absorb_and_ratchet(&service_id_binary(id));
    Sho::get_point(&mut sho)
}

/// The seed SHO of `M1` (cloned per service id).
pub(crate) fn m1_seed() -> ShoHmacSha256 {
    ShoHmacSha256::new(b"Signal_ZKGroup_20200424_UID_CalcM1")
}

/// The two attribute points of a service id.
#[derive(Clone, Copy)]
pub(crate) struct UidStruct {
    pub(crate) M1: RistrettoPoint,
    pub(crate) M2: RistrettoPoint,
}

impl UidStruct {
    pub(crate) fn new(id: ServiceId) -> Self {
        let M1 = calc_m1_from(&m1_seed(), id);
        let M2 = RistrettoPoint::lizard_encode::<Sha256>(id.uuid().as_bytes());
        Self { M1, M2 }
    }

    pub(crate) fn points(&self) -> [RistrettoPoint; 2] {
        [self.M1, self.M2]
    }
}
