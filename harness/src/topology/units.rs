//! Durations and sizes as people write them (`30d`, `100ms`, `1MiB`, `4G`), parsed once at load time so a
//! bad value is a deserialisation error with a line and column.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as text (`100ms`, `5s`, `2m`, `30d`); keeps the original spelling for rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

impl Duration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let value = humantime::parse_duration(text.trim()).map_err(|e| {
            format!("`{text}` is not a duration ({e}); write a number and a unit, e.g. `100ms`, `5s`, `2m`, `30d`")
        })?;
        Ok(Duration { text: text.trim().to_string(), value })
    }

    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    pub fn as_nanos(&self) -> i64 {
        i64::try_from(self.value.as_nanos()).unwrap_or(i64::MAX)
    }

    /// The form nats-server's config parser accepts (`"100ms"`, `"5s"`): Go durations have no `d`.
    pub fn to_go(&self) -> String {
        go_duration(self.value)
    }
}

pub fn go_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = TextOrNumber::deserialize(d)?;
        match raw {
            TextOrNumber::Text(t) => Duration::parse(&t).map_err(de::Error::custom),
            TextOrNumber::Number(n) => Err(de::Error::custom(format!(
                "`{n}` has no unit; write e.g. `{n}s` or `{n}ms`"
            ))),
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// `jetstream.sync_interval`: `always` or a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncInterval {
    Always,
    Every(Duration),
}

impl fmt::Display for SyncInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncInterval::Always => f.write_str("always"),
            SyncInterval::Every(d) => d.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for SyncInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "always" {
            return Ok(SyncInterval::Always);
        }
        Duration::parse(&text)
            .map(SyncInterval::Every)
            .map_err(|e| de::Error::custom(format!("{e}, or `always`")))
    }
}

impl Serialize for SyncInterval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SyncInterval::Always => s.serialize_str("always"),
            SyncInterval::Every(d) => d.serialize(s),
        }
    }
}

/// A byte size: an integer, or a number with a unit. As in nats-server, `K`/`KB`/`KiB` all mean 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let hint = "write bytes or a number with a unit, e.g. `1048576`, `1MiB`, `512M`, `4G`";
        let n: u64 = num.parse().map_err(|_| format!("`{text}` is not a size; {hint}"))?;
        let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            "T" | "TB" | "TIB" => 1 << 40,
            other => return Err(format!("`{text}` has an unknown unit `{other}`; {hint}")),
        };
        n.checked_mul(mult).map(Size).ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match TextOrNumber::deserialize(d)? {
            TextOrNumber::Text(t) => Size::parse(&t).map_err(de::Error::custom),
            TextOrNumber::Number(n) if n >= 0 => Ok(Size(n as u64)),
            TextOrNumber::Number(n) => Err(de::Error::custom(format!("size `{n}` is negative"))),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A scalar that may be written as a string or a bare number; a hand-written visitor (not `untagged`) so
/// errors stay precise.
enum TextOrNumber {
    Text(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for TextOrNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = TextOrNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TextOrNumber, E> {
                Ok(TextOrNumber::Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TextOrNumber, E> {
                Ok(TextOrNumber::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TextOrNumber, E> {
                i64::try_from(v).map(TextOrNumber::Number).map_err(|_| E::custom("number too large"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("1MiB").unwrap().0, 1 << 20);
        assert_eq!(Size::parse("4G").unwrap().0, 4 << 30);
        assert_eq!(Size::parse("1MB").unwrap().0, 1 << 20);
        assert_eq!(Size::parse("512").unwrap().0, 512);
        assert!(Size::parse("12 parsecs").unwrap_err().contains("unknown unit"));
        assert!(Size::parse("lots").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("30d").unwrap().get().as_secs(), 30 * 86400);
        assert_eq!(Duration::parse("100ms").unwrap().to_go(), "100ms");
        assert_eq!(Duration::parse("2m").unwrap().to_go(), "120s");
        assert!(Duration::parse("soon").is_err());
    }
}
