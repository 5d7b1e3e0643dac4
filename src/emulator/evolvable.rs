//! Graph's evolvable enums: members added after `unknownFutureValue` are returned only
//! to callers that send `Prefer: include-unknown-enum-members`; everyone else reads
//! `unknownFutureValue` in their place (Graph docs, "evolvable enums"). Applied to what
//! the emulator returns in the observed profile; the store keeps the real values.

use serde_json::Value;

/// `incidentStatus` members after `unknownFutureValue`.
const INCIDENT_STATUS: [&str; 1] = ["awaitingAction"];

/// `serviceSource` members after `unknownFutureValue` (microsoft-apis.md §alert).
const SERVICE_SOURCE: [&str; 5] = [
    "microsoftDefenderForCloud",
    "microsoftSentinel",
    "microsoftInsiderRiskManagement",
    "microsoftThreatIntelligence",
    "microsoftSecurityForAI",
];

/// `detectionSource` members treated as newer than `unknownFutureValue`. The exact split
/// of this 40-member enum is not in our reference; hiding these (the Sentinel and
/// newer-product sources) is the stricter choice.
const DETECTION_SOURCE: [&str; 5] = [
    "microsoftSentinel",
    "microsoftInsiderRiskManagement",
    "microsoftThreatIntelligence",
    "builtInMl",
    "microsoftDefenderForCloud",
];

const UNKNOWN: &str = "unknownFutureValue";

/// Whether the request's `Prefer` header(s) opt in to the newer members.
pub fn wants_unknown_members<'a>(prefer: impl IntoIterator<Item = &'a str>) -> bool {
    prefer.into_iter().any(|header| {
        header.split(',').any(|p| {
            p.trim()
                .eq_ignore_ascii_case("include-unknown-enum-members")
        })
    })
}

fn hide(value: &mut Value, newer: &[&str]) {
    if value.as_str().is_some_and(|v| newer.contains(&v)) {
        *value = Value::String(UNKNOWN.into());
    }
}

/// An alert (from `alerts` or `alerts_v2`) as a caller without the opt-in sees it.
pub fn hide_alert(alert: &mut Value) {
    if let Some(map) = alert.as_object_mut() {
        if let Some(v) = map.get_mut("serviceSource") {
            hide(v, &SERVICE_SOURCE);
        }
        if let Some(v) = map.get_mut("detectionSource") {
            hide(v, &DETECTION_SOURCE);
        }
    }
}

/// An incident (and its expanded alerts) as a caller without the opt-in sees it.
pub fn hide_incident(incident: &mut Value) {
    if let Some(v) = incident.get_mut("status") {
        hide(v, &INCIDENT_STATUS);
    }
    if let Some(alerts) = incident.get_mut("alerts").and_then(Value::as_array_mut) {
        alerts.iter_mut().for_each(hide_alert);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn newer_members_become_unknown_future_value_and_older_ones_stay() {
        let mut incident = json!({"status": "awaitingAction", "alerts": [
            {"serviceSource": "microsoftSentinel", "detectionSource": "microsoftSentinel"},
            {"serviceSource": "microsoftDefenderForEndpoint", "detectionSource": "antivirus"}]});
        hide_incident(&mut incident);
        assert_eq!(incident["status"], UNKNOWN);
        assert_eq!(incident["alerts"][0]["serviceSource"], UNKNOWN);
        assert_eq!(incident["alerts"][0]["detectionSource"], UNKNOWN);
        assert_eq!(
            incident["alerts"][1]["serviceSource"],
            "microsoftDefenderForEndpoint"
        );
        let mut active = json!({"status": "active"});
        hide_incident(&mut active);
        assert_eq!(active["status"], "active");
        assert!(wants_unknown_members([
            "odata.maxpagesize=5, Include-Unknown-Enum-Members"
        ]));
        assert!(!wants_unknown_members(["return=minimal"]));
    }
}
