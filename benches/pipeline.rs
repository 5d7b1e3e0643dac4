//! The default pack's filter → map → enrich → validate over realistic Graph incidents
//! (3–4 KB, alerts with several kinds of evidence), next to a hand-written Rust mapping
//! of the same fields, plus scaling to two worker threads.
//!
//! Run: `cargo bench --bench pipeline` (criterion statistics, then a summary with
//! incidents/s and the Rhai : Rust ratio, 1 and 2 threads).

use chrono::DateTime;
use criterion::Criterion;
use rulebridge::model::Side;
use rulebridge::rules::{CompiledPack, RunOptions, Verdict};
use rulebridge::schema;
use rulebridge::snapshot::PackSnapshot;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deterministic, varied incidents: severities, statuses, classifications, 1–4 alerts
/// with device, user, ip, file, process and url evidence, unicode and nulls.
fn incidents(n: usize) -> Vec<Arc<Value>> {
    let severities = [
        "high",
        "medium",
        "low",
        "informational",
        "unknownFutureValue",
    ];
    let statuses = ["active", "inProgress", "resolved", "active", "redirected"];
    let classes = [
        ("truePositive", "malware"),
        ("falsePositive", "notEnoughDataToValidate"),
        ("informationalExpectedActivity", "securityTesting"),
        ("unknown", "unknown"),
    ];
    (0..n)
        .map(|i| {
            let alerts: Vec<Value> = (0..1 + i % 4)
                .map(|a| {
                    let title = ["Suspicious PowerShell command line", "Impossible travel activity", "Ransomware behavior détectée", "Phishing link clicked"][(i + a) % 4];
                    let source = ["microsoftDefenderForEndpoint", "azureAdIdentityProtection", "microsoftDefenderForOffice365"][(i + a) % 3];
                    let category = ["Execution", "InitialAccess", "Impact"][a % 3];
                    let severity = severities[(i + a) % 4];
                    json!({
                        "@odata.type": "#microsoft.graph.security.alert",
                        "id": format!("da6375{i:06}{a}_-96144481{a}"),
                        "title": title, "serviceSource": source, "category": category, "severity": severity, "status": "new",
                        "mitreTechniques": [format!("T{}", 1059 + a), "T1566.001"],
                        "firstActivityDateTime": format!("2026-03-{:02}T{:02}:15:30.1234567Z", 1 + i % 28, a * 3),
                        "lastActivityDateTime": format!("2026-03-{:02}T{:02}:45:00Z", 1 + i % 28, a * 3 + 1),
                        "evidence": [
                            {"@odata.type": "#microsoft.graph.security.deviceEvidence", "deviceDnsName": format!("wks-{:04}.contoso.com", (i * 7 + a) % 997), "osPlatform": "Windows11", "roles": ["compromised"], "verdict": "suspicious"},
                            {"@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": {"accountName": format!("user{}", i % 50), "domainName": "CONTOSO", "userPrincipalName": if i % 13 == 0 { "ceo@contoso.com".to_string() } else { format!("user{}@contoso.com", i % 50) }}},
                            {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": format!("203.0.113.{}", (i + a) % 250), "countryLetterCode": "NL"},
                            {"@odata.type": "#microsoft.graph.security.processEvidence", "processCommandLine": "powershell.exe -enc SQBFAFgA", "imageFile": {"fileName": "powershell.exe", "filePath": "C:\\Windows\\System32"}, "userAccount": {"accountName": "SYSTEM", "userPrincipalName": null}},
                            {"@odata.type": "#microsoft.graph.security.urlEvidence", "url": format!("https://login.contoso-secure{}.example/auth", i % 9)}
                        ]
                    })
                })
                .collect();
            let (class, det) = classes[i % 4];
            let (status, severity) = (statuses[i % 5], severities[i % 5]);
            Arc::new(json!({
                "@odata.type": "#microsoft.graph.security.incident",
                "id": format!("{}", 100000 + i), "tenantId": "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c",
                "incidentWebUrl": format!("https://security.microsoft.com/incident2/{}/overview?tid=b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c", 100000 + i),
                "redirectIncidentId": if statuses[i % 5] == "redirected" { json!(format!("{}", 99000 + i)) } else { Value::Null },
                "displayName": format!("Multi-stage incident involving Execution & Initial access on {} endpoints", 1 + i % 4),
                "createdDateTime": "2026-03-01T08:43:35.5533333Z", "lastUpdateDateTime": "2026-03-02T09:35:45.1133333Z",
                "assignedTo": if i % 3 == 0 { Value::Null } else { json!(format!("analyst{}@contoso.com", i % 5)) },
                "classification": class, "determination": det, "status": status, "severity": severity,
                "customTags": if i % 2 == 0 { json!(["Demo", "Ransomware"]) } else { json!([]) }, "systemTags": [],
                "description": "Microsoft observed activity consistent with hands-on-keyboard attacks in your environment. …",
                "comments": [], "alerts": alerts
            }))
        })
        .collect()
}

/// The same mapping as rules/map/microsoft-standard.rhai + enrich/vip-accounts.rhai, in Rust.
fn rust_to_sentinel(pack: &CompiledPack, i: &Value) -> Option<Value> {
    let key = |v: &Value| {
        v.as_str()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let status_key = key(&i["status"]);
    let alerts = i["alerts"].as_array();
    if key(&i["severity"]) == "informational" && alerts.is_some_and(|a| a.is_empty()) {
        return None;
    }
    let status = match status_key.as_str() {
        "active" => "New",
        "inprogress" | "awaitingaction" => "Active",
        "resolved" | "redirected" => "Closed",
        _ => "Active",
    };
    let mut severity = match key(&i["severity"]).as_str() {
        "high" => "High",
        "medium" => "Medium",
        "low" => "Low",
        "informational" => "Informational",
        _ => "Medium",
    };
    let id = i["id"].as_str().unwrap_or("");
    let mut p = serde_json::Map::new();
    p.insert(
        "title".into(),
        i["displayName"].as_str().map_or(
            json!(format!("Microsoft Defender XDR incident {id}")),
            |t| json!(t),
        ),
    );
    p.insert("status".into(), json!(status));
    let owner = i["assignedTo"]
        .as_str()
        .map(|a| json!({"userPrincipalName": a, "email": a, "assignedTo": a, "ownerType": "User"}));
    p.insert("owner".into(), owner.unwrap_or(Value::Null));
    match key(&i["classification"]).as_str() {
        "truepositive" => {
            p.insert("classification".into(), json!("TruePositive"));
            p.insert("classificationReason".into(), json!("SuspiciousActivity"));
        }
        "informationalexpectedactivity" => {
            p.insert("classification".into(), json!("BenignPositive"));
            p.insert(
                "classificationReason".into(),
                json!("SuspiciousButExpected"),
            );
        }
        "falsepositive" => {
            p.insert("classification".into(), json!("FalsePositive"));
            let reason = if key(&i["determination"]) == "notenoughdatatovalidate" {
                "InaccurateData"
            } else {
                "IncorrectAlertLogic"
            };
            p.insert("classificationReason".into(), json!(reason));
        }
        _ if status == "Closed" => {
            p.insert("classification".into(), json!("Undetermined"));
        }
        _ => {}
    }
    let mut labels: Vec<String> = Vec::new();
    for t in i["customTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !labels.iter().any(|l| l == t) {
            labels.push(t.to_string());
        }
    }
    labels.push(format!("defender-xdr:{id}"));
    if status_key == "redirected" {
        labels.push("redirected".into());
    }
    let alerts = alerts.map(Vec::as_slice).unwrap_or(&[]);
    let distinct = |f: &dyn Fn(&Value) -> Vec<String>| -> Vec<String> {
        let mut seen = BTreeSet::new();
        alerts
            .iter()
            .flat_map(f)
            .filter(|s| seen.insert(s.clone()))
            .collect()
    };
    let evidence = |field: &'static [&'static str]| {
        move |a: &Value| -> Vec<String> {
            a["evidence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    field
                        .iter()
                        .try_fold(e, |v, k| v.get(*k))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        }
    };
    let upns = distinct(&evidence(&["userAccount", "userPrincipalName"]));
    let times = |f: &str| {
        alerts
            .iter()
            .filter_map(|a| {
                a[f].as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            })
            .collect::<Vec<_>>()
    };
    if let Some(t) = times("firstActivityDateTime").into_iter().min() {
        p.insert("firstActivityTimeUtc".into(), json!(t.to_rfc3339()));
    }
    if let Some(t) = times("lastActivityDateTime").into_iter().max() {
        p.insert("lastActivityTimeUtc".into(), json!(t.to_rfc3339()));
    }
    let mut text = format!(
        "Microsoft Defender XDR incident {id}: {}",
        i["incidentWebUrl"].as_str().unwrap_or("")
    );
    text.push_str("\n\n");
    text.push_str(i["description"].as_str().unwrap_or(""));
    text.push_str(&format!(
        "\n\nAlerts ({}): {}",
        alerts.len(),
        distinct(&|a| vec![a["title"].as_str().unwrap_or("").to_string()]).join(", ")
    ));
    text.push_str(&format!(
        "\nSources: {}",
        distinct(&|a| vec![a["serviceSource"].as_str().unwrap_or("").to_string()]).join(", ")
    ));
    text.push_str(&format!("\nAccounts: {}", upns.join(", ")));
    text.push_str(&format!(
        "\nDevices: {}",
        distinct(&evidence(&["deviceDnsName"])).join(", ")
    ));
    text.push_str(&format!(
        "\nIP addresses: {}",
        distinct(&evidence(&["ipAddress"])).join(", ")
    ));
    text.push_str(&format!(
        "\nURLs: {}",
        distinct(&evidence(&["url"])).join(", ")
    ));
    p.insert(
        "description".into(),
        json!(text.chars().take(5000).collect::<String>()),
    );
    if upns.iter().any(|u| {
        pack.tables
            .get("vip_accounts")
            .and_then(|t| t.get(u))
            .is_some()
    }) {
        labels.push("VIP".into());
        severity = "High";
    }
    p.insert("severity".into(), json!(severity));
    p.insert(
        "labels".into(),
        Value::Array(
            labels
                .into_iter()
                .map(|l| json!({"labelName": l}))
                .collect(),
        ),
    );
    let body = json!({"properties": p});
    // Same guarantees as the rule pipeline: input and output are schema-checked.
    assert!(pack.schemas.check(schema::DEFENDER_INCIDENT, i).is_empty());
    assert!(
        pack.schemas
            .check(schema::SENTINEL_INCIDENT, &body)
            .is_empty(),
        "{body}"
    );
    Some(body)
}

fn rhai_pipeline(pack: &CompiledPack, incident: &Arc<Value>, opts: &RunOptions) -> Option<Value> {
    match pack
        .run_pipeline(incident.clone(), Side::Defender, opts)
        .expect("default pack maps every generated incident")
        .verdict
    {
        Verdict::Synced { body } => Some(body),
        Verdict::Filtered { .. } => None,
    }
}

/// Incidents per second over `rounds` passes of `work`, on `threads` threads.
fn throughput(
    threads: usize,
    set: &[Arc<Value>],
    rounds: usize,
    work: &(dyn Fn(&Arc<Value>) + Sync),
) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for r in 0..rounds {
                    for (k, incident) in set.iter().enumerate() {
                        if (k + r) % threads == t {
                            work(incident);
                        }
                    }
                }
            });
        }
    });
    (set.len() * rounds) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let snapshot = PackSnapshot::read(Path::new("rules"), Some(Path::new("schemas"))).unwrap();
    let pack = CompiledPack::build(snapshot).unwrap_or_else(|p| panic!("{p:#?}"));
    let opts = RunOptions {
        sync_time: "2026-03-05T00:00:00Z".into(),
        linked: true,
        explain: false,
    };
    let set = incidents(512);
    // For instruction counts, which unlike time are stable on a shared VM:
    //   PIPELINE_ONLY=rhai|rust|none valgrind --tool=callgrind <bench binary>
    // and (Ir(rhai or rust) - Ir(none)) / 512 is the cost of one incident.
    if let Ok(only) = std::env::var("PIPELINE_ONLY") {
        for incident in &set {
            match only.as_str() {
                "rhai" => drop(black_box(rhai_pipeline(&pack, incident, &opts))),
                "rust" => drop(black_box(rust_to_sentinel(&pack, incident))),
                _ => {}
            }
        }
        return;
    }
    let mean_size = set.iter().map(|i| i.to_string().len()).sum::<usize>() / set.len();

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(4));
    let mut group = c.benchmark_group("pipeline");
    group.bench_function("rhai_default_pack_per_incident", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % set.len();
            black_box(rhai_pipeline(&pack, &set[k], &opts))
        })
    });
    group.bench_function("hand_written_rust_per_incident", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % set.len();
            black_box(rust_to_sentinel(&pack, &set[k]))
        })
    });
    group.finish();

    let rounds = 40;
    let rhai = |i: &Arc<Value>| {
        black_box(rhai_pipeline(&pack, i, &opts));
    };
    let rust = |i: &Arc<Value>| {
        black_box(rust_to_sentinel(&pack, i));
    };
    throughput(2, &set, 2, &rhai); // warm every thread's engine
    let rhai1 = throughput(1, &set, rounds, &rhai);
    let rhai2 = throughput(2, &set, rounds, &rhai);
    let rust1 = throughput(1, &set, rounds, &rust);
    let rust2 = throughput(2, &set, rounds, &rust);
    println!(
        "\nsummary ({} incidents, mean {} bytes of JSON, {} rounds):",
        set.len(),
        mean_size,
        rounds
    );
    println!("  rhai pipeline   1 thread {:>9.0} incidents/s   2 threads {:>9.0} incidents/s   scaling {:.2}x", rhai1, rhai2, rhai2 / rhai1);
    println!("  hand-written    1 thread {:>9.0} incidents/s   2 threads {:>9.0} incidents/s   scaling {:.2}x", rust1, rust2, rust2 / rust1);
    println!("  rhai / rust     {:.2} (1 thread)", rhai1 / rust1);
    stage_breakdown(&pack, &set, &opts);
}

/// Where one incident's time goes, stage by stage (1 thread, mean over the set).
fn stage_breakdown(pack: &CompiledPack, set: &[Arc<Value>], opts: &RunOptions) {
    let mut totals = [Duration::ZERO; 5];
    let rounds = 10;
    for _ in 0..rounds {
        for incident in set {
            let t = Instant::now();
            black_box(pack.schemas.check(schema::DEFENDER_INCIDENT, incident));
            totals[0] += t.elapsed();
            let prepared = pack.prepare(incident.clone(), Side::Defender, opts);
            let mut steps = Vec::new();
            let t = Instant::now();
            let filtered = pack.run_filter(&prepared, None, &mut steps).unwrap();
            totals[1] += t.elapsed();
            if filtered.is_some() {
                continue;
            }
            let t = Instant::now();
            let target = pack.run_map(&prepared, None, opts, &mut steps).unwrap();
            totals[2] += t.elapsed();
            let t = Instant::now();
            let target = pack
                .run_enrich(&prepared, target, None, opts, &mut steps)
                .unwrap();
            totals[3] += t.elapsed();
            let t = Instant::now();
            black_box(pack.finish(Side::Defender, &target, &steps).unwrap());
            totals[4] += t.elapsed();
        }
    }
    let n = (set.len() * rounds) as u32;
    let names = ["input schema", "filter", "map", "enrich", "output + schema"];
    let parts: Vec<String> = names
        .iter()
        .zip(totals)
        .map(|(name, t)| format!("{name} {:.1} µs", (t / n).as_secs_f64() * 1e6))
        .collect();
    println!("  per incident:   {}", parts.join(", "));
}
