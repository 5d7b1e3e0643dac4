//! The shapes of Sentinel resources as the real service returns them in recorded traffic
//! (`tests/fixtures/recorded/`, Azure SDK for .NET SessionRecords), used by the observed
//! profile: names lowercased (ARM names are case-insensitive), ids under `/Incidents/`
//! and `/Comments/`, an unassigned owner as an object of nulls, `labels` and
//! `additionalData` always present, optional properties left out rather than null, and
//! etags whose last group holds the Unix second of the write.

use super::profile::Profile;
use serde_json::{json, Map, Value};

/// The key an incident or comment name is stored and found under: ARM names are
/// case-insensitive and come back lowercased (`testIncidents-5034` → `testincidents-5034`).
pub fn name_key(profile: Profile, name: &str) -> String {
    match profile {
        Profile::Observed => name.to_ascii_lowercase(),
        Profile::Strict => name.to_string(),
    }
}

/// The incidents collection's resource id. Observed: ends in `/Incidents` whatever the
/// caller's casing (and whether `base` already is an id prefix, as the analysts pass).
fn collection(profile: Profile, base: &str) -> String {
    match profile {
        Profile::Strict => base.to_string(),
        Profile::Observed => {
            let cut = base.len().saturating_sub("/incidents".len());
            match base.get(cut..) {
                Some(tail) if tail.eq_ignore_ascii_case("/incidents") => {
                    format!("{}/Incidents", &base[..cut])
                }
                _ => format!("{base}/Incidents"),
            }
        }
    }
}

pub fn incident_id(profile: Profile, base: &str, name: &str) -> String {
    format!("{}/{name}", collection(profile, base))
}

pub fn incident_type(profile: Profile) -> &'static str {
    match profile {
        Profile::Observed => "Microsoft.SecurityInsights/Incidents",
        Profile::Strict => "Microsoft.SecurityInsights/incidents",
    }
}

pub fn comment_id(profile: Profile, base: &str, incident: &str, comment: &str) -> String {
    match profile {
        Profile::Observed => format!(
            "{}/{incident}/Comments/{comment}",
            collection(profile, base)
        ),
        Profile::Strict => format!("{base}/{incident}/comments/{comment}"),
    }
}

/// The Azure portal link the service puts in `incidentUrl`.
pub fn incident_url(id: &str) -> String {
    format!("https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident{id}")
}

/// An owner as the service returns it: every identity key present (null when unknown)
/// and `ownerType` (`Unknown` when nobody is assigned).
pub fn owner(given: Option<&Value>) -> Value {
    let mut out =
        json!({"objectId": null, "email": null, "assignedTo": null, "userPrincipalName": null});
    let map = out.as_object_mut().expect("built as an object");
    if let Some(given) = given.and_then(Value::as_object) {
        for (k, v) in given {
            map.insert(k.clone(), v.clone());
        }
    }
    let assigned = ["objectId", "email", "userPrincipalName", "assignedTo"]
        .iter()
        .any(|k| !map[*k].is_null());
    if map.get("ownerType").is_none_or(Value::is_null) {
        map.insert(
            "ownerType".into(),
            json!(if assigned { "User" } else { "Unknown" }),
        );
    }
    out
}

/// Labels as returned: every label has its `labelType` (`User` for those set by a caller).
pub fn labels(given: Option<&Value>) -> Value {
    let labels = given.and_then(Value::as_array).cloned().unwrap_or_default();
    Value::Array(
        labels
            .into_iter()
            .map(|mut label| {
                if label.get("labelType").is_none_or(Value::is_null) {
                    label["labelType"] = json!("User");
                }
                label
            })
            .collect(),
    )
}

/// `additionalData` of an incident without alerts or bookmarks.
pub fn additional_data() -> Value {
    json!({"alertsCount": 0, "bookmarksCount": 0, "commentsCount": 0,
           "alertProductNames": [], "tactics": []})
}

/// The writable properties after a PUT, shaped as the service stores them: nulls
/// dropped (optional properties are left out), `owner` and `labels` always present.
pub fn shape_writable(props: &mut Map<String, Value>) {
    props.retain(|k, v| !v.is_null() || k == "owner");
    let shaped_owner = owner(props.get("owner"));
    props.insert("owner".into(), shaped_owner);
    let shaped_labels = labels(props.get("labels"));
    props.insert("labels".into(), shaped_labels);
}

/// An etag as recorded: `"<8 hex>-0000-0100-0000-<Unix second as 8 hex>0000"`, quotes
/// included.
pub fn etag(counter: u64, unix_second: i64) -> String {
    format!(
        "\"{:08x}-0000-0100-0000-{:08x}0000\"",
        counter as u32, unix_second as u32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_use_capitalised_collections_whatever_the_base() {
        let base = "/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w/providers/Microsoft.SecurityInsights/incidents";
        let id = incident_id(Profile::Observed, base, "abc");
        assert!(
            id.ends_with("Microsoft.SecurityInsights/Incidents/abc"),
            "{id}"
        );
        let again = incident_id(Profile::Observed, id.strip_suffix("/abc").unwrap(), "abc");
        assert_eq!(again, id, "an id prefix is kept as it is");
        assert!(comment_id(Profile::Observed, base, "abc", "c1")
            .ends_with("/Incidents/abc/Comments/c1"));
        assert_eq!(
            incident_id(Profile::Strict, base, "abc"),
            format!("{base}/abc")
        );
        assert_eq!(
            name_key(Profile::Observed, "testIncidents-5034"),
            "testincidents-5034"
        );
    }

    #[test]
    fn owners_and_labels_are_filled_in() {
        assert_eq!(
            owner(None),
            json!({"objectId": null, "email": null, "assignedTo": null, "userPrincipalName": null, "ownerType": "Unknown"})
        );
        let o = owner(Some(
            &json!({"objectId": "2a3e0b45-5e2c-4b3e-9e4f-1c2d3e4f5a6b"}),
        ));
        assert_eq!(o["ownerType"], "User");
        assert!(o["email"].is_null());
        assert_eq!(
            labels(Some(&json!([{"labelName": "x"}]))),
            json!([{"labelName": "x", "labelType": "User"}])
        );
        assert_eq!(
            etag(0x1000_44d9, 0x639c_25fd),
            "\"100044d9-0000-0100-0000-639c25fd0000\""
        );
    }
}
