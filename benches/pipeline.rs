//! Filter → map → enrich → validate over realistic Graph incidents (3–4 KB, alerts with
//! several kinds of evidence), for two packs: the default pack, and the small
//! `benches/packs/comparable` pack the size of the mapping issue 2's targets were
//! measured with. Each runs next to a hand-written Rust twin that produces the same
//! bodies byte for byte (checked before timing), plus scaling to two worker threads.
//!
//! Run: `cargo bench --features bench --bench pipeline` (criterion statistics, then a
//! summary with incidents/s and the Rhai : Rust ratio, 1 and 2 threads, per pack).

#[path = "pipeline/hand_written.rs"]
mod hand_written;

use criterion::Criterion;
use rulebridge::model::Side;
use rulebridge::rules::{CompiledPack, RunOptions, Verdict};
use rulebridge::schema;
use rulebridge::snapshot::PackSnapshot;
use serde_json::{json, Value};
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

/// A pack and its hand-written Rust twin.
struct Subject {
    name: &'static str,
    pack: CompiledPack,
    rust: fn(&CompiledPack, &Value) -> Option<Value>,
    /// Whether the Rust twin is checked to produce the pack's bodies exactly.
    checked: bool,
}

fn load(dir: &str) -> CompiledPack {
    let snapshot = PackSnapshot::read(Path::new(dir), Some(Path::new("schemas"))).unwrap();
    CompiledPack::build(snapshot).unwrap_or_else(|p| panic!("{dir}: {p:#?}"))
}

fn main() {
    // PIPELINE_RULES=dir times another pack in place of the default one (against the
    // default pack's Rust twin, which then does other work: no equality check).
    let rules = std::env::var("PIPELINE_RULES").ok();
    let subjects = [
        Subject {
            name: "default pack",
            pack: load(rules.as_deref().unwrap_or("rules")),
            rust: hand_written::default_pack,
            checked: rules.is_none(),
        },
        Subject {
            name: "comparable pack",
            pack: load("benches/packs/comparable"),
            rust: hand_written::core_fields,
            checked: true,
        },
    ];
    let opts = RunOptions {
        sync_time: "2026-03-05T00:00:00Z".into(),
        linked: true,
        twin: rulebridge::rules::Twin::Rulebridge,
        explain: false,
    };
    let set = incidents(512);
    // Equal work: each Rust twin must produce exactly what its pack produces.
    for subject in subjects.iter().filter(|s| s.checked) {
        for incident in &set {
            let rhai = rhai_pipeline(&subject.pack, incident, &opts);
            let rust = (subject.rust)(&subject.pack, incident);
            assert_eq!(
                rhai, rust,
                "{}: the Rust twin differs on {incident}",
                subject.name
            );
        }
    }
    // For instruction counts, which unlike time are stable on a shared VM:
    //   PIPELINE_ONLY=rhai|rust|core-rhai|core-rust|none valgrind --tool=callgrind <bench binary>
    // and (Ir(x) - Ir(none)) / 512 is the cost of one incident.
    if let Ok(only) = std::env::var("PIPELINE_ONLY") {
        let (default, core) = (&subjects[0], &subjects[1]);
        for incident in &set {
            match only.as_str() {
                "rhai" => drop(black_box(rhai_pipeline(&default.pack, incident, &opts))),
                "rust" => drop(black_box((default.rust)(&default.pack, incident))),
                "core-rhai" => drop(black_box(rhai_pipeline(&core.pack, incident, &opts))),
                "core-rust" => drop(black_box((core.rust)(&core.pack, incident))),
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
    for subject in &subjects {
        let id = subject.name.replace(' ', "_");
        group.bench_function(format!("rhai_{id}_per_incident"), |b| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % set.len();
                black_box(rhai_pipeline(&subject.pack, &set[k], &opts))
            })
        });
        group.bench_function(format!("hand_written_rust_{id}_per_incident"), |b| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % set.len();
                black_box((subject.rust)(&subject.pack, &set[k]))
            })
        });
    }
    group.finish();

    let rounds = 40;
    println!(
        "\nsummary ({} incidents, mean {} bytes of JSON, {} rounds):",
        set.len(),
        mean_size,
        rounds
    );
    for subject in &subjects {
        let rhai = |i: &Arc<Value>| {
            black_box(rhai_pipeline(&subject.pack, i, &opts));
        };
        let rust = |i: &Arc<Value>| {
            black_box((subject.rust)(&subject.pack, i));
        };
        throughput(2, &set, 2, &rhai); // warm every thread's engine
        let rhai1 = throughput(1, &set, rounds, &rhai);
        let rhai2 = throughput(2, &set, rounds, &rhai);
        let rust1 = throughput(1, &set, rounds, &rust);
        let rust2 = throughput(2, &set, rounds, &rust);
        println!(
            "  {}{}:",
            subject.name,
            if subject.checked {
                ""
            } else {
                " (not the default pack: Rust does other work)"
            }
        );
        println!("    rhai pipeline   1 thread {:>9.0} incidents/s   2 threads {:>9.0} incidents/s   scaling {:.2}x", rhai1, rhai2, rhai2 / rhai1);
        println!("    hand-written    1 thread {:>9.0} incidents/s   2 threads {:>9.0} incidents/s   scaling {:.2}x", rust1, rust2, rust2 / rust1);
        println!("    rhai / rust     {:.2} (1 thread)", rhai1 / rust1);
        stage_breakdown(&subject.pack, &set, &opts);
    }
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
    println!("    per incident:   {}", parts.join(", "));
}
