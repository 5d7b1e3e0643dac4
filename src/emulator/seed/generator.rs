//! The built-in generator of realistic Graph incidents (`microsoft.graph.security.
//! incident` with expanded alerts and evidence), shaped after the Microsoft examples in
//! `tests/fixtures/microsoft/` and the enums in the shared API reference. It mixes in
//! what real tenants send and a sync must survive: every status and severity (a rare
//! `unknownFutureValue` too), nulls, legacy field names (`tags`, comment `createdBy` /
//! `createdTime`), old and new portal links, unicode and descriptions over Sentinel's
//! 5,000-character limit.
//!
//! Deterministic: the output depends only on `(n, seed)`. Times are offsets back from
//! a fixed instant in the past, never from the clock.

use super::super::rng::SplitMix64;
use chrono::DateTime;
use serde_json::{json, Value};

/// 2025-11-01T00:00:00Z: every generated time lies up to ~200 days before this.
const EPOCH: i64 = 1_761_955_200;
const DAY: i64 = 86_400;

const TACTICS: [&str; 10] = [
    "Initial access",
    "Execution",
    "Persistence",
    "Privilege escalation",
    "Defense evasion",
    "Credential access",
    "Discovery",
    "Lateral movement",
    "Command and control",
    "Impact",
];
const SCOPES: [&str; 4] = [
    "one endpoint",
    "multiple endpoints",
    "one user",
    "multiple users",
];

/// Analysts an incident may be assigned to (UPNs, as the portal sets them).
pub(crate) const ANALYSTS: [&str; 6] = [
    "KaiC@contoso.onmicrosoft.com",
    "soc-tier1@contoso.com",
    "amelie.durand@contoso.com",
    "zhang.wei@contoso.com",
    "siobhan.oconnor@contoso.com",
    "admin@contoso.com",
];

/// (accountName, display name); the display names carry the unicode.
const USERS: [(&str, &str); 8] = [
    ("jdoe", "John Doe"),
    ("amelie.durand", "Amélie Durand"),
    ("zhang.wei", "张伟"),
    ("siobhan.oconnor", "Siobhán O'Connor"),
    ("jmuller", "Jürgen Müller"),
    ("ceo", "Chief Executive Officer"),
    ("svc-backup", "Backup service account"),
    ("a.kowalska", "Anna Kowalska 🛡️"),
];

/// Evidence kinds, by the `@odata.type` suffix.
#[derive(Clone, Copy, PartialEq)]
enum Ev {
    Device,
    User,
    Ip,
    Url,
    File,
    Process,
    Mailbox,
}
const ALL_EVIDENCE: [Ev; 7] = [
    Ev::Device,
    Ev::User,
    Ev::Ip,
    Ev::Url,
    Ev::File,
    Ev::Process,
    Ev::Mailbox,
];

struct AlertKind {
    title: &'static str,
    category: &'static str,
    service: &'static str,
    detection: &'static str,
    mitre: &'static [&'static str],
    evidence: &'static [Ev],
}

const MDE: &str = "microsoftDefenderForEndpoint";
const MDI: &str = "microsoftDefenderForIdentity";
const MDO: &str = "microsoftDefenderForOffice365";
#[rustfmt::skip]
const ALERTS: [AlertKind; 10] = [
    AlertKind { title: "Suspicious PowerShell command line", category: "Execution", service: MDE, detection: MDE, mitre: &["T1059.001"], evidence: &[Ev::Device, Ev::Process, Ev::User] },
    AlertKind { title: "Impossible travel activity", category: "InitialAccess", service: "microsoftDefenderForCloudApps", detection: "microsoftDefenderForCloudApps", mitre: &["T1078"], evidence: &[Ev::User, Ev::Ip] },
    AlertKind { title: "Email messages containing malicious URL removed after delivery", category: "InitialAccess", service: MDO, detection: MDO, mitre: &["T1566.002"], evidence: &[Ev::Mailbox, Ev::Url, Ev::User] },
    AlertKind { title: "Ransomware behavior détectée in the file system", category: "Impact", service: MDE, detection: MDE, mitre: &["T1486", "T1490"], evidence: &[Ev::Device, Ev::File, Ev::Process] },
    AlertKind { title: "'Mimikatz' credential theft tool", category: "CredentialAccess", service: MDE, detection: "antivirus", mitre: &["T1003.001"], evidence: &[Ev::File, Ev::Process, Ev::Device] },
    AlertKind { title: "Unfamiliar sign-in properties", category: "InitialAccess", service: "azureAdIdentityProtection", detection: "azureAdIdentityProtection", mitre: &["T1078.004"], evidence: &[Ev::User, Ev::Ip] },
    AlertKind { title: "Suspicious connection to a command and control server", category: "CommandAndControl", service: MDE, detection: MDE, mitre: &["T1071.001"], evidence: &[Ev::Ip, Ev::Url, Ev::Device] },
    AlertKind { title: "Suspicious execution of hidden file", category: "DefenseEvasion", service: MDE, detection: "antivirus", mitre: &["T1564.001"], evidence: &[Ev::File, Ev::Device] },
    AlertKind { title: "User and IP address reconnaissance (SMB)", category: "Discovery", service: MDI, detection: MDI, mitre: &["T1087.002", "T1049"], evidence: &[Ev::Device, Ev::User, Ev::Ip] },
    AlertKind { title: "疑似横向移动 — suspected lateral movement 🔥", category: "LateralMovement", service: MDI, detection: MDI, mitre: &["T1021.002"], evidence: &[Ev::Device, Ev::User] },
];

const PARAGRAPHS: [&str; 5] = [
    "Microsoft observed activity consistent with hands-on-keyboard attacks in your environment. The attacker ran discovery commands, dumped credentials and moved laterally to additional devices.",
    "Une activité suspecte a été détectée sur plusieurs appareils : exécution de scripts PowerShell encodés et connexions vers une infrastructure de commande et contrôle connue.",
    "检测到可疑的登录活动。攻击者可能已获取有效凭据，并尝试访问敏感资源。建议立即重置受影响用户的密码。",
    "Raspberry Robin worm activity 🐛 spreading through infected USB devices was observed; these infections are a potential precursor to ransomware deployment.",
    "Recommended actions:\n\t• Isolate the affected devices\n\t• Reset the credentials of the involved accounts\n\t• Block the indicators at the perimeter",
];

/// `n` realistic Graph incidents with alerts expanded. Same `(n, seed)`, same bytes.
pub fn generate(n: usize, seed: u64) -> Vec<Value> {
    generate_statuses(n, seed, &STATUSES)
}

/// The statuses a generated incident has, and how often.
const STATUSES: [(&str, u32); 4] = [
    ("active", 55),
    ("inProgress", 20),
    ("resolved", 20),
    ("redirected", 5),
];

/// [`generate`] with `open` (0 to 1) of the incidents active or in progress, the rest
/// resolved or (a few) redirected: a tenant with a long history has mostly closed ones.
pub fn generate_open_share(n: usize, seed: u64, open: f64) -> Vec<Value> {
    let open = open.clamp(0.0, 1.0);
    let per_mille = |share: f64| (share * 1000.0).round() as u32;
    let statuses = [
        ("active", per_mille(open * 0.75)),
        ("inProgress", per_mille(open * 0.25)),
        ("resolved", per_mille((1.0 - open) * 0.95)),
        ("redirected", per_mille((1.0 - open) * 0.05)),
    ];
    generate_statuses(n, seed, &statuses)
}

fn generate_statuses(n: usize, seed: u64, statuses: &[(&str, u32)]) -> Vec<Value> {
    let mut rng = SplitMix64::new(seed);
    let tenant = rng.uuid();
    // Ascending numeric ids with gaps, as a tenant's incident counter shows them.
    let mut ids = Vec::with_capacity(n);
    let mut next = rng.range(100_000, 900_000);
    for _ in 0..n {
        ids.push(next.to_string());
        next += rng.range(1, 3);
    }
    ids.iter()
        .map(|id| incident(&mut rng, &tenant, id, &ids, statuses))
        .collect()
}

/// An RFC 3339 UTC stamp with Graph's 7-digit fraction, sometimes trimmed as the service
/// does (`.1Z`, `.116Z`).
fn stamp(rng: &mut SplitMix64, secs: i64) -> String {
    let base = DateTime::from_timestamp(secs, 0)
        .expect("in range")
        .format("%Y-%m-%dT%H:%M:%S");
    let digits = format!("{:07}", rng.below(10_000_000));
    let keep = *rng.weighted(&[(7usize, 75), (3, 15), (1, 10)]);
    format!("{base}.{}Z", &digits[..keep])
}

fn incident(
    rng: &mut SplitMix64,
    tenant: &str,
    id: &str,
    ids: &[String],
    statuses: &[(&str, u32)],
) -> Value {
    let created = EPOCH - rng.range(DAY as u64, 200 * DAY as u64) as i64;
    let updated = created + rng.below(((EPOCH - created) as u64).min(30 * DAY as u64)) as i64;
    let mut status = *rng.weighted(statuses);
    if status == "redirected" && ids.len() < 2 {
        status = "active"; // nothing to be merged into
    }
    let redirect = (status == "redirected").then(|| {
        let others: Vec<&String> = ids.iter().filter(|o| o.as_str() != id).collect();
        rng.pick(&others).to_string()
    });
    let severity = *rng.weighted(&[
        ("high", 25),
        ("medium", 35),
        ("low", 25),
        ("informational", 10),
        ("unknown", 3),
        ("unknownFutureValue", 2),
    ]);
    let (classification, determination) = classify(rng, status);
    let alerts: Vec<Value> = (0..*rng.weighted(&[
        (0usize, 5),
        (1, 40),
        (2, 28),
        (3, 14),
        (4, 7),
        (5, 3),
        (6, 3),
    ]))
        .map(|_| alert(rng, tenant, id, status, created, updated))
        .collect();
    let display_name = match (alerts.first(), rng.below(4)) {
        (Some(first), 0) => format!(
            "{} on {}",
            first["title"].as_str().unwrap_or("Alert"),
            rng.pick(&SCOPES)
        ),
        _ => format!(
            "Multi-stage incident involving {} & {} on {}{}",
            rng.pick(&TACTICS),
            rng.pick(&TACTICS),
            rng.pick(&SCOPES),
            if rng.chance(0.3) {
                " reported by multiple sources"
            } else {
                ""
            }
        ),
    };
    let url = if rng.chance(0.3) {
        format!("https://security.microsoft.com/incidents/{id}?tid={tenant}")
    } else {
        format!("https://security.microsoft.com/incident2/{id}/overview?tid={tenant}")
    };
    let assigned = if status == "active" && rng.chance(0.5) || rng.chance(0.15) {
        Value::Null
    } else {
        json!(rng.pick(&ANALYSTS))
    };
    let mut tags: Vec<&str> = (0..rng.below(4))
        .map(|_| {
            *rng.pick(&[
                "Demo",
                "Ransomware",
                "VIP",
                "Phishing",
                "Tier1",
                "PCI",
                "Équipe-Paris",
                "要调查",
            ])
        })
        .collect();
    tags.sort_unstable();
    tags.dedup();
    let system_tags = *rng.weighted(&[
        (&[][..], 80),
        (&["Defender Experts"][..], 10),
        (&["Credential Phish"][..], 5),
        (&["Ransomware", "Defender Experts"][..], 5),
    ]);
    let comments: Vec<Value> = (0..*rng.weighted(&[(0u64, 50), (1, 30), (2, 15), (3, 5)]))
        .map(|_| comment(rng, created, updated))
        .collect();

    let mut m = serde_json::Map::new();
    m.insert(
        "@odata.type".into(),
        json!("#microsoft.graph.security.incident"),
    );
    m.insert("id".into(), json!(id));
    m.insert("tenantId".into(), json!(tenant));
    m.insert("status".into(), json!(status));
    m.insert("incidentWebUrl".into(), json!(url));
    m.insert("redirectIncidentId".into(), json!(redirect));
    m.insert("displayName".into(), json!(display_name));
    m.insert("createdDateTime".into(), json!(stamp(rng, created)));
    m.insert("lastUpdateDateTime".into(), json!(stamp(rng, updated)));
    m.insert("assignedTo".into(), assigned);
    m.insert("classification".into(), classification);
    m.insert("determination".into(), determination);
    m.insert("severity".into(), json!(severity));
    // The legacy name appears in one v1.0 example instead of customTags; readers merge.
    match *rng.weighted(&[(0, 85), (1, 10), (2, 5)]) {
        0 => m.insert("customTags".into(), json!(tags)),
        1 => m.insert("tags".into(), json!(tags)),
        _ => m.insert("customTags".into(), Value::Null),
    };
    m.insert("systemTags".into(), json!(system_tags));
    m.insert("description".into(), description(rng));
    if rng.chance(0.4) {
        // Newer payloads only.
        m.insert(
            "lastModifiedBy".into(),
            json!(format!("API-App:{}", rng.pick(&ANALYSTS))),
        );
        m.insert("summary".into(), if rng.chance(0.5) { json!("Defender Experts has identified malicious activity. This incident has been raised for your awareness and should be investigated as usual.") } else { Value::Null });
        m.insert("priorityScore".into(), json!(rng.below(101)));
    }
    let resolving = (status == "resolved" && rng.chance(0.6))
        .then_some("Contained; credentials reset. Clôturé après vérification ✅");
    m.insert("resolvingComment".into(), json!(resolving));
    m.insert("comments".into(), json!(comments));
    m.insert("alerts".into(), json!(alerts));
    Value::Object(m)
}

/// Classification and determination consistent with the status: unclassified while
/// open (null in some payloads), classified when resolved, sometimes early in progress.
fn classify(rng: &mut SplitMix64, status: &str) -> (Value, Value) {
    let classified = status == "resolved" || (status == "inProgress" && rng.chance(0.3));
    if !classified {
        return if rng.chance(0.25) {
            (Value::Null, Value::Null)
        } else {
            (json!("unknown"), json!("unknown"))
        };
    }
    let class = *rng.weighted(&[
        ("truePositive", 45),
        ("falsePositive", 30),
        ("informationalExpectedActivity", 25),
    ]);
    let determinations: &[&str] = match class {
        "truePositive" if status == "inProgress" => &["multiStagedAttack", "malware", "phishing"],
        "truePositive" => &[
            "multiStagedAttack",
            "malware",
            "phishing",
            "compromisedAccount",
            "maliciousUserActivity",
            "apt",
            "unwantedSoftware",
            "other",
        ],
        "falsePositive" => &["notMalicious", "notEnoughDataToValidate", "other"],
        _ => &[
            "securityTesting",
            "securityPersonnel",
            "lineOfBusinessApplication",
            "confirmedActivity",
            "other",
        ],
    };
    let class = if status == "inProgress" {
        "truePositive"
    } else {
        class
    };
    (json!(class), json!(rng.pick(determinations)))
}

fn description(rng: &mut SplitMix64) -> Value {
    match rng.weighted(&[(0, 8), (1, 5), (2, 87)]) {
        0 => Value::Null,
        1 => {
            // Over Sentinel's 5,000-character limit: the mapping must clip it.
            let target = rng.range(5_200, 9_000) as usize;
            let mut text = String::new();
            while text.chars().count() < target {
                let paragraph = rng.pick(&PARAGRAPHS);
                text.push_str(paragraph);
                text.push_str("\n\n");
            }
            json!(text)
        }
        _ => json!(rng.pick(&PARAGRAPHS)),
    }
}

fn comment(rng: &mut SplitMix64, created: i64, updated: i64) -> Value {
    let at = created + rng.below((updated - created) as u64 + 1) as i64;
    let at = stamp(rng, at);
    let text = *rng.pick(&[
        "Demo incident",
        "Investigating — escalated to tier 2.",
        "Faux positif probable, vérification en cours.",
        "已通知用户重置密码",
        "Looks like the pentest 🙂",
    ]);
    let author = *rng.pick(&ANALYSTS);
    if rng.chance(0.25) {
        // Older examples' field names.
        json!({ "comment": text, "createdBy": author, "createdTime": at })
    } else {
        json!({ "@odata.type": "microsoft.graph.security.alertComment", "comment": text, "createdByDisplayName": author, "createdDateTime": at })
    }
}

fn alert(
    rng: &mut SplitMix64,
    tenant: &str,
    incident: &str,
    status: &str,
    created: i64,
    updated: i64,
) -> Value {
    let kind = rng.pick(&ALERTS);
    let alert_id = if rng.chance(0.1) {
        format!(
            "ed{:018}_{}",
            rng.below(1_000_000_000_000_000_000),
            -(rng.below(1 << 31) as i64)
        )
    } else {
        format!(
            "da{:018}_{}",
            rng.below(1_000_000_000_000_000_000),
            rng.below(1 << 32) as i64 - (1 << 31)
        )
    };
    let first = created - rng.below(6 * 3600) as i64;
    let last = first + rng.below(2 * 3600) as i64;
    let alert_status = match status {
        "resolved" => "resolved",
        "inProgress" => *rng.pick(&["new", "inProgress"]),
        _ => "new",
    };
    let evidence: Vec<Value> =
        (0..*rng.weighted(&[(1usize, 40), (2, 30), (3, 17), (4, 8), (5, 5)]))
            .map(|i| {
                // Each kind's typical evidence first, then any kind.
                let ev = kind
                    .evidence
                    .get(i)
                    .copied()
                    .unwrap_or_else(|| *rng.pick(&ALL_EVIDENCE));
                evidence(rng, ev, created)
            })
            .collect();
    json!({
        "@odata.type": "#microsoft.graph.security.alert",
        "id": alert_id, "providerAlertId": alert_id, "incidentId": incident,
        "status": alert_status,
        "severity": rng.pick(&["informational", "low", "medium", "high"]),
        "classification": if status == "resolved" { json!("truePositive") } else { Value::Null },
        "determination": Value::Null,
        "serviceSource": kind.service, "detectionSource": kind.detection,
        "detectorId": rng.uuid(), "tenantId": tenant,
        "title": kind.title, "category": kind.category,
        "alertWebUrl": format!("https://security.microsoft.com/alerts/{alert_id}?tid={tenant}"),
        "mitreTechniques": kind.mitre,
        "createdDateTime": stamp(rng, last + 60), "lastUpdateDateTime": stamp(rng, updated),
        "firstActivityDateTime": stamp(rng, first), "lastActivityDateTime": stamp(rng, last),
        "resolvedDateTime": if alert_status == "resolved" { json!(stamp(rng, updated)) } else { Value::Null },
        "evidence": evidence,
    })
}

fn user_account(rng: &mut SplitMix64) -> Value {
    let (name, display) = *rng.pick(&USERS);
    json!({ "accountName": name, "domainName": "CONTOSO", "userSid": format!("S-1-5-21-{}-{}", rng.range(1_000_000_000, 4_000_000_000), rng.range(1000, 9999)),
            "azureAdUserId": rng.uuid(), "userPrincipalName": format!("{name}@contoso.com"), "displayName": display })
}

fn evidence(rng: &mut SplitMix64, ev: Ev, created: i64) -> Value {
    let device = format!("wks-{:04}", rng.below(2000));
    let mut v = match ev {
        Ev::Device => json!({ "@odata.type": "#microsoft.graph.security.deviceEvidence",
            "mdeDeviceId": rng.hex(40), "azureAdDeviceId": if rng.chance(0.5) { json!(rng.uuid()) } else { Value::Null },
            "deviceDnsName": format!("{device}.contoso.com"), "hostName": device,
            "osPlatform": rng.pick(&["Windows11", "Windows10", "WindowsServer2022", "Linux", "macOS"]), "osBuild": rng.range(17_763, 26_100),
            "riskScore": rng.pick(&["none", "low", "medium", "high"]), "loggedOnUsers": [{ "accountName": rng.pick(&USERS).0, "domainName": "CONTOSO" }],
            "ipInterfaces": [format!("10.{}.{}.{}", rng.below(256), rng.below(256), rng.range(1, 254))] }),
        Ev::User => {
            json!({ "@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": user_account(rng), "stream": Value::Null })
        }
        Ev::Ip => json!({ "@odata.type": "#microsoft.graph.security.ipEvidence",
            "ipAddress": format!("{}.{}.{}.{}", rng.pick(&[203, 198, 185, 45]), rng.below(256), rng.below(256), rng.range(1, 254)),
            "countryLetterCode": rng.pick(&["NL", "US", "FR", "CN", "RU", "BR"]), "stream": Value::Null }),
        Ev::Url => json!({ "@odata.type": "#microsoft.graph.security.urlEvidence",
            "url": format!("https://{}.example/{}", rng.pick(&["login-contoso-secure", "cdn-update", "xn--80ak6aa92e"]), rng.hex(8)) }),
        Ev::File => {
            let name = *rng.pick(&[
                "mimikatz.exe",
                "invoice_2025.pdf.exe",
                "rapport_détaillé.docm",
                "update.ps1",
            ]);
            json!({ "@odata.type": "#microsoft.graph.security.fileEvidence", "detectionStatus": rng.pick(&["detected", "blocked", "prevented"]), "mdeDeviceId": rng.hex(40),
                "fileDetails": { "fileName": name, "filePath": format!("C:\\Users\\{}\\Downloads", rng.pick(&USERS).0), "fileSize": rng.range(1_000, 5_000_000),
                    "filePublisher": Value::Null, "sha1": rng.hex(40), "sha256": rng.hex(64), "signer": Value::Null, "issuer": Value::Null } })
        }
        Ev::Process => json!({ "@odata.type": "#microsoft.graph.security.processEvidence",
            "processId": rng.range(100, 60_000), "parentProcessId": rng.range(100, 60_000),
            "processCommandLine": rng.pick(&["powershell.exe -NoP -W Hidden -enc SQBFAFgA", "rundll32.exe C:\\ProgramData\\a.dll,Start", "cmd.exe /c whoami /all"]),
            "processCreationDateTime": stamp(rng, created - 3600), "parentProcessCreationDateTime": Value::Null,
            "imageFile": { "fileName": "powershell.exe", "filePath": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0", "sha1": rng.hex(40) },
            "userAccount": user_account(rng), "detectionStatus": "detected", "mdeDeviceId": rng.hex(40) }),
        Ev::Mailbox => {
            let account = user_account(rng);
            json!({ "@odata.type": "#microsoft.graph.security.mailboxEvidence", "primaryAddress": account["userPrincipalName"], "upn": account["userPrincipalName"],
                "displayName": account["displayName"], "userAccount": account })
        }
    };
    // The alertEvidence base properties every subtype has.
    let base = json!({ "createdDateTime": stamp(rng, created), "verdict": rng.pick(&["unknown", "suspicious", "malicious", "noThreatsFound"]),
        "remediationStatus": rng.pick(&["none", "remediated", "prevented", "blocked"]), "remediationStatusDetails": Value::Null,
        "roles": if rng.chance(0.5) { json!([rng.pick(&["compromised", "attacker", "contextual", "suspicious"])]) } else { json!([]) },
        "detailedRoles": [], "tags": [] });
    let map = v.as_object_mut().expect("built as an object");
    for (k, val) in base.as_object().expect("built as an object") {
        map.insert(k.clone(), val.clone());
    }
    v
}
