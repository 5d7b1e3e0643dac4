//! Microsoft Sentinel incidents (ARM): incremental listing by
//! `properties/lastModifiedTimeUtc` (following the opaque `nextLink`), get, PUT with the
//! etag (a 409 is [`ClientError::Conflict`]: re-read and re-plan, never overwrite), and
//! comments.

use super::http::{Api, ClientError, Idempotent, Pages};
use reqwest::Method;
use serde_json::{json, Value};

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

    fn url(&self, suffix: &str) -> String {
        format!(
            "{}{suffix}?api-version={}",
            self.collection, self.api_version
        )
    }

    /// Every incident modified at or after `since` (all when `None`), oldest first.
    pub async fn list_changed(&self, since: Option<&str>) -> Result<Vec<Value>, ClientError> {
        self.api
            .list_all(
                "sentinel list incidents",
                self.changed_url(since),
                "nextLink",
            )
            .await
    }

    /// The same listing as [`Self::list_changed`], one page at a time.
    pub fn changed_pages(&self, since: Option<&str>) -> Pages<'_> {
        self.api.pages(
            "sentinel list incidents",
            self.changed_url(since),
            "nextLink",
        )
    }

    fn changed_url(&self, since: Option<&str>) -> String {
        let mut url = format!(
            "{}&$orderby=properties/lastModifiedTimeUtc%20asc",
            self.url("")
        );
        if let Some(since) = since {
            url.push_str(&format!(
                "&$filter=properties/lastModifiedTimeUtc%20ge%20{}",
                since.replace('+', "%2B")
            ));
        }
        url
    }

    pub async fn get(&self, name: &str) -> Result<Option<Value>, ClientError> {
        self.api
            .get_optional("sentinel get incident", &self.url(&format!("/{name}")))
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
                &self.url(&format!("/{name}")),
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
        let url = self.url(&format!("/{name}/comments/{comment_id}"));
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

    pub async fn list_comments(&self, name: &str) -> Result<Vec<Value>, ClientError> {
        let (_, body) = self
            .api
            .send(
                "sentinel list comments",
                Method::GET,
                &self.url(&format!("/{name}/comments")),
                None,
                Idempotent::Yes,
            )
            .await?;
        Ok(body["value"].as_array().cloned().unwrap_or_default())
    }
}
