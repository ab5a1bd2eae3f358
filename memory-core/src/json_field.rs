//! Serde adapter for `serde_json::Value` fields: the value itself in human-readable formats
//! (JSON), a JSON string in binary formats (bincode cannot decode a self-describing `Value`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serializes a JSON value.
pub fn serialize<S: Serializer>(
    value: &serde_json::Value,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        value.serialize(serializer)
    } else {
        let text = serde_json::to_string(value).map_err(serde::ser::Error::custom)?;
        text.serialize(serializer)
    }
}

/// Deserializes a JSON value.
pub fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<serde_json::Value, D::Error> {
    if deserializer.is_human_readable() {
        serde_json::Value::deserialize(deserializer)
    } else {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}
