//! The bench's packs written by hand in Rust: the same filter, the same fields and the
//! same text, byte for byte. `main` checks that each produces exactly the body its pack
//! produces for every incident before timing anything, so the ratios compare equal work.

use chrono::{DateTime, Utc};
use rulebridge::rules::{natives, CompiledPack};
use rulebridge::schema;
use serde_json::{json, Value};

/// The default pack (skip-noise, microsoft-standard, vip-accounts) written by hand in
/// Rust: the same filter, the same fields and the same text, byte for byte. `main`
/// checks that both produce identical bodies for every incident before timing anything,
/// so the ratio compares equal work.
pub fn default_pack(pack: &CompiledPack, i: &Value) -> Option<Value> {
    // Same guarantees as the rule pipeline: input and output are schema-checked.
    assert!(pack.schemas.check(schema::DEFENDER_INCIDENT, i).is_empty());
    let text = |v: &Value| v.as_str().map(str::to_string);
    let id = i["id"].as_str().unwrap_or("");
    let status_key = key(&i["status"]);
    let alerts = i["alerts"].as_array();

    // filter: skip-noise
    if skipped_as_noise(i) {
        return None;
    }

    // map: microsoft-standard
    let status = status_of(&status_key);
    let mut severity = severity_of(i);
    let mut p = serde_json::Map::new();
    let title = text(&i["displayName"])
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| format!("Microsoft Defender XDR incident {id}"));
    p.insert("title".into(), json!(title));
    p.insert("status".into(), json!(status));
    let owner = match i["assignedTo"].as_str().unwrap_or("") {
        "" => Value::Null,
        a if a.contains('@') => {
            json!({"userPrincipalName": a, "email": a, "assignedTo": a, "ownerType": "User"})
        }
        a => json!({"assignedTo": a, "ownerType": "User"}),
    };
    p.insert("owner".into(), owner);
    if let Some((class, mut reason)) = class_of(i) {
        if class == "FalsePositive" {
            if let "notenoughdatatovalidate" | "insufficientdata" =
                key(&i["determination"]).as_str()
            {
                reason = "InaccurateData";
            }
        }
        p.insert("classification".into(), json!(class));
        p.insert("classificationReason".into(), json!(reason));
        let mut comment = format!(
            "Defender XDR: {}",
            i["classification"].as_str().unwrap_or("")
        );
        if let Some(det) = i["determination"].as_str() {
            comment.push_str(&format!(" / {det}"));
        }
        p.insert("classificationComment".into(), json!(comment));
    } else if status == "Closed" {
        p.insert("classification".into(), json!("Undetermined"));
    }
    if let Some(note) = i["resolvingComment"].as_str().filter(|n| !n.is_empty()) {
        p.insert("classificationComment".into(), json!(note));
    }
    let mut labels = tag_labels(i);
    add_label(&mut labels, &format!("defender-xdr:{id}"));
    let redirect_id = i["redirectIncidentId"].as_str();
    if status_key == "redirected" {
        add_label(&mut labels, "redirected");
        if let Some(to) = redirect_id {
            add_label(&mut labels, &format!("redirected-to:{to}"));
        }
    }
    let times = |field: &str| -> Vec<DateTime<Utc>> {
        distinct(i, &["alerts", field])
            .into_iter()
            .filter_map(natives::parse_time)
            .collect()
    };
    let first = times("firstActivityDateTime")
        .into_iter()
        .min()
        .or_else(|| i["createdDateTime"].as_str().and_then(natives::parse_time))
        .map(natives::format_time);
    let last = times("lastActivityDateTime")
        .into_iter()
        .max()
        .map(natives::format_time)
        .or(first.clone());
    p.insert("firstActivityTimeUtc".into(), json!(first));
    p.insert("lastActivityTimeUtc".into(), json!(last));

    let mut description = format!("Microsoft Defender XDR incident {id}");
    if let Some(url) = i["incidentWebUrl"].as_str() {
        description.push_str(&format!(": {url}"));
    }
    if status_key == "redirected" {
        if let Some(to) = redirect_id {
            description.push_str(&format!("\nMerged into Defender XDR incident {to}."));
        }
    }
    let own = text(&i["description"])
        .or_else(|| text(&i["summary"]))
        .unwrap_or_default();
    if !own.is_empty() {
        description.push_str("\n\n");
        description.push_str(&natives::clip(&own, 2500));
    }
    let alert_list = &i["alerts"];
    if alerts.is_some_and(|a| !a.is_empty()) {
        let titles = distinct(alert_list, &["title"]);
        description.push_str(&format!(
            "\n\nAlerts ({}): {}",
            alerts.map_or(0, Vec::len),
            listed(&titles)
        ));
        let summary: [(&str, &[&[&str]]); 9] = [
            ("Sources", &[&["serviceSource"]]),
            ("Categories", &[&["category"]]),
            ("MITRE techniques", &[&["mitreTechniques"]]),
            (
                "Accounts",
                &[
                    &["evidence", "userAccount", "userPrincipalName"],
                    &["evidence", "userAccount", "accountName"],
                ],
            ),
            ("Devices", &[&["evidence", "deviceDnsName"]]),
            ("IP addresses", &[&["evidence", "ipAddress"]]),
            ("URLs", &[&["evidence", "url"]]),
            ("Files", &[&["evidence", "fileDetails", "fileName"]]),
            ("Mailboxes", &[&["evidence", "primaryAddress"]]),
        ];
        for (label, paths) in summary {
            let found = paths
                .iter()
                .map(|path| distinct(alert_list, path))
                .find(|found| !found.is_empty());
            if let Some(found) = found {
                description.push_str(&format!("\n{label}: {}", listed(&found)));
            }
        }
    }
    p.insert(
        "description".into(),
        json!(natives::clip(&description, 5000)),
    );

    // enrich: vip-accounts
    let vip_table = pack
        .tables
        .get("vip_accounts")
        .expect("the default pack's table");
    let mut accounts = distinct(
        i,
        &["alerts", "evidence", "userAccount", "userPrincipalName"],
    );
    accounts.extend(distinct(i, &["alerts", "evidence", "primaryAddress"]));
    if accounts.iter().any(|upn| vip_table.get(upn).is_some()) {
        add_label(&mut labels, "VIP");
        severity = "High"; // raise_severity_to: High is the top, so this never lowers
    }
    p.insert("severity".into(), json!(severity));
    Some(checked_body(pack, p, labels))
}

/// Distinct strings at `path` below `node`, arrays flattened at every level.
fn distinct<'v>(node: &'v Value, path: &[&str]) -> Vec<&'v str> {
    fn collect<'v>(node: &'v Value, path: &[&str], out: &mut Vec<&'v str>) {
        match (node, path.split_first()) {
            (Value::Array(items), _) => items.iter().for_each(|item| collect(item, path, out)),
            (Value::Object(map), Some((first, rest))) => {
                if let Some(child) = map.get(*first) {
                    collect(child, rest, out);
                }
            }
            (Value::String(s), None) if !out.contains(&s.as_str()) => out.push(s),
            _ => {}
        }
    }
    let mut out = Vec::new();
    collect(node, path, &mut out);
    out
}

/// At most ten items joined with ", ", then "(+k more)" (the pack's max_listed).
fn listed(items: &[&str]) -> String {
    let mut out = items
        .iter()
        .take(10)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 10 {
        out.push_str(&format!(" (+{} more)", items.len() - 10));
    }
    out
}

/// benches/packs/comparable (skip-noise, core-fields) by hand.
pub fn core_fields(pack: &CompiledPack, i: &Value) -> Option<Value> {
    assert!(pack.schemas.check(schema::DEFENDER_INCIDENT, i).is_empty());
    let id = i["id"].as_str().unwrap_or("");
    if skipped_as_noise(i) {
        return None;
    }
    let status = status_of(&key(&i["status"]));
    let mut p = serde_json::Map::new();
    let title = i["displayName"].as_str().map_or_else(
        || format!("Microsoft Defender XDR incident {id}"),
        str::to_string,
    );
    p.insert("title".into(), json!(title));
    p.insert("severity".into(), json!(severity_of(i)));
    p.insert("status".into(), json!(status));
    let owner = match i["assignedTo"].as_str().unwrap_or("") {
        "" => Value::Null,
        a => json!({"assignedTo": a, "ownerType": "User"}),
    };
    p.insert("owner".into(), owner);
    if let Some((class, reason)) = class_of(i) {
        p.insert("classification".into(), json!(class));
        p.insert("classificationReason".into(), json!(reason));
    } else if status == "Closed" {
        p.insert("classification".into(), json!("Undetermined"));
    }
    let mut labels = tag_labels(i);
    add_label(&mut labels, &format!("defender-xdr:{id}"));
    let created = i["createdDateTime"]
        .as_str()
        .and_then(natives::parse_time)
        .map(natives::format_time);
    p.insert("firstActivityTimeUtc".into(), json!(created));
    Some(checked_body(pack, p, labels))
}

/// The pack's `enum_key`: lower-case, no separators.
fn key(v: &Value) -> String {
    v.as_str().map(natives::enum_key).unwrap_or_default()
}

/// skip-noise, as the bench runs it (`linked`, so redirected incidents stay).
fn skipped_as_noise(i: &Value) -> bool {
    key(&i["severity"]) == "informational" && i["alerts"].as_array().is_some_and(|a| a.is_empty())
}

/// The `status` table with its `unknown_status`.
fn status_of(status_key: &str) -> &'static str {
    match status_key {
        "active" => "New",
        "inprogress" | "awaitingaction" => "Active",
        "resolved" | "redirected" => "Closed",
        _ => "Active",
    }
}

/// The `severity` table with its `unknown_severity`.
fn severity_of(i: &Value) -> &'static str {
    match key(&i["severity"]).as_str() {
        "high" => "High",
        "medium" => "Medium",
        "low" => "Low",
        "informational" => "Informational",
        _ => "Medium",
    }
}

/// The `classification` and `reason` tables.
fn class_of(i: &Value) -> Option<(&'static str, &'static str)> {
    match key(&i["classification"]).as_str() {
        "truepositive" => Some(("TruePositive", "SuspiciousActivity")),
        "informationalexpectedactivity" => Some(("BenignPositive", "SuspiciousButExpected")),
        "falsepositive" => Some(("FalsePositive", "IncorrectAlertLogic")),
        _ => None,
    }
}

/// `as_labels(customTags ?? tags)`: the tag names, without empties or repeats.
fn tag_labels(i: &Value) -> Vec<String> {
    let tags = if i["customTags"].is_null() {
        &i["tags"]
    } else {
        &i["customTags"]
    };
    let mut labels = Vec::new();
    for tag in tags
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        add_label(&mut labels, tag);
    }
    labels
}

fn add_label(labels: &mut Vec<String>, name: &str) {
    if !name.is_empty() && !labels.iter().any(|l| l == name) {
        labels.push(name.to_string());
    }
}

/// `{"properties": p}` with `labels` as Sentinel labels, checked against its schema as
/// the pipeline checks its output.
fn checked_body(
    pack: &CompiledPack,
    mut p: serde_json::Map<String, Value>,
    labels: Vec<String>,
) -> Value {
    let labels = labels
        .into_iter()
        .map(|l| json!({"labelName": l}))
        .collect();
    p.insert("labels".into(), Value::Array(labels));
    let body = json!({"properties": p});
    assert!(
        pack.schemas
            .check(schema::SENTINEL_INCIDENT, &body)
            .is_empty(),
        "{body}"
    );
    body
}
