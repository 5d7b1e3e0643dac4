//! The Sentinel incidents API (Microsoft.SecurityInsights, api-version 2024-03-01), as
//! the emulator models it: create-or-update by PUT with a caller-chosen id and etags,
//! the required fields and enums of the OpenAPI spec, and the closing rules the service
//! enforces (observed in public integrations).

use super::store::{ApiError, Store};
use serde_json::{json, Map, Value};

pub const MAX_TOP: usize = 1000;

const SEVERITY: [&str; 4] = ["High", "Medium", "Low", "Informational"];
const STATUS: [&str; 3] = ["New", "Active", "Closed"];
const CLASSIFICATION: [&str; 4] = [
    "Undetermined",
    "TruePositive",
    "BenignPositive",
    "FalsePositive",
];
const REASON: [&str; 4] = [
    "SuspiciousActivity",
    "SuspiciousButExpected",
    "IncorrectAlertLogic",
    "InaccurateData",
];
const OWNER_TYPE: [&str; 3] = ["Unknown", "User", "Group"];
/// Writable properties (IncidentProperties in the spec). Read-only ones are ignored.
/// Public so that emulated analysts build PUT bodies that keep all of them.
pub const WRITABLE: [&str; 11] = [
    "title",
    "severity",
    "status",
    "description",
    "classification",
    "classificationReason",
    "classificationComment",
    "owner",
    "labels",
    "firstActivityTimeUtc",
    "lastActivityTimeUtc",
];

fn enum_field(
    props: &Map<String, Value>,
    key: &str,
    allowed: &[&str],
    required: bool,
) -> Result<(), ApiError> {
    match props.get(key) {
        None | Some(Value::Null) if !required => Ok(()),
        None | Some(Value::Null) => Err(ApiError::bad_request(format!(
            "The {key} field is required."
        ))),
        Some(v) if v.as_str().is_some_and(|s| allowed.contains(&s)) => Ok(()),
        Some(v) => Err(ApiError::bad_request(format!(
            "Invalid value {v} for {key}; allowed: {}",
            allowed.join(", ")
        ))),
    }
}

/// 8-4-4-4-12 hex digits, as the spec's `format: uuid` requires.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Checks a PUT body against the spec and the closing rules; returns the writable
/// properties to store.
pub fn check_put(body: &Value) -> Result<Map<String, Value>, ApiError> {
    let Some(props) = body.get("properties").and_then(Value::as_object) else {
        return Err(ApiError::bad_request(
            "The request body must have a 'properties' object",
        ));
    };
    match props.get("title") {
        Some(Value::String(t)) if !t.is_empty() => {}
        _ => return Err(ApiError::bad_request("The title field is required.")),
    }
    enum_field(props, "severity", &SEVERITY, true)?;
    enum_field(props, "status", &STATUS, true)?;
    enum_field(props, "classification", &CLASSIFICATION, false)?;
    enum_field(props, "classificationReason", &REASON, false)?;
    if let Some(description) = props.get("description").and_then(Value::as_str) {
        // Documented limit; the service counts characters (UTF-16 units, unconfirmed).
        if description.encode_utf16().count() > 5000 {
            return Err(ApiError::bad_request(
                "The description must not exceed 5000 characters.",
            ));
        }
    }
    match props.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Array(labels)) => {
            if !labels
                .iter()
                .all(|l| l["labelName"].as_str().is_some_and(|n| !n.is_empty()))
            {
                return Err(ApiError::bad_request("Every label needs a labelName."));
            }
        }
        Some(_) => return Err(ApiError::bad_request("labels must be an array")),
    }
    match props.get("owner") {
        None | Some(Value::Null) => {}
        Some(Value::Object(owner)) => {
            enum_field(owner, "ownerType", &OWNER_TYPE, false)?;
            if let Some(id) = owner.get("objectId").filter(|v| !v.is_null()) {
                if !id.as_str().is_some_and(is_uuid) {
                    return Err(ApiError::bad_request(format!(
                        "owner.objectId {id} is not a UUID"
                    )));
                }
            }
        }
        Some(_) => return Err(ApiError::bad_request("owner must be an object")),
    }
    for key in ["firstActivityTimeUtc", "lastActivityTimeUtc"] {
        if let Some(t) = props.get(key).filter(|v| !v.is_null()) {
            if t.as_str()
                .is_none_or(|s| chrono::DateTime::parse_from_rfc3339(s).is_err())
            {
                return Err(ApiError::bad_request(format!(
                    "{key} {t} is not a date-time"
                )));
            }
        }
    }
    for key in ["description", "classificationComment"] {
        if props
            .get(key)
            .is_some_and(|v| !v.is_null() && !v.is_string())
        {
            return Err(ApiError::bad_request(format!("{key} must be a string")));
        }
    }
    let class = props.get("classification").and_then(Value::as_str);
    let reason = props.get("classificationReason").and_then(Value::as_str);
    if props["status"] == "Closed" && class.is_none() {
        return Err(ApiError::bad_request(
            "Closing an incident requires a classification.",
        ));
    }
    if class == Some("BenignPositive") && reason.is_none() {
        return Err(ApiError::bad_request(
            "classification 'BenignPositive' must have classificationReason",
        ));
    }
    if let (Some(class), Some(reason)) = (class, reason) {
        // The portal's pairs; stricter than the API, whose rule beyond BenignPositive is unconfirmed.
        let valid = match class {
            "TruePositive" => reason == "SuspiciousActivity",
            "BenignPositive" => reason == "SuspiciousButExpected",
            "FalsePositive" => reason == "IncorrectAlertLogic" || reason == "InaccurateData",
            _ => false,
        };
        if !valid {
            return Err(ApiError::bad_request(format!(
                "classificationReason '{reason}' is not valid for classification '{class}'"
            )));
        }
    }
    Ok(props
        .iter()
        .filter(|(k, _)| WRITABLE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

impl Store {
    /// PUT create-or-update. `if_match` is the etag the caller sent (body `etag` or the
    /// `If-Match` header); a stale one is a 409 "Conflict". Returns (created?, resource).
    pub fn sentinel_put(
        &mut self,
        base_id: &str,
        name: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<(bool, Value), ApiError> {
        let props = check_put(body)?;
        let now = self.tick();
        let etag = format!("\"{}\"", self.next_id(""));
        let existing = self.sentinel.get(name);
        if let (Some(current), Some(sent)) = (existing, if_match) {
            if current["etag"].as_str() != Some(sent) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!("Newer version of resource '{name}' exists. Data was not saved"),
                ));
            }
        }
        let created = existing.is_none();
        let number = self.sentinel.len() as i64 + 1;
        let resource = match self.sentinel.get_mut(name) {
            Some(resource) => {
                let stored = resource["properties"]
                    .as_object_mut()
                    .expect("stored resources have properties");
                // PUT replaces the writable properties; read-only ones stay.
                stored.retain(|k, _| !WRITABLE.contains(&k.as_str()));
                stored.extend(props);
                stored.insert("lastModifiedTimeUtc".into(), json!(now));
                resource["etag"] = json!(etag);
                resource.clone()
            }
            None => {
                let mut stored = props;
                stored.insert("createdTimeUtc".into(), json!(now));
                stored.insert("lastModifiedTimeUtc".into(), json!(now));
                stored.insert("incidentNumber".into(), json!(number));
                stored.insert("providerName".into(), json!("Azure Sentinel"));
                stored.entry("labels").or_insert(json!([]));
                let resource = json!({
                    "id": format!("{base_id}/{name}"),
                    "name": name,
                    "type": "Microsoft.SecurityInsights/incidents",
                    "etag": etag,
                    "properties": stored,
                });
                self.sentinel.insert(name.to_string(), resource.clone());
                resource
            }
        };
        Ok((created, resource))
    }

    /// PUT a comment (caller-chosen id); `message` is required and ≤ 30,000 characters.
    pub fn sentinel_comment(
        &mut self,
        base_id: &str,
        incident: &str,
        comment: &str,
        body: &Value,
    ) -> Result<(bool, Value), ApiError> {
        if !self.sentinel.contains_key(incident) {
            return Err(ApiError::not_found(format!(
                "Incident '{incident}' was not found"
            )));
        }
        let message = body["properties"]["message"]
            .as_str()
            .filter(|m| !m.is_empty());
        let Some(message) = message else {
            return Err(ApiError::bad_request("The message field is required."));
        };
        if message.encode_utf16().count() > 30_000 {
            return Err(ApiError::bad_request(
                "The message must not exceed 30000 characters.",
            ));
        }
        let now = self.tick();
        let etag = format!("\"{}\"", self.next_id(""));
        let comments = self
            .sentinel_comments
            .entry(incident.to_string())
            .or_default();
        let created = !comments.contains_key(comment);
        let resource = json!({
            "id": format!("{base_id}/{incident}/comments/{comment}"),
            "name": comment,
            "type": "Microsoft.SecurityInsights/Incidents/Comments",
            "etag": etag,
            "properties": { "message": message, "createdTimeUtc": now, "lastModifiedTimeUtc": now,
                            "author": { "name": "rulebridge emulator client", "userPrincipalName": null } },
        });
        comments.insert(comment.to_string(), resource.clone());
        Ok((created, resource))
    }
}
