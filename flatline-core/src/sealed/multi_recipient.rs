//! The Sealed Sender v2 multi-recipient `SentMessage` (M§2.5): what `sealedSenderMultiRecipientEncrypt` produces and
//! `PUT /v1/messages/multi_recipient` receives.
//!
//! ```text
//! SentMessage   = version:u8 (0x22 | 0x23) ‖ count:varint ‖ entry × count ‖ e_pub:[u8;32] ‖ ciphertext
//! entry         = recipient ‖ ( device+ ‖ C:[u8;32] ‖ AT:[u8;16]   -- a recipient with devices
//!                             | 0x00 )                             -- an excluded recipient
//! recipient     = 0x22: 16-byte ACI | 0x23: 17-byte fixed-width service id (0x00 ACI | 0x01 PNI, then uuid)
//! device        = device_id:u8 (1..=127) ‖ u16 big-endian: bit 15 "more follow", bit 14 unused, bits 0-13 reg id
//! ```
//!
//! [`parse`] is pure and allocation-light: it borrows every byte string from the input and allocates a constant
//! number of vectors whatever the recipient count. The rules are libsignal's (`SealedSenderV2SentMessage::parse`),
//! plus one of ours: the count must be a minimal varint of at most 32 bits (libsignal's encoder writes nothing
//! else; libsignal's parser mis-advances on a padded varint, so accepting one would split what client and server
//! consider the message).

use std::ops::Range;

use uuid::Uuid;

use crate::ids::{Aci, DeviceId, Pni, ServiceId};

/// The legacy version: recipients are bare 16-byte ACIs.
pub const VERSION_UUID: u8 = 0x22;
/// The current version: recipients are 17-byte fixed-width service ids.
pub const VERSION_SERVICE_ID: u8 = 0x23;
/// The version byte of every per-recipient payload, whatever the SentMessage's version.
pub const RECEIVED_MESSAGE_VERSION: u8 = 0x22;
/// `C ‖ AT`: the per-recipient key material.
pub const KEY_MATERIAL_LEN: usize = 32 + 16;
/// `e_pub`: the shared ephemeral public key, the least the shared part can hold.
pub const EPHEMERAL_KEY_LEN: usize = 32;
/// The 14 bits of a registration id.
pub const REGISTRATION_ID_MASK: u16 = 0x3FFF;
const HAS_MORE: u16 = 0x8000;

/// Why a SentMessage was refused (all → 400 at the endpoint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No bytes at all.
    #[error("message is empty")]
    Empty,
    /// A version byte other than 0x22 / 0x23.
    #[error("unknown sealed sender version {0:#04x}")]
    UnknownVersion(u8),
    /// The recipient count is not a minimal varint of at most 32 bits.
    #[error("bad recipient count")]
    BadCount,
    /// The input ended inside an entry (at the given offset).
    #[error("message truncated at byte {0}")]
    Truncated(usize),
    /// A 0x23 service id whose kind byte is neither ACI (0) nor PNI (1).
    #[error("bad service id kind {kind} at byte {offset}")]
    BadServiceId {
        /// The kind byte.
        kind: u8,
        /// Where it is.
        offset: usize,
    },
    /// A device id byte above 127, or a 0 (the excluded marker) after a device.
    #[error("bad device id {device} at byte {offset}")]
    BadDevice {
        /// The byte.
        device: u8,
        /// Where it is.
        offset: usize,
    },
    /// A recipient listed twice where one of the entries is an excluded (device-less) one.
    #[error("recipient {0} is encoded both with and without devices")]
    RedundantEmpty(ServiceId),
    /// Fewer than 32 bytes left for the shared part.
    #[error("no room for the shared ephemeral key")]
    MissingSharedPart,
}

/// Why a well-formed SentMessage still cannot be sent (M§2.5 server checks 1 and 2; both → 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientsError {
    /// Nobody to deliver to once excluded recipients are set aside.
    #[error("Recipient list is empty")]
    Empty,
    /// One device listed twice for a recipient.
    #[error("recipient {recipient} lists device {device} more than once")]
    DuplicateDevice {
        /// The recipient.
        recipient: ServiceId,
        /// The device.
        device: DeviceId,
    },
}

/// One device of a recipient and the registration id the sender's session with it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipientDevice {
    /// The device.
    pub device: DeviceId,
    /// Its registration id (14 bits).
    pub registration_id: u16,
}

/// A recipient with devices: its service id, its key material and its devices (a range into
/// [`SentMessage::devices`]; entries of a recipient listed more than once are concatenated in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// Who.
    pub service_id: ServiceId,
    /// `C ‖ AT` of the recipient's first entry (libsignal uses the first too).
    pub key_material: &'a [u8; KEY_MATERIAL_LEN],
    devices: Range<usize>,
}

/// A parsed SentMessage, borrowing from the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage<'a> {
    /// 0x22 or 0x23.
    pub version: u8,
    /// Recipients with devices, in order of first appearance, each once.
    pub recipients: Vec<Recipient<'a>>,
    /// Excluded recipients (device byte 0), in order of appearance, each once.
    pub excluded: Vec<ServiceId>,
    /// `e_pub ‖ ciphertext`, shared by every recipient.
    pub shared: &'a [u8],
    devices: Vec<RecipientDevice>,
}

impl<'a> SentMessage<'a> {
    /// The devices listed for `recipient` (one of [`SentMessage::recipients`]).
    pub fn devices(&self, recipient: &Recipient<'a>) -> &[RecipientDevice] {
        self.devices.get(recipient.devices.clone()).unwrap_or(&[])
    }

    /// Every recipient with its devices.
    pub fn recipients_with_devices(
        &self,
    ) -> impl Iterator<Item = (&Recipient<'a>, &[RecipientDevice])> {
        self.recipients.iter().map(|r| (r, self.devices(r)))
    }

    /// The length of every recipient's payload: `1 + 48 + shared`.
    pub fn payload_len(&self) -> usize {
        1 + KEY_MATERIAL_LEN + self.shared.len()
    }

    /// The per-recipient start of every payload, `0x22 ‖ C ‖ AT`: the payload is this followed by
    /// [`SentMessage::shared`].
    pub fn prefix_for(&self, recipient: &Recipient<'a>) -> [u8; 1 + KEY_MATERIAL_LEN] {
        let mut out = [0u8; 1 + KEY_MATERIAL_LEN];
        out[0] = RECEIVED_MESSAGE_VERSION;
        out[1..].copy_from_slice(recipient.key_material);
        out
    }

    /// The ReceivedMessage delivered to every device of `recipient`: `0x22 ‖ C ‖ AT ‖ shared`.
    pub fn payload_for(&self, recipient: &Recipient<'a>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload_len());
        out.push(RECEIVED_MESSAGE_VERSION);
        out.extend_from_slice(recipient.key_material);
        out.extend_from_slice(self.shared);
        out
    }

    /// The server's checks before authorization (M§2.5 steps 1-2): somebody to deliver to, no device twice.
    pub fn check_recipients(&self) -> Result<(), RecipientsError> {
        if self.recipients.is_empty() {
            return Err(RecipientsError::Empty);
        }
        for (r, devices) in self.recipients_with_devices() {
            // A bit set over the 127 device ids: no allocation, linear.
            let mut seen = [0u64; 2];
            for d in devices {
                let id = d.device.get();
                let (word, bit) = (usize::from(id / 64), id % 64);
                if seen[word] & (1 << bit) != 0 {
                    return Err(RecipientsError::DuplicateDevice {
                        recipient: r.service_id,
                        device: d.device,
                    });
                }
                seen[word] |= 1 << bit;
            }
        }
        Ok(())
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<&'a [u8; N], ParseError> {
        let end = self
            .pos
            .checked_add(N)
            .ok_or(ParseError::Truncated(self.pos))?;
        let chunk = self
            .data
            .get(self.pos..end)
            .and_then(|s| <&[u8; N]>::try_from(s).ok())
            .ok_or(ParseError::Truncated(self.pos))?;
        self.pos = end;
        Ok(chunk)
    }

    fn byte(&mut self) -> Result<u8, ParseError> {
        Ok(self.take::<1>()?[0])
    }

    /// A protobuf-style unsigned varint, minimal, at most 32 bits.
    fn varint_u32(&mut self) -> Result<u32, ParseError> {
        let mut value: u64 = 0;
        for i in 0..5 {
            let b = self.byte().map_err(|_| ParseError::BadCount)?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                // A final zero byte after the first one means the encoding was padded.
                if i > 0 && b == 0 {
                    return Err(ParseError::BadCount);
                }
                return u32::try_from(value).map_err(|_| ParseError::BadCount);
            }
        }
        Err(ParseError::BadCount)
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }
}

/// One entry as it appears in the message.
struct Entry<'a> {
    service_id: ServiceId,
    key_material: Option<&'a [u8; KEY_MATERIAL_LEN]>,
    devices: Range<usize>,
}

fn service_id_key(id: &ServiceId) -> (u8, [u8; 16]) {
    match id {
        ServiceId::Aci(a) => (0, *a.as_bytes()),
        ServiceId::Pni(p) => (1, *p.as_bytes()),
    }
}

/// Parses a SentMessage (see the module documentation for the format and rules).
pub fn parse(data: &[u8]) -> Result<SentMessage<'_>, ParseError> {
    let (&version, _) = data.split_first().ok_or(ParseError::Empty)?;
    if version != VERSION_UUID && version != VERSION_SERVICE_ID {
        return Err(ParseError::UnknownVersion(version));
    }
    let mut r = Reader { data, pos: 1 };
    let count = r.varint_u32()?;
    // Every entry takes at least 17 bytes, so the input bounds what is worth reserving.
    let cap = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(data.len() / 17);
    let mut entries: Vec<Entry<'_>> = Vec::with_capacity(cap);
    let mut devices: Vec<RecipientDevice> = Vec::with_capacity(cap);
    for _ in 0..count {
        let service_id = if version == VERSION_UUID {
            ServiceId::Aci(Aci(Uuid::from_bytes(*r.take::<16>()?)))
        } else {
            let offset = r.pos;
            let raw = r.take::<17>()?;
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(&raw[1..]);
            match raw[0] {
                0 => ServiceId::Aci(Aci(Uuid::from_bytes(uuid))),
                1 => ServiceId::Pni(Pni(Uuid::from_bytes(uuid))),
                kind => return Err(ParseError::BadServiceId { kind, offset }),
            }
        };
        let start = devices.len();
        loop {
            let offset = r.pos;
            let device = r.byte()?;
            if device == 0 {
                if devices.len() > start {
                    return Err(ParseError::BadDevice { device, offset });
                }
                break;
            }
            let device =
                DeviceId::new(device).map_err(|_| ParseError::BadDevice { device, offset })?;
            let word = u16::from_be_bytes(*r.take::<2>()?);
            devices.push(RecipientDevice {
                device,
                registration_id: word & REGISTRATION_ID_MASK,
            });
            if word & HAS_MORE == 0 {
                break;
            }
        }
        let key_material = if devices.len() > start {
            Some(r.take::<KEY_MATERIAL_LEN>()?)
        } else {
            None
        };
        entries.push(Entry {
            service_id,
            key_material,
            devices: start..devices.len(),
        });
    }
    let shared = r.rest();
    if shared.len() < EPHEMERAL_KEY_LEN {
        return Err(ParseError::MissingSharedPart);
    }

    // Group repeated recipients: a stable sort of entry indices by service id finds them in O(n log n).
    let mut order: Vec<u32> = (0..u32::try_from(entries.len()).unwrap_or(u32::MAX)).collect();
    order.sort_by_key(|&i| {
        entries
            .get(i as usize)
            .map(|e| service_id_key(&e.service_id))
    });
    let mut repeated = false;
    for pair in order.windows(2) {
        let (Some(a), Some(b)) = (entries.get(pair[0] as usize), entries.get(pair[1] as usize))
        else {
            continue;
        };
        if a.service_id == b.service_id {
            if a.key_material.is_none() || b.key_material.is_none() {
                return Err(ParseError::RedundantEmpty(a.service_id));
            }
            repeated = true;
        }
    }

    let mut recipients = Vec::with_capacity(entries.len());
    let mut excluded = Vec::new();
    if !repeated {
        for e in entries {
            match e.key_material {
                Some(key_material) => recipients.push(Recipient {
                    service_id: e.service_id,
                    key_material,
                    devices: e.devices,
                }),
                None => excluded.push(e.service_id),
            }
        }
        return Ok(SentMessage {
            version,
            recipients,
            excluded,
            shared,
            devices,
        });
    }

    // Rare: some recipient appears more than once. Rebuild the device list grouped per recipient, in order of
    // first appearance (entries of one recipient are adjacent in `order`, in message order).
    let mut group_of_first: Vec<Option<(usize, usize)>> = vec![None; entries.len()];
    let mut i = 0;
    while i < order.len() {
        let first = order[i] as usize;
        let mut j = i + 1;
        while j < order.len()
            && entries.get(order[j] as usize).map(|e| e.service_id)
                == entries.get(first).map(|e| e.service_id)
        {
            j += 1;
        }
        if let Some(slot) = group_of_first.get_mut(first) {
            *slot = Some((i, j));
        }
        i = j;
    }
    let mut grouped = Vec::with_capacity(devices.len());
    for (idx, e) in entries.iter().enumerate() {
        let Some(Some((from, to))) = group_of_first.get(idx).copied() else {
            continue;
        };
        match e.key_material {
            Some(key_material) => {
                let start = grouped.len();
                for &k in order.get(from..to).unwrap_or(&[]) {
                    if let Some(member) = entries.get(k as usize) {
                        grouped
                            .extend_from_slice(devices.get(member.devices.clone()).unwrap_or(&[]));
                    }
                }
                recipients.push(Recipient {
                    service_id: e.service_id,
                    key_material,
                    devices: start..grouped.len(),
                });
            }
            None => excluded.push(e.service_id),
        }
    }
    Ok(SentMessage {
        version,
        recipients,
        excluded,
        shared,
        devices: grouped,
    })
}

/// One recipient's devices that do not match its account (a 409 entry, M§2.5 step 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientMismatch {
    /// The recipient.
    pub service_id: ServiceId,
    /// Account devices the message does not address.
    pub missing: Vec<DeviceId>,
    /// Addressed devices the account does not have.
    pub extra: Vec<DeviceId>,
}

/// The multi-recipient device check (M§2.5 step 6): unlike single-recipient sends, **409 wins over 410**.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiDeviceCheck {
    /// Every resolved recipient's devices are addressed exactly, with current registration ids.
    Ok,
    /// 409 `[{"uuid", "devices": {"missingDevices", "extraDevices"}}]`: only the recipients with a mismatch.
    Mismatched(Vec<RecipientMismatch>),
    /// 410 `[{"uuid", "devices": {"staleDevices"}}]`: only the recipients with stale devices.
    Stale(Vec<(ServiceId, Vec<DeviceId>)>),
}

/// Compares every recipient's devices with its account's (`device → registration id`, the ACI or the PNI one as
/// the recipient's service id names). `devices_of` returning `None` means unresolved: such recipients are skipped
/// here (the endpoint decides between 404 and `uuids404` before). Registration ids compare on their 14 bits.
pub fn check_recipient_devices<'d>(
    message: &SentMessage<'_>,
    devices_of: impl Fn(&ServiceId) -> Option<&'d std::collections::BTreeMap<DeviceId, u32>>,
) -> MultiDeviceCheck {
    let mut mismatched = vec![];
    let mut stale = vec![];
    for (r, listed) in message.recipients_with_devices() {
        let Some(account) = devices_of(&r.service_id) else {
            continue;
        };
        let missing: Vec<DeviceId> = account
            .keys()
            .copied()
            .filter(|d| !listed.iter().any(|l| l.device == *d))
            .collect();
        let mut extra: Vec<DeviceId> = listed
            .iter()
            .map(|l| l.device)
            .filter(|d| !account.contains_key(d))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !missing.is_empty() || !extra.is_empty() {
            mismatched.push(RecipientMismatch {
                service_id: r.service_id,
                missing,
                extra,
            });
            continue;
        }
        let mut s: Vec<DeviceId> = listed
            .iter()
            .filter(|l| {
                account.get(&l.device).is_some_and(|reg| {
                    u32::from(l.registration_id) != *reg & u32::from(REGISTRATION_ID_MASK)
                })
            })
            .map(|l| l.device)
            .collect();
        if !s.is_empty() {
            s.sort_unstable();
            s.dedup();
            stale.push((r.service_id, s));
        }
    }
    if !mismatched.is_empty() {
        MultiDeviceCheck::Mismatched(mismatched)
    } else if !stale.is_empty() {
        MultiDeviceCheck::Stale(stale)
    } else {
        MultiDeviceCheck::Ok
    }
}

/// The combined unidentified-access key of a multi-recipient send: the XOR of the recipients' 16-byte keys
/// (unrestricted accounts left out by the caller).
pub fn combined_access_key<'k>(keys: impl IntoIterator<Item = &'k [u8; 16]>) -> [u8; 16] {
    let mut out = [0u8; 16];
    for k in keys {
        for (o, b) in out.iter_mut().zip(k) {
            *o ^= b;
        }
    }
    out
}

/// Constant-time comparison of a presented access key with the expected one.
pub fn access_key_matches(expected: &[u8; 16], presented: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    presented.len() == 16 && bool::from(expected.ct_eq(presented))
}
