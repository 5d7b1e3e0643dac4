//! Graph's alerts as a collection of their own (`alerts_v2`), and the ways alerts change
//! after an incident is created: a new alert correlated into an incident, an alert moved
//! to another incident (Graph's `moveAlerts`, or a merge), an alert updated (status,
//! classification, by an analyst or an automated investigation).
//!
//! Every alert lives inside its incident's `alerts` array (the store keeps incidents as
//! Graph renders them with `$expand=alerts`) and names it in `incidentId`. Which stamps
//! each change moves is only partly documented; where it is not, the emulator moves as
//! few as it can defend, because a reader that trusts a stamp that did not move misses
//! the change (the harder case, as for comments):
//! - a new alert: its own stamps and its incident's `lastUpdateDateTime` (an incident
//!   gaining an alert is updated; without that no poll could see new alerts at all);
//! - a move: both incidents' `lastUpdateDateTime`, not the alert's own (unconfirmed);
//! - an update: the alert's `lastUpdateDateTime` only, not its incident's (unconfirmed).

use super::store::{ApiError, Store};
use serde_json::{json, Map, Value};

impl Store {
    /// Every alert of the tenant with the incident it sits in.
    pub fn graph_alerts(&self) -> impl Iterator<Item = &Value> {
        self.graph
            .values()
            .flat_map(|i| i["alerts"].as_array().into_iter().flatten())
    }

    /// Correlates a new alert titled `title` into incident `id`; returns the alert.
    pub fn graph_add_alert(&mut self, id: &str, title: &str) -> Result<Value, ApiError> {
        let now = self.tick();
        let alert_id = self.next_id("da");
        let alert = json!({
            "@odata.type": "#microsoft.graph.security.alert",
            "id": alert_id, "providerAlertId": alert_id, "incidentId": id,
            "status": "new", "severity": "medium", "title": title,
            "serviceSource": "microsoftDefenderForEndpoint",
            "detectionSource": "microsoftDefenderForEndpoint",
            "createdDateTime": now, "lastUpdateDateTime": now,
            "firstActivityDateTime": now, "lastActivityDateTime": now,
            "evidence": [],
        });
        let incident = self.incident_mut(id)?;
        alerts_of(incident).push(alert.clone());
        incident.insert("lastUpdateDateTime".into(), json!(now));
        Ok(alert)
    }

    /// Moves alert `alert_id` into incident `to`; returns the alert as it is now.
    pub fn graph_move_alert(&mut self, alert_id: &str, to: &str) -> Result<Value, ApiError> {
        self.incident_mut(to)?;
        let from = self.incident_of(alert_id)?;
        let now = self.tick();
        let source = self.incident_mut(&from)?;
        let list = alerts_of(source);
        let at = list
            .iter()
            .position(|a| a["id"] == alert_id)
            .expect("incident_of found it here");
        let mut alert = list.remove(at);
        source.insert("lastUpdateDateTime".into(), json!(now));
        alert["incidentId"] = json!(to);
        let target = self.incident_mut(to)?;
        alerts_of(target).push(alert.clone());
        target.insert("lastUpdateDateTime".into(), json!(now));
        Ok(alert)
    }

    /// Sets `changes` on alert `alert_id` (its `id` and `incidentId` stay); returns it.
    pub fn graph_update_alert(
        &mut self,
        alert_id: &str,
        changes: &Map<String, Value>,
    ) -> Result<Value, ApiError> {
        if let Some(key) = ["id", "incidentId"]
            .iter()
            .find(|k| changes.contains_key(**k))
        {
            return Err(ApiError::bad_request(format!("'{key}' cannot be updated")));
        }
        let incident = self.incident_of(alert_id)?;
        let now = self.tick();
        let map = self.incident_mut(&incident)?;
        let alert = alerts_of(map)
            .iter_mut()
            .find(|a| a["id"] == alert_id)
            .expect("incident_of found it here");
        for (key, value) in changes {
            alert[key.as_str()] = value.clone();
        }
        alert["lastUpdateDateTime"] = json!(now);
        Ok(alert.clone())
    }

    fn incident_of(&self, alert_id: &str) -> Result<String, ApiError> {
        self.graph
            .iter()
            .find(|(_, i)| {
                i["alerts"]
                    .as_array()
                    .is_some_and(|list| list.iter().any(|a| a["id"] == alert_id))
            })
            .map(|(id, _)| id.clone())
            .ok_or_else(|| ApiError::not_found(format!("Alert {alert_id} was not found")))
    }

    fn incident_mut(&mut self, id: &str) -> Result<&mut Map<String, Value>, ApiError> {
        self.graph
            .get_mut(id)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApiError::not_found(format!("Incident {id} was not found")))
    }
}

/// Fills in what every alert of a seeded incident carries: the incident's id, and
/// stamps (the incident's own when the seed has none).
pub fn complete_seeded_alerts(incident: &mut Map<String, Value>) {
    let id = incident.get("id").cloned().unwrap_or(Value::Null);
    let created = incident.get("createdDateTime").cloned();
    let updated = incident.get("lastUpdateDateTime").cloned();
    let Some(Value::Array(alerts)) = incident.get_mut("alerts") else {
        return;
    };
    for alert in alerts.iter_mut().filter_map(Value::as_object_mut) {
        alert.entry("incidentId").or_insert_with(|| id.clone());
        for (key, stamp) in [
            ("createdDateTime", &created),
            ("lastUpdateDateTime", &updated),
        ] {
            if let Some(stamp) = stamp {
                alert.entry(key).or_insert_with(|| stamp.clone());
            }
        }
    }
}

fn alerts_of(incident: &mut Map<String, Value>) -> &mut Vec<Value> {
    let alerts = incident.entry("alerts").or_insert_with(|| json!([]));
    if !alerts.is_array() {
        *alerts = json!([]);
    }
    alerts.as_array_mut().expect("set above")
}
