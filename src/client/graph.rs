//! Microsoft Graph security incidents: incremental listing by `lastUpdateDateTime`
//! (ascending, at most 50 per page, following `@odata.nextLink` — never a deep `$skip`),
//! get, PATCH of changed properties only, and comment POST.

use super::http::{Api, ClientError, Idempotent, Pages};
use reqwest::Method;
use serde_json::{json, Map, Value};

/// Graph's maximum `$top` for incidents.
pub const PAGE_SIZE: usize = 50;

pub struct GraphClient {
    api: Api,
    /// `https://graph.microsoft.com/v1.0`, or the emulator's.
    base_url: String,
}

impl GraphClient {
    pub fn new(api: Api, base_url: impl Into<String>) -> Self {
        GraphClient {
            api,
            base_url: base_url.into().trim_end_matches('/').to_string(),
        }
    }

    /// Every incident changed at or after `since` (all incidents when `None`), with
    /// alerts, oldest change first. Pages are requested one after another.
    pub async fn list_changed(&self, since: Option<&str>) -> Result<Vec<Value>, ClientError> {
        let url = self.changed_url(since);
        self.api
            .list_all("graph list incidents", url, "@odata.nextLink")
            .await
    }

    /// The same listing as [`Self::list_changed`], one page at a time.
    pub fn changed_pages(&self, since: Option<&str>) -> Pages<'_> {
        self.api.pages(
            "graph list incidents",
            self.changed_url(since),
            "@odata.nextLink",
        )
    }

    fn changed_url(&self, since: Option<&str>) -> String {
        let mut url = format!("{}/security/incidents?$orderby=lastUpdateDateTime%20asc&$top={PAGE_SIZE}&$expand=alerts", self.base_url);
        if let Some(since) = since {
            url.push_str(&format!(
                "&$filter=lastUpdateDateTime%20ge%20{}",
                since.replace('+', "%2B")
            ));
        }
        url
    }

    /// One incident with its alerts, or `None` if it does not exist.
    pub async fn get(&self, id: &str) -> Result<Option<Value>, ClientError> {
        let url = format!("{}/security/incidents/{id}?$expand=alerts", self.base_url);
        self.api.get_optional("graph get incident", &url).await
    }

    /// PATCHes exactly `changes`. An empty change set sends nothing and returns `None`.
    pub async fn patch(
        &self,
        id: &str,
        changes: &Map<String, Value>,
    ) -> Result<Option<Value>, ClientError> {
        if changes.is_empty() {
            return Ok(None);
        }
        let url = format!("{}/security/incidents/{id}", self.base_url);
        let body = Value::Object(changes.clone());
        let (_, updated) = self
            .api
            .send(
                "graph update incident",
                Method::PATCH,
                &url,
                Some(&body),
                Idempotent::Yes,
            )
            .await?;
        Ok(Some(updated))
    }

    /// Adds a comment; returns the incident's comments as Graph reports them.
    pub async fn add_comment(&self, id: &str, text: &str) -> Result<Vec<Value>, ClientError> {
        let url = format!("{}/security/incidents/{id}/comments", self.base_url);
        let body =
            json!({ "@odata.type": "microsoft.graph.security.alertComment", "comment": text });
        let (_, all) = self
            .api
            .send(
                "graph add comment",
                Method::POST,
                &url,
                Some(&body),
                Idempotent::No,
            )
            .await?;
        Ok(all["value"].as_array().cloned().unwrap_or_default())
    }
}
