//! The one thing a hook body is read for: the name of a Sentinel incident. Nothing else
//! in the body is used (the reconcile re-reads both sides), so a forged body can at
//! most name an incident.
//!
//! Accepted shapes: what a Sentinel automation rule hands a Logic App's "Microsoft
//! Sentinel incident" trigger (`{"objectSchemaType": "Incident", "object": {"id":
//! ".../providers/Microsoft.SecurityInsights/Incidents/<name>", "name": "<name>", …}, …}`),
//! that `object` alone, `{"incidentName": "<name>"}` and `{"id": "<ARM id>"}`. Every name
//! the body gives must be the same one. Pure.

use serde_json::Value;

/// ARM incident names are GUIDs (36 characters); this leaves room for others.
pub const MAX_NAME_LEN: usize = 128;

/// Why a body names no incident (the reason answered to the sender; no body content).
pub type Malformed = &'static str;

/// The incident a hook body names.
pub fn incident_name(body: &[u8]) -> Result<String, Malformed> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    let Value::Object(top) = &value else {
        return Err("the body is not a JSON object");
    };
    if let Some(kind) = top.get("objectSchemaType") {
        if !kind
            .as_str()
            .is_some_and(|k| k.eq_ignore_ascii_case("incident"))
        {
            return Err("objectSchemaType is not Incident");
        }
    }
    let incident = match top.get("object") {
        Some(Value::Object(object)) => object,
        Some(_) => return Err("object is not a JSON object"),
        None => top,
    };
    let mut names = Vec::new();
    match incident.get("id") {
        None => {}
        Some(Value::String(id)) => names.push(name_in_arm_id(id)?),
        Some(_) => return Err("id is not a string"),
    }
    for key in ["name", "incidentName"] {
        match incident.get(key).or_else(|| top.get(key)) {
            None => {}
            Some(Value::String(name)) => names.push(name.as_str()),
            Some(_) => return Err("an incident name is not a string"),
        }
    }
    let Some(first) = names.first() else {
        return Err("no incident named (incidentName, id or object.id)");
    };
    if names.iter().any(|n| !n.eq_ignore_ascii_case(first)) {
        return Err("the body names more than one incident");
    }
    check_name(first)?;
    Ok(first.to_string())
}

/// The last segment of `…/providers/Microsoft.SecurityInsights/Incidents/<name>`.
fn name_in_arm_id(id: &str) -> Result<&str, Malformed> {
    const MARKER: &str = "/providers/microsoft.securityinsights/incidents/";
    if id.len() > 1024 {
        return Err("id is too long");
    }
    let at = id
        .to_ascii_lowercase()
        .rfind(MARKER)
        .ok_or("id is not a Sentinel incident's ARM id")?;
    Ok(&id[at + MARKER.len()..])
}

/// Names go into a request path: ASCII letters, digits, `-` and `_` only (no `/`,
/// `.`, `%` or query characters), 1 to [`MAX_NAME_LEN`] of them.
fn check_name(name: &str) -> Result<(), Malformed> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("the incident name is empty or too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("the incident name has characters an ARM incident name cannot have");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NAME: &str = "63883bf7-5be1-42f4-809a-0417943b837b";
    const ID: &str = "/subscriptions/5c1d/resourceGroups/rg-secops/providers/Microsoft.OperationalInsights/workspaces/law-secops/providers/Microsoft.SecurityInsights/Incidents/63883bf7-5be1-42f4-809a-0417943b837b";

    fn name(body: Value) -> Result<String, Malformed> {
        incident_name(body.to_string().as_bytes())
    }

    #[test]
    fn the_logic_app_trigger_body_and_the_minimal_ones_name_the_incident() {
        let trigger = json!({
            "eventUniqueId": "0b5a4a4c-1a0e-4f5c-9d6e-2f1d9f0c8a11",
            "objectSchemaType": "Incident",
            "objectEventType": "Update",
            "workspaceInfo": {"SubscriptionId": "5c1d", "ResourceGroupName": "rg-secops", "WorkspaceName": "law-secops"},
            "workspaceId": "8d300aff-d535-4430-9eef-3046965c48cf",
            "object": {
                "id": ID,
                "name": NAME,
                "etag": "\"0300bf09-0000-0000-0000-5c37296e0000\"",
                "type": "Microsoft.SecurityInsights/Incidents",
                "properties": {"title": "Injected title", "severity": "High", "status": "Closed", "incidentNumber": 9},
            },
        });
        assert_eq!(name(trigger.clone()).as_deref(), Ok(NAME));
        assert_eq!(name(trigger["object"].clone()).as_deref(), Ok(NAME));
        assert_eq!(name(json!({"incidentName": NAME})).as_deref(), Ok(NAME));
        assert_eq!(name(json!({"id": ID})).as_deref(), Ok(NAME));
        assert_eq!(name(json!({"id": ID.to_lowercase()})).as_deref(), Ok(NAME));
        assert_eq!(
            name(json!({"id": ID, "incidentName": NAME.to_uppercase()})).as_deref(),
            Ok(NAME)
        );
    }

    #[test]
    fn anything_else_is_malformed() {
        let bad = [
            json!([NAME]),
            json!("x"),
            json!({}),
            json!({"incidentName": 5}),
            json!({"incidentName": ""}),
            json!({"incidentName": "a".repeat(129)}),
            json!({"incidentName": "../../x"}),
            json!({"incidentName": "a?api-version=1"}),
            json!({"incidentName": "a%2Fb"}),
            json!({"incidentName": "a b"}),
            json!({"incidentName": "ä"}),
            json!({"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/vm"}),
            json!({"id": format!("{ID}/comments/c1")}),
            json!({"id": ID, "incidentName": "another"}),
            json!({"objectSchemaType": "Alert", "object": {"name": NAME}}),
            json!({"object": NAME}),
        ];
        for body in bad {
            assert!(name(body.clone()).is_err(), "{body}");
        }
        assert!(incident_name(b"not json").is_err());
        assert!(incident_name(b"").is_err());
        // Deep nesting stops at serde_json's recursion limit, not the stack.
        let deep = "[".repeat(100_000);
        assert!(incident_name(deep.as_bytes()).is_err());
    }
}
