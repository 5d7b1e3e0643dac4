//! Microsoft's own bridges between the two sides, which a real tenant usually has on
//! before rulebridge arrives:
//! - the Defender XDR connector: for each Defender incident, Sentinel holds one it made
//!   itself (a random GUID name, `providerName` "Microsoft XDR", `providerIncidentId` =
//!   the Defender id, title, severity and status mapped, no description, no labels, an
//!   owner of nulls);
//! - the unified security operations portal: Sentinel's own incidents (from analytics
//!   rules) appear in Graph's incident list, their alerts' `serviceSource` and
//!   `detectionSource` `microsoftSentinel` (newer enum members, see `evolvable`). The
//!   workspace holds them as well, as the connector's kind (once onboarded, Sentinel
//!   reports every incident with provider "Microsoft XDR").
//!
//! Which seeded incidents get either is decided by a hash of the incident id, so the
//! same seed data gives the same tenant whatever the order of seeding.

use super::arm;
use super::rng::SplitMix64;
use super::store::Store;
use chrono::DateTime;
use serde_json::{json, Map, Value};

/// The provider name of connector-made incidents (older: "Microsoft 365 Defender").
pub const PROVIDER: &str = "Microsoft XDR";

const SENTINEL_RULES: [&str; 5] = [
    "Rare subscription-level operations in Azure",
    "Brute force attack against a Cloud PC",
    "Suspicious number of resource creation or deployment activities",
    "Mass secret retrieval from Azure Key Vault",
    "Sign-ins from IPs that attempt sign-ins to disabled accounts",
];

/// A per-incident random stream: FNV-1a of the id, mixed with a salt per decision.
fn rng_for(id: &str, salt: u64) -> SplitMix64 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    SplitMix64::new(hash ^ salt)
}

/// Turns a Graph incident into one that came from Sentinel: every alert (one is made if
/// there is none) from a Sentinel analytics rule.
pub fn make_sentinel_sourced(incident: &mut Value, rng: &mut SplitMix64) {
    let id = incident["id"].as_str().unwrap_or("").to_string();
    let rule = *rng.pick(&SENTINEL_RULES);
    let rule_id = rng.uuid();
    let Some(map) = incident.as_object_mut() else {
        return;
    };
    let alerts = map.entry("alerts").or_insert_with(|| json!([]));
    if alerts.as_array().is_none_or(|a| a.is_empty()) {
        *alerts = json!([{ "@odata.type": "#microsoft.graph.security.alert",
            "id": format!("sn{}", rng.hex(32)), "incidentId": id, "status": "new",
            "severity": "medium", "category": "Discovery", "mitreTechniques": [], "evidence": [] }]);
    }
    for alert in alerts.as_array_mut().expect("an array by now") {
        alert["serviceSource"] = json!("microsoftSentinel");
        alert["detectionSource"] = json!("microsoftSentinel");
        alert["title"] = json!(rule);
        alert["detectorId"] = json!(rule_id);
        alert["productName"] = json!("Azure Sentinel");
    }
    map.insert("displayName".into(), json!(rule));
}

fn severity(graph: &Value) -> &'static str {
    match graph["severity"].as_str().unwrap_or("") {
        "high" => "High",
        "medium" => "Medium",
        "low" => "Low",
        // unknown, unknownFutureValue, informational: the lowest Sentinel has.
        _ => "Informational",
    }
}

/// Defender active → New, in progress (or awaiting action) → Active, resolved or merged
/// away → Closed with the classification mapped.
fn status(graph: &Value, props: &mut Map<String, Value>) {
    let status = match graph["status"].as_str().unwrap_or("") {
        "inProgress" | "awaitingAction" => "Active",
        "resolved" | "redirected" => "Closed",
        _ => "New",
    };
    props.insert("status".into(), json!(status));
    if status != "Closed" {
        return;
    }
    let (class, reason) = match graph["classification"].as_str().unwrap_or("") {
        "truePositive" => ("TruePositive", Some("SuspiciousActivity")),
        "falsePositive" => ("FalsePositive", Some("IncorrectAlertLogic")),
        "informationalExpectedActivity" => ("BenignPositive", Some("SuspiciousButExpected")),
        _ => ("Undetermined", None),
    };
    props.insert("classification".into(), json!(class));
    if let Some(reason) = reason {
        props.insert("classificationReason".into(), json!(reason));
    }
}

fn product_name(service_source: &str) -> &'static str {
    match service_source {
        "microsoftDefenderForEndpoint" => "Microsoft Defender Advanced Threat Protection",
        "microsoftDefenderForIdentity" => "Azure Advanced Threat Protection",
        "microsoftDefenderForOffice365" => "Office 365 Advanced Threat Protection",
        "microsoftDefenderForCloudApps" => "Microsoft Cloud App Security",
        "azureAdIdentityProtection" => "Azure Active Directory Identity Protection",
        "microsoftSentinel" => "Azure Sentinel",
        _ => "Microsoft 365 Defender",
    }
}

/// The earliest or latest of the alerts' activity stamps, 7-digit.
fn activity(alerts: &[Value], key: &str, latest: bool) -> Option<String> {
    let times = alerts
        .iter()
        .filter_map(|a| a[key].as_str())
        .filter_map(|s| DateTime::parse_from_rfc3339(s).ok());
    let t = if latest { times.max() } else { times.min() }?.to_utc();
    Some(format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    ))
}

impl Store {
    /// Adds the Sentinel incident Microsoft's connector makes for Defender incident
    /// `defender_id`; returns its name. If the workspace already holds one for that id,
    /// returns that one's name (the connector updates rather than duplicates).
    pub fn add_connector_incident(&mut self, defender_id: &str) -> Result<String, String> {
        let graph = self
            .graph
            .get(defender_id)
            .cloned()
            .ok_or_else(|| format!("no Graph incident {defender_id}"))?;
        if let Some((name, _)) = self.sentinel.iter().find(|(_, i)| {
            i["properties"]["providerIncidentId"] == defender_id
                && i["properties"]["providerName"] == PROVIDER
        }) {
            return Ok(name.clone());
        }
        let name = rng_for(defender_id, 0xC0_11EC_7012).uuid();
        let now = self.tick();
        self.sentinel_number += 1;
        let alerts = graph["alerts"].as_array().cloned().unwrap_or_default();
        let mut products: Vec<&str> = alerts
            .iter()
            .map(|a| product_name(a["serviceSource"].as_str().unwrap_or("")))
            .collect();
        products.sort_unstable();
        products.dedup();
        let mut tactics: Vec<&str> = alerts
            .iter()
            .filter_map(|a| a["category"].as_str())
            .collect();
        tactics.sort_unstable();
        tactics.dedup();
        let id = arm::incident_id(self.profile, &self.sentinel_base, &name);
        let mut props = Map::new();
        let title = graph["displayName"].as_str().unwrap_or("Defender incident");
        props.insert("title".into(), json!(title));
        props.insert("severity".into(), json!(severity(&graph)));
        status(&graph, &mut props);
        props.insert("owner".into(), arm::owner(None));
        props.insert("labels".into(), json!([]));
        props.insert("createdTimeUtc".into(), json!(now));
        props.insert("lastModifiedTimeUtc".into(), json!(now));
        props.insert("incidentNumber".into(), json!(self.sentinel_number));
        props.insert("providerName".into(), json!(PROVIDER));
        props.insert("providerIncidentId".into(), json!(defender_id));
        props.insert("relatedAnalyticRuleIds".into(), json!([]));
        props.insert("incidentUrl".into(), json!(arm::incident_url(&id)));
        for (key, from, latest) in [
            ("firstActivityTimeUtc", "firstActivityDateTime", false),
            ("lastActivityTimeUtc", "lastActivityDateTime", true),
        ] {
            if let Some(t) = activity(&alerts, from, latest) {
                props.insert(key.into(), json!(t));
            }
        }
        let mut additional = arm::additional_data();
        additional["alertsCount"] = json!(alerts.len());
        additional["alertProductNames"] = json!(products);
        additional["tactics"] = json!(tactics);
        if let Some(url) = graph["incidentWebUrl"].as_str() {
            additional["providerIncidentUrl"] = json!(url);
        }
        props.insert("additionalData".into(), additional);
        let resource = json!({
            "id": id, "name": name, "etag": self.new_etag(),
            "type": arm::incident_type(self.profile), "properties": props,
        });
        self.sentinel.insert(name.clone(), resource);
        Ok(name)
    }

    /// Applies the seeding rates to a just-seeded Graph incident: perhaps it came from
    /// Sentinel, perhaps the connector already copied it.
    pub(crate) fn apply_seed_rates(&mut self, id: &str) {
        let (from_sentinel, connector) = (
            self.observed.sentinel_incidents_in_graph,
            self.observed.connector_incidents,
        );
        let mut rng = rng_for(id, 0x5E47_1AE1);
        if from_sentinel > 0.0 && rng.chance(from_sentinel) {
            if let Some(incident) = self.graph.get_mut(id) {
                make_sentinel_sourced(incident, &mut rng);
            }
            let _ = self.add_connector_incident(id);
        } else if connector > 0.0 && rng_for(id, 0xC0_11EC).chance(connector) {
            let _ = self.add_connector_incident(id);
        }
    }
}
