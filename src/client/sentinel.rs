//! Microsoft Sentinel incidents (ARM): listing by `properties/lastModifiedTimeUtc`
//! windows (`$top=1000`; without it ARM pages 50 at a time), following the opaque
//! `nextLink`, get, PUT with the etag (a 409 is [`ClientError::Conflict`]: re-read and
//! re-plan, never overwrite), comments (every page), and the lookup of an incident
//! Microsoft's own Defender XDR connector made for a Defender id.

use super::http::{time_window_filter, with_segments, Api, ClientError, Idempotent, Page, Pages};
use reqwest::Method;
use serde_json::{json, Value};

/// ARM's maximum `$top` for incidents (without it a page holds 50).
pub const PAGE_SIZE: usize = 1000;

/// `providerName`s of incidents Microsoft's Defender XDR connector creates: "Microsoft
/// XDR" as observed, "Microsoft Defender XDR" as some documentation writes it, and
/// "Microsoft 365 Defender" before the rename. Their `providerIncidentId` is the
/// Defender incident id.
pub const CONNECTOR_PROVIDERS: [&str; 3] = [
    "Microsoft XDR",
    "Microsoft Defender XDR",
    "Microsoft 365 Defender",
];

pub struct SentinelClient {
    api: Api,
    /// `…/providers/Microsoft.SecurityInsights/incidents` without the query.
    collection: String,
    api_version: String,
}

impl SentinelClient {
    /// `incidents_url` is the collection URL with `?api-version=…`, as the emulator's
    /// info reports it (and as a config file names the real one).
    pub fn new(api: Api, incidents_url: &str) -> Result<Self, String> {
        let (collection, query) = incidents_url
            .split_once('?')
            .ok_or("the Sentinel incidents URL needs ?api-version=")?;
        let api_version = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("api-version="))
            .ok_or("the Sentinel incidents URL needs ?api-version=")?;
        Ok(SentinelClient {
            api,
            collection: collection.trim_end_matches('/').into(),
            api_version: api_version.into(),
        })
    }

    /// The request machinery (service clock, cancellation, rate-limit state).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The collection, or a resource below it (`segments`, each percent-encoded).
    fn url(&self, segments: &[&str]) -> String {
        format!(
            "{}?api-version={}",
            with_segments(&self.collection, segments),
            self.api_version
        )
    }

    /// Every incident modified at or after `since` (all when `None`), following every
    /// `nextLink`. For tools and tests: over a live set, pages may skip or repeat.
    pub async fn list_changed(&self, since: Option<&str>) -> Result<Vec<Value>, ClientError> {
        self.api
            .list_all(
                "sentinel list incidents",
                self.window_url(since, None),
                "nextLink",
            )
            .await
    }

    /// The smallest listing there is: for the service's clock (its `Date` header).
    pub async fn probe(&self) -> Result<(), ClientError> {
        let url = format!("{}&$top=1", self.url(&[]));
        self.api
            .page("sentinel list incidents", &url, "nextLink")
            .await
            .map(|_| ())
    }

    /// The first page of the incidents with `from <= lastModifiedTimeUtc < until`.
    pub async fn window(
        &self,
        from: Option<&str>,
        until: Option<&str>,
    ) -> Result<Page, ClientError> {
        self.api
            .page(
                "sentinel list incidents",
                &self.window_url(from, until),
                "nextLink",
            )
            .await
    }

    /// Every page of a window, following `nextLink`.
    pub fn window_pages(&self, from: Option<&str>, until: Option<&str>) -> Pages<'_> {
        self.api.pages(
            "sentinel list incidents",
            self.window_url(from, until),
            "nextLink",
        )
    }

    /// The first page of every incident, unfiltered (the comment scan's listing).
    pub fn everything_url(&self) -> String {
        self.window_url(None, None)
    }

    fn window_url(&self, from: Option<&str>, until: Option<&str>) -> String {
        let mut url = format!("{}&$top={PAGE_SIZE}", self.url(&[]));
        if let Some(filter) = time_window_filter("properties/lastModifiedTimeUtc", from, until) {
            url.push_str("&$filter=");
            url.push_str(&filter);
        }
        url
    }

    /// The incident Microsoft's Defender XDR connector made for `defender_id`, if any
    /// (found by `providerIncidentId`; other providers reuse the property for their own
    /// numbers, so the provider name must match too).
    pub async fn connector_twin(&self, defender_id: &str) -> Result<Option<Value>, ClientError> {
        let quoted = defender_id.replace('\'', "''");
        let url = format!(
            "{}&$filter=properties/providerIncidentId%20eq%20'{}'",
            self.url(&[]),
            urlencode(&quoted)
        );
        let found = self
            .api
            .list_all("sentinel find connector incident", url, "nextLink")
            .await?;
        Ok(found.into_iter().find(|incident| {
            let p = &incident["properties"];
            p["providerIncidentId"].as_str() == Some(defender_id)
                && p["providerName"].as_str().is_some_and(|n| {
                    CONNECTOR_PROVIDERS
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(n))
                })
        }))
    }

    pub async fn get(&self, name: &str) -> Result<Option<Value>, ClientError> {
        self.api
            .get_optional("sentinel get incident", &self.url(&[name]))
            .await
    }

    /// Creates or updates `name` with `properties`. With `etag`, the write only lands on
    /// that version (else [`ClientError::Conflict`]). Idempotent: the id is the caller's,
    /// so a repeated create is one incident.
    pub async fn put(
        &self,
        name: &str,
        properties: &Value,
        etag: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "properties": properties });
        if let Some(etag) = etag {
            body["etag"] = json!(etag);
        }
        let (_, resource) = self
            .api
            .send(
                "sentinel put incident",
                Method::PUT,
                &self.url(&[name]),
                Some(&body),
                Idempotent::Yes,
            )
            .await?;
        Ok(resource)
    }

    /// Creates or updates comment `comment_id` (caller-chosen: idempotent).
    pub async fn put_comment(
        &self,
        name: &str,
        comment_id: &str,
        message: &str,
    ) -> Result<Value, ClientError> {
        let body = json!({ "properties": { "message": message } });
        let url = self.url(&[name, "comments", comment_id]);
        let (_, resource) = self
            .api
            .send(
                "sentinel put comment",
                Method::PUT,
                &url,
                Some(&body),
                Idempotent::Yes,
            )
            .await?;
        Ok(resource)
    }

    /// Every comment of incident `name`, following `nextLink` (ARM pages comments).
    pub async fn list_comments(&self, name: &str) -> Result<Vec<Value>, ClientError> {
        self.api
            .list_all(
                "sentinel list comments",
                self.url(&[name, "comments"]),
                "nextLink",
            )
            .await
    }
}

/// Percent-encodes what may not appear raw in a query value.
fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'\'' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
