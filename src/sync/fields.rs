//! The fixed vocabulary of the two APIs that the sync relies on: how a Sentinel twin is
//! named, which Sentinel properties a PUT may carry, which Defender properties a synced
//! field corresponds to, and how comments are recognised. These are facts about the
//! APIs, not decisions, so they are code rather than rules. Pure; no I/O.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Namespace of rulebridge's UUID v5 names (fixed forever: changing it would make every
/// existing twin look new and duplicate it).
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f1c_0e1e_9b0d_4c6e_8a57_52c1_b1d6_e0a1);

/// The Sentinel incident name of a Defender incident's twin: the same inputs always give
/// the same id, so a repeated or retried create is one incident.
pub fn sentinel_id(tenant: &str, defender_id: &str) -> String {
    uuid::Uuid::new_v5(
        &NAMESPACE,
        format!("incident/{tenant}/{defender_id}").as_bytes(),
    )
    .to_string()
}

/// The id of the Sentinel comment that mirrors a Defender comment (idempotent PUT).
pub fn sentinel_comment_id(sentinel_id: &str, defender_key: &str) -> String {
    uuid::Uuid::new_v5(
        &NAMESPACE,
        format!("comment/{sentinel_id}/{defender_key}").as_bytes(),
    )
    .to_string()
}

/// Properties a Sentinel incident PUT may carry; everything else is read-only and is
/// left out of the body (the service ignores it, but sending it would hide mistakes).
pub const SENTINEL_WRITABLE: [&str; 11] = [
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

/// Fields that are one value to both services: Sentinel validates a classification
/// with its reason (`BenignPositive` needs `SuspiciousButExpected`, `FalsePositive` one
/// of two reasons; a PUT with any other pair is a 400), and both are rendered from, and
/// written to, Defender's (classification, determination) pair. A pair written half from
/// each side can be a pair neither analyst chose, or one the service refuses, so a pair
/// edited on both sides is a conflict of the whole pair ([`super::plan::detect`]) and
/// its members must flow the same way (`super::step::decide`).
pub const COUPLED: [&[&str]; 1] = [&["classification", "classificationReason"]];

/// The Defender (Graph) properties a synced field — named in the Sentinel vocabulary —
/// is written to when it flows to Defender. A field with none cannot flow that way.
pub fn defender_keys(field: &str) -> &'static [&'static str] {
    match field {
        "status" => &["status"],
        "severity" => &["severity"],
        "title" => &["displayName"],
        "owner" => &["assignedTo"],
        "classification" => &["classification", "determination"],
        "classificationReason" => &["determination"],
        "classificationComment" => &["resolvingComment"],
        "labels" => &["customTags"],
        _ => &[],
    }
}

/// The Sentinel properties of a resource (empty when absent).
pub fn properties(resource: &Value) -> Map<String, Value> {
    resource["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// A PUT body: the writable properties Sentinel has now, with `changes` applied. A PUT
/// replaces the whole resource, so unchanged fields are sent as they are.
pub fn sentinel_put_body(current: &Map<String, Value>, changes: &Map<String, Value>) -> Value {
    let mut body: Map<String, Value> = current
        .iter()
        .filter(|(k, v)| SENTINEL_WRITABLE.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in changes {
        body.insert(k.clone(), v.clone());
    }
    Value::Object(body)
}

/// A Defender comment's identity. Graph comments have no id, so author, time and text
/// make one (legacy payloads name the fields `createdBy` / `createdTime`).
pub fn defender_comment_key(comment: &Value) -> String {
    let text = comment["comment"].as_str().unwrap_or("");
    let by = comment["createdByDisplayName"]
        .as_str()
        .or_else(|| comment["createdBy"].as_str())
        .unwrap_or("");
    let at = comment["createdDateTime"]
        .as_str()
        .or_else(|| comment["createdTime"].as_str())
        .unwrap_or("");
    let mut hash = Sha256::new();
    for part in [by, at, text] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sentinel's documented comment limit (characters).
pub const MAX_COMMENT: usize = 30_000;

/// The text of a Defender comment as posted to Sentinel: who wrote it and when, since
/// the Sentinel comment's own author is rulebridge's app.
pub fn comment_for_sentinel(comment: &Value) -> String {
    let text = comment["comment"].as_str().unwrap_or("");
    let by = comment["createdByDisplayName"]
        .as_str()
        .or_else(|| comment["createdBy"].as_str())
        .unwrap_or("unknown");
    let at = comment["createdDateTime"]
        .as_str()
        .or_else(|| comment["createdTime"].as_str())
        .unwrap_or("");
    clip_chars(
        &format!("{text}\n\n— {by} in Microsoft Defender XDR, {at}"),
        MAX_COMMENT,
    )
}

/// The text of a Sentinel comment as posted to Defender.
pub fn comment_for_defender(comment: &Value) -> String {
    let props = &comment["properties"];
    let text = props["message"].as_str().unwrap_or("");
    let author = &props["author"];
    let by = author["userPrincipalName"]
        .as_str()
        .or_else(|| author["email"].as_str())
        .or_else(|| author["name"].as_str())
        .unwrap_or("unknown");
    let at = props["createdTimeUtc"].as_str().unwrap_or("");
    clip_chars(
        &format!("{text}\n\n— {by} in Microsoft Sentinel, {at}"),
        MAX_COMMENT,
    )
}

fn clip_chars(text: &str, max: usize) -> String {
    // Sentinel counts UTF-16 units; clipping by chars with the same number is safe only
    // for BMP text, so count units to stay under the limit for any text.
    let mut units = 0;
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        units += c.len_utf16();
        if units > max {
            end = i;
            break;
        }
    }
    text[..end].to_string()
}

/// Whether two values of a synced field mean the same, for the consistency check: the
/// two APIs describe some fields differently (an owner has an object id only in
/// Sentinel; labels carry a type), so those compare by what both sides can express.
pub fn agree(field: &str, defender_view: &Value, sentinel: &Value) -> bool {
    match field {
        "owner" => owner_key(defender_view) == owner_key(sentinel),
        "labels" => label_names(defender_view) == label_names(sentinel),
        _ => defender_view == sentinel,
    }
}

fn owner_key(owner: &Value) -> Option<String> {
    ["userPrincipalName", "email", "assignedTo"]
        .iter()
        .find_map(|k| owner[*k].as_str().filter(|s| !s.is_empty()))
        .map(str::to_lowercase)
}

fn label_names(labels: &Value) -> Vec<String> {
    let mut names: Vec<String> = labels
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["labelName"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn twin_ids_are_stable_and_distinct_per_tenant_and_incident() {
        let a = sentinel_id("t1", "42");
        assert_eq!(a, sentinel_id("t1", "42"));
        assert_ne!(a, sentinel_id("t2", "42"));
        assert_ne!(a, sentinel_id("t1", "43"));
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 5);
    }

    #[test]
    fn comment_keys_depend_on_author_time_and_text_and_read_legacy_names() {
        let c = json!({"comment": "hi", "createdByDisplayName": "a", "createdDateTime": "t"});
        let legacy = json!({"comment": "hi", "createdBy": "a", "createdTime": "t"});
        assert_eq!(defender_comment_key(&c), defender_comment_key(&legacy));
        let other = json!({"comment": "hi", "createdByDisplayName": "b", "createdDateTime": "t"});
        assert_ne!(defender_comment_key(&c), defender_comment_key(&other));
    }

    #[test]
    fn put_body_keeps_writable_fields_and_applies_changes() {
        let current = properties(&json!({"properties": {
            "title": "t", "status": "New", "incidentNumber": 7, "owner": null,
            "additionalData": {"alertsCount": 1}}}));
        let mut changes = Map::new();
        changes.insert("status".into(), json!("Active"));
        let body = sentinel_put_body(&current, &changes);
        assert_eq!(body, json!({"title": "t", "status": "Active"}));
    }

    #[test]
    fn comments_are_clipped_to_the_sentinel_limit_in_utf16_units() {
        let long = "😀".repeat(20_000); // 40,000 UTF-16 units
        let text = comment_for_sentinel(&json!({"comment": long}));
        assert!(text.encode_utf16().count() <= MAX_COMMENT);
        assert!(text.starts_with("😀"));
    }

    #[test]
    fn owners_and_labels_agree_by_what_both_sides_express() {
        let d = json!({"userPrincipalName": "A@x.com", "assignedTo": "A@x.com"});
        let s = json!({"objectId": "1", "userPrincipalName": "a@x.com", "assignedTo": "Alice"});
        assert!(agree("owner", &d, &s));
        assert!(!agree("owner", &d, &json!(null)));
        let dl = json!([{"labelName": "b"}, {"labelName": "a"}]);
        let sl = json!([{"labelName": "a", "labelType": "User"}, {"labelName": "b", "labelType": "User"}]);
        assert!(agree("labels", &dl, &sl));
        assert!(!agree("status", &json!("New"), &json!("Active")));
    }
}
