//! TOML text to JSON, the one converter: the configuration (`config`) and a rule pack's
//! manifest (`rules::manifest`) are both written in TOML and validated as JSON against
//! their schemas, so both read TOML through [`parse`] and mean the same by every value.
//!
//! Datetimes are the only TOML values without a JSON twin. Each of TOML's four kinds
//! becomes a JSON string; [`datetime`] documents the mapping and its unit tests pin
//! every kind. Before this module the manifest went through serde and turned a datetime
//! into toml's private marker object (`{"$__toml_private_datetime": …}`), so a date in
//! a rule's params failed its schema while the same date was a string in the config.

use crate::problem::{line_col, Problem};
use serde_json::Value;
use toml::value::Datetime;

/// Parses TOML into JSON; a syntax error is one problem located as
/// `label:line:col: invalid TOML: message`.
pub fn parse(text: &str, label: &str) -> Result<Value, Problem> {
    let value: toml::Value = toml::from_str(text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| line_col(text, s.start))
            .map_or((None, None), |(l, c)| (Some(l), Some(c)));
        Problem::at(label, line, col, format!("invalid TOML: {}", e.message()))
    })?;
    Ok(to_json(value))
}

/// One TOML value as JSON.
pub fn to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        // NaN and infinities have no JSON form; null then fails the schema's type check.
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(datetime(&d)),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        toml::Value::Table(table) => {
            Value::Object(table.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
    }
}

/// A TOML datetime as the string a JSON document would hold:
///
/// | TOML kind            | example written          | JSON string                 |
/// |----------------------|--------------------------|-----------------------------|
/// | offset date-time     | `2026-03-01 10:00:00z`   | `"2026-03-01T10:00:00Z"`    |
/// | local date-time      | `2026-03-01T10:00:00`    | `"2026-03-01T10:00:00"`     |
/// | local date           | `2026-03-01`             | `"2026-03-01"`              |
/// | local time           | `10:00:00.5`             | `"10:00:00.5"`              |
///
/// An offset date-time is an instant: it becomes RFC 3339 (`T`, upper-case `Z` or
/// `±hh:mm` as written, seconds always, the fraction without trailing zeros), exactly what
/// the quoted form would have been, so `start_from = 2025-01-01T00:00:00Z` works quoted
/// or not. The offset is kept, not converted to UTC: it names the same instant, and the
/// value reads as the author wrote it.
///
/// The three local kinds are not instants, and stay as written (the same text, `T` as
/// the separator). They are not refused here, nor given a zone: guessing UTC or the
/// machine's zone would silently move a sync start by hours, and a local date or time
/// is legitimate data elsewhere (a rule's params may hold business hours or a
/// holiday). Where a schema expects an instant it says `"format": "date-time"`, which
/// refuses all three (RFC 3339 requires the offset), located at the key.
pub fn datetime(d: &Datetime) -> String {
    // toml's Display writes exactly the forms above (RFC 3339 for the offset kind,
    // ISO 8601 for the local ones); the tests pin it, so a change of toml's formatting
    // cannot pass unnoticed.
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn converted(toml_value: &str) -> Value {
        parse(&format!("v = {toml_value}"), "t.toml").unwrap()["v"].clone()
    }

    #[test]
    fn offset_date_times_become_rfc3339_with_their_offset() {
        assert_eq!(converted("2026-03-01T10:00:00Z"), "2026-03-01T10:00:00Z");
        // TOML's lower-case z and space separator become RFC 3339's canonical forms.
        assert_eq!(converted("2026-03-01 10:00:00z"), "2026-03-01T10:00:00Z");
        assert_eq!(
            converted("2026-03-01T10:00:00+05:30"),
            "2026-03-01T10:00:00+05:30"
        );
        assert_eq!(
            converted("2026-03-01T10:00:00-00:30"),
            "2026-03-01T10:00:00-00:30"
        );
        // Seven fractional digits (.NET's ticks, what both services write) survive;
        // trailing zeros do not.
        assert_eq!(
            converted("2026-03-01T10:00:00.1234567Z"),
            "2026-03-01T10:00:00.1234567Z"
        );
        assert_eq!(
            converted("2026-03-01T10:00:00.500Z"),
            "2026-03-01T10:00:00.5Z"
        );
        // TOML 1.1 may omit the seconds; RFC 3339 may not.
        assert_eq!(converted("2026-03-01T10:00Z"), "2026-03-01T10:00:00Z");
        // Every one of them is a time the rules' own parser reads as the same instant.
        for (toml_value, utc) in [
            ("2026-03-01T10:00:00+05:30", "2026-03-01T04:30:00Z"),
            (
                "2026-03-01T10:00:00.1234567Z",
                "2026-03-01T10:00:00.1234567Z",
            ),
        ] {
            let text = converted(toml_value);
            let parsed = crate::rules::natives::parse_time(text.as_str().unwrap()).unwrap();
            assert_eq!(crate::rules::natives::format_time(parsed), utc);
        }
    }

    #[test]
    fn local_date_times_dates_and_times_stay_as_written() {
        assert_eq!(converted("2026-03-01T10:00:00"), "2026-03-01T10:00:00");
        assert_eq!(
            converted("2026-03-01 10:00:00.25"),
            "2026-03-01T10:00:00.25"
        );
        assert_eq!(converted("2026-03-01"), "2026-03-01");
        assert_eq!(converted("10:00:00"), "10:00:00");
        assert_eq!(converted("07:32:00.999999"), "07:32:00.999999");
        // Not instants: the rules' parser refuses them rather than guessing a zone.
        for local in ["2026-03-01T10:00:00", "2026-03-01", "10:00:00"] {
            let text = converted(local);
            assert_eq!(
                crate::rules::natives::parse_time(text.as_str().unwrap()),
                None
            );
        }
    }

    #[test]
    fn datetimes_nested_in_arrays_and_tables_are_strings_too() {
        let v = parse(
            "days = [2026-12-24, 2026-12-31]\n[hours]\nopen = 09:00:00\nsince = 2026-01-01T00:00:00Z\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({
                "days": ["2026-12-24", "2026-12-31"],
                "hours": {"open": "09:00:00", "since": "2026-01-01T00:00:00Z"}
            })
        );
    }

    #[test]
    fn other_values_and_syntax_errors() {
        assert_eq!(
            parse("a = 1\nb = 1.5\nc = true\nd = \"x\"\nf = nan\n", "t.toml").unwrap(),
            json!({"a": 1, "b": 1.5, "c": true, "d": "x", "f": null})
        );
        let e = parse("a = 1\nb = = 2\n", "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:2:5: invalid TOML: "), "{e}");
    }
}
