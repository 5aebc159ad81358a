//! Fast paths for the one timestamp shape jupyter peers write, `2026-01-02T03:04:05.123456Z`.
//!
//! Every header is dated and the replay guard reads every date, so these run once per message.
//! Each fast path accepts only a strict subset of what chrono accepts and gives the same answer
//! there (tested against chrono); anything else goes to chrono.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};

/// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}][Z|+00:00]` (no zone: UTC, as the chrono fallback
/// does); `None` for anything else, including leap seconds and invalid dates.
pub(crate) fn parse_fast(text: &[u8]) -> Option<DateTime<Utc>> {
    let (fixed, rest) = text.split_at_checked(19)?;
    let [y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1] =
        *fixed
    else {
        return None;
    };
    let year = digits(&[y0, y1, y2, y3])?;
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        digits(&[mo0, mo1])?,
        digits(&[d0, d1])?,
    )?;
    let (nanos, zone) = fraction(rest)?;
    if !matches!(zone, b"" | b"Z" | b"+00:00") {
        return None;
    }
    let (hour, minute, second) = (digits(&[h0, h1])?, digits(&[mi0, mi1])?, digits(&[s0, s1])?);
    // Seconds up to 59 only: chrono's own rules for a leap second :60 apply via the fallback.
    if second > 59 {
        return None;
    }
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(date.and_time(time).and_utc())
}

/// Splits an optional `.digits` fraction (1 to 9 digits) off `rest`: (nanoseconds, remainder).
fn fraction(rest: &[u8]) -> Option<(u32, &[u8])> {
    let Some(after_dot) = rest.strip_prefix(b".") else {
        return Some((0, rest));
    };
    let n = after_dot.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=9).contains(&n) {
        return None;
    }
    let (frac, zone) = after_dot.split_at_checked(n)?;
    let value = digits(frac)?;
    let scale = 10u32.checked_pow(u32::try_from(9 - n).ok()?)?;
    Some((value.checked_mul(scale)?, zone))
}

/// The decimal value of a run of ASCII digits (at most 9, so it fits).
fn digits(text: &[u8]) -> Option<u32> {
    text.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Writes `t` as chrono's `to_rfc3339_opts(SecondsFormat::Micros, true)` would, for years
/// 0..=9999 and no leap second; `false` (nothing written) otherwise.
pub(crate) fn format_fast(t: DateTime<Utc>, out: &mut String) -> bool {
    let (date, time) = (t.date_naive(), t.time());
    let (Ok(year), nanos) = (u32::try_from(date.year()), time.nanosecond()) else {
        return false;
    };
    if year > 9999 || nanos >= 1_000_000_000 {
        return false;
    }
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    put(&mut buf, 0, 4, year);
    put(&mut buf, 5, 2, date.month());
    put(&mut buf, 8, 2, date.day());
    put(&mut buf, 11, 2, time.hour());
    put(&mut buf, 14, 2, time.minute());
    put(&mut buf, 17, 2, time.second());
    put(&mut buf, 20, 6, nanos / 1000);
    // Every byte written is an ASCII digit or one of the template's ASCII characters.
    match std::str::from_utf8(&buf) {
        Ok(s) => {
            out.push_str(s);
            true
        }
        Err(_) => false,
    }
}

/// Writes `value` as `width` zero-padded decimal digits at `buf[at..at + width]`.
fn put(buf: &mut [u8], at: usize, width: usize, mut value: u32) {
    if let Some(field) = buf.get_mut(at..at + width) {
        for slot in field.iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDateTime, SecondsFormat, TimeZone};

    /// What `message::parse_date` does without the fast path.
    fn chrono_parse(text: &str) -> Option<DateTime<Utc>> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(t.with_timezone(&Utc));
        }
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            .map(|t| t.and_utc())
    }

    fn agrees(text: &str) {
        if let Some(fast) = parse_fast(text.as_bytes()) {
            assert_eq!(Some(fast), chrono_parse(text), "{text:?}");
        }
    }

    #[test]
    fn fast_parse_takes_jupyter_dates() {
        for text in [
            "2026-01-02T03:04:05.123456Z",
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05.1",
            "2026-01-02T03:04:05.123456789+00:00",
            "2024-02-29T23:59:59.999999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            assert!(parse_fast(text.as_bytes()).is_some(), "{text}");
            agrees(text);
        }
    }

    #[test]
    fn fast_parse_leaves_odd_forms_to_chrono() {
        for text in [
            "",
            "2026-01-02",
            "2026-01-02 03:04:05.123Z",
            "2026-01-02t03:04:05Z",
            "2026-01-02T03:04:05z",
            "2026-01-02T03:04:05.Z",
            "2026-01-02T03:04:05.1234567890Z",
            "2026-01-02T03:04:05+01:00",
            "2026-01-02T03:04:05-00:00",
            "2026-01-02T03:04:60Z",
            "2026-02-30T03:04:05Z",
            "2023-02-29T03:04:05Z",
            "2026-13-02T03:04:05Z",
            "2026-01-02T24:00:00Z",
            "2026-01-02T03:60:05Z",
            "+2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05Z ",
            "2026-01-02T03:04:05.12a",
            "２０２６-01-02T03:04:05Z",
            "2026-1-02T03:04:05Z",
        ] {
            assert_eq!(parse_fast(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn fast_format_matches_chrono() {
        let mut times = vec![
            Utc.timestamp_opt(0, 0).single(),
            Utc.timestamp_opt(1_767_322_245, 123_456_789).single(),
            Utc.timestamp_opt(-62_167_219_200, 0).single(), // 0000-01-01
            Utc.timestamp_opt(253_402_300_799, 999_999_999).single(), // 9999-12-31
        ];
        // Spread over 1900..2200 with odd nanoseconds.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = -2_208_988_800 + (x % 9_467_280_000) as i64;
            times.push(
                Utc.timestamp_opt(secs, (x >> 34) as u32 % 1_000_000_000)
                    .single(),
            );
        }
        for t in times.into_iter().flatten() {
            let mut ours = String::new();
            assert!(format_fast(t, &mut ours));
            let theirs = t.to_rfc3339_opts(SecondsFormat::Micros, true);
            assert_eq!(ours, theirs);
            assert_eq!(parse_fast(ours.as_bytes()), chrono_parse(&theirs));
        }
    }

    #[test]
    fn fast_format_refuses_what_it_cannot_write() {
        let mut out = String::new();
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single();
        assert_eq!(far.map(|t| format_fast(t, &mut out)), Some(false));
        let before = Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).single();
        assert_eq!(before.map(|t| format_fast(t, &mut out)), Some(false));
        assert!(out.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4000))]

        /// Dates built from parts both valid and not, in every separator, precision and zone.
        #[test]
        fn fast_parse_agrees_with_chrono(
            y in 0u32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..26, mi in 0u32..62,
            s in 0u32..62, frac in proptest::option::of("[0-9]{0,12}"),
            sep in proptest::sample::select(vec!["T", " ", "t"]),
            zone in proptest::sample::select(vec!["", "Z", "z", "+00:00", "-00:00", "+01:30", "+0000"]),
        ) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{zone}");
            agrees(&text);
            let typical = sep == "T" && matches!(zone, "" | "Z" | "+00:00")
                && (1..=9).contains(&frac.len().saturating_sub(1)) && s < 60;
            if typical && chrono_parse(&text).is_some() {
                proptest::prop_assert!(parse_fast(text.as_bytes()).is_some(), "{}", text);
            }
        }
    }

    #[test]
    fn fast_parse_agrees_with_chrono_on_mutations() {
        // Every single-byte change of a valid date, from a small alphabet of likely troublemakers.
        let base = "2024-02-29T23:59:59.123456Z";
        let alphabet = b"0123456789-:.TZz +tx";
        for i in 0..base.len() {
            for &c in alphabet {
                let mut bytes = base.as_bytes().to_vec();
                if let Some(slot) = bytes.get_mut(i) {
                    *slot = c;
                }
                if let Ok(text) = String::from_utf8(bytes) {
                    agrees(&text);
                }
            }
            // Truncations and an insertion at every position too.
            agrees(base.get(..i).unwrap_or(""));
            agrees(&format!(
                "{}9{}",
                base.get(..i).unwrap_or(""),
                base.get(i..).unwrap_or("")
            ));
        }
    }
}
