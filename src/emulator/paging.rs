//! Paging as the real services do it in the observed profile: by offset over the live
//! result set, with no snapshot. Each page re-runs the query against the store as it is
//! now, so a change made during a walk moves items across page boundaries: an item can
//! be skipped or seen twice, which is the behaviour a client must survive.
//!
//! Graph's `@odata.nextLink` is the same query plus `$skip=N` (as real links are).
//! Sentinel's `nextLink` carries an opaque `$skipToken` that holds the offset and the
//! original query (base64url of a small JSON object), since ARM's next link drops every
//! other query option but `api-version`.

use super::store::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// `items[offset..offset + top]` and the offset of the next page, if any.
pub fn page_at(items: &[Value], offset: usize, top: usize) -> (Vec<Value>, Option<usize>) {
    let start = offset.min(items.len());
    let end = offset.saturating_add(top).min(items.len());
    let next = (end < items.len()).then_some(end);
    (items[start..end].to_vec(), next)
}

/// What a Sentinel skip token remembers: where the next page starts and the query that
/// made the list.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SkipToken {
    #[serde(rename = "o")]
    pub offset: usize,
    #[serde(rename = "q", default)]
    pub query: HashMap<String, String>,
}

impl SkipToken {
    pub fn encode(&self) -> String {
        base64url(&serde_json::to_vec(self).expect("a map of strings serializes"))
    }

    pub fn decode(token: &str) -> Result<SkipToken, ApiError> {
        let invalid = || ApiError::bad_request("The skip token is invalid or has expired.");
        let bytes = unbase64url(token).ok_or_else(invalid)?;
        serde_json::from_slice(&bytes).map_err(|_| invalid())
    }
}

/// A Graph next link: `base` with the request's own query options, in a fixed order,
/// and `$skip` set to `skip`.
pub fn graph_next_link(base: &str, query: &HashMap<String, String>, skip: usize) -> String {
    let mut parts = Vec::new();
    for key in [
        "$filter", "$expand", "$orderby", "$top", "$count", "$select",
    ] {
        if let Some(value) = query.get(key) {
            parts.push(format!("{key}={}", encode(value)));
        }
    }
    parts.push(format!("$skip={skip}"));
    format!("{base}?{}", parts.join("&"))
}

/// Percent-encodes what cannot stand in a query value; keeps `$`, `:`, `'`, `,` and `/`
/// readable as Graph's own links do.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'$'
            | b':'
            | b'\''
            | b','
            | b'/'
            | b'('
            | b')' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (RFC 4648 §5): safe in a query string without escaping.
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unbase64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64url_round_trips_every_length() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64url(&bytes);
            assert!(text.bytes().all(|b| ALPHABET.contains(&b)));
            assert_eq!(unbase64url(&text).unwrap(), bytes, "{n}");
        }
        assert_eq!(base64url(b"Man"), "TWFu");
        assert_eq!(base64url(b"Ma"), "TWE");
        assert!(unbase64url("ab=c").is_none());
    }

    #[test]
    fn skip_tokens_carry_offset_and_query_and_refuse_garbage() {
        let token = SkipToken {
            offset: 150,
            query: HashMap::from([("$filter".to_string(), "a ge 'b'".to_string())]),
        };
        assert_eq!(SkipToken::decode(&token.encode()).unwrap(), token);
        assert_eq!(SkipToken::decode("!!").unwrap_err().status, 400);
        assert_eq!(SkipToken::decode("TWFu").unwrap_err().status, 400);
    }

    #[test]
    fn pages_and_links() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        assert_eq!(page_at(&items, 0, 2), (vec![json!(0), json!(1)], Some(2)));
        assert_eq!(page_at(&items, 4, 2), (vec![json!(4)], None));
        assert_eq!(page_at(&items, 9, 2), (vec![], None));
        let query = HashMap::from([
            ("$top".to_string(), "50".to_string()),
            (
                "$filter".to_string(),
                "lastUpdateDateTime ge 2025-01-01T00:00:00Z".to_string(),
            ),
            ("$skip".to_string(), "50".to_string()),
        ]);
        assert_eq!(
            graph_next_link("http://h/v1.0/security/incidents", &query, 100),
            "http://h/v1.0/security/incidents?$filter=lastUpdateDateTime%20ge%202025-01-01T00:00:00Z&$top=50&$skip=100"
        );
    }
}
