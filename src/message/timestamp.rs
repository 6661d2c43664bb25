//! Wall-clock timestamps as the API shows them: RFC 3339, UTC, millisecond precision.
//! Only formatting lives here; durations and deadlines use `std::time::Instant`.

use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, serialized as `2026-11-23T08:00:00.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

/// "00" to "99", each number's two digits at twice its place.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

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
        match self.fixed_width() {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => self.0.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` written two digits at a time, for years 0 to 9999 (every
    /// timestamp of a history is rendered on every full answer: no formatter, no
    /// allocation). Other years, and leap seconds, go through chrono.
    fn fixed_width(&self) -> Option<[u8; 24]> {
        // UTC's own fields: `DateTime`'s accessors would apply the (zero) offset anew
        // for each one.
        let time = self.0.naive_utc();
        let year = u32::try_from(time.year())
            .ok()
            .filter(|year| *year <= 9999)?;
        // A leap second (nanoseconds past 10^9) is chrono's to write (as :60).
        let millis = Some(time.nanosecond()).filter(|nanos| *nanos < 1_000_000_000)? / 1_000_000;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, value: u32| {
            // Below 100: one pair of digits from the table.
            let pair = usize::try_from(value % 100).unwrap_or(0) * 2;
            out[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        };
        put(0, year / 100);
        put(2, year);
        put(5, time.month());
        put(8, time.day());
        put(11, time.hour());
        put(14, time.minute());
        put(17, time.second());
        put(20, millis / 10);
        out[22] = b'0' + u8::try_from(millis % 10).unwrap_or(0);
        Some(out)
    }
}

impl Timestamp {
    /// Appends the time as a JSON string: what its `Serialize` writes, without serde
    /// (for histories written by hand, `message::write_history`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self.fixed_width() {
            Some(bytes) => {
                out.push(b'"');
                out.extend_from_slice(&bytes);
                out.push(b'"');
            }
            None => crate::json_text::write_str(out, &self.to_rfc3339()),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.fixed_width() {
            Some(bytes) => {
                serializer.serialize_str(std::str::from_utf8(&bytes).unwrap_or_default())
            }
            None => serializer.serialize_str(&self.to_rfc3339()),
        }
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
    fn the_fixed_width_text_is_chronos_for_every_kind_of_time() {
        let mut millis: i64 = -62_167_219_200_001; // the last millisecond of year -1
        let end: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999
        let mut step: i64 = 1;
        while millis <= end {
            let time = Timestamp::from_unix_millis(millis).unwrap();
            let chrono = time.0.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(time.to_rfc3339(), chrono, "{millis}");
            assert_eq!(
                serde_json::to_string(&time).unwrap(),
                format!("\"{chrono}\"")
            );
            millis += step;
            step = step * 3 + 7; // every field's carries, ever wider
            if step > 1_000_000_000_000 {
                step = 999_983;
            }
        }
        // A leap second (chrono keeps it in the nanoseconds) is written as chrono does.
        let leap = DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap();
        let time = Timestamp(leap);
        assert_eq!(
            time.to_rfc3339(),
            leap.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
    }

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
