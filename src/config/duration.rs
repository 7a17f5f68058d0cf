//! Durations as humantime writes them: `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"`, also
//! `"1h 30m"` or `"1.5s"`. A unit is required, and a duration must fit in `u64`
//! milliseconds (about 584 million years).

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

const UNITS: &str = "ms, s, m, h, d; also ns, us, w, M (months), y";

pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    // humantime takes a lone "0" as zero; a number without a unit is refused here.
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("duration {text:?} needs a unit ({UNITS})"));
    }
    let d = humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            format!("duration {text:?} needs a unit ({UNITS})")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("duration {text:?}: unknown unit {unit:?} (units: {UNITS})")
        }
        humantime::DurationError::NumberOverflow => {
            format!("duration {text:?} is too large or finer than a nanosecond")
        }
        e => format!("duration {text:?}: {e}"),
    })?;
    // Callers take milliseconds as u64 and add durations to instants.
    if d.as_millis() > u128::from(u64::MAX) {
        return Err(format!("duration {text:?} is too large"));
    }
    Ok(d)
}

/// The largest whole unit, as configuration files write it (`"14d"`, `"5m"`, `"250ms"`);
/// humantime's form when the duration is not whole milliseconds. [`parse`] reads both.
pub fn format(d: &Duration) -> String {
    if d.subsec_nanos() % 1_000_000 != 0 {
        return humantime::format_duration(*d).to_string();
    }
    let ms = d.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    let compact = match units.iter().find(|(size, _)| ms > 0 && ms % size == 0) {
        Some((size, unit)) => format!("{}{unit}", ms / size),
        None if ms == 0 => "0s".to_string(),
        None => format!("{ms}ms"),
    };
    // Beyond what humantime reads in one number (hundreds of years), its own long form.
    match parse(&compact) {
        Ok(_) => compact,
        Err(_) => humantime::format_duration(*d).to_string(),
    }
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[test]
    fn durations_parse_and_print() {
        let secs = Duration::from_secs;
        for (text, want) in [
            ("250ms", Duration::from_millis(250)),
            ("5s", secs(5)),
            ("5m", secs(300)),
            ("1h", secs(3600)),
            ("1d", secs(86_400)),
            ("7d", secs(7 * 86_400)),
            ("300s", secs(300)),
            (" 30s ", secs(30)),
            ("0s", Duration::ZERO),
            // humantime's forms beyond the old grammar.
            ("1h 30m", secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("2days", secs(2 * 86_400)),
            ("5 weeks", secs(35 * 86_400)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
        assert_eq!(format(&secs(300)), "5m");
        assert_eq!(format(&Duration::from_millis(250)), "250ms");
        assert_eq!(format(&Duration::ZERO), "0s");
    }

    #[test]
    fn a_duration_without_a_unit_or_with_an_unknown_one_is_refused() {
        for text in ["5", "0", " 42 ", "1.5"] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("needs a unit"), "{text}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
        let err = parse("5 fortnights").unwrap_err();
        assert!(err.contains("unknown unit \"fortnights\""), "{err}");
        for text in ["", "  ", "-5s", "5s!", "s", "1."] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        let err =
            crate::config::Config::parse("[streams]\nduplicate_window = \"120\"\n").unwrap_err();
        assert!(err.to_string().contains("needs a unit"), "{err}");
    }

    #[test]
    fn an_overflowing_duration_is_an_error() {
        // 999999999999999 days overflow u64 seconds; the old parser wrapped (or panicked in a
        // debug build) multiplying milliseconds.
        for text in [
            "999999999999999d",
            "99999999999999999999s",
            // humantime counts the part below a second in u64 nanoseconds: about 584 years.
            "18446744073709551615ms",
            // One second past u64::MAX milliseconds, the most a duration may hold.
            "18446744073709552s",
            "600000000y",
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("too large"), "{text}: {err}");
        }
        assert_eq!(
            parse("18446744073709551s"),
            Ok(Duration::from_secs(u64::MAX / 1000))
        );
        assert_eq!(
            parse("18446744073709ms"),
            Ok(Duration::from_millis(18_446_744_073_709))
        );
    }

    #[test]
    fn formatted_durations_parse_back() {
        let secs = Duration::from_secs;
        for d in [
            Duration::ZERO,
            Duration::from_millis(1),
            Duration::from_millis(250),
            Duration::from_micros(1500),
            secs(5),
            secs(90),
            secs(300),
            secs(3600),
            secs(86_400),
            secs(14 * 24 * 3600),
            secs(86_400 + 3600 + 61) + Duration::from_millis(500),
            secs(2_630_016),
            secs(400 * 86_400),
            Duration::from_millis(u64::MAX),
        ] {
            let text = format(&d);
            assert_eq!(parse(&text), Ok(d), "{text}");
            assert_eq!(humantime::parse_duration(&text), Ok(d), "{text}");
        }

        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Holder {
            #[serde(with = "super")]
            d: Duration,
        }
        let h = Holder {
            d: Duration::from_millis(90_250),
        };
        let text = toml::to_string(&h).unwrap();
        assert_eq!(text, "d = \"90250ms\"\n");
        assert_eq!(toml::from_str::<Holder>(&text).unwrap(), h);
    }
}
