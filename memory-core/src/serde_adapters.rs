//! Serde adapters for fields whose natural form does not suit every format (shared with the
//! crates that compose core's types, such as the tiered layer's configuration).

/// `serde_json::Value` fields: the value itself in human-readable formats (JSON), a JSON
/// string in binary formats (bincode cannot decode a self-describing `Value`).
pub(crate) mod json_value {
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
}

/// `Duration` fields as whole milliseconds.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Deserialize)]
/// struct Settings {
///     #[serde(with = "memory_core::serde_adapters::duration_ms")]
///     timeout: Duration,
/// }
/// let s: Settings = serde_json::from_str(r#"{"timeout": 1500}"#)?;
/// assert_eq!(s.timeout, Duration::from_millis(1500));
/// # Ok::<(), serde_json::Error>(())
/// ```
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes a duration as whole milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    /// Deserializes whole milliseconds into a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
