//! Byte fields on the wire, in Signal's per-field base64 flavours. Decoders accept input with or without padding.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Deserializer, Serializer};

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);

/// Standard alphabet, any padding.
pub const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
/// URL-safe alphabet, any padding.
pub const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// JSON-schema pattern of standard base64 with or without padding (documentation; decoding is what validates).
pub const STD_PATTERN: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$";
/// JSON-schema pattern of URL-safe base64 with or without padding.
pub const URL_PATTERN: &str =
    "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$";

/// Decodes standard base64 with or without padding.
pub fn decode_std(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STD_LENIENT.decode(s)
}

/// Decodes URL-safe base64 with or without padding.
pub fn decode_url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_LENIENT.decode(s)
}

/// Standard base64, padded on output: identity and prekey public keys.
pub mod std_padded {
    use super::*;

    /// Encodes padded.
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
    /// Serde: write.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }
    /// Serde: read (any padding).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        decode_std(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Standard base64, unpadded on output: signatures, device names.
pub mod std_unpadded {
    use super::*;

    /// Encodes without padding.
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    }
    /// Serde: write.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }
    /// Serde: read (any padding).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        decode_std(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// URL-safe base64 without padding: username hashes, proofs, link blobs.
pub mod url {
    use super::*;

    /// Encodes URL-safe without padding.
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// An optional std-base64 field (absent or `null` = `None`).
pub fn opt_std<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| decode_std(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// `unidentifiedAccessKey`: a std-base64 string (Android) or a JSON array of byte values (libsignal-net).
pub fn access_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Text(String),
        Bytes(Vec<i16>),
    }
    match Option::<Form>::deserialize(d)? {
        None => Ok(None),
        Some(Form::Text(s)) => decode_std(&s).map(Some).map_err(serde::de::Error::custom),
        Some(Form::Bytes(v)) => v
            .into_iter()
            // Jackson accepts signed bytes (-128..127) and unsigned (0..255) alike.
            .map(|b| u8::try_from(b).or_else(|_| i8::try_from(b).map(|s| s as u8)))
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("byte value out of range")),
    }
}

/// OpenAPI schema of an `unidentifiedAccessKey` field: standard base64 text, an array of byte values, or null.
pub fn access_key_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
    };
    OneOfBuilder::new()
        .description(Some(
            "16-byte unidentified-access key: standard base64, or an array of byte values (-128..=255)",
        ))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Byte)))
                .pattern(Some(STD_PATTERN)),
        )
        .item(
            ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(-128))
                    .maximum(Some(255)),
            ),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_optional_on_input() {
        assert_eq!(decode_std("YQ==").unwrap(), b"a");
        assert_eq!(decode_std("YQ").unwrap(), b"a");
        assert_eq!(decode_url("_-8").unwrap(), vec![0xff, 0xef]);
        assert!(decode_std("_-8").is_err());
        assert!(decode_url("/+8").is_err());
        assert_eq!(std_padded::encode(b"a"), "YQ==");
        assert_eq!(std_unpadded::encode(b"a"), "YQ");
    }

    #[derive(Deserialize)]
    struct K {
        #[serde(default, deserialize_with = "access_key")]
        k: Option<Vec<u8>>,
    }

    #[test]
    fn access_key_forms() {
        let parse = |j: &str| serde_json::from_str::<K>(j).map(|k| k.k);
        assert_eq!(parse(r#"{"k":"AQI="}"#).unwrap(), Some(vec![1, 2]));
        assert_eq!(
            parse(r#"{"k":[1,2,-1,255]}"#).unwrap(),
            Some(vec![1, 2, 255, 255])
        );
        assert_eq!(parse(r#"{"k":null}"#).unwrap(), None);
        assert_eq!(parse(r#"{}"#).unwrap(), None);
        assert!(parse(r#"{"k":[256]}"#).is_err());
        assert!(parse(r#"{"k":"!!"}"#).is_err());
    }
}
