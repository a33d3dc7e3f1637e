//! Just enough arithmetic modulo p = 2^255 − 19 to turn a public Montgomery u-coordinate into the
//! Edwards key XEdDSA verifies with, without the extra field inversion that
//! `MontgomeryPoint::to_edwards` followed by `EdwardsPoint::compress` costs.
//!
//! curve25519-dalek keeps its field type private, so `to_edwards` computes y = (u − 1)/(u + 1),
//! encodes it, decompresses, and throws the encoding away; XEdDSA then needs that very encoding
//! (the compressed key `A` is hashed into every challenge), and compressing the point again costs
//! a second inversion, about 8% of a lone verification. Here y is computed once and its encoding
//! is kept. Only public data passes through this module, so nothing here needs to be constant
//! time.
//!
//! Representation: five 51-bit limbs, little-endian, as in ref10-style "radix 2^51" code.
//! Limbs are kept below 2^52 between operations so products fit comfortably in u128.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};

const MASK51: u64 = (1 << 51) - 1;

#[derive(Clone, Copy, Debug)]
struct Fe([u64; 5]);

impl Fe {
    const ONE: Fe = Fe([1, 0, 0, 0, 0]);

    /// Loads 32 little-endian bytes, ignoring bit 255 (as X25519 and dalek do). The value may be
    /// up to 2^255 − 1, i.e. not fully reduced; every later operation copes with that.
    fn from_bytes(b: &[u8; 32]) -> Fe {
        let load = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        // Limb k starts at bit 51·k: bytes 0, 6 (+3 bits), 12 (+6), 19 (+1), 24 (+12).
        Fe([
            load(0) & MASK51,
            (load(6) >> 3) & MASK51,
            (load(12) >> 6) & MASK51,
            (load(19) >> 1) & MASK51,
            (load(24) >> 12) & MASK51,
        ])
    }

    /// Propagates carries so every limb is below 2^51 + 2^14 (inputs up to 2^64 per limb).
    fn carry(mut l: [u64; 5]) -> Fe {
        let c: [u64; 5] = core::array::from_fn(|i| l[i] >> 51);
        for limb in &mut l {
            *limb &= MASK51;
        }
        // 2^255 ≡ 19 (mod p): the top carry wraps around times 19.
        l[0] += c[4] * 19;
        l[1] += c[0];
        l[2] += c[1];
        l[3] += c[2];
        l[4] += c[3];
        Fe(l)
    }

    fn add(&self, o: &Fe) -> Fe {
        Fe::carry(core::array::from_fn(|i| self.0[i] + o.0[i]))
    }

    /// `self − o`, computed as `self + 4p − o` so no limb goes negative (o's limbs are < 2^52).
    fn sub(&self, o: &Fe) -> Fe {
        const FOUR_P: [u64; 5] = [
            4 * ((1 << 51) - 19),
            4 * MASK51,
            4 * MASK51,
            4 * MASK51,
            4 * MASK51,
        ];
        Fe::carry(core::array::from_fn(|i| self.0[i] + FOUR_P[i] - o.0[i]))
    }

    /// Reduces five 128-bit column sums to limbs below 2^51 + 2^13.
    fn reduce_wide(c: [u128; 5]) -> Fe {
        let mut l = [0u64; 5];
        let mut carry: u128 = 0;
        for (limb, column) in l.iter_mut().zip(c) {
            let v = column + carry;
            // Truncation keeps exactly the low 51 bits, which is the intent.
            *limb = (v as u64) & MASK51;
            carry = v >> 51;
        }
        // With limbs below 2^52 the last column (it has no ×19 terms) stays below 2^107, so the
        // final carry is below 2^56 and 19 times it fits easily in a u64.
        l[0] += (carry as u64) * 19;
        l[1] += l[0] >> 51;
        l[0] &= MASK51;
        Fe(l)
    }

    fn mul(&self, o: &Fe) -> Fe {
        let a = self.0.map(u128::from);
        let b = o.0.map(u128::from);
        // Products that overflow past limb 4 wrap around to limb (i + j − 5) times 19.
        let b19 = b.map(|x| x * 19);
        Fe::reduce_wide([
            a[0] * b[0] + a[1] * b19[4] + a[2] * b19[3] + a[3] * b19[2] + a[4] * b19[1],
            a[0] * b[1] + a[1] * b[0] + a[2] * b19[4] + a[3] * b19[3] + a[4] * b19[2],
            a[0] * b[2] + a[1] * b[1] + a[2] * b[0] + a[3] * b19[4] + a[4] * b19[3],
            a[0] * b[3] + a[1] * b[2] + a[2] * b[1] + a[3] * b[0] + a[4] * b19[4],
            a[0] * b[4] + a[1] * b[3] + a[2] * b[2] + a[3] * b[1] + a[4] * b[0],
        ])
    }

    /// `self²`: the cross products of `mul` appear twice, so half the multiplications.
    fn square(&self) -> Fe {
        let a = self.0.map(u128::from);
        let d0 = 2 * a[0];
        let d1 = 2 * a[1];
        let a3_19 = 19 * a[3];
        let a4_19 = 19 * a[4];
        Fe::reduce_wide([
            a[0] * a[0] + d1 * a4_19 + 2 * a[2] * a3_19,
            d0 * a[1] + 2 * a[2] * a4_19 + a[3] * a3_19,
            d0 * a[2] + a[1] * a[1] + 2 * a[3] * a4_19,
            d0 * a[3] + d1 * a[2] + a[4] * a4_19,
            d0 * a[4] + d1 * a[3] + a[2] * a[2],
        ])
    }

    /// `self^(2^k)`.
    fn square_times(&self, k: u32) -> Fe {
        (0..k).fold(*self, |acc, _| acc.square())
    }

    /// `self^(p − 2)` (Fermat), so zero maps to zero. p − 2 = 2^255 − 21.
    fn invert(&self) -> Fe {
        let a = self;
        let a2 = a.square();
        let a9 = a2.square_times(2).mul(a);
        let a11 = a9.mul(&a2);
        let e5 = a11.square().mul(&a9); // a^(2^5 − 1)
        let e10 = e5.square_times(5).mul(&e5);
        let e20 = e10.square_times(10).mul(&e10);
        let e40 = e20.square_times(20).mul(&e20);
        let e50 = e40.square_times(10).mul(&e10);
        let e100 = e50.square_times(50).mul(&e50);
        let e200 = e100.square_times(100).mul(&e100);
        let e250 = e200.square_times(50).mul(&e50);
        // (2^250 − 1)·2^5 + 11 = 2^255 − 21.
        e250.square_times(5).mul(&a11)
    }

    /// The canonical 32-byte encoding (fully reduced below p, bit 255 clear).
    fn to_bytes(self) -> [u8; 32] {
        let Fe(mut l) = Fe::carry(self.0);
        // Now the value is below 2^255 + 2^14·19, i.e. below 2p. It is ≥ p exactly when adding
        // 19 carries out of bit 255; q is that carry.
        let mut q = (l[0] + 19) >> 51;
        for limb in &l[1..] {
            q = (limb + q) >> 51;
        }
        l[0] += 19 * q;
        let mut c = 0;
        for limb in &mut l {
            *limb += c;
            c = *limb >> 51;
            *limb &= MASK51;
        }
        // The carry out of limb 4 (bit 255, equal to q) is dropped: with the +19·q that subtracts q·p.
        let words = [
            l[0] | (l[1] << 51),
            (l[1] >> 13) | (l[2] << 38),
            (l[2] >> 26) | (l[3] << 25),
            (l[3] >> 39) | (l[4] << 12),
        ];
        let mut out = [0u8; 32];
        for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// The canonical encoding of −1 = p − 1.
const MINUS_ONE_BYTES: [u8; 32] = {
    let mut b = [0xffu8; 32];
    b[0] = 0xec;
    b[31] = 0x7f;
    b
};

/// The Edwards point for Montgomery u-coordinate `u` with x's sign `sign`, and its compressed
/// encoding. Same result as `MontgomeryPoint(u).to_edwards(sign)` followed by `compress()`
/// (`None` exactly when that returns `None`), with one field inversion instead of two.
pub(super) fn edwards_from_montgomery(u: &[u8; 32], sign: u8) -> Option<(EdwardsPoint, [u8; 32])> {
    let u = Fe::from_bytes(u);
    // u = −1 has no Edwards image (the map's denominator vanishes); it is on the twist anyway.
    if u.to_bytes() == MINUS_ONE_BYTES {
        return None;
    }
    let y = u.sub(&Fe::ONE).mul(&u.add(&Fe::ONE).invert());
    let mut y_bytes = y.to_bytes();
    let y_is_minus_one = y_bytes == MINUS_ONE_BYTES;
    y_bytes[31] |= (sign & 1) << 7;
    let point = CompressedEdwardsY(y_bytes).decompress()?;
    // Decompression yields x with the requested sign, so compressing gives back the same bytes,
    // except when x = 0 (only y = −1, i.e. u = 0), where the sign bit compresses to 0.
    if y_is_minus_one {
        return Some((point, point.compress().to_bytes()));
    }
    Some((point, y_bytes))
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::montgomery::MontgomeryPoint;
    use proptest::prelude::*;

    use super::*;

    fn dalek(u: &[u8; 32], sign: u8) -> Option<(EdwardsPoint, [u8; 32])> {
        let p = MontgomeryPoint(*u).to_edwards(sign)?;
        Some((p, p.compress().to_bytes()))
    }

    fn le(n: u64) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b
    }

    /// p + k as 32 little-endian bytes (a non-canonical encoding of k).
    fn p_plus(k: u8) -> [u8; 32] {
        let mut b = MINUS_ONE_BYTES;
        // p − 1 ends in 0xec; p + k = (p − 1) + 1 + k, which stays within the low byte for k ≤ 18.
        b[0] = 0xed + k;
        b
    }

    #[test]
    fn matches_dalek_on_edge_inputs() {
        let mut inputs: Vec<[u8; 32]> = (0..=20).map(le).collect();
        inputs.extend((0..=18).map(p_plus));
        inputs.push(MINUS_ONE_BYTES);
        inputs.push([0xff; 32]);
        inputs.push([0x00; 32]);
        let mut minus_two = MINUS_ONE_BYTES;
        minus_two[0] -= 1;
        inputs.push(minus_two);
        // The same values with the ignored bit 255 set.
        let with_high_bit: Vec<[u8; 32]> = inputs
            .iter()
            .map(|b| {
                let mut b = *b;
                b[31] |= 0x80;
                b
            })
            .collect();
        inputs.extend(with_high_bit);
        let mut on_curve = 0;
        for u in &inputs {
            for sign in [0, 1] {
                let ours = edwards_from_montgomery(u, sign);
                assert_eq!(ours, dalek(u, sign), "u = {}, sign {sign}", hex::encode(u));
                on_curve += usize::from(ours.is_some());
            }
        }
        assert!(
            on_curve > 10,
            "edge inputs must include points on the curve"
        );
    }

    #[test]
    fn field_identities() {
        let mut seed = [7u8; 32];
        for i in 0..200u8 {
            seed[0] = i;
            seed[31] = i.wrapping_mul(37);
            let a = Fe::from_bytes(&seed);
            let inv = a.invert();
            let expected = if a.to_bytes() == [0; 32] {
                [0; 32]
            } else {
                Fe::ONE.to_bytes()
            };
            assert_eq!(a.mul(&inv).to_bytes(), expected);
            assert_eq!(a.square().to_bytes(), a.mul(&a).to_bytes());
            assert_eq!(a.sub(&a).to_bytes(), [0; 32]);
            assert_eq!(a.add(&Fe::ONE).sub(&Fe::ONE).to_bytes(), a.to_bytes());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random u (about half of them on the curve, half on the twist) and either sign.
        #[test]
        fn matches_dalek(u in any::<[u8; 32]>(), sign in 0u8..2) {
            prop_assert_eq!(edwards_from_montgomery(&u, sign), dalek(&u, sign));
        }

        /// Real public keys: always on the curve.
        #[test]
        fn matches_dalek_on_public_keys(k in any::<[u8; 32]>(), sign in 0u8..2) {
            let u = MontgomeryPoint::mul_base_clamped(k).to_bytes();
            let ours = edwards_from_montgomery(&u, sign);
            prop_assert!(ours.is_some());
            prop_assert_eq!(ours, dalek(&u, sign));
        }
    }
}
