//! The Sentinel incidents API (Microsoft.SecurityInsights, api-version 2024-03-01), as
//! the emulator models it: create-or-update by PUT with a caller-chosen id and etags,
//! the required fields and enums of the OpenAPI spec, and the closing rules the service
//! enforces (observed in public integrations). Resources are shaped as the store's
//! profile says (`arm` holds the observed shapes). Lengths are counted in UTF-16 code
//! units, as the .NET service counts them.

use super::arm;
use super::store::{ApiError, Store};
use serde_json::{json, Map, Value};

pub const MAX_TOP: usize = 1000;
/// Page size of a list without `$top` in the observed profile (msticpy#569).
pub const DEFAULT_TOP: usize = 50;
/// Documented limit of `description`, in UTF-16 code units.
pub const MAX_DESCRIPTION: usize = 5000;
/// `title` has no documented limit (the spec has no maxLength, the limits page none).
/// The emulator picks 256 UTF-16 units, stricter than the 1,000 sometimes quoted, so a
/// client that clips to this passes whatever the real limit is.
pub const MAX_TITLE: usize = 256;
/// Documented limit of a comment's `message`, in UTF-16 code units.
pub const MAX_COMMENT: usize = 30_000;
/// Documented limit of comments per incident (Sentinel service limits).
pub const MAX_COMMENTS: usize = 100;

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
        Some(Value::String(t)) if t.encode_utf16().count() > MAX_TITLE => {
            return Err(ApiError::bad_request(format!(
                "The title must not exceed {MAX_TITLE} characters."
            )))
        }
        Some(Value::String(t)) if !t.is_empty() => {}
        _ => return Err(ApiError::bad_request("The title field is required.")),
    }
    enum_field(props, "severity", &SEVERITY, true)?;
    enum_field(props, "status", &STATUS, true)?;
    enum_field(props, "classification", &CLASSIFICATION, false)?;
    enum_field(props, "classificationReason", &REASON, false)?;
    if let Some(description) = props.get("description").and_then(Value::as_str) {
        // Documented limit; the service counts .NET characters: UTF-16 units (very
        // likely, unconfirmed), so an emoji counts twice.
        if description.encode_utf16().count() > MAX_DESCRIPTION {
            return Err(ApiError::bad_request(format!(
                "The description must not exceed {MAX_DESCRIPTION} characters."
            )));
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
        let mut props = check_put(body)?;
        let observed = self.profile.is_observed();
        if observed {
            arm::shape_writable(&mut props);
        }
        let name = self.sentinel_key(name);
        if let (Some(current), Some(sent)) = (self.sentinel.get(&name), if_match) {
            if current["etag"].as_str() != Some(sent) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!("Newer version of resource '{name}' exists. Data was not saved"),
                ));
            }
        }
        let now = self.tick();
        let etag = self.new_etag();
        let created = !self.sentinel.contains_key(&name);
        if created {
            self.sentinel_number += 1;
        }
        let number = self.sentinel_number;
        let resource = match self.sentinel.get_mut(&name) {
            Some(resource) => {
                let stored = resource["properties"]
                    .as_object_mut()
                    .expect("stored resources have properties");
                // PUT replaces the writable properties; read-only ones stay. Whether an
                // omitted one is cleared or kept is undocumented: cleared is stricter.
                stored.retain(|k, _| !WRITABLE.contains(&k.as_str()));
                stored.extend(props);
                stored.insert("lastModifiedTimeUtc".into(), json!(now));
                resource["etag"] = json!(etag);
                resource.clone()
            }
            None => {
                let id = arm::incident_id(self.profile, base_id, &name);
                let mut stored = props;
                stored.insert("createdTimeUtc".into(), json!(now));
                stored.insert("lastModifiedTimeUtc".into(), json!(now));
                stored.insert("incidentNumber".into(), json!(number));
                stored.entry("labels").or_insert(json!([]));
                if observed {
                    // As recorded for API-made incidents: no providerName at all.
                    stored.insert("additionalData".into(), arm::additional_data());
                    stored.insert("relatedAnalyticRuleIds".into(), json!([]));
                    stored.insert("incidentUrl".into(), json!(arm::incident_url(&id)));
                } else {
                    stored.insert("providerName".into(), json!("Azure Sentinel"));
                }
                let resource = json!({
                    "id": id,
                    "name": name,
                    "type": arm::incident_type(self.profile),
                    "etag": etag,
                    "properties": stored,
                });
                self.sentinel.insert(name.clone(), resource.clone());
                resource
            }
        };
        Ok((created, resource))
    }

    /// DELETE: whether the incident existed. Its comments go with it.
    pub fn sentinel_delete(&mut self, name: &str) -> bool {
        let name = self.sentinel_key(name);
        self.sentinel_comments.remove(&name);
        self.sentinel.remove(&name).is_some()
    }

    /// PUT a comment (caller-chosen id); `message` is required and ≤ 30,000 UTF-16
    /// units; at most 100 comments per incident.
    pub fn sentinel_comment(
        &mut self,
        base_id: &str,
        incident: &str,
        comment: &str,
        body: &Value,
    ) -> Result<(bool, Value), ApiError> {
        let incident = self.sentinel_key(incident);
        let comment = self.sentinel_key(comment);
        if !self.sentinel.contains_key(&incident) {
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
        if message.encode_utf16().count() > MAX_COMMENT {
            return Err(ApiError::bad_request(format!(
                "The message must not exceed {MAX_COMMENT} characters."
            )));
        }
        let existing = self.sentinel_comments.get(&incident);
        let created = !existing.is_some_and(|c| c.contains_key(&comment));
        if created && existing.is_some_and(|c| c.len() >= MAX_COMMENTS) {
            return Err(ApiError::bad_request(format!(
                "An incident can have at most {MAX_COMMENTS} comments."
            )));
        }
        let first_created = existing
            .and_then(|c| c.get(&comment))
            .and_then(|c| c["properties"]["createdTimeUtc"].as_str())
            .map(str::to_string);
        let now = self.tick();
        let resource = if self.profile.is_observed() {
            // As recorded: no etag, no lastModifiedTimeUtc, an app author without email
            // or UPN. An edit keeps the comment's creation time.
            let created_at = first_created.unwrap_or(now);
            json!({
                "id": arm::comment_id(self.profile, base_id, &incident, &comment),
                "name": comment,
                "type": "Microsoft.SecurityInsights/Incidents/Comments",
                "properties": { "message": message, "createdTimeUtc": created_at,
                    "author": { "objectId": self.client_object_id(), "email": null,
                                "name": "Comment created from external application - rulebridge",
                                "userPrincipalName": null } },
            })
        } else {
            let etag = self.new_etag();
            json!({
                "id": arm::comment_id(self.profile, base_id, &incident, &comment),
                "name": comment,
                "type": "Microsoft.SecurityInsights/Incidents/Comments",
                "etag": etag,
                "properties": { "message": message, "createdTimeUtc": now, "lastModifiedTimeUtc": now,
                                "author": { "name": "rulebridge emulator client", "userPrincipalName": null } },
            })
        };
        let comments = self.sentinel_comments.entry(incident.clone()).or_default();
        comments.insert(comment, resource.clone());
        let count = comments.len();
        if let Some(data) = self
            .sentinel
            .get_mut(&incident)
            .and_then(|i| i["properties"].get_mut("additionalData"))
        {
            // The count is kept current; the incident's etag and stamp are not moved
            // (unknown: not moving them is the harder case for a poll).
            data["commentsCount"] = json!(count);
        }
        Ok((created, resource))
    }

    /// The app's object id as comment authors show it: stable per client id.
    fn client_object_id(&self) -> String {
        let hash = self
            .client_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        super::rng::SplitMix64::new(hash).uuid()
    }
}
