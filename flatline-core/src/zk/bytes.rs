//! zkgroup's wire format, by hand: bincode 1.x with fixed-width little-endian integers and
//! trailing bytes rejected. Scalars must be canonical, points valid Ristretto encodings,
//! `Vec<u8>`/`Box<[u8]>` carry a u64 length prefix.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;

use super::ZkError;

/// A cursor over a serialized zkgroup object. Every read fails with [`ZkError::Deserialization`].
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ZkError> {
        if self.buf.len() < n {
            return Err(ZkError::Deserialization);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ZkError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, ZkError> {
        Ok(self.array::<1>()?[0])
    }

    /// A leading reserved/version byte that must equal `expected`.
    pub(crate) fn version(&mut self, expected: u8) -> Result<(), ZkError> {
        if self.byte()? == expected {
            Ok(())
        } else {
            Err(ZkError::Deserialization)
        }
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ZkError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn scalar(&mut self) -> Result<Scalar, ZkError> {
        Option::from(Scalar::from_canonical_bytes(self.array()?)).ok_or(ZkError::Deserialization)
    }

    pub(crate) fn point(&mut self) -> Result<RistrettoPoint, ZkError> {
        CompressedRistretto(self.array()?)
            .decompress()
            .ok_or(ZkError::Deserialization)
    }

    /// A u64-length-prefixed byte string (bincode's `Vec<u8>`).
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], ZkError> {
        let len = usize::try_from(self.u64()?).map_err(|_| ZkError::Deserialization)?;
        self.take(len)
    }

    /// Succeeds only when every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), ZkError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ZkError::Deserialization)
        }
    }
}

/// Appends in the same format.
pub(crate) trait Writer {
    fn put_scalar(&mut self, s: &Scalar);
    fn put_point(&mut self, p: &RistrettoPoint);
    fn put_u64(&mut self, v: u64);
    fn put_bytes(&mut self, b: &[u8]);
}

impl Writer for Vec<u8> {
    fn put_scalar(&mut self, s: &Scalar) {
        self.extend_from_slice(s.as_bytes());
    }
    fn put_point(&mut self, p: &RistrettoPoint) {
        self.extend_from_slice(p.compress().as_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_bytes(&mut self, b: &[u8]) {
        self.put_u64(b.len() as u64);
        self.extend_from_slice(b);
    }
}
