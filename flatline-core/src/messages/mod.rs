//! Messages (issue 17): the envelope protobuf, validated incoming sends and the pure send decision of M§2.1.
//!
//! Storage of the per-device queues is behind [`store::MessageStore`]; the send service is [`service`].

pub mod service;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use thiserror::Error;
use uuid::Uuid;

use crate::ids::DeviceId;

pub use service::*;
pub use store::*;

/// Standard base64, padding optional (M§2.1: clients may omit it).
const STD_LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Largest decoded `content` of one message (M§2.6): larger → 413.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;

/// The server-assigned id of one stored envelope (the `serverGuid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageGuid(pub Uuid);

/// Envelope types of M§2.2 (protobuf enum values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvelopeType {
    /// 1: a Signal message (whisper).
    Ciphertext,
    /// 3: a prekey message starting a session.
    PrekeyBundle,
    /// 5: a server delivery receipt (no content).
    ServerDeliveryReceipt,
    /// 6: sealed sender.
    UnidentifiedSender,
    /// 8: plaintext content (decryption-error retries).
    PlaintextContent,
}

impl EnvelopeType {
    /// The protobuf / JSON number.
    pub fn number(self) -> i32 {
        match self {
            EnvelopeType::Ciphertext => 1,
            EnvelopeType::PrekeyBundle => 3,
            EnvelopeType::ServerDeliveryReceipt => 5,
            EnvelopeType::UnidentifiedSender => 6,
            EnvelopeType::PlaintextContent => 8,
        }
    }
    /// Parses the number a client sends; receipts are server-made and refused from clients.
    pub fn from_client(n: i32) -> Option<Self> {
        match n {
            1 => Some(EnvelopeType::Ciphertext),
            3 => Some(EnvelopeType::PrekeyBundle),
            6 => Some(EnvelopeType::UnidentifiedSender),
            8 => Some(EnvelopeType::PlaintextContent),
            _ => None,
        }
    }
}

/// The wire envelope of M§2.3 (field numbers as in Signal's `Envelope` message).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// Envelope type number.
    #[prost(int32, optional, tag = "1")]
    pub r#type: Option<i32>,
    /// Sender's device id (identified sends only).
    #[prost(uint32, optional, tag = "7")]
    pub source_device: Option<u32>,
    /// Client timestamp (ms).
    #[prost(uint64, optional, tag = "5")]
    pub client_timestamp: Option<u64>,
    /// Ciphertext.
    #[prost(bytes = "vec", optional, tag = "8")]
    pub content: Option<Vec<u8>>,
    /// Server guid as a string.
    #[prost(string, optional, tag = "9")]
    pub server_guid: Option<String>,
    /// Server receive timestamp (ms).
    #[prost(uint64, optional, tag = "10")]
    pub server_timestamp: Option<u64>,
    /// Ephemeral (online) message.
    #[prost(bool, optional, tag = "12")]
    pub ephemeral: Option<bool>,
    /// Destination service id as a string.
    #[prost(string, optional, tag = "13")]
    pub destination_service_id: Option<String>,
    /// Urgent flag.
    #[prost(bool, optional, tag = "14")]
    pub urgent: Option<bool>,
    /// Updated PNI (unused by Flatline, kept for the wire).
    #[prost(string, optional, tag = "15")]
    pub updated_pni: Option<String>,
    /// Story flag.
    #[prost(bool, optional, tag = "16")]
    pub story: Option<bool>,
    /// Reporting token.
    #[prost(bytes = "vec", optional, tag = "17")]
    pub report_spam_token: Option<Vec<u8>>,
    /// Source service id as a string (identified sends only).
    #[prost(string, optional, tag = "11")]
    pub source_service_id: Option<String>,
    /// Source service id, binary form.
    #[prost(bytes = "vec", optional, tag = "19")]
    pub source_service_id_binary: Option<Vec<u8>>,
    /// Destination service id, binary form.
    #[prost(bytes = "vec", optional, tag = "20")]
    pub destination_service_id_binary: Option<Vec<u8>>,
    /// Server guid, binary form (16 bytes).
    #[prost(bytes = "vec", optional, tag = "21")]
    pub server_guid_binary: Option<Vec<u8>>,
}

impl Envelope {
    /// Parses serialized bytes (as stored and delivered); `None` when they are not an envelope.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <Self as prost::Message>::decode(bytes).ok()
    }

    /// The serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }
}

/// Encodes `envelope` with `content = prefix ‖ shared` but without the `shared_len` bytes of `shared`: returns that
/// encoding and the offset where `shared` goes, so that [`store::splice`]`(template, offset, shared)` is exactly
/// `envelope.to_bytes()` with the full content. The envelopes of a multi-recipient send share those bytes, which are
/// then neither copied per device nor stored more than once. `None` only if prost did not write the content field.
pub fn encode_without_shared(
    mut envelope: Envelope,
    prefix: &[u8],
    shared_len: usize,
) -> Option<(Vec<u8>, usize)> {
    envelope.content = Some(prefix.to_vec());
    let bytes = envelope.to_bytes();
    let (len_start, value_start) = content_field(&bytes)?;
    let mut out = Vec::with_capacity(bytes.len() + 4);
    out.extend_from_slice(&bytes[..len_start]);
    prost::encoding::encode_varint((prefix.len() + shared_len) as u64, &mut out);
    let offset = out.len() + prefix.len();
    out.extend_from_slice(&bytes[value_start..]);
    Some((out, offset))
}

/// Where field 8 (`content`, length-delimited) of an encoded envelope has its length varint and its value.
fn content_field(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut rest = bytes;
    let at = |rest: &[u8]| bytes.len() - rest.len();
    while !rest.is_empty() {
        let key = prost::encoding::decode_varint(&mut rest).ok()?;
        match key & 7 {
            0 => {
                prost::encoding::decode_varint(&mut rest).ok()?;
            }
            1 => rest = rest.get(8..)?,
            5 => rest = rest.get(4..)?,
            2 => {
                let len_start = at(rest);
                let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
                if key >> 3 == 8 {
                    return Some((len_start, at(rest)));
                }
                rest = rest.get(len..)?;
            }
            _ => return None,
        }
    }
    None
}

/// One message of a send request, as received (before validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawIncomingMessage {
    /// Envelope type number.
    pub r#type: i32,
    /// Destination device id.
    pub destination_device_id: u32,
    /// Destination registration id.
    pub destination_registration_id: u32,
    /// Base64 content.
    pub content: String,
}

/// A validated message of a send request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// Envelope type.
    pub r#type: EnvelopeType,
    /// Destination device.
    pub device: DeviceId,
    /// Destination registration id.
    pub registration_id: u32,
    /// Decoded ciphertext.
    pub content: Vec<u8>,
}

/// Why a send request body is refused before any state is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IncomingError {
    /// Unknown or server-only envelope type, bad device id, bad base64 (Signal: 422).
    #[error("malformed message")]
    Malformed,
    /// Two messages for one device (Signal: 422).
    #[error("duplicate destination device")]
    DuplicateDevice,
    /// A message with empty content (Signal: 422).
    #[error("empty message content")]
    EmptyContent,
}

/// M§2.1 step 7 (after the device check): any decoded content over [`MAX_CONTENT_BYTES`] → 413.
pub fn any_oversized(messages: &[IncomingMessage]) -> bool {
    messages.iter().any(|m| m.content.len() > MAX_CONTENT_BYTES)
}

/// Validates the messages of a send once, at the edge.
pub fn validate_messages(
    raw: &[RawIncomingMessage],
) -> Result<Vec<IncomingMessage>, IncomingError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for m in raw {
        let r#type = EnvelopeType::from_client(m.r#type).ok_or(IncomingError::Malformed)?;
        let device = u8::try_from(m.destination_device_id)
            .ok()
            .and_then(|d| DeviceId::new(d).ok())
            .ok_or(IncomingError::Malformed)?;
        if !seen.insert(device) {
            return Err(IncomingError::DuplicateDevice);
        }
        let content = STD_LENIENT
            .decode(m.content.as_bytes())
            .map_err(|_| IncomingError::Malformed)?;
        if content.is_empty() {
            return Err(IncomingError::EmptyContent);
        }
        out.push(IncomingMessage {
            r#type,
            device,
            registration_id: m.destination_registration_id,
            content,
        });
    }
    Ok(out)
}

/// The outcome of the device check (M§2.1 steps 7–8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCheck {
    /// Every enabled device addressed once with its current registration id.
    Ok,
    /// 409: devices missing from, or extra in, the request.
    Mismatched {
        /// Enabled devices the request did not address.
        missing: Vec<DeviceId>,
        /// Addressed devices that do not exist.
        extra: Vec<DeviceId>,
    },
    /// 410: addressed devices whose registration id changed (wins over 409 on single-recipient sends).
    Stale {
        /// The stale devices.
        stale: Vec<DeviceId>,
    },
}

/// Compares the request with the destination's devices (`device → registration id`).
///
/// `exclude` is the sender's own device on a sync send (listing it counts as extra). For single-recipient sends
/// (M§2.1 step 6) a non-empty stale set wins (410) over missing/extra (409). The size check (413) comes after.
pub fn check_devices(
    messages: &[IncomingMessage],
    devices: &BTreeMap<DeviceId, u32>,
    exclude: Option<DeviceId>,
) -> DeviceCheck {
    let addressed: BTreeSet<DeviceId> = messages.iter().map(|m| m.device).collect();
    let expected: BTreeSet<DeviceId> = devices
        .keys()
        .copied()
        .filter(|d| Some(*d) != exclude)
        .collect();
    let stale: Vec<DeviceId> = messages
        .iter()
        .filter(|m| expected.contains(&m.device))
        .filter(|m| {
            devices
                .get(&m.device)
                .is_some_and(|r| *r != m.registration_id)
        })
        .map(|m| m.device)
        .collect();
    if !stale.is_empty() {
        return DeviceCheck::Stale { stale };
    }
    let missing: Vec<DeviceId> = expected.difference(&addressed).copied().collect();
    let extra: Vec<DeviceId> = addressed.difference(&expected).copied().collect();
    if !missing.is_empty() || !extra.is_empty() {
        return DeviceCheck::Mismatched { missing, extra };
    }
    DeviceCheck::Ok
}

/// How a send is authenticated (M§2.1 steps 1–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendAuth {
    /// Basic auth as `aci.device`.
    Identified,
    /// `Unidentified-Access-Key` whose constant-time comparison with the destination's key gave `key_matches`.
    Unidentified {
        /// Result of the constant-time comparison (false when the destination has no key).
        key_matches: bool,
    },
    /// `?story=true` without credentials.
    Story,
    /// `Group-Send-Token` (alone, not on a story) whose zkgroup verification for exactly `[destination]` at the
    /// server's time gave `verified` (M§2.1 step 4, M§3.6).
    GroupSend {
        /// The token is unexpired and covers exactly the addressed service id.
        verified: bool,
    },
}

/// Why the credentials a request carries cannot go together (Signal-Server: 400, checked before anything is
/// looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CredentialConflict {
    /// A `Group-Send-Token` beside an authenticated request or an `Unidentified-Access-Key`.
    #[error("a Group-Send-Token must not be combined with other authentication")]
    TokenWithOtherCredentials,
    /// A `Group-Send-Token` on a story (stories need no authorization).
    #[error("a Group-Send-Token must not be sent on a story")]
    TokenOnStory,
}

/// Which credentials a send presents, as the edge saw them (presence only; nothing is verified yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresentedCredentials {
    /// Basic auth (or an authenticated socket).
    pub authenticated: bool,
    /// An `Unidentified-Access-Key` header, whatever its value.
    pub access_key: bool,
    /// A `Group-Send-Token` header that parsed.
    pub group_send_token: bool,
    /// `?story=true`.
    pub story: bool,
}

/// The combination rules of M§2.1 step 1 and M§2.5 (`MessageController`): a token goes alone — beside
/// authentication or an access key → 400, on a story → 400. Everything else is decided later (neither
/// credential → 401, an access key beside authentication is ignored, a combined key on a multi-recipient story is
/// tolerated).
pub fn check_credential_combination(c: PresentedCredentials) -> Result<(), CredentialConflict> {
    if !c.group_send_token {
        return Ok(());
    }
    if c.authenticated || c.access_key {
        return Err(CredentialConflict::TokenWithOtherCredentials);
    }
    if c.story {
        return Err(CredentialConflict::TokenOnStory);
    }
    Ok(())
}

/// The destination as loaded for a send decision (`None` fields mean "not loaded / not applicable").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationView {
    /// The destination account exists.
    pub exists: bool,
    /// The destination was addressed by PNI.
    pub is_pni: bool,
    /// The destination is the sender's own account (identified sends only).
    pub is_self: bool,
    /// The destination allows unrestricted unidentified access.
    pub unrestricted: bool,
    /// The destination's contact policy is `invite_only`.
    pub invite_only: bool,
    /// The sender holds an *active* grant from the destination (quarantined, pending, denied → false).
    pub sender_granted: bool,
}

/// The access decision taken before the device check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendAccess {
    /// Go on to the device check; `sync` = send to own ACI (exclude the sending device, needsSync).
    Proceed {
        /// A sync send to the sender's own account.
        sync: bool,
    },
    /// 200 without storing (story to a non-grantee of an invite_only account, or a story to a missing account).
    DropSilently,
    /// 401 (no existence oracle for unidentified sends).
    Unauthorized,
    /// 403 for a send to one's own PNI.
    ForbiddenOwnPni,
    /// 403 `contact_not_allowed` (API.md §10).
    ContactNotAllowed,
    /// 404 for an identified send to a missing account.
    NotFound,
}

/// Decides access for a send (M§2.1 steps 1–4 and API.md §10 gating, before the device check).
pub fn plan_access(auth: SendAuth, dest: DestinationView) -> SendAccess {
    match auth {
        SendAuth::Identified => {
            if !dest.exists {
                return SendAccess::NotFound;
            }
            if dest.is_self {
                return if dest.is_pni {
                    SendAccess::ForbiddenOwnPni
                } else {
                    SendAccess::Proceed { sync: true }
                };
            }
            if dest.invite_only && !dest.sender_granted {
                return SendAccess::ContactNotAllowed;
            }
            SendAccess::Proceed { sync: false }
        }
        SendAuth::Unidentified { key_matches } => {
            if !dest.exists || dest.is_pni {
                return SendAccess::Unauthorized;
            }
            // `unrestrictedUnidentifiedAccess` is ignored for invite_only accounts.
            let unrestricted = dest.unrestricted && !dest.invite_only;
            if unrestricted || key_matches {
                SendAccess::Proceed { sync: false }
            } else {
                SendAccess::Unauthorized
            }
        }
        // Signal-Server verifies the token against `[destination]` before looking the account up: a token that
        // does not verify is 401 whatever the destination, a verified one for a missing account is 404. The token
        // proves shared group membership, which passes invite_only gating (API.md §10); PNI destinations are
        // allowed (the token names the PNI itself).
        SendAuth::GroupSend { verified } => {
            if !verified {
                SendAccess::Unauthorized
            } else if !dest.exists {
                SendAccess::NotFound
            } else {
                SendAccess::Proceed { sync: false }
            }
        }
        SendAuth::Story => {
            if !dest.exists {
                return SendAccess::DropSilently;
            }
            if dest.invite_only && !dest.sender_granted {
                return SendAccess::DropSilently;
            }
            SendAccess::Proceed { sync: false }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn raw(dev: u32, reg: u32, content: &str) -> RawIncomingMessage {
        RawIncomingMessage {
            r#type: 1,
            destination_device_id: dev,
            destination_registration_id: reg,
            content: content.into(),
        }
    }

    #[test]
    fn validation() {
        assert!(validate_messages(&[raw(1, 5, "AAAA")]).is_ok());
        assert_eq!(
            validate_messages(&[raw(0, 5, "AAAA")]),
            Err(IncomingError::Malformed)
        );
        assert_eq!(
            validate_messages(&[raw(1, 5, "!!")]),
            Err(IncomingError::Malformed)
        );
        assert_eq!(
            validate_messages(&[raw(1, 5, "AAAA"), raw(1, 5, "AAAA")]),
            Err(IncomingError::DuplicateDevice)
        );
        assert!(validate_messages(&[raw(1, 5, "AAA")]).is_ok(), "unpadded");
        assert_eq!(
            validate_messages(&[raw(1, 5, "")]),
            Err(IncomingError::EmptyContent)
        );
        let big =
            base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_CONTENT_BYTES + 1]);
        assert!(any_oversized(
            &validate_messages(&[raw(1, 5, &big)]).unwrap()
        ));
        let max = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_CONTENT_BYTES]);
        assert!(!any_oversized(
            &validate_messages(&[raw(1, 5, &max)]).unwrap()
        ));
    }

    #[test]
    fn device_check_410_wins_over_409() {
        let d1 = DeviceId::PRIMARY;
        let d2 = DeviceId::new(2).unwrap();
        let devices = BTreeMap::from([(d1, 10), (d2, 20)]);
        let msgs = validate_messages(&[raw(1, 11, "AAAA")]).unwrap();
        assert_eq!(
            check_devices(&msgs, &devices, None),
            DeviceCheck::Stale { stale: vec![d1] }
        );
        let msgs = validate_messages(&[raw(1, 10, "AAAA")]).unwrap();
        assert_eq!(
            check_devices(&msgs, &devices, None),
            DeviceCheck::Mismatched {
                missing: vec![d2],
                extra: vec![]
            }
        );
        assert_eq!(check_devices(&msgs, &devices, Some(d2)), DeviceCheck::Ok);
        let msgs = validate_messages(&[raw(1, 10, "AAAA"), raw(2, 20, "AAAA")]).unwrap();
        assert_eq!(
            check_devices(&msgs, &devices, Some(d2)),
            DeviceCheck::Mismatched {
                missing: vec![],
                extra: vec![d2]
            }
        );
        let msgs = validate_messages(&[raw(1, 10, "AAAA"), raw(2, 20, "AAAA")]).unwrap();
        assert_eq!(check_devices(&msgs, &devices, None), DeviceCheck::Ok);
    }

    #[test]
    fn access() {
        let base = DestinationView {
            exists: true,
            is_pni: false,
            is_self: false,
            unrestricted: false,
            invite_only: false,
            sender_granted: false,
        };
        assert_eq!(
            plan_access(SendAuth::Identified, base),
            SendAccess::Proceed { sync: false }
        );
        let gated = DestinationView {
            invite_only: true,
            ..base
        };
        assert_eq!(
            plan_access(SendAuth::Identified, gated),
            SendAccess::ContactNotAllowed
        );
        let granted = DestinationView {
            sender_granted: true,
            ..gated
        };
        assert_eq!(
            plan_access(SendAuth::Identified, granted),
            SendAccess::Proceed { sync: false }
        );
        let own = DestinationView {
            is_self: true,
            ..gated
        };
        assert_eq!(
            plan_access(SendAuth::Identified, own),
            SendAccess::Proceed { sync: true }
        );
        let own_pni = DestinationView {
            is_pni: true,
            ..own
        };
        assert_eq!(
            plan_access(SendAuth::Identified, own_pni),
            SendAccess::ForbiddenOwnPni
        );
        let missing = DestinationView {
            exists: false,
            ..base
        };
        assert_eq!(
            plan_access(SendAuth::Identified, missing),
            SendAccess::NotFound
        );
        assert_eq!(
            plan_access(SendAuth::Unidentified { key_matches: true }, missing),
            SendAccess::Unauthorized
        );
        assert_eq!(
            plan_access(SendAuth::Unidentified { key_matches: false }, base),
            SendAccess::Unauthorized
        );
        let open = DestinationView {
            unrestricted: true,
            ..base
        };
        assert_eq!(
            plan_access(SendAuth::Unidentified { key_matches: false }, open),
            SendAccess::Proceed { sync: false }
        );
        let open_gated = DestinationView {
            invite_only: true,
            ..open
        };
        assert_eq!(
            plan_access(SendAuth::Unidentified { key_matches: false }, open_gated),
            SendAccess::Unauthorized
        );
        assert_eq!(
            plan_access(SendAuth::Story, gated),
            SendAccess::DropSilently
        );
        assert_eq!(
            plan_access(SendAuth::Story, granted),
            SendAccess::Proceed { sync: false }
        );
        // Group send tokens: unverified → 401 even for a missing account; verified → 404 for a missing account,
        // else proceed, through invite_only gating and to a PNI.
        let token = |verified| SendAuth::GroupSend { verified };
        assert_eq!(plan_access(token(false), base), SendAccess::Unauthorized);
        assert_eq!(plan_access(token(false), missing), SendAccess::Unauthorized);
        assert_eq!(plan_access(token(true), missing), SendAccess::NotFound);
        assert_eq!(
            plan_access(token(true), gated),
            SendAccess::Proceed { sync: false }
        );
        let pni = DestinationView {
            is_pni: true,
            ..gated
        };
        assert_eq!(
            plan_access(token(true), pni),
            SendAccess::Proceed { sync: false }
        );
    }

    #[test]
    fn credential_combinations() {
        let c = |authenticated, access_key, group_send_token, story| PresentedCredentials {
            authenticated,
            access_key,
            group_send_token,
            story,
        };
        for (a, k, s) in [
            (false, false, false),
            (true, false, false),
            (false, true, false),
            (true, true, false),
            (false, false, true),
            (true, true, true),
        ] {
            assert_eq!(check_credential_combination(c(a, k, false, s)), Ok(()));
        }
        assert_eq!(
            check_credential_combination(c(false, false, true, false)),
            Ok(())
        );
        for (a, k) in [(true, false), (false, true), (true, true)] {
            for s in [false, true] {
                assert_eq!(
                    check_credential_combination(c(a, k, true, s)),
                    Err(CredentialConflict::TokenWithOtherCredentials)
                );
            }
        }
        assert_eq!(
            check_credential_combination(c(false, false, true, true)),
            Err(CredentialConflict::TokenOnStory)
        );
    }

    #[test]
    fn envelope_round_trips() {
        let e = Envelope {
            r#type: Some(1),
            server_guid: Some("x".into()),
            urgent: Some(true),
            ..Default::default()
        };
        let bytes = e.encode_to_vec();
        assert_eq!(Envelope::decode(bytes.as_slice()).unwrap(), e);
    }
}

#[cfg(test)]
mod shared_tests {
    use proptest::prelude::*;

    use super::{Envelope, encode_without_shared, store::splice};

    proptest! {
        /// Splicing the shared part back into the template gives exactly prost's encoding of the whole envelope,
        /// whatever the other fields hold (content lengths around the one- to two-byte varint boundary included).
        #[test]
        fn the_template_and_the_shared_part_are_the_envelope(
            prefix in proptest::collection::vec(any::<u8>(), 0..60),
            shared in proptest::collection::vec(any::<u8>(), 0..400),
            guid in "[0-9a-f-]{0,36}",
            destination in "[0-9a-f-]{0,40}",
            timestamp in any::<u64>(),
            story in any::<Option<bool>>(),
            binary in proptest::collection::vec(any::<u8>(), 0..17),
        ) {
            let envelope = Envelope {
                r#type: Some(6),
                client_timestamp: Some(timestamp),
                server_guid: Some(guid),
                server_timestamp: Some(timestamp / 2),
                ephemeral: Some(false),
                destination_service_id: Some(destination),
                urgent: Some(true),
                story,
                destination_service_id_binary: Some(binary.clone()),
                server_guid_binary: Some(binary),
                ..Default::default()
            };
            let mut whole = envelope.clone();
            whole.content = Some([prefix.as_slice(), shared.as_slice()].concat());
            let (template, offset) = encode_without_shared(envelope, &prefix, shared.len()).unwrap();
            prop_assert_eq!(template.len() + shared.len(), whole.to_bytes().len());
            prop_assert_eq!(splice(&template, offset, &shared), whole.to_bytes());
        }
    }
}
