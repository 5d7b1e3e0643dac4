//! A complete local sync: the emulator in-process on a free loopback port, the real
//! clients over HTTP, a SQLite state file and a rule pack. `rulebridge demo`, the
//! integration tests and the benchmarks all stand on this, so they exercise exactly the
//! parts `rulebridge run` uses — only the endpoints differ.
//!
//! Also the judge: [`Testbed::consistency`] compares both sides in the emulator's store
//! field by field, and [`Testbed::quiesce`] runs cycles until nothing is left to write.

use crate::client::{
    Api, Credentials, GraphClient, RateLimiter, RetryPolicy, Secret, SentinelClient, TokenSource,
    ARM_SCOPE, GRAPH_SCOPE,
};
use crate::config::Config;
use crate::emulator::faults::FaultRule;
use crate::emulator::throttle::ThrottleConfig;
use crate::emulator::{seed, Emulator, EmulatorConfig, EmulatorInfo, Observed, Profile};
use crate::metrics::Metrics;
use crate::model::Side;
use crate::rules::{CompiledPack, PackHandle, RunOptions, Verdict};
use crate::service::{build_syncer_tuned, Tuning};
use crate::state::{StateError, StateStore};
use crate::sync::fields::{agree, properties, sentinel_id};
use crate::sync::{SyncError, Syncer};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("starting the emulator: {0}")]
    Emulator(std::io::Error),
    #[error("seeding the emulator: {0}")]
    Seed(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("building the clients: {0}")]
    Client(String),
}

pub struct TestbedOptions {
    /// Generated Graph incidents to seed.
    pub incidents: usize,
    /// Seed of the generator (the same seed, the same incidents).
    pub seed: u64,
    pub faults: Vec<FaultRule>,
    pub state_path: PathBuf,
    pub sweep_batch: usize,
    pub retry: RetryPolicy,
    /// Where the first polls start. The seed is the tenant's history, which tests and
    /// the demo sync whole, so the default reaches back before any seeded stamp; `None`
    /// is the product's default (the first start).
    pub start_from: Option<String>,
    pub backfill: Option<chrono::TimeDelta>,
    /// Clients limited as `run` limits them (else unthrottled, which is why the
    /// emulator's buckets are open by default here; throttling has its own tests).
    pub production_rate_limits: bool,
    /// How the emulator behaves: as the services are observed to (the default) or as
    /// the docs read (`Profile::Strict`).
    pub profile: Profile,
    /// The observed behaviour's knobs (throttling, page sizes, seeding rates).
    pub observed: Observed,
    /// The sweep-only change detection of earlier versions (see `Tuning::digests`).
    pub sweep_only: bool,
    /// The configuration the syncer is built from, changed by the test before the
    /// build (shares, retirement, rates).
    pub configure: Option<fn(&mut Config)>,
}

impl TestbedOptions {
    pub fn new(incidents: usize, state_path: PathBuf) -> Self {
        TestbedOptions {
            incidents,
            seed: 1,
            faults: Vec::new(),
            state_path,
            sweep_batch: 50,
            profile: Profile::default(),
            // Everything the services are observed to do, but their rate limits: the
            // testbed's clients are unthrottled for speed (see production_rate_limits).
            observed: Observed {
                throttle: ThrottleConfig::unlimited(),
                ..Observed::default()
            },
            retry: RetryPolicy {
                max_attempts: 8,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(500),
                timeout: Duration::from_secs(5),
            },
            start_from: Some("2000-01-01T00:00:00Z".into()),
            backfill: None,
            production_rate_limits: false,
            sweep_only: false,
            configure: None,
        }
    }
}

pub struct Testbed {
    pub emulator: Emulator,
    pub info: EmulatorInfo,
    pub pack: Arc<PackHandle>,
    pub metrics: Arc<Metrics>,
    pub syncer: Arc<Syncer>,
    options: TestbedOptions,
}

/// Clients for the emulator, unthrottled (for an emulator whose buckets are open).
pub fn emulator_clients(
    info: &EmulatorInfo,
    retry: &RetryPolicy,
) -> Result<(GraphClient, SentinelClient), TestbedError> {
    emulator_clients_limited(info, retry, false)
}

/// Clients for the emulator; with `production_limits`, limited as `run` limits them
/// (Graph 150/min, ARM 10/s), else unthrottled.
pub fn emulator_clients_limited(
    info: &EmulatorInfo,
    retry: &RetryPolicy,
    production_limits: bool,
) -> Result<(GraphClient, SentinelClient), TestbedError> {
    let http = reqwest::Client::new();
    let limiter = |scope: &str| match (production_limits, scope == GRAPH_SCOPE) {
        (false, _) => RateLimiter::new(100_000.0, 10_000),
        (true, true) => crate::client::graph_rate_limiter(),
        (true, false) => crate::client::sentinel_rate_limiter(),
    };
    let api = |scope: &str| {
        let tokens = Arc::new(TokenSource::new(
            http.clone(),
            info.token_url.clone(),
            Credentials {
                tenant_id: info.tenant_id.clone(),
                client_id: info.client_id.clone(),
                client_secret: Secret::new(info.client_secret.clone()),
            },
            scope.into(),
        ));
        Api::new(http.clone(), tokens, limiter(scope), retry.clone())
    };
    let graph = GraphClient::new(api(GRAPH_SCOPE), &info.graph_base_url);
    let sentinel = SentinelClient::new(api(ARM_SCOPE), &info.sentinel_incidents_url)
        .map_err(TestbedError::Client)?;
    Ok((graph, sentinel))
}

/// The service configuration that points `run` at an emulator: what `demo` runs with
/// and what every testbed syncer is built from. Unthrottled unless the options ask for
/// production limits (the emulator's own buckets are open in the testbed).
pub fn service_config(info: &EmulatorInfo, options: &TestbedOptions) -> Config {
    let mut config = Config::default();
    config.defender.tenant_id = Some(info.tenant_id.clone());
    config.defender.graph_url = Some(info.graph_base_url.clone());
    config.defender.token_url = Some(info.token_url.clone());
    config.sentinel.incidents_url = Some(info.sentinel_incidents_url.clone());
    config.sentinel.token_url = Some(info.token_url.clone());
    if !options.production_rate_limits {
        config.defender.requests_per_minute = 6_000_000.0;
        config.sentinel.requests_per_second = 100_000.0;
    }
    config.credentials.kind = Some("secret".into());
    config.credentials.client_id = Some(info.client_id.clone());
    config.sync.state = options.state_path.clone();
    config.sync.sweep_batch = options.sweep_batch;
    config.sync.start_from = options.start_from.clone();
    config.sync.backfill = options
        .backfill
        .map(|span| format!("{}m", span.num_minutes().max(1)));
    config.server.listen = "127.0.0.1:0".parse().expect("literal");
    if let Some(configure) = options.configure {
        configure(&mut config);
    }
    config
}

/// The environment the emulator's app signs in from: its public test secret.
pub fn emulator_env(info: &EmulatorInfo) -> HashMap<String, String> {
    HashMap::from([(
        "AZURE_CLIENT_SECRET".to_string(),
        info.client_secret.clone(),
    )])
}

impl Testbed {
    /// Starts the emulator, seeds it and builds a syncer over a state file.
    pub async fn start(
        pack: CompiledPack,
        options: TestbedOptions,
    ) -> Result<Testbed, TestbedError> {
        let config = EmulatorConfig {
            faults: options.faults.clone(),
            profile: options.profile,
            observed: options.observed.clone(),
            ..EmulatorConfig::default()
        };
        let emulator = Emulator::start("127.0.0.1:0".parse().expect("literal"), config)
            .await
            .map_err(TestbedError::Emulator)?;
        emulator
            .store()
            .seed_many(seed::generate(options.incidents, options.seed))
            .map_err(TestbedError::Seed)?;
        let info = emulator.info();
        let pack = Arc::new(PackHandle::new(pack));
        let metrics = Arc::new(Metrics::new());
        let syncer = Arc::new(Self::syncer(&info, &pack, &metrics, &options)?);
        Ok(Testbed {
            emulator,
            info,
            pack,
            metrics,
            syncer,
            options,
        })
    }

    /// The syncer `run` would build from [`service_config`], through the same function.
    fn syncer(
        info: &EmulatorInfo,
        pack: &Arc<PackHandle>,
        metrics: &Arc<Metrics>,
        options: &TestbedOptions,
    ) -> Result<Syncer, TestbedError> {
        let tuning = Tuning {
            retry: options.retry.clone(),
            // Longer than the slowest emulated response the tests inject.
            comment_retry_grace: Duration::from_millis(1500),
            digests: !options.sweep_only,
        };
        build_syncer_tuned(
            &service_config(info, options),
            &emulator_env(info),
            pack.clone(),
            metrics.clone(),
            &tuning,
        )
        .map_err(|e| TestbedError::Client(e.to_string()))
    }

    /// The options the syncer was built from.
    pub fn options(&self) -> &TestbedOptions {
        &self.options
    }

    /// The options a [`Self::restart`] builds the syncer from.
    pub fn options_mut(&mut self) -> &mut TestbedOptions {
        &mut self.options
    }

    /// A fresh syncer over the same state file (what a restarted process would have).
    pub fn restart(&mut self) -> Result<(), TestbedError> {
        self.syncer = Arc::new(Self::syncer(
            &self.info,
            &self.pack,
            &self.metrics,
            &self.options,
        )?);
        Ok(())
    }

    /// See [`quiesce`].
    pub async fn quiesce(&self, max_cycles: usize) -> Result<usize, SyncError> {
        quiesce(&self.syncer, max_cycles).await
    }

    /// Compares the two sides in the emulator's store.
    pub fn consistency(&self) -> Consistency {
        consistency(
            &self.emulator,
            &self.pack.current(),
            self.syncer.state().as_ref(),
        )
    }
}

/// Runs cycles until one writes nothing after every link has been swept since the last
/// write (comments have no change stamp, so only a full sweep proves calm) and no
/// comment POST is of unknown outcome. Returns the
/// cycles run; gives up after `max_cycles`.
pub async fn quiesce(syncer: &Syncer, max_cycles: usize) -> Result<usize, SyncError> {
    let mut calm_sweeps = 0usize;
    for cycle in 1..=max_cycles {
        let [d, s, sweep] = syncer.cycle().await?;
        let wrote = d.written + s.written + sweep.written;
        let interrupted =
            d.interrupted.is_some() || s.interrupted.is_some() || sweep.interrupted.is_some();
        let counts = syncer.state().counts()?;
        if wrote > 0 || interrupted || counts.comment_outbox > 0 {
            calm_sweeps = 0;
        } else {
            calm_sweeps += sweep.seen;
        }
        if calm_sweeps >= counts.links as usize && !interrupted && wrote == 0 {
            return Ok(cycle);
        }
        if counts.comment_outbox > 0 {
            // A comment POST of unknown outcome waits out its grace period.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(max_cycles)
}

/// How far the two sides agree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Consistency {
    pub defender_incidents: usize,
    pub synced: usize,
    pub filtered: usize,
    pub sentinel_incidents: usize,
    /// Sentinel incidents that are not the twin of a Defender incident (incidents
    /// Microsoft's connector made are not counted: they are not rulebridge's).
    pub strays: usize,
    /// Of `synced`, twins that are the connector's incidents, linked instead of created.
    pub connector_twins: usize,
    /// Defender incidents the rules sync that have no twin.
    pub missing: Vec<String>,
    /// `incident field: defender-side value != sentinel value`.
    pub disagreements: Vec<String>,
    /// Comments present on one side only (`incident: text`).
    pub comment_gaps: Vec<String>,
    /// Comments that appear more than once on a side.
    pub duplicate_comments: Vec<String>,
}

impl Consistency {
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.disagreements.is_empty()
            && self.strays == 0
            && self.comment_gaps.is_empty()
            && self.duplicate_comments.is_empty()
    }
}

/// Checks every Defender incident the pack syncs against its twin: field by field (in
/// the Sentinel vocabulary, as the map renders Defender), comments both ways (each
/// side's comments must all be present, once, on the other), and no strays.
pub fn consistency(
    emulator: &Emulator,
    pack: &CompiledPack,
    state: &dyn StateStore,
) -> Consistency {
    let store = emulator.store();
    let tenant = emulator.info().tenant_id;
    let mut report = Consistency {
        defender_incidents: store.graph.len(),
        sentinel_incidents: store.sentinel.len(),
        ..Consistency::default()
    };
    let mut twins = std::collections::HashSet::new();
    let mut connector_made = 0;
    for (id, incident) in store.graph.iter() {
        let link = state.link(id).ok().flatten();
        let linked = link.as_ref().is_some_and(|l| l.created);
        // A link to another name than ours is to the incident Microsoft's connector made.
        let ours = sentinel_id(&tenant, id);
        let connector_twin = link
            .as_ref()
            .filter(|l| l.created && !l.sentinel_id.eq_ignore_ascii_case(&ours))
            .map(|l| l.sentinel_id.to_ascii_lowercase());
        let opts = RunOptions {
            sync_time: chrono::Utc::now().to_rfc3339(),
            linked,
            twin: if connector_twin.is_some() {
                crate::rules::Twin::Connector
            } else {
                crate::rules::Twin::Rulebridge
            },
            explain: false,
        };
        let view = match pack.run_pipeline(Arc::new(incident.clone()), Side::Defender, &opts) {
            Ok(outcome) => match outcome.verdict {
                Verdict::Synced { body } => properties(&body),
                Verdict::Filtered { .. } => {
                    report.filtered += 1;
                    continue;
                }
            },
            Err(e) => {
                report.disagreements.push(format!("{id}: rule error: {e}"));
                continue;
            }
        };
        let sid = connector_twin.clone().unwrap_or(ours);
        let Some(twin) = store.sentinel.get(&sid) else {
            report.missing.push(id.clone());
            continue;
        };
        twins.insert(sid.clone());
        report.synced += 1;
        let sprops = properties(twin);
        if connector_twin.is_some() {
            // The connector owns the other fields (and keeps them in sync itself, which
            // the emulator does not model): only what the rules add must be there.
            connector_made += 1;
            let added = view.get("labels").and_then(Value::as_array);
            let present = sprops.get("labels").and_then(Value::as_array);
            for label in added.into_iter().flatten() {
                let name = &label["labelName"];
                if !present
                    .into_iter()
                    .flatten()
                    .any(|l| l["labelName"] == *name)
                {
                    report.disagreements.push(format!(
                        "{id} labels: {name} missing on the connector's incident"
                    ));
                }
            }
            comment_check(id, incident, store.sentinel_comments.get(&sid), &mut report);
            continue;
        }
        for (field, value) in &view {
            let other = sprops.get(field).unwrap_or(&Value::Null);
            if !agree(field, value, other) {
                report
                    .disagreements
                    .push(format!("{id} {field}: {value} != {other}"));
            }
        }
        comment_check(id, incident, store.sentinel_comments.get(&sid), &mut report);
    }
    report.connector_twins = connector_made;
    // Incidents Microsoft's connector made are not ours, linked or not.
    report.strays = store
        .sentinel
        .iter()
        .filter(|(k, v)| {
            !twins.contains(*k)
                && !v["properties"]["providerName"].as_str().is_some_and(|p| {
                    crate::client::sentinel::CONNECTOR_PROVIDERS
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(p))
                })
        })
        .count();
    report
}

fn comment_check(
    id: &str,
    incident: &Value,
    sentinel: Option<&std::collections::BTreeMap<String, Value>>,
    report: &mut Consistency,
) {
    let d_texts: Vec<String> = incident["comments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["comment"].as_str().map(str::to_string))
        .collect();
    let s_texts: Vec<String> = sentinel
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|c| c["properties"]["message"].as_str().map(str::to_string))
        .collect();
    // A copied comment carries its origin's text first, then an attribution line.
    let contains = |haystack: &[String], text: &str| {
        haystack.iter().any(|h| {
            h == text
                || h.starts_with(&format!("{text}\n\n— "))
                || text.starts_with(&format!("{h}\n\n— "))
        })
    };
    if d_texts.len() != s_texts.len() {
        report.comment_gaps.push(format!(
            "{id}: {} comments in Defender, {} in Sentinel",
            d_texts.len(),
            s_texts.len()
        ));
    }
    for t in &d_texts {
        if !contains(&s_texts, t) {
            report.comment_gaps.push(format!(
                "{id}: only in Defender: {}",
                crate::rules::natives::clip(t, 60)
            ));
        }
    }
    for t in &s_texts {
        if !contains(&d_texts, t) {
            report.comment_gaps.push(format!(
                "{id}: only in Sentinel: {}",
                crate::rules::natives::clip(t, 60)
            ));
        }
    }
    for (side, texts) in [("Defender", &d_texts), ("Sentinel", &s_texts)] {
        let mut seen = std::collections::HashSet::new();
        for t in texts.iter().filter(|t| t.contains("\n\n— ")) {
            if !seen.insert(t) {
                report.duplicate_comments.push(format!(
                    "{id}: twice in {side}: {}",
                    crate::rules::natives::clip(t, 60)
                ));
            }
        }
    }
}
