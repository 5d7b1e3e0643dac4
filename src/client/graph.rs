//! Microsoft Graph security incidents: listing by `lastUpdateDateTime` windows (at most
//! 50 per page), get, PATCH of changed properties only, and comment POST.
//!
//! The listing promises neither order nor stable pages: Graph ignores `$orderby` on
//! incidents and its `@odata.nextLink`s are `$skip` offsets over a live set
//! (`reference/observed-behaviour.md`), so callers bound every query by a time window and
//! trust only a window that fits in one page (`sync::poll`). Every request says
//! `Prefer: include-unknown-enum-members`: without it, newer members (`awaitingAction`,
//! alerts' `serviceSource` `microsoftSentinel`) come back as `unknownFutureValue`.

use super::http::{time_window_filter, with_segments, Api, ClientError, Idempotent, Page, Pages};
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
            api: api.with_header("prefer", "include-unknown-enum-members"),
            base_url: base_url.into().trim_end_matches('/').to_string(),
        }
    }

    /// The request machinery (service clock, cancellation, rate-limit state).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Every incident changed at or after `since` (all incidents when `None`), with
    /// alerts, following every `nextLink`. For tools and tests on a quiet tenant: over a
    /// live set, offset pages may skip or repeat items.
    pub async fn list_changed(&self, since: Option<&str>) -> Result<Vec<Value>, ClientError> {
        let url = self.window_url(since, None, true, false);
        self.api
            .list_all("graph list incidents", url, "@odata.nextLink")
            .await
    }

    /// The smallest listing there is: for the service's clock (its `Date` header).
    pub async fn probe(&self) -> Result<(), ClientError> {
        let url = format!("{}/security/incidents?$top=1", self.base_url);
        self.api
            .page("graph list incidents", &url, "@odata.nextLink")
            .await
            .map(|_| ())
    }

    /// The first page of the incidents with `from <= lastUpdateDateTime < until`, with
    /// the service's count of them.
    pub async fn window(
        &self,
        from: Option<&str>,
        until: Option<&str>,
        expand_alerts: bool,
    ) -> Result<Page, ClientError> {
        let url = self.window_url(from, until, expand_alerts, true);
        self.api
            .page("graph list incidents", &url, "@odata.nextLink")
            .await
    }

    /// Every page of a window, following `nextLink` (for a window too narrow to split).
    pub fn window_pages(
        &self,
        from: Option<&str>,
        until: Option<&str>,
        expand_alerts: bool,
    ) -> Pages<'_> {
        self.api.pages(
            "graph list incidents",
            self.window_url(from, until, expand_alerts, false),
            "@odata.nextLink",
        )
    }

    /// The first page of the incidents with `status eq '<status>'`, without alerts
    /// (the comment scan's listing: comments come inline, and `$expand` with `$filter`
    /// is what large tenants answer with 500s).
    /// With `since`, only those updated at or after it.
    pub fn status_url(&self, status: &str, since: Option<&str>) -> String {
        let mut url = format!(
            "{}/security/incidents?$top={PAGE_SIZE}&$filter=status%20eq%20'{status}'",
            self.base_url
        );
        if let Some(since) = time_window_filter("lastUpdateDateTime", since, None) {
            url.push_str("%20and%20");
            url.push_str(&since);
        }
        url
    }

    fn window_url(
        &self,
        from: Option<&str>,
        until: Option<&str>,
        expand_alerts: bool,
        count: bool,
    ) -> String {
        let mut url = format!("{}/security/incidents?$top={PAGE_SIZE}", self.base_url);
        if expand_alerts {
            url.push_str("&$expand=alerts");
        }
        if count {
            url.push_str("&$count=true");
        }
        if let Some(filter) = time_window_filter("lastUpdateDateTime", from, until) {
            url.push_str("&$filter=");
            url.push_str(&filter);
        }
        url
    }

    /// One page of the alerts with `from <= lastUpdateDateTime < until` (`alerts_v2`, at
    /// most [`PAGE_SIZE`] a page: Graph does not document its alert page size), with the
    /// service's count of them. `next` is a page's `nextLink` instead of the first page.
    pub async fn changed_alerts(
        &self,
        from: &str,
        until: &str,
        next: Option<&str>,
    ) -> Result<Page, ClientError> {
        let url = match next {
            Some(link) => link.to_string(),
            None => {
                let filter = time_window_filter("lastUpdateDateTime", Some(from), Some(until))
                    .expect("both bounds given");
                format!(
                    "{}/security/alerts_v2?$top={PAGE_SIZE}&$count=true&$filter={filter}",
                    self.base_url
                )
            }
        };
        self.api
            .page("graph list alerts", &url, "@odata.nextLink")
            .await
    }

    /// One incident with its alerts, or `None` if it does not exist.
    pub async fn get(&self, id: &str) -> Result<Option<Value>, ClientError> {
        let url = format!(
            "{}?$expand=alerts",
            with_segments(&self.base_url, &["security", "incidents", id])
        );
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
        let url = with_segments(&self.base_url, &["security", "incidents", id]);
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
        let url = with_segments(&self.base_url, &["security", "incidents", id, "comments"]);
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
