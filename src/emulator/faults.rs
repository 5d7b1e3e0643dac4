//! Fault injection: the failures a real tenant produces, on demand, so clients and the
//! sync are tested against them — 429 with `Retry-After`, 500/503, slow responses,
//! connections closed mid-response, and etag races (another writer changes a Sentinel
//! incident between a client's GET and its PUT).
//!
//! Faults are rules `kind@endpoint`, each firing either with a probability per request
//! (`--faults 429@graph-list=0.1,drop@any=0.01`) or for the next N matching requests
//! (the control API, `POST /_emulator/faults`, which tests use). A 429 may carry its
//! `Retry-After` in seconds (`429:N`) or as an HTTP date (`429date:N`, RFC 7231
//! IMF-fixdate, which ARM documents as possible).

use super::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// Which API operation a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    Any,
    Token,
    /// The managed-identity endpoints (IMDS and App Service).
    Identity,
    GraphList,
    GraphGet,
    GraphPatch,
    GraphComment,
    /// `/v1.0/security/alerts_v2`.
    GraphAlerts,
    SentinelList,
    SentinelGet,
    SentinelPut,
    SentinelDelete,
    SentinelComment,
}

impl Endpoint {
    /// Classifies a request by method and path; `None` for the control API.
    pub fn of(method: &str, path: &str) -> Option<Endpoint> {
        if path.starts_with("/_emulator/") {
            return None;
        }
        if path.ends_with("/oauth2/v2.0/token") {
            return Some(Endpoint::Token);
        }
        if path.starts_with("/metadata/identity/") || path == "/msi/token" {
            return Some(Endpoint::Identity);
        }
        if path.starts_with("/v1.0/security/alerts_v2") {
            return Some(Endpoint::GraphAlerts);
        }
        if let Some(rest) = path.strip_prefix("/v1.0/security/incidents") {
            return Some(
                match (
                    method,
                    rest.matches('/').count(),
                    rest.ends_with("/comments"),
                ) {
                    ("GET", 0, _) => Endpoint::GraphList,
                    ("POST", _, true) => Endpoint::GraphComment,
                    ("PATCH", _, _) => Endpoint::GraphPatch,
                    _ => Endpoint::GraphGet,
                },
            );
        }
        let (_, rest) = path.split_once("/providers/Microsoft.SecurityInsights/incidents")?;
        Some(
            match (
                method,
                rest.trim_end_matches('/').matches('/').count(),
                rest.contains("/comments"),
            ) {
                ("GET", 0, _) => Endpoint::SentinelList,
                (_, _, true) => Endpoint::SentinelComment,
                ("PUT", _, _) => Endpoint::SentinelPut,
                ("DELETE", _, _) => Endpoint::SentinelDelete,
                _ => Endpoint::SentinelGet,
            },
        )
    }

    fn parse(s: &str) -> Result<Endpoint, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            format!("unknown endpoint '{s}' (any, token, identity, graph-list, graph-get, graph-patch, graph-comment, graph-alerts, sentinel-list, sentinel-get, sentinel-put, sentinel-delete, sentinel-comment)")
        })
    }
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// 429 with `Retry-After: seconds`.
    Throttle { retry_after: u64 },
    /// 429 with `Retry-After` as an HTTP date `retry_after` seconds ahead.
    ThrottleDate { retry_after: u64 },
    /// 500 or 503.
    ServerError { status: u16 },
    /// The response is delayed by this many milliseconds.
    Slow { delay_ms: u64 },
    /// The connection is closed after the headers and part of the body.
    Drop,
    /// Another writer bumps the Sentinel incident's etag just before this request.
    EtagRace,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(flatten)]
    pub kind: FaultKind,
    pub endpoint: Endpoint,
    /// Probability per matching request (0–1); used when `count` is absent.
    #[serde(default)]
    pub rate: f64,
    /// Fire for the next `count` matching requests, then retire.
    #[serde(default)]
    pub count: Option<u32>,
    /// Let this many matching requests through before the rule applies ("fail the
    /// third page of a listing": `after: 2, count: 1`).
    #[serde(default)]
    pub after: u32,
}

/// Parses `--faults`: comma-separated `kind[:param]@endpoint=rate`, e.g.
/// `429:2@graph-list=0.1,503@any=0.05,slow:1500@sentinel-put=0.2,drop@graph-patch=0.01,etag-race@sentinel-put=0.1`
/// (`429:N` sets Retry-After to N seconds, default 1; `429date:N` sends it as the HTTP
/// date N seconds ahead; `slow:MS` the delay, default 2000).
pub fn parse_spec(spec: &str) -> Result<Vec<FaultRule>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_one)
        .collect()
}

fn parse_one(item: &str) -> Result<FaultRule, String> {
    let (what, rest) = item
        .split_once('@')
        .ok_or_else(|| format!("'{item}': expected kind@endpoint=rate"))?;
    let (endpoint, rate) = rest
        .split_once('=')
        .ok_or_else(|| format!("'{item}': expected kind@endpoint=rate"))?;
    let rate: f64 = rate
        .parse()
        .map_err(|_| format!("'{item}': rate '{rate}' is not a number"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("'{item}': rate must be between 0 and 1"));
    }
    let (kind, param) = match what.split_once(':') {
        Some((k, p)) => (
            k,
            Some(
                p.parse::<u64>()
                    .map_err(|_| format!("'{item}': '{p}' is not a number"))?,
            ),
        ),
        None => (what, None),
    };
    let kind = match kind {
        "429" => FaultKind::Throttle {
            retry_after: param.unwrap_or(1),
        },
        "429date" => FaultKind::ThrottleDate {
            retry_after: param.unwrap_or(1),
        },
        "500" | "503" => FaultKind::ServerError {
            status: kind.parse().expect("matched digits"),
        },
        "slow" => FaultKind::Slow {
            delay_ms: param.unwrap_or(2000),
        },
        "drop" => FaultKind::Drop,
        "etag-race" => FaultKind::EtagRace,
        other => {
            return Err(format!(
                "'{item}': unknown fault '{other}' (429, 429date, 500, 503, slow, drop, etag-race)"
            ))
        }
    };
    Ok(FaultRule {
        kind,
        endpoint: Endpoint::parse(endpoint)?,
        rate,
        count: None,
        after: 0,
    })
}

/// The active fault rules and the randomness that decides rate-based ones.
#[derive(Debug)]
pub struct Faults {
    pub rules: Vec<FaultRule>,
    rng: SplitMix64,
}

impl Faults {
    pub fn new(rules: Vec<FaultRule>, seed: u64) -> Faults {
        Faults {
            rules,
            rng: SplitMix64::new(seed),
        }
    }

    /// The fault to apply to a request to `endpoint`, if any (first matching rule wins).
    pub fn pick(&mut self, endpoint: Endpoint) -> Option<FaultKind> {
        let mut fired = None;
        for i in 0..self.rules.len() {
            let (target, count, rate) = (
                self.rules[i].endpoint,
                self.rules[i].count,
                self.rules[i].rate,
            );
            if target != Endpoint::Any && target != endpoint {
                continue;
            }
            if self.rules[i].after > 0 {
                self.rules[i].after -= 1;
                continue;
            }
            let fires = match count {
                Some(n) => n > 0,
                None => self.rng.chance(rate),
            };
            if fires {
                fired = Some(i);
                break;
            }
        }
        let i = fired?;
        let kind = self.rules[i].kind.clone();
        if let Some(n) = self.rules[i].count.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.rules.remove(i);
            }
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_every_kind() {
        let rules = parse_spec("429:2@graph-list=0.1, 503@any=0.05,slow:1500@sentinel-put=0.2,drop@graph-patch=0.01,etag-race@sentinel-put=1").unwrap();
        assert_eq!(rules[0].kind, FaultKind::Throttle { retry_after: 2 });
        assert_eq!(rules[1].endpoint, Endpoint::Any);
        assert_eq!(rules[2].kind, FaultKind::Slow { delay_ms: 1500 });
        assert_eq!(rules[4].kind, FaultKind::EtagRace);
        assert_eq!(
            parse_spec("429date:3@sentinel-put=1").unwrap()[0].kind,
            FaultKind::ThrottleDate { retry_after: 3 }
        );
        assert!(parse_spec("418@any=0.1")
            .unwrap_err()
            .contains("unknown fault"));
        assert!(parse_spec("429@graph=0.1")
            .unwrap_err()
            .contains("unknown endpoint"));
        assert!(parse_spec("429@any=2").is_err());
    }

    #[test]
    fn counted_rules_fire_exactly_n_times_and_rates_roughly_hold() {
        let mut faults = Faults::new(
            vec![FaultRule {
                kind: FaultKind::Drop,
                endpoint: Endpoint::GraphPatch,
                rate: 0.0,
                count: Some(2),
                after: 0,
            }],
            7,
        );
        assert_eq!(faults.pick(Endpoint::GraphGet), None);
        assert_eq!(faults.pick(Endpoint::GraphPatch), Some(FaultKind::Drop));
        assert_eq!(faults.pick(Endpoint::GraphPatch), Some(FaultKind::Drop));
        assert_eq!(faults.pick(Endpoint::GraphPatch), None);
        let mut faults = Faults::new(parse_spec("500@any=0.25").unwrap(), 42);
        let fired = (0..10_000)
            .filter(|_| faults.pick(Endpoint::SentinelGet).is_some())
            .count();
        assert!((2_000..3_000).contains(&fired), "{fired}");
    }

    #[test]
    fn a_rule_with_after_lets_that_many_requests_through_first() {
        let mut faults = Faults::new(
            vec![FaultRule {
                kind: FaultKind::Drop,
                endpoint: Endpoint::GraphList,
                rate: 0.0,
                count: Some(1),
                after: 2,
            }],
            7,
        );
        assert_eq!(
            faults.pick(Endpoint::GraphGet),
            None,
            "other endpoints do not count"
        );
        assert_eq!(faults.pick(Endpoint::GraphList), None);
        assert_eq!(faults.pick(Endpoint::GraphList), None);
        assert_eq!(faults.pick(Endpoint::GraphList), Some(FaultKind::Drop));
        assert_eq!(faults.pick(Endpoint::GraphList), None);
    }

    #[test]
    fn endpoints_are_classified_from_method_and_path() {
        let s = "/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w/providers/Microsoft.SecurityInsights/incidents";
        assert_eq!(
            Endpoint::of("GET", "/v1.0/security/incidents"),
            Some(Endpoint::GraphList)
        );
        assert_eq!(
            Endpoint::of("GET", "/v1.0/security/incidents/12"),
            Some(Endpoint::GraphGet)
        );
        assert_eq!(
            Endpoint::of("PATCH", "/v1.0/security/incidents/12"),
            Some(Endpoint::GraphPatch)
        );
        assert_eq!(
            Endpoint::of("POST", "/v1.0/security/incidents/12/comments"),
            Some(Endpoint::GraphComment)
        );
        assert_eq!(Endpoint::of("GET", s), Some(Endpoint::SentinelList));
        assert_eq!(
            Endpoint::of("PUT", &format!("{s}/abc")),
            Some(Endpoint::SentinelPut)
        );
        assert_eq!(
            Endpoint::of("PUT", &format!("{s}/abc/comments/c")),
            Some(Endpoint::SentinelComment)
        );
        assert_eq!(Endpoint::of("GET", "/_emulator/info"), None);
        assert_eq!(
            Endpoint::of("GET", "/metadata/identity/oauth2/token"),
            Some(Endpoint::Identity)
        );
        assert_eq!(Endpoint::of("GET", "/msi/token"), Some(Endpoint::Identity));
        assert_eq!(
            parse_spec("503@identity=1").unwrap()[0].endpoint,
            Endpoint::Identity
        );
        assert_eq!(
            Endpoint::of("GET", "/v1.0/security/alerts_v2"),
            Some(Endpoint::GraphAlerts)
        );
    }
}
