//! Emulated SOC analysts: edits to incidents on either side while a sync runs, so that
//! the sync meets real two-sided traffic — assigning, starting work, classifying and
//! closing, commenting and tagging in Defender (Graph) and in Sentinel.
//!
//! Every edit goes through the same [`Store`] methods, and the same checks, as an API
//! write, so stamps and etags advance exactly as they would for a client: the sync
//! cannot tell an analyst from another API caller. Edits are always valid writes; a
//! refusal is a bug here, which [`Analysts::try_edit_once`] surfaces for tests.

use super::graph;
use super::rng::SplitMix64;
use super::seed::ANALYSTS;
use super::sentinel::{MAX_COMMENTS, WRITABLE};
use super::store::{ApiError, Store};
use crate::model::Side;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};

/// Who the Graph writes are made as (`lastModifiedBy` becomes `API-App:` + this).
pub const ANALYST: &str = "analyst@contoso.com";

/// What an analyst did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditKind {
    /// Set the owner (Graph `assignedTo`, Sentinel `owner`).
    Assign,
    /// Start work: Graph active → inProgress, Sentinel New → Active.
    Start,
    /// Classify and close with a consistent classification pair.
    Close,
    /// Add a tag (Graph `customTags`, Sentinel `labels`).
    Tag,
    /// Remove a Graph custom tag.
    Untag,
    Comment,
}

/// One applied edit, for logs, the control API and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalystEdit {
    pub side: Side,
    /// Graph incident id or Sentinel incident name.
    pub incident: String,
    pub kind: EditKind,
    /// Human-readable: what changed to what.
    pub detail: String,
}

const NEW_TAGS: [&str; 6] = [
    "analyst-reviewed",
    "escalated",
    "Tier2",
    "FollowUp",
    "VIP",
    "Vérifié",
];
const COMMENTS: [&str; 5] = [
    "Checked the device timeline; no further activity.",
    "Escalated to tier 2 — see ticket INC-4711.",
    "L'utilisateur confirme l'activité, analyse en cours.",
    "已联系用户确认",
    "Waiting on the mailbox owner 📨",
];
/// Graph (classification, determination) pairs an analyst closes with.
const GRAPH_CLOSE: [(&str, &str); 8] = [
    ("truePositive", "multiStagedAttack"),
    ("truePositive", "malware"),
    ("truePositive", "phishing"),
    ("truePositive", "compromisedAccount"),
    ("falsePositive", "notMalicious"),
    ("falsePositive", "notEnoughDataToValidate"),
    ("informationalExpectedActivity", "securityTesting"),
    ("informationalExpectedActivity", "lineOfBusinessApplication"),
];
/// Sentinel (classification, classificationReason) pairs the service accepts.
const SENTINEL_CLOSE: [(&str, &str); 4] = [
    ("TruePositive", "SuspiciousActivity"),
    ("BenignPositive", "SuspiciousButExpected"),
    ("FalsePositive", "IncorrectAlertLogic"),
    ("FalsePositive", "InaccurateData"),
];

/// A deterministic crowd of analysts: the same seed over the same store state makes
/// the same edits.
pub struct Analysts {
    rng: SplitMix64,
    mix: Mix,
}

/// What the analysts work on. The default is uniform: any incident, the kinds each
/// status offers. A SOC's own mix (most edits on open incidents, a share of comments)
/// is what a benchmark of a real queue asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    /// The share of edits that are comments.
    pub comments: Option<f64>,
    /// The share of edits made to open incidents (when a side has both kinds).
    pub open: Option<f64>,
}

impl Analysts {
    pub fn new(seed: u64) -> Analysts {
        Analysts {
            rng: SplitMix64::new(seed),
            mix: Mix::default(),
        }
    }

    /// Analysts working to `mix`.
    pub fn with_mix(seed: u64, mix: Mix) -> Analysts {
        Analysts {
            rng: SplitMix64::new(seed),
            mix,
        }
    }

    /// The kind of edit: the status's options, or the mix's share of comments.
    fn choose(&mut self, options: &[(EditKind, u32)]) -> EditKind {
        let Some(share) = self.mix.comments else {
            return *self.rng.weighted(options);
        };
        let others: Vec<(EditKind, u32)> = options
            .iter()
            .copied()
            .filter(|(k, w)| *k != EditKind::Comment && *w > 0)
            .collect();
        if others.is_empty() || self.rng.chance(share) {
            EditKind::Comment
        } else {
            *self.rng.weighted(&others)
        }
    }

    /// The `n`-th of the keys the mix chooses from: open or closed ones by its share.
    fn pick_key<'a>(&mut self, keys: Vec<(&'a String, bool)>) -> Option<&'a String> {
        let wanted = self.mix.open.map(|share| self.rng.chance(share));
        let pool: Vec<&String> = match wanted {
            Some(open) if keys.iter().any(|(_, o)| *o == open) => keys
                .iter()
                .filter(|(_, o)| *o == open)
                .map(|(k, _)| *k)
                .collect(),
            _ => keys.iter().map(|(k, _)| *k).collect(),
        };
        if pool.is_empty() {
            return None;
        }
        let n = self.rng.below(pool.len() as u64) as usize;
        Some(pool[n])
    }

    /// One edit on a random incident of either side; `None` if there are no incidents
    /// (or, logged as a warning, if the store refused the write, which is a bug).
    pub fn edit_once(&mut self, store: &mut Store) -> Option<AnalystEdit> {
        self.try_edit_once(store).unwrap_or_else(|e| {
            tracing::warn!("analyst edit refused: {} {}", e.code, e.message);
            None
        })
    }

    /// [`Analysts::edit_once`] with the store's refusal, if any.
    pub fn try_edit_once(&mut self, store: &mut Store) -> Result<Option<AnalystEdit>, ApiError> {
        // The side first, then an incident of it: each side gets about half the edits
        // whatever the sizes, which is what makes the traffic two-sided.
        let side = match (store.graph.is_empty(), store.sentinel.is_empty()) {
            (true, true) => return Ok(None),
            (false, true) => Side::Defender,
            (true, false) => Side::Sentinel,
            (false, false) if self.rng.chance(0.5) => Side::Defender,
            (false, false) => Side::Sentinel,
        };
        let edit = match side {
            Side::Defender if self.mix.open.is_none() => {
                let n = self.rng.below(store.graph.len() as u64) as usize;
                let id = store.graph.keys().nth(n).expect("index below len").clone();
                self.graph_edit(store, id)?
            }
            Side::Sentinel if self.mix.open.is_none() => {
                let n = self.rng.below(store.sentinel.len() as u64) as usize;
                let name = store
                    .sentinel
                    .keys()
                    .nth(n)
                    .expect("index below len")
                    .clone();
                self.sentinel_edit(store, name)?
            }
            Side::Defender => {
                let keys = store
                    .graph
                    .iter()
                    .map(|(k, i)| {
                        (
                            k,
                            matches!(i["status"].as_str(), Some("active" | "inProgress")),
                        )
                    })
                    .collect();
                let id = self.pick_key(keys).expect("a non-empty side").clone();
                self.graph_edit(store, id)?
            }
            Side::Sentinel => {
                let keys = store
                    .sentinel
                    .iter()
                    .map(|(k, i)| (k, i["properties"]["status"].as_str() != Some("Closed")))
                    .collect();
                let name = self.pick_key(keys).expect("a non-empty side").clone();
                self.sentinel_edit(store, name)?
            }
        };
        Ok(Some(edit))
    }

    fn graph_edit(&mut self, store: &mut Store, id: String) -> Result<AnalystEdit, ApiError> {
        use EditKind::*;
        let incident = &store.graph[&id];
        // Stored statuses may be PascalCase (older examples); the meaning is the same.
        let status = incident["status"]
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase();
        let tags = graph_tags(incident);
        let untag = if tags.is_empty() { 0 } else { 1 };
        let options: Vec<(EditKind, u32)> = match status.as_str() {
            // Writes to a merged-away incident land elsewhere (reference 1.7): only talk.
            "redirected" => vec![(Comment, 1)],
            "resolved" => vec![(Assign, 2), (Tag, 2), (Untag, untag), (Comment, 4)],
            "active" => vec![
                (Start, 3),
                (Assign, 3),
                (Close, 2),
                (Tag, 2),
                (Untag, untag),
                (Comment, 3),
            ],
            _ => vec![
                (Assign, 2),
                (Close, 3),
                (Tag, 2),
                (Untag, untag),
                (Comment, 3),
            ],
        };
        let kind = self.choose(&options);
        let current_owner = incident["assignedTo"].as_str().unwrap_or("").to_string();
        let mut changes = Map::new();
        let detail = match kind {
            Assign => {
                let upn = self.pick_other(&ANALYSTS, &current_owner);
                changes.insert("assignedTo".into(), json!(upn));
                format!("assignedTo={upn}")
            }
            Start => {
                changes.insert("status".into(), json!("inProgress"));
                "status=inProgress".into()
            }
            Close => {
                let (class, det) = *self.rng.pick(&GRAPH_CLOSE);
                changes.insert("status".into(), json!("resolved"));
                changes.insert("classification".into(), json!(class));
                changes.insert("determination".into(), json!(det));
                changes.insert(
                    "resolvingComment".into(),
                    json!(format!(
                        "Closed as {class} ({det}) by the emulated analysts."
                    )),
                );
                format!("status=resolved classification={class} determination={det}")
            }
            Tag => match NEW_TAGS
                .iter()
                .find(|t| !tags.iter().any(|have| have == *t))
            {
                // PATCH replaces the whole array, so send the old tags plus the new one.
                Some(new) => {
                    let mut all = tags.clone();
                    all.push(new.to_string());
                    changes.insert("customTags".into(), json!(all));
                    format!("+tag {new}")
                }
                None => return self.graph_comment(store, id),
            },
            Untag => {
                let gone = self.rng.pick(&tags).clone();
                let rest: Vec<&String> = tags.iter().filter(|t| **t != gone).collect();
                changes.insert("customTags".into(), json!(rest));
                format!("-tag {gone}")
            }
            Comment => return self.graph_comment(store, id),
        };
        // The same check the PATCH handler applies, so an analyst never writes what a
        // client could not.
        let checked = graph::check_patch(&Value::Object(changes))?;
        store.graph_patch(&id, checked, ANALYST)?;
        Ok(AnalystEdit {
            side: Side::Defender,
            incident: id,
            kind,
            detail,
        })
    }

    fn graph_comment(&mut self, store: &mut Store, id: String) -> Result<AnalystEdit, ApiError> {
        let text = *self.rng.pick(&COMMENTS);
        let body =
            json!({ "@odata.type": "microsoft.graph.security.alertComment", "comment": text });
        store.graph_comment(&id, &body, ANALYST)?;
        Ok(AnalystEdit {
            side: Side::Defender,
            incident: id,
            kind: EditKind::Comment,
            detail: text.into(),
        })
    }

    fn sentinel_edit(&mut self, store: &mut Store, name: String) -> Result<AnalystEdit, ApiError> {
        use EditKind::*;
        let resource = &store.sentinel[&name];
        let base_id = resource["id"]
            .as_str()
            .and_then(|id| id.strip_suffix(&format!("/{name}")))
            .ok_or_else(|| {
                ApiError::new(
                    500,
                    "InternalError",
                    format!("Sentinel incident '{name}' has no resource id ending in its name"),
                )
            })?
            .to_string();
        // A PUT replaces every writable property: start from all the stored ones and
        // change one thing, as the portal does.
        let stored = resource["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut props: Map<String, Value> = stored
            .into_iter()
            .filter(|(k, v)| WRITABLE.contains(&k.as_str()) && !v.is_null())
            .collect();
        let status = props
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let options: Vec<(EditKind, u32)> = match status.as_str() {
            "New" => vec![(Start, 3), (Assign, 3), (Close, 2), (Tag, 2), (Comment, 3)],
            "Active" => vec![(Assign, 2), (Close, 3), (Tag, 2), (Comment, 3)],
            _ => vec![(Assign, 1), (Tag, 2), (Comment, 4)],
        };
        let mut kind = self.choose(&options);
        let labels = props
            .get("labels")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let have = |t: &str| labels.iter().any(|l| l["labelName"] == t);
        if kind == Tag && NEW_TAGS.iter().all(|t| have(t)) {
            kind = Comment;
        }
        // The service refuses a 101st comment: a full incident gets assigned instead.
        let full = store
            .sentinel_comments
            .get(&name)
            .is_some_and(|c| c.len() >= MAX_COMMENTS);
        if full && matches!(kind, Untag | Comment) {
            kind = Assign;
        }
        let detail = match kind {
            Assign => {
                let current = props
                    .get("owner")
                    .and_then(|o| o["userPrincipalName"].as_str())
                    .unwrap_or("")
                    .to_string();
                let upn = self.pick_other(&ANALYSTS, &current);
                let owner = json!({ "objectId": self.rng.uuid(), "email": upn, "userPrincipalName": upn,
                                    "assignedTo": upn.split('@').next().unwrap_or(&upn), "ownerType": "User" });
                props.insert("owner".into(), owner);
                format!("owner={upn}")
            }
            Start => {
                props.insert("status".into(), json!("Active"));
                "status=Active".into()
            }
            Close => {
                let (class, reason) = *self.rng.pick(&SENTINEL_CLOSE);
                props.insert("status".into(), json!("Closed"));
                props.insert("classification".into(), json!(class));
                props.insert("classificationReason".into(), json!(reason));
                props.insert(
                    "classificationComment".into(),
                    json!("Closed by the emulated analysts."),
                );
                format!("status=Closed classification={class} classificationReason={reason}")
            }
            Tag => {
                let new = NEW_TAGS
                    .iter()
                    .find(|t| !have(t))
                    .expect("checked above: some tag is new");
                let mut labels = labels.clone();
                labels.push(json!({ "labelName": new, "labelType": "User" }));
                props.insert("labels".into(), json!(labels));
                format!("+label {new}")
            }
            Untag | Comment => return self.sentinel_comment(store, &base_id, name),
        };
        store.sentinel_put(&base_id, &name, &json!({ "properties": props }), None)?;
        Ok(AnalystEdit {
            side: Side::Sentinel,
            incident: name,
            kind,
            detail,
        })
    }

    fn sentinel_comment(
        &mut self,
        store: &mut Store,
        base_id: &str,
        name: String,
    ) -> Result<AnalystEdit, ApiError> {
        // A fresh id: reusing one would silently replace an earlier comment.
        let existing = store.sentinel_comments.get(&name);
        let comment_id = loop {
            let id = self.rng.uuid();
            if !existing.is_some_and(|c| c.contains_key(&id)) {
                break id;
            }
        };
        let text = *self.rng.pick(&COMMENTS);
        store.sentinel_comment(
            base_id,
            &name,
            &comment_id,
            &json!({ "properties": { "message": text } }),
        )?;
        Ok(AnalystEdit {
            side: Side::Sentinel,
            incident: name,
            kind: EditKind::Comment,
            detail: text.into(),
        })
    }

    /// One of `pool` other than `current` (so an assignment is a change).
    fn pick_other(&mut self, pool: &[&str], current: &str) -> String {
        let others: Vec<&str> = pool
            .iter()
            .copied()
            .filter(|p| !p.eq_ignore_ascii_case(current))
            .collect();
        self.rng.pick(&others).to_string()
    }
}

/// An incident's custom tags, merging the legacy `tags` name (a PATCH always writes
/// `customTags`).
fn graph_tags(incident: &Value) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for key in ["customTags", "tags"] {
        for t in incident[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !tags.iter().any(|have| have == t) {
                tags.push(t.to_string());
            }
        }
    }
    tags
}

/// Runs analysts against `store` at `rate_per_sec` edits per second until the task is
/// aborted. A rate of 0 (or not a finite positive number) makes a task that does nothing.
pub fn spawn(
    store: Arc<Mutex<Store>>,
    rate_per_sec: f64,
    seed: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) {
            return;
        }
        // Timers tick at best every millisecond: above 1,000 edits/s, do several per tick.
        let per_tick = (rate_per_sec / 1000.0).ceil().max(1.0);
        let period = std::time::Duration::from_secs_f64(per_tick / rate_per_sec);
        let mut interval = tokio::time::interval(period);
        let mut analysts = Analysts::new(seed);
        loop {
            interval.tick().await;
            // The std mutex is never held across an await.
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..per_tick as u64 {
                analysts.edit_once(&mut store);
            }
        }
    })
}
