//! The Sentinel incidents list's query options, as pure functions over the stored
//! resources: `$filter` (clauses joined by `and`: `properties/lastModifiedTimeUtc` or
//! `properties/createdTimeUtc` with `ge|gt|le|lt`, and `eq` on a few string properties,
//! `properties/providerIncidentId` among them, which finds connector-made incidents) and
//! `$orderby` (honoured: it is documented for this API). Anything else is a 400, as the
//! emulator only claims what it implements.

use super::store::ApiError;
use chrono::{DateTime, Utc};
use serde_json::Value;

const TIME_FIELDS: [&str; 2] = ["lastModifiedTimeUtc", "createdTimeUtc"];
const EQ_FIELDS: [&str; 5] = [
    "providerIncidentId",
    "providerName",
    "status",
    "severity",
    "title",
];
const ORDER_FIELDS: [&str; 3] = ["lastModifiedTimeUtc", "createdTimeUtc", "incidentNumber"];

#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    Time {
        field: String,
        op: String,
        at: DateTime<Utc>,
    },
    Eq {
        field: String,
        value: String,
    },
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!("Unsupported $filter '{what}'"))
}

pub fn parse_filter(filter: &str) -> Result<Vec<Clause>, ApiError> {
    let mut clauses = Vec::new();
    for part in filter.split(" and ").map(str::trim) {
        let words: Vec<&str> = part.splitn(3, ' ').collect();
        let [path, op, value] = words.as_slice() else {
            return Err(unsupported(part));
        };
        let field = path
            .strip_prefix("properties/")
            .ok_or_else(|| unsupported(part))?;
        if TIME_FIELDS.contains(&field) && ["ge", "gt", "le", "lt"].contains(op) {
            let text = value.trim().trim_matches('\'');
            let at = DateTime::parse_from_rfc3339(text)
                .map_err(|_| {
                    ApiError::bad_request(format!("Invalid date-time '{value}' in $filter"))
                })?
                .with_timezone(&Utc);
            clauses.push(Clause::Time {
                field: field.into(),
                op: op.to_string(),
                at,
            });
        } else if EQ_FIELDS.contains(&field) && *op == "eq" {
            let quoted = value
                .trim()
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''));
            let value = quoted.ok_or_else(|| {
                ApiError::bad_request(format!("String values in $filter are quoted: {part}"))
            })?;
            clauses.push(Clause::Eq {
                field: field.into(),
                value: value.replace("''", "'"),
            });
        } else {
            return Err(unsupported(part));
        }
    }
    Ok(clauses)
}

fn time_of(incident: &Value, field: &str) -> Option<DateTime<Utc>> {
    incident["properties"][field]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

pub fn matches(incident: &Value, clauses: &[Clause]) -> bool {
    clauses.iter().all(|clause| match clause {
        Clause::Time { field, op, at } => {
            time_of(incident, field).is_some_and(|t| match op.as_str() {
                "ge" => t >= *at,
                "gt" => t > *at,
                "le" => t <= *at,
                _ => t < *at,
            })
        }
        Clause::Eq { field, value } => incident["properties"][field.as_str()]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case(value)),
    })
}

/// A parsed `$orderby`: one property, ascending unless `desc`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Order {
    pub field: &'static str,
    pub desc: bool,
}

/// Newest first, as the service lists by default (recorded: descending
/// `createdTimeUtc` and `incidentNumber`).
pub const NEWEST_FIRST: Order = Order {
    field: "createdTimeUtc",
    desc: true,
};

pub fn parse_orderby(order: Option<&str>, default: Order) -> Result<Order, ApiError> {
    let Some(order) = order else {
        return Ok(default);
    };
    let (path, desc) = match order.trim().split_once(' ') {
        Some((f, "asc")) => (f, false),
        Some((f, "desc")) => (f, true),
        None => (order.trim(), false),
        _ => return Err(ApiError::bad_request(format!("Invalid $orderby '{order}'"))),
    };
    let field = path
        .strip_prefix("properties/")
        .and_then(|f| ORDER_FIELDS.iter().find(|o| **o == f))
        .ok_or_else(|| ApiError::bad_request(format!("Ordering by '{path}' is not supported")))?;
    Ok(Order { field, desc })
}

/// How incidents sort: the ordered stamp (none when ordering by number), the number,
/// the name.
type SortKey = (Option<DateTime<Utc>>, i64, String);

/// The incidents that match, in `order` (ties broken by number, then name).
pub fn select<'a>(
    incidents: impl Iterator<Item = &'a Value>,
    clauses: &[Clause],
    order: Order,
) -> Vec<Value> {
    let mut keyed: Vec<(SortKey, &Value)> = incidents
        .filter(|i| matches(i, clauses))
        .map(|i| {
            let number = i["properties"]["incidentNumber"].as_i64().unwrap_or(0);
            let time = (order.field != "incidentNumber")
                .then(|| time_of(i, order.field))
                .flatten();
            let name = i["name"].as_str().unwrap_or("").to_string();
            ((time, number, name), i)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if order.desc {
        keyed.reverse();
    }
    keyed.into_iter().map(|(_, i)| i.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_combine_time_windows_and_provider_ids() {
        let clauses = parse_filter("properties/lastModifiedTimeUtc ge 2025-01-01T00:00:00Z and properties/lastModifiedTimeUtc lt 2025-02-01T00:00:00Z and properties/providerIncidentId eq '42'").unwrap();
        assert_eq!(clauses.len(), 3);
        let inside = json!({"properties": {"lastModifiedTimeUtc": "2025-01-15T00:00:00.1234567Z", "providerIncidentId": "42"}});
        let late = json!({"properties": {"lastModifiedTimeUtc": "2025-02-01T00:00:00Z", "providerIncidentId": "42"}});
        assert!(matches(&inside, &clauses));
        assert!(!matches(&late, &clauses));
        assert!(parse_filter("properties/title ne 'x'").is_err());
        assert!(parse_filter("properties/providerIncidentId eq 42").is_err());
        assert!(parse_filter("lastModifiedTimeUtc ge 2025-01-01T00:00:00Z").is_err());
    }

    #[test]
    fn orders_default_to_newest_first_and_explicit_ones_are_honoured() {
        let items = [
            json!({"name": "a", "properties": {"createdTimeUtc": "2025-01-01T00:00:00Z", "lastModifiedTimeUtc": "2025-03-01T00:00:00Z", "incidentNumber": 1}}),
            json!({"name": "b", "properties": {"createdTimeUtc": "2025-02-01T00:00:00Z", "lastModifiedTimeUtc": "2025-02-01T00:00:00Z", "incidentNumber": 2}}),
        ];
        let names = |o: Order| {
            select(items.iter(), &[], o)
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(parse_orderby(None, NEWEST_FIRST).unwrap()),
            ["b", "a"]
        );
        let by_modified =
            parse_orderby(Some("properties/lastModifiedTimeUtc"), NEWEST_FIRST).unwrap();
        assert_eq!(names(by_modified), ["b", "a"]);
        let by_number =
            parse_orderby(Some("properties/incidentNumber desc"), NEWEST_FIRST).unwrap();
        assert_eq!(names(by_number), ["b", "a"]);
        assert!(parse_orderby(Some("properties/title"), NEWEST_FIRST).is_err());
    }
}
