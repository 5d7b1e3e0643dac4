//! Field names the input and output schemas know, for the warnings about incident
//! fields, `pluck` paths and output fields (RB101–RB103).
//!
//! A [`Shape`] is a node of one of the schemas in `schemas/` (the snapshot's copies).
//! Where the schema's property list is complete (the incident's top level,
//! `additionalProperties: false`), any other name is reported; where it is a sample of
//! an open object (Graph's alert and evidence types), only a near miss of a name known
//! there is (`deviceDnsname` for `deviceDnsName`), so a real but unlisted field is
//! never flagged. Anything the walker cannot follow (`$ref` to another file, `oneOf`)
//! ends the check: no finding rather than a guess.

use super::known::did_you_mean;
use serde_json::{json, Map, Value};

/// Graph security alert fields (microsoft.graph.security.alert), beyond those
/// `defender-incident.schema.json` lists: the schema keeps alerts open.
const GRAPH_ALERT: &[&str] = &[
    "id",
    "providerAlertId",
    "incidentId",
    "status",
    "severity",
    "classification",
    "determination",
    "serviceSource",
    "detectionSource",
    "productName",
    "detectorId",
    "tenantId",
    "title",
    "description",
    "recommendedActions",
    "category",
    "assignedTo",
    "alertWebUrl",
    "incidentWebUrl",
    "actorDisplayName",
    "threatDisplayName",
    "threatFamilyName",
    "mitreTechniques",
    "createdDateTime",
    "lastUpdateDateTime",
    "resolvedDateTime",
    "firstActivityDateTime",
    "lastActivityDateTime",
    "comments",
    "evidence",
    "systemTags",
    "alertPolicyId",
    "additionalData",
];

/// Graph alert evidence fields over the common evidence types (user, device, ip, url,
/// file, process, mailbox, cloud application, registry).
const GRAPH_EVIDENCE: &[&str] = &[
    "@odata.type",
    "createdDateTime",
    "verdict",
    "remediationStatus",
    "remediationStatusDetails",
    "roles",
    "detailedRoles",
    "tags",
    "userAccount",
    "deviceDnsName",
    "firstSeenDateTime",
    "mdeDeviceId",
    "azureAdDeviceId",
    "osPlatform",
    "osBuild",
    "version",
    "healthStatus",
    "riskScore",
    "rbacGroupId",
    "rbacGroupName",
    "onboardingStatus",
    "defenderAvStatus",
    "loggedOnUsers",
    "ipInterfaces",
    "lastIpAddress",
    "lastExternalIpAddress",
    "hostName",
    "ntDomain",
    "dnsDomain",
    "ipAddress",
    "countryLetterCode",
    "location",
    "url",
    "fileDetails",
    "detectionStatus",
    "processId",
    "parentProcessId",
    "processCommandLine",
    "imageFile",
    "parentProcessImageFile",
    "processCreationDateTime",
    "parentProcessCreationDateTime",
    "primaryAddress",
    "displayName",
    "appId",
    "appName",
    "instanceId",
    "instanceName",
    "registryKey",
    "registryHive",
    "registryValue",
    "registryValueName",
    "registryValueType",
    "networkMessageId",
    "recipientEmailAddress",
    "senderIp",
    "subject",
    "urls",
    "p1Sender",
    "p2Sender",
    "internetMessageId",
    "language",
    "deliveryAction",
    "deliveryLocation",
    "antiSpamDirection",
    "attachmentsCount",
    "urlCount",
    "threatDetectionMethods",
    "threats",
    "accountName",
    "domainName",
    "userSid",
    "azureAdUserId",
    "userPrincipalName",
    "fileName",
    "filePath",
    "sha1",
    "sha256",
    "md5",
    "fileSize",
    "issuer",
    "signer",
    "stream",
];

/// Sentinel's read-only incident properties (the ARM resource as read), which the PUT
/// schema refuses but a rule reading a Sentinel incident sees.
const SENTINEL_READ_ONLY: &[&str] = &[
    "createdTimeUtc",
    "lastModifiedTimeUtc",
    "incidentNumber",
    "incidentUrl",
    "providerName",
    "providerIncidentId",
    "relatedAnalyticRuleIds",
    "additionalData",
    "teamInformation",
];

/// The schema documents a pack's checks read.
pub struct Documents {
    pub defender: Value,
    /// A Sentinel incident as read: the ARM envelope and every property.
    pub sentinel_read: Value,
    pub sentinel_write: Value,
    pub defender_update: Value,
}

impl Documents {
    /// From the schemas' texts; a schema that is missing or not JSON checks nothing.
    pub fn new(text: impl Fn(&str) -> Option<String>) -> Documents {
        let load = |name: &str| {
            text(name)
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null)
        };
        let sentinel_write = load(crate::schema::SENTINEL_INCIDENT);
        let mut props = sentinel_write
            .pointer("/$defs/incidentProperties/properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let complete = !props.is_empty();
        for name in SENTINEL_READ_ONLY {
            props.insert((*name).to_string(), json!({}));
        }
        let sentinel_read = if complete {
            let envelope: Map<String, Value> = ["id", "name", "type", "etag", "systemData"]
                .iter()
                .map(|n| ((*n).to_string(), json!({})))
                .chain([(
                    "properties".to_string(),
                    json!({"type": "object", "additionalProperties": false, "properties": props}),
                )])
                .collect();
            json!({"type": "object", "additionalProperties": false, "properties": envelope})
        } else {
            Value::Null
        };
        Documents {
            defender: load(crate::schema::DEFENDER_INCIDENT),
            sentinel_read,
            sentinel_write,
            defender_update: load(crate::schema::DEFENDER_UPDATE),
        }
    }

    pub fn defender_in(&self) -> Shape<'_> {
        Shape::root(&self.defender, true)
    }

    pub fn sentinel_in(&self) -> Shape<'_> {
        Shape::root(&self.sentinel_read, true)
    }

    /// What a map rule returns for Sentinel: the incident's `properties`.
    pub fn sentinel_out(&self) -> Shape<'_> {
        Shape {
            doc: &self.sentinel_write,
            node: self
                .sentinel_write
                .pointer("/$defs/incidentProperties")
                .unwrap_or(&Value::Null),
            extra: &[],
            complete: true,
        }
    }

    pub fn defender_out(&self) -> Shape<'_> {
        Shape::root(&self.defender_update, true)
    }
}

/// A node of a schema document, with what else is known about the object it describes.
#[derive(Clone, Copy)]
pub struct Shape<'d> {
    doc: &'d Value,
    node: &'d Value,
    /// Names known beyond the schema's list (Graph's open alert and evidence types).
    extra: &'static [&'static str],
    /// Whether the name list is complete: then any other name is reported.
    complete: bool,
}

/// What a property name is on a shape.
pub enum Lookup<'d> {
    Known(Option<Shape<'d>>),
    /// Not known; `Some(name)` is the near miss to suggest.
    Unknown(Option<&'d str>),
    /// The shape cannot say.
    Open,
}

impl<'d> Shape<'d> {
    fn root(doc: &'d Value, complete: bool) -> Shape<'d> {
        Shape {
            doc,
            node: doc,
            extra: &[],
            complete,
        }
    }

    /// Follows a local `$ref` (`#/$defs/x`); another file's is not followed.
    fn resolved(self) -> Option<Shape<'d>> {
        let mut shape = self;
        for _ in 0..8 {
            let Some(reference) = shape.node.get("$ref").and_then(Value::as_str) else {
                return Some(shape);
            };
            let pointer = reference.strip_prefix('#')?;
            let extra: &'static [&'static str] = match pointer {
                "/$defs/alert" => GRAPH_ALERT,
                "/$defs/alertEvidence" => GRAPH_EVIDENCE,
                _ => &[],
            };
            shape = Shape {
                node: shape.doc.pointer(pointer)?,
                extra,
                complete: shape.complete && extra.is_empty(),
                ..shape
            };
        }
        None
    }

    /// Whether both are the same node of the same document.
    pub fn same(&self, other: &Shape<'_>) -> bool {
        std::ptr::eq(self.node, other.node)
    }

    /// The element shape of an array shape.
    pub fn items(self) -> Option<Shape<'d>> {
        let shape = self.resolved()?;
        let items = shape.node.get("items")?;
        Shape {
            node: items,
            complete: false,
            ..shape
        }
        .resolved()
        .map(|s| Shape {
            complete: s.complete || s.closed(),
            ..s
        })
    }

    fn closed(&self) -> bool {
        self.node.get("additionalProperties") == Some(&Value::Bool(false))
    }

    pub fn property(self, name: &str) -> Lookup<'d> {
        let Some(shape) = self.resolved() else {
            return Lookup::Open;
        };
        let node = shape.node;
        // `additionalProperties: false` refuses every name but the listed ones, whatever
        // conditions (`if`, `allOf`) add; an open object's subschemas may list more.
        let open_keys: &[&str] = if shape.closed() {
            &["patternProperties"]
        } else {
            &["oneOf", "anyOf", "allOf", "patternProperties", "if"]
        };
        if open_keys.iter().any(|k| node.get(*k).is_some()) {
            return Lookup::Open;
        }
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return Lookup::Open;
        };
        if let Some(child) = props.get(name) {
            let child = Shape {
                node: child,
                extra: &[],
                complete: false,
                ..shape
            }
            .resolved()
            .map(|s| Shape {
                complete: s.complete || s.closed(),
                ..s
            });
            return Lookup::Known(child);
        }
        if shape.extra.contains(&name) {
            return Lookup::Known(None);
        }
        let candidates = props
            .keys()
            .map(String::as_str)
            .chain(shape.extra.iter().copied());
        let near = did_you_mean(name, candidates);
        if shape.complete || shape.closed() || near.is_some() {
            Lookup::Unknown(near)
        } else {
            Lookup::Open
        }
    }

    /// Checks a dotted `pluck` path (arrays are flattened at every step): the first
    /// unknown segment and its near miss.
    pub fn path<'p>(self, path: &'p str) -> Option<(usize, &'p str, Option<&'d str>)> {
        let mut shape = self;
        for segment in path.split('.').filter(|s| !s.is_empty()) {
            while let Some(items) = shape.items() {
                shape = items;
            }
            match shape.property(segment) {
                Lookup::Known(Some(next)) => shape = next,
                Lookup::Known(None) | Lookup::Open => return None,
                Lookup::Unknown(near) => {
                    let at = segment.as_ptr() as usize - path.as_ptr() as usize;
                    return Some((at, segment, near));
                }
            }
        }
        None
    }
}
