//! A small Prometheus registry: counters, gauges and histograms with labels, rendered
//! in the text exposition format 0.0.4 for `/metrics`, plus quantiles over the recent
//! raw observations of a histogram for human summaries (`demo` prints p50/p95).
//!
//! One mutex guards everything: the sync records a handful of samples per request to
//! a rate-limited API, so contention is nil and a dependency is not worth it.
//! Pure (no I/O); `ops_server` serves it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};

/// Polls of one side: `side` = defender|sentinel, `result` = ok|interrupted (a transient
/// failure or a shutdown stopped it; the next cycle starts again from the cursor).
pub const POLLS: Counter = Counter("rulebridge_polls_total");
/// Incidents whose change on `side` was written to the other side (one per incident and
/// direction, however many fields; a create counts as a Defender change).
pub const CHANGES: Counter = Counter("rulebridge_changes_total");
/// Writes to one side, per `side` and `result`.
pub const WRITES: Counter = Counter("rulebridge_writes_total");
/// Incidents currently dead-lettered.
pub const DEAD_LETTERS: Gauge = Gauge("rulebridge_dead_letters");
/// From a change on one side to its write on the other.
pub const SYNC_LAG: Histogram = Histogram("rulebridge_sync_lag_seconds");
/// Rule errors, per `rule`.
pub const RULE_ERRORS: Counter = Counter("rulebridge_rule_errors_total");
/// 1 for the running rule pack's `version`.
pub const PACK_INFO: Gauge = Gauge("rulebridge_pack_info");
/// Rule pack reloads, per `result`.
pub const RELOADS: Counter = Counter("rulebridge_reloads_total");
/// 1 while a reload attempt runs past `reload.stuck_after_secs` (it was abandoned).
pub const RELOAD_STUCK: Gauge = Gauge("rulebridge_reload_stuck");
/// HTTP requests sent to one API (pages, retries and reads for comments included), per
/// `side`, `method` and `status` (`none`: no response). Counted in the HTTP layer.
pub const API_CALLS: Counter = Counter("rulebridge_api_calls_total");
/// 1 while Graph's `$expand=alerts` + `$filter` fails and alerts are read per incident.
pub const EXPAND_FALLBACK: Gauge = Gauge("rulebridge_graph_expand_fallback");
/// Listed Defender changes while Graph cannot expand alerts, by `result` = kept (the
/// kept alerts stood in) | read (read in full); and kept copies `dropped` by alert
/// changes.
pub const KEPT_ALERTS: Counter = Counter("rulebridge_kept_alerts_total");
/// Time windows of a poll, per `side` and `result` = listed|split|walked.
pub const POLL_WINDOWS: Counter = Counter("rulebridge_poll_windows_total");
/// The backfill's progress through its time range, 0 to 1 (1 when none is running).
pub const BACKFILL_PROGRESS: Gauge = Gauge("rulebridge_backfill_progress");
/// Seconds until the backfill is done at this process's pace so far (0 when done).
pub const BACKFILL_ETA: Gauge = Gauge("rulebridge_backfill_eta_seconds");
/// The last `x-ms-ratelimit-remaining-*` an API sent, per `side`.
pub const RATELIMIT_REMAINING: Gauge = Gauge("rulebridge_ratelimit_remaining");
/// Requests per `side` and `purpose` (write, poll, hint, comments, retry, scan, sweep,
/// backfill: `client::budget`), counted where `API_CALLS` is.
pub const API_CALLS_BY_PURPOSE: Counter = Counter("rulebridge_api_calls_by_purpose_total");
/// Requests held back, per `side` and `cause` = budget (our limiter) | retry_after (the
/// service's 429/503), and the seconds they waited.
pub const THROTTLED_WAITS: Counter = Counter("rulebridge_throttled_waits_total");
pub const THROTTLED_WAIT_SECONDS: Counter = Counter("rulebridge_throttled_wait_seconds_total");
/// Requests our limiter had on hand for `side` when a background pass last asked.
pub const BUDGET_TOKENS: Gauge = Gauge("rulebridge_budget_tokens");
/// Background passes (`purpose` = scan, sweep, backfill, retry) ended early on `side`
/// because the budget was below their reserve.
pub const BUDGET_DEFERRED: Counter = Counter("rulebridge_budget_deferred_total");
/// From a push hook's arrival to the end of the reconcile it asked for (when it wrote).
pub const HOOK_LAG: Histogram = Histogram("rulebridge_hook_lag_seconds");
/// From a comment's creation on one side to its copy on the other.
pub const COMMENT_LAG: Histogram = Histogram("rulebridge_comment_lag_seconds");
/// Linked incidents the sweep visits (closed, quiet ones retire from it).
pub const SWEEP_LINKS: Gauge = Gauge("rulebridge_sweep_links");
/// How long one full sweep takes at the current size and share of the budget.
pub const SWEEP_FULL_SECONDS: Gauge = Gauge("rulebridge_sweep_full_seconds");
/// Push-hook requests, per `result` (accepted, coalesced or why one was refused).
pub const HOOKS: Counter = Counter("rulebridge_hooks_total");
/// Reconciles the push hook asked for, per `outcome`.
pub const HOOK_SYNCS: Counter = Counter("rulebridge_hook_syncs_total");
/// Incidents waiting for the reconcile a hook asked for.
pub const HOOK_QUEUE: Gauge = Gauge("rulebridge_hook_queue");

/// A counter's name. Each kind has its own type, so recording a gauge with `inc` or
/// observing a counter is a compile error rather than a series silently dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(pub &'static str);

/// A gauge's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(pub &'static str);

/// A histogram's name (observations in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(pub &'static str);

/// A metric name of any kind.
pub trait Name: Copy {
    const KIND: Kind;
    fn name(self) -> &'static str;
}

impl Name for Counter {
    const KIND: Kind = Kind::Counter;
    fn name(self) -> &'static str {
        self.0
    }
}

impl Name for Gauge {
    const KIND: Kind = Kind::Gauge;
    fn name(self) -> &'static str {
        self.0
    }
}

impl Name for Histogram {
    const KIND: Kind = Kind::Histogram;
    fn name(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::fmt::Display for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::fmt::Display for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Upper bounds of the histogram buckets, in seconds; `+Inf` is implied.
pub const BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Raw observations kept per histogram for [`Metrics::quantile`].
const RING: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label pairs sorted by name, so the same labels in any order are one series.
type LabelSet = Vec<(&'static str, String)>;

enum Series {
    Value(f64),
    Histogram {
        /// Per bucket, not cumulative (the last is `+Inf`); summed when rendered.
        counts: [u64; BUCKETS.len() + 1],
        sum: f64,
        count: u64,
    },
}

struct Family {
    kind: Kind,
    help: String,
    series: BTreeMap<LabelSet, Series>,
    recent: VecDeque<f64>,
}

/// The registry. Share it as `Arc<Metrics>`; every method takes `&self`.
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with rulebridge's metrics described.
    pub fn new() -> Metrics {
        let metrics = Metrics::empty();
        for (name, kind, help) in [
            (
                POLLS.0,
                Kind::Counter,
                "Polls of one side, by result (ok or interrupted).",
            ),
            (CHANGES.0, Kind::Counter,
                "Incidents whose change on one side was written to the other.",
            ),
            (WRITES.0, Kind::Counter, "Writes to one side, by result."),
            (DEAD_LETTERS.0, Kind::Gauge,
                "Incidents currently dead-lettered.",
            ),
            (SYNC_LAG.0, Kind::Histogram,
                "Seconds from a change on one side to its write on the other.",
            ),
            (RULE_ERRORS.0, Kind::Counter, "Rule errors, by rule."),
            (PACK_INFO.0, Kind::Gauge,
                "The running rule pack: 1 for its version (content hash).",
            ),
            (RELOADS.0, Kind::Counter, "Rule pack reloads, by result."),
            (RELOAD_STUCK.0, Kind::Gauge,
                "1 while the last reload attempt is stuck (abandoned after reload.stuck_after_secs).",
            ),
            (
                API_CALLS.0,
                Kind::Counter,
                "HTTP requests sent to one API, by method and status.",
            ),
            (EXPAND_FALLBACK.0, Kind::Gauge,
                "1 while Graph fails $expand=alerts with $filter and alerts are read per incident.",
            ),
            (KEPT_ALERTS.0, Kind::Counter,
                "While Graph cannot expand alerts: listed changes completed from kept alerts (kept) or read in full (read), and kept copies dropped by alert changes (dropped).",
            ),
            (POLL_WINDOWS.0, Kind::Counter,
                "Time windows a poll listed, split (over a page) or walked page by page.",
            ),
            (BACKFILL_PROGRESS.0, Kind::Gauge,
                "Progress of the backfill through its time range (1 when none runs).",
            ),
            (BACKFILL_ETA.0, Kind::Gauge,
                "Seconds until the backfill is done at the pace so far (0 when done).",
            ),
            (RATELIMIT_REMAINING.0, Kind::Gauge,
                "The last x-ms-ratelimit-remaining-* value an API sent.",
            ),
            (API_CALLS_BY_PURPOSE.0, Kind::Counter,
                "HTTP requests sent to one API, by what they were for.",
            ),
            (THROTTLED_WAITS.0, Kind::Counter,
                "Requests held back by the budget or by the service's Retry-After.",
            ),
            (THROTTLED_WAIT_SECONDS.0, Kind::Counter,
                "Seconds requests were held back by the budget or by the service's Retry-After.",
            ),
            (BUDGET_TOKENS.0, Kind::Gauge,
                "Requests the budget had on hand when a background pass last asked.",
            ),
            (BUDGET_DEFERRED.0, Kind::Counter,
                "Background passes ended early because the budget was below their reserve.",
            ),
            (HOOK_LAG.0, Kind::Histogram,
                "From a push hook's arrival to the end of the reconcile it asked for (when it wrote).",
            ),
            (COMMENT_LAG.0, Kind::Histogram,
                "From a comment's creation on one side to its copy on the other.",
            ),
            (SWEEP_LINKS.0, Kind::Gauge,
                "Linked incidents the sweep visits (closed, quiet ones retire from it).",
            ),
            (SWEEP_FULL_SECONDS.0, Kind::Gauge,
                "How long one full sweep takes at the current size and budget share.",
            ),
            (HOOKS.0, Kind::Counter,
                "Push-hook requests, by result (accepted, coalesced, or why refused).",
            ),
            (HOOK_SYNCS.0, Kind::Counter,
                "Reconciles a push hook asked for, by outcome.",
            ),
            (HOOK_QUEUE.0, Kind::Gauge,
                "Incidents waiting for the reconcile a push hook asked for.",
            ),
        ] {
            metrics.describe_as(name, kind, help);
        }
        // Zero until the state says otherwise, so an alert on it works from the start.
        metrics.set_gauge(DEAD_LETTERS, &[], 0.0);
        metrics.set_gauge(EXPAND_FALLBACK, &[], 0.0);
        metrics
    }

    /// A registry with nothing described.
    pub fn empty() -> Metrics {
        Metrics {
            families: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Family>> {
        // A panic elsewhere mid-update leaves numbers at worst one sample off.
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `name` with its help text (re-describing replaces the help).
    pub fn describe<N: Name>(&self, name: N, help: &str) {
        self.describe_as(name.name(), N::KIND, help);
    }

    fn describe_as(&self, name: &'static str, kind: Kind, help: &str) {
        let mut families = self.lock();
        let family = families.entry(name).or_insert_with(|| Family {
            kind,
            help: String::new(),
            series: BTreeMap::new(),
            recent: VecDeque::new(),
        });
        debug_assert_eq!(
            family.kind, kind,
            "{name} described twice as different kinds"
        );
        family.help = help.to_string();
    }

    /// Runs `f` on the series, creating family (undescribed: no help) and series as
    /// needed. The typed names keep kinds apart; only two constants spelling one name
    /// as different kinds could still disagree (a panic in debug builds).
    fn with_series(
        &self,
        name: &'static str,
        kind: Kind,
        labels: &[(&'static str, &str)],
        f: impl FnOnce(&mut Series, &mut VecDeque<f64>),
    ) {
        let mut families = self.lock();
        let family = families.entry(name).or_insert_with(|| Family {
            kind,
            help: String::new(),
            series: BTreeMap::new(),
            recent: VecDeque::new(),
        });
        if family.kind != kind {
            debug_assert!(false, "{name} is a {:?}, not a {kind:?}", family.kind);
            return;
        }
        let series = family
            .series
            .entry(label_set(labels))
            .or_insert_with(|| match kind {
                Kind::Histogram => Series::Histogram {
                    counts: [0; BUCKETS.len() + 1],
                    sum: 0.0,
                    count: 0,
                },
                _ => Series::Value(0.0),
            });
        f(series, &mut family.recent);
    }

    /// Adds 1 to a counter.
    pub fn inc(&self, name: Counter, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1.0);
    }

    /// Adds `value` to a counter; counters only go up, so a negative or NaN value is
    /// ignored.
    pub fn add(&self, name: Counter, labels: &[(&'static str, &str)], value: f64) {
        if value.is_nan() || value < 0.0 {
            return;
        }
        self.with_series(name.0, Kind::Counter, labels, |series, _| {
            if let Series::Value(v) = series {
                *v += value;
            }
        });
    }

    pub fn set_gauge(&self, name: Gauge, labels: &[(&'static str, &str)], value: f64) {
        self.with_series(name.0, Kind::Gauge, labels, |series, _| {
            if let Series::Value(v) = series {
                *v = value;
            }
        });
    }

    /// Sets one series of a gauge and removes the family's others: an info metric such
    /// as the pack version shows only the current value, not every value it ever had.
    pub fn replace_gauge(&self, name: Gauge, labels: &[(&'static str, &str)], value: f64) {
        if let Some(family) = self.lock().get_mut(name.0) {
            if family.kind == Kind::Gauge {
                family.series.clear();
            }
        }
        self.set_gauge(name, labels, value);
    }

    /// Records one observation (seconds) in a histogram and in its ring of recent
    /// observations. NaN is ignored.
    pub fn observe(&self, name: Histogram, labels: &[(&'static str, &str)], seconds: f64) {
        if seconds.is_nan() {
            return;
        }
        self.with_series(name.0, Kind::Histogram, labels, |series, recent| {
            if let Series::Histogram { counts, sum, count } = series {
                let bucket = BUCKETS
                    .iter()
                    .position(|&le| seconds <= le)
                    .unwrap_or(BUCKETS.len());
                counts[bucket] += 1;
                *sum += seconds;
                *count += 1;
            }
            if recent.len() == RING {
                recent.pop_front();
            }
            recent.push_back(seconds);
        });
    }

    /// The `q` quantile (0..=1) of a histogram's last 10,000 observations over all its
    /// label sets, interpolated between the nearest ranks; `None` without observations.
    pub fn quantile(&self, name: Histogram, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) {
            return None;
        }
        let mut values: Vec<f64> = self.lock().get(name.0)?.recent.iter().copied().collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = q * (values.len() - 1) as f64;
        let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
        Some(values[low] + (values[high] - values[low]) * (rank - low as f64))
    }

    /// A counter's or gauge's value, or a histogram's observation count; `None` for a
    /// series never recorded.
    pub fn value(&self, name: impl Name, labels: &[(&'static str, &str)]) -> Option<f64> {
        let families = self.lock();
        match families.get(name.name())?.series.get(&label_set(labels))? {
            Series::Value(v) => Some(*v),
            Series::Histogram { count, .. } => Some(*count as f64),
        }
    }

    /// Everything, in the Prometheus text format 0.0.4: families by name, series by
    /// labels, so two renders of the same state are byte-identical.
    pub fn render(&self) -> String {
        let families = self.lock();
        let mut out = String::new();
        for (name, family) in families.iter() {
            if !family.help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            }
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for (labels, series) in &family.series {
                match series {
                    Series::Value(v) => {
                        let _ =
                            writeln!(out, "{name}{} {}", render_labels(labels, None), number(*v));
                    }
                    Series::Histogram { counts, sum, count } => {
                        let mut cumulative = 0;
                        for (i, n) in counts.iter().enumerate() {
                            cumulative += n;
                            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| number(*b));
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                render_labels(labels, Some(&le))
                            );
                        }
                        let plain = render_labels(labels, None);
                        let _ = writeln!(out, "{name}_sum{plain} {}", number(*sum));
                        let _ = writeln!(out, "{name}_count{plain} {count}");
                    }
                }
            }
        }
        out
    }
}

fn label_set(labels: &[(&'static str, &str)]) -> LabelSet {
    let mut set: LabelSet = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    set.sort();
    set
}

/// `{a="x",le="0.5"}`, or nothing without labels.
fn render_labels(labels: &LabelSet, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escapes only backslash and newline (quotes are literal there).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Prometheus float syntax: Rust prints infinities as `inf`, the format wants `+Inf`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_samples_in_a_stable_order() {
        let m = Metrics::empty();
        let (b, a) = (Counter("b_total"), Gauge("a"));
        m.describe(b, "B things.");
        m.describe(a, "A level.");
        m.inc(b, &[("side", "sentinel"), ("result", "ok")]);
        m.inc(b, &[("result", "ok"), ("side", "defender")]);
        m.add(b, &[("side", "defender"), ("result", "ok")], 2.5);
        m.add(b, &[("side", "defender"), ("result", "ok")], -7.0);
        m.set_gauge(a, &[], 4.0);
        let text = m.render();
        assert_eq!(
            text,
            "# HELP a A level.\n\
             # TYPE a gauge\n\
             a 4\n\
             # HELP b_total B things.\n\
             # TYPE b_total counter\n\
             b_total{result=\"ok\",side=\"defender\"} 3.5\n\
             b_total{result=\"ok\",side=\"sentinel\"} 1\n"
        );
        assert_eq!(m.render(), text);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let m = Metrics::empty();
        m.describe(RULE_ERRORS, "Errors \\ by \"rule\"\nper pack.");
        m.inc(RULE_ERRORS, &[("rule", "a\"b\\c\nd")]);
        assert_eq!(
            m.render(),
            "# HELP rulebridge_rule_errors_total Errors \\\\ by \"rule\"\\nper pack.\n\
             # TYPE rulebridge_rule_errors_total counter\n\
             rulebridge_rule_errors_total{rule=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let m = Metrics::empty();
        m.describe(SYNC_LAG, "Lag.");
        for s in [0.05, 0.1, 0.7, 3.0, 400.0] {
            m.observe(SYNC_LAG, &[], s);
        }
        m.observe(SYNC_LAG, &[("side", "defender")], f64::INFINITY);
        let text = m.render();
        let expected_unlabelled = [
            "rulebridge_sync_lag_seconds_bucket{le=\"0.1\"} 2",
            "rulebridge_sync_lag_seconds_bucket{le=\"0.5\"} 2",
            "rulebridge_sync_lag_seconds_bucket{le=\"1\"} 3",
            "rulebridge_sync_lag_seconds_bucket{le=\"2\"} 3",
            "rulebridge_sync_lag_seconds_bucket{le=\"5\"} 4",
            "rulebridge_sync_lag_seconds_bucket{le=\"10\"} 4",
            "rulebridge_sync_lag_seconds_bucket{le=\"30\"} 4",
            "rulebridge_sync_lag_seconds_bucket{le=\"60\"} 4",
            "rulebridge_sync_lag_seconds_bucket{le=\"120\"} 4",
            "rulebridge_sync_lag_seconds_bucket{le=\"300\"} 4",
            "rulebridge_sync_lag_seconds_bucket{le=\"+Inf\"} 5",
            &format!(
                "rulebridge_sync_lag_seconds_sum {}",
                0.05 + 0.1 + 0.7 + 3.0 + 400.0
            ),
            "rulebridge_sync_lag_seconds_count 5",
        ]
        .join("\n");
        assert!(
            text.starts_with(&format!(
                "# HELP rulebridge_sync_lag_seconds Lag.\n# TYPE rulebridge_sync_lag_seconds histogram\n{expected_unlabelled}\n"
            )),
            "{text}"
        );
        assert!(text.contains(
            "rulebridge_sync_lag_seconds_bucket{side=\"defender\",le=\"300\"} 0\n\
             rulebridge_sync_lag_seconds_bucket{side=\"defender\",le=\"+Inf\"} 1\n\
             rulebridge_sync_lag_seconds_sum{side=\"defender\"} +Inf\n\
             rulebridge_sync_lag_seconds_count{side=\"defender\"} 1\n"
        ));
        assert_eq!(m.value(SYNC_LAG, &[]), Some(5.0));
    }

    #[test]
    fn quantiles_come_from_the_recent_observations() {
        let m = Metrics::new();
        assert_eq!(m.quantile(SYNC_LAG, 0.5), None);
        for i in 1..=100 {
            m.observe(SYNC_LAG, &[], f64::from(i));
        }
        assert_eq!(m.quantile(SYNC_LAG, 0.0), Some(1.0));
        assert_eq!(m.quantile(SYNC_LAG, 0.5), Some(50.5));
        assert!((m.quantile(SYNC_LAG, 0.95).unwrap() - 95.05).abs() < 1e-9);
        assert_eq!(m.quantile(SYNC_LAG, 1.5), None);
        // The ring keeps the last 10,000: older values stop counting.
        for _ in 0..RING {
            m.observe(SYNC_LAG, &[], 7.0);
        }
        assert_eq!(m.quantile(SYNC_LAG, 1.0), Some(7.0));
        assert_eq!(m.value(SYNC_LAG, &[]), Some(10_100.0));
    }

    #[test]
    fn new_describes_every_sync_metric_and_info_gauges_replace() {
        let m = Metrics::new();
        m.replace_gauge(PACK_INFO, &[("version", "abc")], 1.0);
        m.replace_gauge(PACK_INFO, &[("version", "def")], 1.0);
        let text = m.render();
        for name in [
            POLLS.0,
            CHANGES.0,
            WRITES.0,
            DEAD_LETTERS.0,
            SYNC_LAG.0,
            RULE_ERRORS.0,
            PACK_INFO.0,
            RELOADS.0,
            RELOAD_STUCK.0,
            API_CALLS.0,
            EXPAND_FALLBACK.0,
            KEPT_ALERTS.0,
            POLL_WINDOWS.0,
            BACKFILL_PROGRESS.0,
            RATELIMIT_REMAINING.0,
            HOOKS.0,
            HOOK_SYNCS.0,
            HOOK_QUEUE.0,
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(text.contains("rulebridge_dead_letters 0\n"));
        assert!(text.contains("rulebridge_pack_info{version=\"def\"} 1\n"));
        assert!(!text.contains("abc"));
    }

    #[test]
    fn readme_documents_every_metric() {
        let readme = include_str!("../README.md");
        let text = Metrics::new().render();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert!(names.len() >= 14, "{names:?}");
        for name in names {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "README's Metrics table lacks {name}"
            );
        }
    }

    #[test]
    fn is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
        let m = std::sync::Arc::new(Metrics::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                let m = m.clone();
                s.spawn(move || (0..1000).for_each(|_| m.inc(API_CALLS, &[("side", "defender")])));
            }
        });
        assert_eq!(m.value(API_CALLS, &[("side", "defender")]), Some(4000.0));
    }
}
