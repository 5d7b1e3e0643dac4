//! Comment planning: which comments are new on each side and must be copied, without
//! ever copying back a comment rulebridge wrote. Pure; the engine does the writes.
//!
//! Comments are append-only on both sides and neither API bumps the incident's change
//! stamp for them, so they are compared as sets on every reconcile. Memory is the
//! comment pairs in the state store; two extra facts make it crash-safe:
//! - a Defender comment is mirrored under a Sentinel comment id derived from it, so a
//!   repeated PUT is the same comment, and such an id is recognised as ours even before
//!   its pair was committed;
//! - a Sentinel comment is mirrored by a non-idempotent Graph POST, so an outbox pair is
//!   committed before the POST and matched to the Defender comment with its text after.

use super::fields::{
    comment_for_defender, comment_for_sentinel, defender_comment_key, sentinel_comment_id,
};
use crate::model::Side;
use crate::state::CommentPair;
use serde_json::Value;
use std::collections::HashSet;

/// The digest of a Defender incident's inline `comments` (their number and a
/// fingerprint of every comment's identity), or `None` when the incident does not carry
/// them (then only reading tells).
pub fn defender_digest(incident: &Value) -> Option<String> {
    defender_list_digest(incident.get("comments")?.as_array()?)
}

/// The digest of a list of Defender comments, as [`defender_digest`] computes it.
pub fn defender_list_digest(comments: &[Value]) -> Option<String> {
    // FNV-1a over the comments' keys: a digest, not a security boundary (the worst a
    // collision does is skip one comment read until the next sweep).
    let hash = comments.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        defender_comment_key(c)
            .bytes()
            .chain([0])
            .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    });
    Some(format!("{}:{hash:016x}", comments.len()))
}

/// Sentinel's own count of an incident's comments (`additionalData.commentsCount`), if
/// the incident carries it.
pub fn sentinel_comment_count(incident: &Value) -> Option<u64> {
    incident["properties"]["additionalData"]["commentsCount"].as_u64()
}

/// A Defender comment to PUT into Sentinel.
#[derive(Debug, Clone, PartialEq)]
pub struct ToSentinel {
    pub defender_key: String,
    pub comment_id: String,
    pub message: String,
    /// When it was written in Defender (for the copy's lag).
    pub created: Option<String>,
}

/// A Sentinel comment to POST to Defender (after its outbox pair is stored).
#[derive(Debug, Clone, PartialEq)]
pub struct ToDefender {
    pub sentinel_comment_id: String,
    pub text: String,
    /// True when an outbox entry for it exists already (a POST may have happened).
    pub retry: bool,
    /// When it was written in Sentinel (for the copy's lag).
    pub created: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommentPlan {
    pub to_sentinel: Vec<ToSentinel>,
    pub to_defender: Vec<ToDefender>,
    /// Outbox entries now matched to their Defender comment (to store).
    pub adopted: Vec<CommentPair>,
}

impl CommentPlan {
    pub fn is_empty(&self) -> bool {
        self.to_sentinel.is_empty() && self.to_defender.is_empty() && self.adopted.is_empty()
    }
}

/// Plans the comment copies for one linked incident.
pub fn plan_comments(
    sentinel_id: &str,
    defender_comments: &[Value],
    sentinel_comments: &[Value],
    pairs: &[CommentPair],
) -> CommentPlan {
    let mut out = CommentPlan::default();
    let mut known_keys: HashSet<&str> = pairs
        .iter()
        .filter_map(|p| p.defender_key.as_deref())
        .collect();
    let known_sentinel: HashSet<&str> = pairs
        .iter()
        .map(|p| p.sentinel_comment_id.as_str())
        .collect();
    let mut outbox: Vec<&CommentPair> = pairs
        .iter()
        .filter(|p| p.defender_key.is_none() && p.origin == Side::Sentinel)
        .collect();

    let keyed: Vec<(String, &Value)> = defender_comments
        .iter()
        .filter(|c| c["comment"].as_str().is_some_and(|t| !t.is_empty()))
        .map(|c| (defender_comment_key(c), c))
        .collect();
    let mirrored_ids: HashSet<String> = keyed
        .iter()
        .map(|(key, _)| sentinel_comment_id(sentinel_id, key))
        .collect();

    for (key, comment) in &keyed {
        if known_keys.contains(key.as_str()) {
            continue;
        }
        // Our own POST of a Sentinel comment, now visible in Defender.
        let text = comment["comment"].as_str().unwrap_or("");
        if let Some(pos) = outbox.iter().position(|p| p.text == text) {
            let mut pair = outbox.remove(pos).clone();
            pair.defender_key = Some(key.clone());
            known_keys.insert(key);
            out.adopted.push(pair);
            continue;
        }
        out.to_sentinel.push(ToSentinel {
            defender_key: key.clone(),
            comment_id: sentinel_comment_id(sentinel_id, key),
            message: comment_for_sentinel(comment),
            created: comment["createdDateTime"].as_str().map(str::to_string),
        });
    }

    let adopted: HashSet<&str> = out
        .adopted
        .iter()
        .map(|p| p.sentinel_comment_id.as_str())
        .collect();
    for comment in sentinel_comments {
        let Some(id) = comment["name"].as_str() else {
            continue;
        };
        if mirrored_ids.contains(id) || adopted.contains(id) {
            continue;
        }
        let pending = outbox.iter().find(|p| p.sentinel_comment_id == id);
        if known_sentinel.contains(id) && pending.is_none() {
            continue;
        }
        out.to_defender.push(ToDefender {
            sentinel_comment_id: id.to_string(),
            text: pending.map_or_else(|| comment_for_defender(comment), |p| p.text.clone()),
            retry: pending.is_some(),
            created: comment["properties"]["createdTimeUtc"]
                .as_str()
                .map(str::to_string),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(text: &str, by: &str) -> Value {
        json!({"comment": text, "createdByDisplayName": by, "createdDateTime": "2026-01-01T00:00:00Z"})
    }

    fn s(id: &str, text: &str) -> Value {
        json!({"name": id, "properties": {"message": text, "author": {"email": "ana@x.com"}, "createdTimeUtc": "t"}})
    }

    #[test]
    fn digests_move_with_any_comment_and_are_unknown_without_a_list() {
        let one = json!({"comments": [d("a", "bob")]});
        let two = json!({"comments": [d("a", "bob"), d("b", "ann")]});
        let other = json!({"comments": [d("c", "bob")]});
        assert_eq!(defender_digest(&one), defender_digest(&one.clone()));
        assert_ne!(defender_digest(&one), defender_digest(&two));
        // The same number of comments, another text: still a move.
        assert_ne!(defender_digest(&one), defender_digest(&other));
        assert!(defender_digest(&two).unwrap().starts_with("2:"));
        assert_eq!(defender_digest(&json!({"id": "1"})), None);
        assert_eq!(
            defender_digest(&json!({"comments": []}))
                .unwrap()
                .split(':')
                .next(),
            Some("0")
        );
        let s = json!({"properties": {"additionalData": {"commentsCount": 4}}});
        assert_eq!(sentinel_comment_count(&s), Some(4));
        assert_eq!(sentinel_comment_count(&json!({"properties": {}})), None);
    }

    #[test]
    fn new_comments_on_each_side_are_copied_once() {
        let plan = plan_comments(
            "S",
            &[d("from defender", "bob")],
            &[s("c1", "from sentinel")],
            &[],
        );
        assert_eq!(plan.to_sentinel.len(), 1);
        assert!(plan.to_sentinel[0].message.starts_with("from defender"));
        assert!(plan.to_sentinel[0]
            .message
            .contains("bob in Microsoft Defender XDR"));
        assert_eq!(plan.to_defender.len(), 1);
        assert!(plan.to_defender[0]
            .text
            .contains("ana@x.com in Microsoft Sentinel"));
        assert!(!plan.to_defender[0].retry);
    }

    #[test]
    fn mirrored_comments_are_never_copied_back() {
        let dc = d("from defender", "bob");
        let key = defender_comment_key(&dc);
        let mirror_id = sentinel_comment_id("S", &key);
        // The pair was not committed yet (crash after the PUT): the id alone says "ours".
        let plan = plan_comments(
            "S",
            std::slice::from_ref(&dc),
            &[s(&mirror_id, "from defender…")],
            &[],
        );
        assert!(plan.to_defender.is_empty());
        assert_eq!(plan.to_sentinel.len(), 1, "the idempotent PUT is repeated");
        // Committed: nothing at all.
        let pair = CommentPair {
            defender_id: "1".into(),
            defender_key: Some(key),
            sentinel_comment_id: mirror_id.clone(),
            origin: Side::Defender,
            text: String::new(),
        };
        let plan = plan_comments("S", &[dc], &[s(&mirror_id, "x")], &[pair]);
        assert!(plan.is_empty());
    }

    #[test]
    fn an_outbox_entry_is_adopted_when_its_post_shows_up_and_retried_when_it_does_not() {
        let outbox = CommentPair {
            defender_id: "1".into(),
            defender_key: None,
            sentinel_comment_id: "c1".into(),
            origin: Side::Sentinel,
            text: "posted text".into(),
        };
        let posted = d("posted text", "API-App:rulebridge");
        let plan = plan_comments(
            "S",
            std::slice::from_ref(&posted),
            &[s("c1", "orig")],
            std::slice::from_ref(&outbox),
        );
        assert_eq!(plan.adopted.len(), 1);
        assert_eq!(
            plan.adopted[0].defender_key,
            Some(defender_comment_key(&posted))
        );
        assert!(plan.to_sentinel.is_empty() && plan.to_defender.is_empty());

        let plan = plan_comments("S", &[], &[s("c1", "orig")], &[outbox]);
        assert_eq!(plan.to_defender.len(), 1);
        assert!(plan.to_defender[0].retry);
        assert_eq!(plan.to_defender[0].text, "posted text");
    }
}
