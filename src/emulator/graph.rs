//! The Microsoft Graph security incidents API, as the emulator models it: pure functions
//! over the stored incidents, with the service's documented rules (and, where the
//! documentation is unsure, a stricter one, said so in a comment).

use super::store::{ApiError, Store};
use serde_json::{json, Map, Value};

/// Graph refuses `$top` above 50 for incidents (observed: wazuh/wazuh#28070).
pub const MAX_TOP: usize = 50;

/// Properties a PATCH may change (the current v1.0 "Update incident" page).
pub const UPDATABLE: [&str; 10] = [
    "assignedTo",
    "classification",
    "customTags",
    "description",
    "determination",
    "displayName",
    "severity",
    "resolvingComment",
    "status",
    "summary",
];

const STATUS: [&str; 3] = ["active", "inProgress", "resolved"];
const SEVERITY: [&str; 5] = ["unknown", "informational", "low", "medium", "high"];
const CLASSIFICATION: [&str; 4] = [
    "unknown",
    "falsePositive",
    "truePositive",
    "informationalExpectedActivity",
];
const DETERMINATION: [&str; 15] = [
    "unknown",
    "apt",
    "malware",
    "securityPersonnel",
    "securityTesting",
    "unwantedSoftware",
    "other",
    "multiStagedAttack",
    "compromisedAccount",
    "phishing",
    "maliciousUserActivity",
    "notMalicious",
    "notEnoughDataToValidate",
    "confirmedActivity",
    "lineOfBusinessApplication",
];

/// One `$filter` clause the emulator understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    /// `lastUpdateDateTime ge|gt|le|lt <ISO>` and the same for `createdDateTime`.
    Time {
        field: String,
        op: String,
        at: chrono::DateTime<chrono::Utc>,
    },
    /// `status eq 'active'` and the other enum / string fields.
    Eq { field: String, value: String },
}

/// Parses `$filter` (clauses joined by `and`). Unknown fields or operators are a 400,
/// as Graph answers for unsupported filters.
pub fn parse_filter(filter: &str) -> Result<Vec<Clause>, ApiError> {
    let mut clauses = Vec::new();
    for part in filter
        .split(" and ")
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let mut words = part.splitn(3, ' ');
        let (field, op, value) = match (words.next(), words.next(), words.next()) {
            (Some(f), Some(o), Some(v)) => (f, o, v.trim()),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid filter clause: '{part}'"
                )))
            }
        };
        match field {
            "lastUpdateDateTime" | "createdDateTime" => {
                if !["ge", "gt", "le", "lt", "eq"].contains(&op) {
                    return Err(ApiError::bad_request(format!(
                        "Unsupported operator '{op}' for {field}"
                    )));
                }
                let at = chrono::DateTime::parse_from_rfc3339(value.trim_matches('\''))
                    .map_err(|_| {
                        ApiError::bad_request(format!("Invalid date-time '{value}' in filter"))
                    })?
                    .with_timezone(&chrono::Utc);
                clauses.push(Clause::Time {
                    field: field.into(),
                    op: op.into(),
                    at,
                });
            }
            "status" | "severity" | "classification" | "determination" | "assignedTo" => {
                if op != "eq" {
                    return Err(ApiError::bad_request(format!(
                        "Unsupported operator '{op}' for {field}"
                    )));
                }
                let unquoted = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\''));
                let Some(v) = unquoted else {
                    return Err(ApiError::bad_request(format!(
                        "String values in $filter are quoted: {part}"
                    )));
                };
                clauses.push(Clause::Eq {
                    field: field.into(),
                    value: v.into(),
                });
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Filtering on '{other}' is not supported"
                )))
            }
        }
    }
    Ok(clauses)
}

pub fn matches(incident: &Value, clauses: &[Clause]) -> bool {
    clauses.iter().all(|clause| match clause {
        Clause::Time { field, op, at } => {
            let Some(t) = incident[field.as_str()]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            else {
                return false;
            };
            let t = t.with_timezone(&chrono::Utc);
            match op.as_str() {
                "ge" => t >= *at,
                "gt" => t > *at,
                "le" => t <= *at,
                "lt" => t < *at,
                _ => t == *at,
            }
        }
        Clause::Eq { field, value } => incident[field.as_str()]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case(value)),
    })
}

/// Checks a PATCH body; returns the properties to apply.
pub fn check_patch(body: &Value) -> Result<Map<String, Value>, ApiError> {
    let Some(map) = body.as_object() else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object",
        ));
    };
    if map.is_empty() {
        // Stricter than documented: an empty PATCH is a client bug worth surfacing.
        return Err(ApiError::bad_request(
            "The request body has no properties to update",
        ));
    }
    for (key, value) in map {
        if !UPDATABLE.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!("Property '{key}' is read-only or does not exist on microsoft.graph.security.incident")));
        }
        let allowed: Option<&[&str]> = match key.as_str() {
            "status" => Some(&STATUS),
            "severity" => Some(&SEVERITY),
            "classification" => Some(&CLASSIFICATION),
            "determination" => Some(&DETERMINATION),
            _ => None,
        };
        if let Some(allowed) = allowed {
            // Stricter than the service (whose casing rules are unconfirmed): exact
            // camelCase members only.
            if !value.as_str().is_some_and(|v| allowed.contains(&v)) {
                return Err(ApiError::bad_request(format!(
                    "Invalid value {value} for '{key}'; expected one of {allowed:?}"
                )));
            }
        }
        if key == "customTags"
            && !value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string))
        {
            return Err(ApiError::bad_request(
                "'customTags' must be an array of strings",
            ));
        }
        if key == "displayName" && value.as_str().is_none_or(|v| v.is_empty()) {
            return Err(ApiError::bad_request(
                "'displayName' must be a non-empty string",
            ));
        }
    }
    Ok(map.clone())
}

/// An incident as `GET` returns it: without `alerts` unless expanded.
pub fn render(incident: &Value, expand_alerts: bool) -> Value {
    let mut out = incident.clone();
    if !expand_alerts {
        if let Some(map) = out.as_object_mut() {
            map.remove("alerts");
        }
    }
    out
}

/// [`render`], with newer enum members hidden when `hide_newer` (observed profile,
/// no `Prefer: include-unknown-enum-members`).
pub fn render_for(incident: &Value, expand_alerts: bool, hide_newer: bool) -> Value {
    let mut out = render(incident, expand_alerts);
    if hide_newer {
        super::evolvable::hide_incident(&mut out);
    }
    out
}

/// Graph's limit of a comment, in UTF-16 code units (the service is .NET).
pub const MAX_COMMENT: usize = 30_000;

impl Store {
    /// Applies a checked PATCH: bumps `lastUpdateDateTime`, sets `lastModifiedBy`.
    pub fn graph_patch(
        &mut self,
        id: &str,
        changes: Map<String, Value>,
        caller: &str,
    ) -> Result<Value, ApiError> {
        let now = self.tick();
        let map = self.graph_incident_mut(id)?;
        for (k, v) in changes {
            map.insert(k, v);
        }
        map.insert("lastUpdateDateTime".into(), json!(now));
        map.insert("lastModifiedBy".into(), json!(format!("API-App:{caller}")));
        Ok(Value::Object(map.clone()))
    }

    fn graph_incident_mut(&mut self, id: &str) -> Result<&mut Map<String, Value>, ApiError> {
        let incident = self
            .graph
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(format!("Incident {id} was not found")))?;
        Ok(incident
            .as_object_mut()
            .expect("stored incidents are objects"))
    }

    /// Adds a comment; returns every comment, as Graph does.
    pub fn graph_comment(
        &mut self,
        id: &str,
        body: &Value,
        caller: &str,
    ) -> Result<Value, ApiError> {
        let text = body["comment"].as_str().filter(|c| !c.is_empty());
        let Some(text) = text else {
            return Err(ApiError::bad_request("'comment' is required"));
        };
        if text.encode_utf16().count() > MAX_COMMENT {
            return Err(ApiError::bad_request(format!(
                "'comment' must not exceed {MAX_COMMENT} characters"
            )));
        }
        let now = self.tick();
        let map = self.graph_incident_mut(id)?;
        let comments = map.entry("comments").or_insert_with(|| json!([]));
        if !comments.is_array() {
            *comments = json!([]);
        }
        let list = comments.as_array_mut().expect("set above");
        list.push(json!({
            "@odata.type": "microsoft.graph.security.alertComment",
            "comment": text,
            "createdByDisplayName": format!("API-App:{caller}"),
            "createdDateTime": now,
        }));
        // Whether a comment bumps lastUpdateDateTime is unconfirmed; one observation
        // says no. The emulator does not bump it: the sync must not rely on it.
        Ok(json!({ "value": list.clone() }))
    }
}
