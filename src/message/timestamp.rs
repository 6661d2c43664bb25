//! Wall-clock timestamps as the API shows them: RFC 3339, UTC, millisecond precision.
//! Only formatting lives here; durations and deadlines use `std::time::Instant`.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, serialized as `2026-11-23T08:00:00.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The current time, to the millisecond (as it is shown and stored, so that a
    /// time read back compares equal to the one written).
    pub fn now() -> Self {
        Self(Utc::now().trunc_subsecs(3))
    }

    /// A time read back from its RFC 3339 text (as `to_rfc3339` writes it).
    pub fn parse(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| Self(time.with_timezone(&Utc)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    /// The time `millis` milliseconds after the Unix epoch, if representable.
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        DateTime::from_timestamp_millis(millis).map(Self)
    }

    /// This time as a `chrono` UTC time (as SQL stores take it).
    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// A `chrono` UTC time, to the millisecond.
    pub fn from_datetime(time: DateTime<Utc>) -> Self {
        Self(time.trunc_subsecs(3))
    }

    /// The RFC 3339 text of this time, as it appears in JSON.
    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_rfc3339_with_milliseconds_and_z() {
        let text = serde_json::to_string(&Timestamp::now()).unwrap();
        let inner = text.trim_matches('"');
        assert!(inner.ends_with('Z'), "{inner}");
        assert_eq!(inner.len(), "2026-11-23T08:00:00.123Z".len(), "{inner}");
        assert!(DateTime::parse_from_rfc3339(inner).is_ok());
    }

    #[test]
    fn a_time_reads_back_from_its_text() {
        let now = Timestamp::now();
        assert_eq!(
            Timestamp::parse(&now.to_rfc3339()).map(|t| t.to_rfc3339()),
            Some(now.to_rfc3339())
        );
        assert_eq!(Timestamp::parse("not a time"), None);
    }
}
