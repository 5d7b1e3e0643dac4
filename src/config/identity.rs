//! From a loaded [`Config`] and the environment to where rulebridge connects and how it
//! signs in: the cloud's endpoints and token scopes, the tenant, and one [`SignIn`] per
//! audience.
//!
//! The environment is read through [`Env`], so resolution is a function of its inputs
//! (tests pass a map instead of mutating the process environment). Variables follow
//! the Azure SDKs' names (`AZURE_CLIENT_SECRET`, `AZURE_CLIENT_CERTIFICATE_PATH`,
//! `AZURE_FEDERATED_TOKEN_FILE`, `IDENTITY_ENDPOINT`…); an empty variable counts as
//! unset. Errors name the variable, key or file, never a secret.

use super::{Config, ConfigError};
use crate::client::cloud::{self, Cloud, CloudEndpoints};
use crate::client::identity::managed::{IMDS_PATH, IMDS_URL};
use crate::client::{
    ClientCertificate, CredentialKind, ManagedEndpoint, ManagedIdentity, Proof, Secret, SignIn,
};
use crate::problem::Problem;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where configuration reads environment variables from.
pub trait Env {
    /// The variable's value; `None` when unset or blank.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }
}

/// How rulebridge signs in, resolved: the tenant, the kind and where it came from (for
/// the one log line and `doctor`), and the sign-in of each audience.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tenant_id: String,
    pub kind: CredentialKind,
    /// `kind configured` (`[credentials] kind`) or `kind implied` (by the environment
    /// and the config's credential files).
    pub chosen: &'static str,
    /// Where the proof comes from, e.g. "client secret from AZURE_CLIENT_SECRET_FILE
    /// (/run/secrets/rb)". Never the secret.
    pub source: String,
    pub graph: SignIn,
    pub arm: SignIn,
}

impl Identity {
    /// The client certificate both audiences sign with, if the kind is `certificate`
    /// (for `doctor`'s expiry check).
    pub fn certificate(&self) -> Option<&ClientCertificate> {
        match &self.graph {
            SignIn::App { proof, .. } => match &**proof {
                Proof::Certificate(certificate) => Some(certificate),
                _ => None,
            },
            SignIn::Managed(_) => None,
        }
    }
}

impl Config {
    /// The cloud `[cloud] name` names (the schema admits only known names).
    pub fn cloud(&self) -> Cloud {
        Cloud::parse(&self.cloud.name).unwrap_or(Cloud::Public)
    }

    /// The cloud's hosts with `[cloud]`'s explicit ones, and `AZURE_AUTHORITY_HOST` (as
    /// the Azure SDKs and AKS's workload identity webhook set it) for the sign-in host.
    pub fn endpoints(&self, env: &dyn Env) -> CloudEndpoints {
        let base = self.cloud().endpoints();
        let trim = |s: &String| s.trim_end_matches('/').to_string();
        CloudEndpoints {
            authority_host: self
                .cloud
                .authority_host
                .as_ref()
                .map(trim)
                .or_else(|| env.var("AZURE_AUTHORITY_HOST").map(|h| trim(&h)))
                .unwrap_or(base.authority_host),
            graph_resource: self
                .cloud
                .graph_resource
                .as_ref()
                .map(trim)
                .unwrap_or(base.graph_resource),
            arm_resource: self
                .cloud
                .arm_resource
                .as_ref()
                .map(trim)
                .unwrap_or(base.arm_resource),
        }
    }

    /// Graph's API base: `defender.graph_url`, else the cloud's Graph `/v1.0`.
    pub fn graph_url(&self) -> String {
        self.graph_url_in(&ProcessEnv)
    }

    /// [`Self::graph_url`] with the environment read from `env`.
    pub fn graph_url_in(&self, env: &dyn Env) -> String {
        self.defender
            .graph_url
            .clone()
            .unwrap_or_else(|| format!("{}/v1.0", self.endpoints(env).graph_resource))
    }

    /// ARM's base: `sentinel.arm_url`, else the cloud's ARM.
    pub fn arm_url(&self) -> String {
        self.arm_url_in(&ProcessEnv)
    }

    /// [`Self::arm_url`] with the environment read from `env`.
    pub fn arm_url_in(&self, env: &dyn Env) -> String {
        self.sentinel
            .arm_url
            .clone()
            .unwrap_or_else(|| self.endpoints(env).arm_resource)
    }

    /// `defender.tenant_id`, else `AZURE_TENANT_ID`.
    pub fn tenant_id(&self) -> Result<String, ConfigError> {
        self.tenant_id_in(&ProcessEnv)
    }

    fn tenant_id_in(&self, env: &dyn Env) -> Result<String, ConfigError> {
        match &self.defender.tenant_id {
            Some(tenant) => Ok(tenant.clone()),
            None => env.var("AZURE_TENANT_ID").ok_or_else(|| {
                self.credentials_error(
                    "no tenant: set defender.tenant_id or the AZURE_TENANT_ID environment variable"
                        .into(),
                )
            }),
        }
    }

    /// The token endpoint for Graph: `defender.token_url`, else the tenant's in the cloud.
    pub fn graph_token_url(&self) -> Result<String, ConfigError> {
        self.token_url_in(self.defender.token_url.as_ref(), &ProcessEnv)
    }

    /// The token endpoint for ARM: `sentinel.token_url`, else the tenant's in the cloud.
    pub fn sentinel_token_url(&self) -> Result<String, ConfigError> {
        self.token_url_in(self.sentinel.token_url.as_ref(), &ProcessEnv)
    }

    fn token_url_in(
        &self,
        explicit: Option<&String>,
        env: &dyn Env,
    ) -> Result<String, ConfigError> {
        match explicit {
            Some(url) => Ok(url.clone()),
            None => Ok(self.endpoints(env).token_url(&self.tenant_id_in(env)?)),
        }
    }

    /// The Sentinel incidents collection URL with `?api-version=`: `incidents_url`, or
    /// built from the workspace coordinates. A loaded config always has one of them;
    /// an unloaded one without either yields an empty string.
    pub fn sentinel_incidents_url(&self) -> String {
        self.sentinel_incidents_url_in(&ProcessEnv)
    }

    /// [`Self::sentinel_incidents_url`] with the environment read from `env`.
    pub fn sentinel_incidents_url_in(&self, env: &dyn Env) -> String {
        let s = &self.sentinel;
        if let Some(url) = &s.incidents_url {
            return url.clone();
        }
        match (&s.subscription_id, &s.resource_group, &s.workspace) {
            (Some(sub), Some(rg), Some(ws)) => format!(
                "{}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{ws}/providers/Microsoft.SecurityInsights/incidents?api-version={}",
                self.arm_url_in(env).trim_end_matches('/'),
                s.api_version
            ),
            _ => String::new(),
        }
    }

    /// How rulebridge signs in, from the process environment.
    pub fn identity(&self) -> Result<Identity, ConfigError> {
        self.identity_in(&ProcessEnv)
    }

    /// How rulebridge signs in: `[credentials] kind` when set, else the first kind the
    /// environment implies, in `DefaultAzureCredential`'s order (secret, certificate,
    /// workload identity, managed identity). A certificate is read here, once.
    pub fn identity_in(&self, env: &dyn Env) -> Result<Identity, ConfigError> {
        let tenant_id = self.tenant_id_in(env)?;
        let c = &self.credentials;
        let (kind, chosen) = match &c.kind {
            Some(name) => (
                CredentialKind::parse(name).ok_or_else(|| {
                    self.credentials_error(format!("unknown credentials.kind '{name}'"))
                })?,
                "kind configured",
            ),
            None => (self.implied_kind(env)?, "kind implied"),
        };
        let graph_token_url = self.token_url_in(self.defender.token_url.as_ref(), env)?;
        let arm_token_url = self.token_url_in(self.sentinel.token_url.as_ref(), env)?;
        let client_id = || {
            c.client_id.clone().or_else(|| env.var("AZURE_CLIENT_ID")).ok_or_else(|| {
                self.credentials_error(format!(
                    "no client id for the {kind} credential: set credentials.client_id or the AZURE_CLIENT_ID environment variable"
                ))
            })
        };
        let app = |client_id: String, proof: Arc<Proof>| {
            (
                SignIn::App {
                    token_url: graph_token_url.clone(),
                    client_id: client_id.clone(),
                    proof: proof.clone(),
                },
                SignIn::App {
                    token_url: arm_token_url.clone(),
                    client_id,
                    proof,
                },
            )
        };
        let (source, (graph, arm)) = match kind {
            CredentialKind::Secret => {
                let (secret, source) = self.secret(env)?;
                (source, app(client_id()?, Arc::new(Proof::Secret(secret))))
            }
            CredentialKind::Certificate => {
                let (path, from) = self.path_setting(
                    c.certificate_path.as_ref(),
                    "credentials.certificate_path",
                    "AZURE_CLIENT_CERTIFICATE_PATH",
                    env,
                    "a certificate credential needs a PEM or PKCS#12 file",
                )?;
                let password = env.var(&c.certificate_password_env);
                let loaded = ClientCertificate::load(&path, password.as_deref())
                    .map_err(|e| self.credentials_error(e.to_string()))?;
                let now = chrono::Utc::now().timestamp();
                if loaded.not_after < now {
                    // Entra ID will refuse it (AADSTS700027); said here so the log names
                    // the file and the date, not only the service's code.
                    tracing::error!(
                        certificate = %path.display(),
                        thumbprint = %loaded.thumbprint,
                        "the client certificate expired at {}",
                        unix_to_rfc3339(loaded.not_after)
                    );
                }
                let source = format!(
                    "certificate {} from {from} ({}, thumbprint {}, valid until {})",
                    path.display(),
                    loaded.subject,
                    loaded.thumbprint,
                    unix_to_rfc3339(loaded.not_after)
                );
                let proof = Arc::new(Proof::Certificate(Box::new(loaded)));
                (source, app(client_id()?, proof))
            }
            CredentialKind::WorkloadIdentity => {
                let (path, from) = self.path_setting(
                    c.federated_token_file.as_ref(),
                    "credentials.federated_token_file",
                    "AZURE_FEDERATED_TOKEN_FILE",
                    env,
                    "workload identity needs the federated token file the AKS webhook mounts",
                )?;
                if let Err(e) = std::fs::metadata(&path) {
                    return Err(self.credentials_error(format!(
                        "cannot read the federated token file {} ({from}): {e}",
                        path.display()
                    )));
                }
                let source = format!(
                    "federated token file {} from {from}, re-read at every refresh",
                    path.display()
                );
                (
                    source,
                    app(client_id()?, Arc::new(Proof::FederatedTokenFile(path))),
                )
            }
            CredentialKind::ManagedIdentity => {
                let client_id = c.client_id.clone().or_else(|| env.var("AZURE_CLIENT_ID"));
                let endpoint = match (env.var("IDENTITY_ENDPOINT"), env.var("IDENTITY_HEADER")) {
                    (Some(url), Some(header)) => ManagedEndpoint::AppService {
                        url,
                        header: Secret::new(header),
                    },
                    _ => ManagedEndpoint::Imds {
                        url: env
                            .var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                            .map(|h| format!("{}{IMDS_PATH}", h.trim_end_matches('/')))
                            .unwrap_or_else(|| IMDS_URL.into()),
                    },
                };
                let identity = Arc::new(ManagedIdentity {
                    endpoint,
                    client_id,
                });
                (
                    identity.describe(),
                    (SignIn::Managed(identity.clone()), SignIn::Managed(identity)),
                )
            }
        };
        Ok(Identity {
            tenant_id,
            kind,
            chosen,
            source,
            graph,
            arm,
        })
    }

    /// The kind the environment and the config's files imply, or an error listing what
    /// was looked for. A VM's managed identity (IMDS) is never guessed: it would turn a
    /// mistyped variable name into a minute of timeouts against 169.254.169.254.
    fn implied_kind(&self, env: &dyn Env) -> Result<CredentialKind, ConfigError> {
        let c = &self.credentials;
        if c.client_secret_file.is_some()
            || env.var(&c.client_secret_env).is_some()
            || env.var("AZURE_CLIENT_SECRET_FILE").is_some()
        {
            Ok(CredentialKind::Secret)
        } else if c.certificate_path.is_some() || env.var("AZURE_CLIENT_CERTIFICATE_PATH").is_some()
        {
            Ok(CredentialKind::Certificate)
        } else if c.federated_token_file.is_some()
            || env.var("AZURE_FEDERATED_TOKEN_FILE").is_some()
        {
            Ok(CredentialKind::WorkloadIdentity)
        } else if env.var("IDENTITY_ENDPOINT").is_some() && env.var("IDENTITY_HEADER").is_some() {
            Ok(CredentialKind::ManagedIdentity)
        } else {
            Err(self.credentials_error(format!(
                "no credential found: set {} or AZURE_CLIENT_SECRET_FILE (a secret), \
                 AZURE_CLIENT_CERTIFICATE_PATH (a certificate), AZURE_FEDERATED_TOKEN_FILE \
                 (workload identity), or the matching [credentials] keys; on an Azure VM \
                 with a managed identity set credentials.kind = \"managed_identity\"",
                c.client_secret_env
            )))
        }
    }

    /// The client secret and where it came from: `client_secret_file`, else the
    /// variable `client_secret_env` names, else `AZURE_CLIENT_SECRET_FILE`. Files are
    /// trimmed (they usually end in a newline).
    fn secret(&self, env: &dyn Env) -> Result<(Secret, String), ConfigError> {
        let c = &self.credentials;
        let from_file = |file: &Path, via: &str| -> Result<(Secret, String), ConfigError> {
            // Only the io error is shown: it never carries the contents.
            let text = std::fs::read_to_string(file).map_err(|e| {
                self.credentials_error(format!("cannot read {via} {}: {e}", file.display()))
            })?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(self.credentials_error(format!("{via} {} is empty", file.display())));
            }
            Ok((
                Secret::new(secret),
                format!("client secret from {via} {}", file.display()),
            ))
        };
        if let Some(file) = &c.client_secret_file {
            return from_file(file, "client_secret_file");
        }
        if let Some(secret) = env.var(&c.client_secret_env) {
            return Ok((
                Secret::new(secret),
                format!("client secret from {}", c.client_secret_env),
            ));
        }
        if let Some(file) = env.var("AZURE_CLIENT_SECRET_FILE") {
            return from_file(Path::new(&file), "AZURE_CLIENT_SECRET_FILE");
        }
        Err(self.credentials_error(format!(
            "no client secret: the environment variable {} is not set \
             (credentials.client_secret_env), and neither credentials.client_secret_file \
             nor AZURE_CLIENT_SECRET_FILE is set",
            c.client_secret_env
        )))
    }

    /// A path from the config, else from an environment variable; with its origin.
    fn path_setting(
        &self,
        configured: Option<&PathBuf>,
        key: &str,
        variable: &str,
        env: &dyn Env,
        why: &str,
    ) -> Result<(PathBuf, String), ConfigError> {
        match configured {
            Some(path) => Ok((path.clone(), key.to_string())),
            None => env
                .var(variable)
                .map(|p| (PathBuf::from(p), variable.to_string()))
                .ok_or_else(|| self.credentials_error(format!("{why}: set {key} or {variable}"))),
        }
    }
}

pub(super) fn unix_to_rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0).map_or_else(
        || seconds.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// What the schema cannot say about clouds: 21Vianet has no Graph incidents API, and a
/// URL on another cloud's Graph or ARM would get tokens for the wrong audience.
pub(super) fn cloud_problems(json: &Value, label: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let name = json
        .pointer("/cloud/name")
        .and_then(Value::as_str)
        .unwrap_or("public");
    let Some(cloud) = Cloud::parse(name) else {
        return problems; // the schema's enum has said so
    };
    if !cloud.has_graph_incidents() {
        problems.push(Problem::at_pointer(
            label,
            "/cloud/name",
            "the Microsoft Graph security incidents API is not offered in the 21Vianet (China) \
             cloud, so rulebridge cannot sync Defender incidents there",
        ));
        return problems;
    }
    let explicit = |key: &str| json.pointer(&format!("/cloud/{key}")).is_some();
    let check = |pointer: &str,
                 other: Option<Cloud>,
                 service: &str,
                 problems: &mut Vec<Problem>| {
        let url = json.pointer(pointer).and_then(Value::as_str).unwrap_or("");
        if let Some(other) = other.filter(|o| *o != cloud) {
            if other == Cloud::China && service == "Microsoft Graph" {
                problems.push(Problem::at_pointer(
                    label,
                    pointer,
                    "this is Microsoft Graph in the 21Vianet (China) cloud, which does not offer the security incidents API",
                ));
                return;
            }
            let host = cloud::host_of(url).unwrap_or_default();
            problems.push(Problem::at_pointer(
                label,
                pointer,
                format!(
                    "{host} is {service} in the {other} cloud, but the cloud is {cloud}: \
                     set [cloud] name = \"{other}\" (tokens are issued per cloud, so every call would be refused)"
                ),
            ));
        }
    };
    let host = |pointer: &str| {
        json.pointer(pointer)
            .and_then(Value::as_str)
            .and_then(cloud::host_of)
    };
    if !explicit("graph_resource") {
        if let Some(h) = host("/defender/graph_url") {
            check(
                "/defender/graph_url",
                Cloud::of_graph_host(&h),
                "Microsoft Graph",
                &mut problems,
            );
        }
    }
    if !explicit("arm_resource") {
        for pointer in ["/sentinel/arm_url", "/sentinel/incidents_url"] {
            if let Some(h) = host(pointer) {
                // usgov and usgov-dod share one ARM.
                if !cloud.arm_host_matches(&h) {
                    check(
                        pointer,
                        Cloud::of_arm_host(&h),
                        "Azure Resource Manager",
                        &mut problems,
                    );
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSPACE: &str =
        "[sentinel]\nsubscription_id = \"s\"\nresource_group = \"g\"\nworkspace = \"w\"\n";

    fn config(extra: &str) -> Config {
        Config::parse(&format!("{extra}\n{WORKSPACE}"), "rb.toml").unwrap()
    }

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(text: &str) -> String {
        Config::parse(text, "rb.toml").unwrap_err().to_string()
    }

    #[test]
    fn the_cloud_sets_hosts_and_scopes() {
        let c = config("[cloud]\nname = \"usgov\"\n[defender]\ntenant_id = \"t\"");
        let e = c.endpoints(&env(&[]));
        assert_eq!(e.graph_scope(), "https://graph.microsoft.us/.default");
        assert_eq!(
            e.arm_scope(),
            "https://management.usgovcloudapi.net/.default"
        );
        assert_eq!(c.graph_url(), "https://graph.microsoft.us/v1.0");
        assert!(c
            .sentinel_incidents_url()
            .starts_with("https://management.usgovcloudapi.net/subscriptions/s/"));
        assert_eq!(
            c.graph_token_url().unwrap(),
            "https://login.microsoftonline.us/t/oauth2/v2.0/token"
        );
        let dod = config("[cloud]\nname = \"usgov-dod\"");
        assert_eq!(dod.graph_url(), "https://dod-graph.microsoft.us/v1.0");
        // AZURE_AUTHORITY_HOST (the workload identity webhook sets it) moves the sign-in
        // host; an explicit [cloud] authority_host wins over it.
        let moved = c.endpoints(&env(&[("AZURE_AUTHORITY_HOST", "https://login.example/")]));
        assert_eq!(moved.authority_host, "https://login.example");
        let explicit = config("[cloud]\nauthority_host = \"https://a.example\"\ngraph_resource = \"https://g.example/\"");
        let e = explicit.endpoints(&env(&[("AZURE_AUTHORITY_HOST", "https://login.example")]));
        assert_eq!(
            (e.authority_host.as_str(), e.graph_scope().as_str()),
            ("https://a.example", "https://g.example/.default")
        );
    }

    #[test]
    fn a_url_on_another_clouds_service_is_an_error_that_names_the_fix() {
        let e = problems(&format!(
            "[defender]\ngraph_url = \"https://graph.microsoft.us/v1.0\"\n{WORKSPACE}"
        ));
        assert!(
            e.contains("rb.toml: /defender/graph_url: graph.microsoft.us is Microsoft Graph in the usgov cloud, but the cloud is public: set [cloud] name = \"usgov\""),
            "{e}"
        );
        let e = problems(&format!(
            "[cloud]\nname = \"usgov\"\n{WORKSPACE}arm_url = \"https://management.azure.com\"\n"
        ));
        assert!(e.contains("/sentinel/arm_url: management.azure.com is Azure Resource Manager in the public cloud"), "{e}");
        // usgov-dod shares usgov's ARM; an emulator or proxy host is any cloud's.
        config(
            "[cloud]\nname = \"usgov-dod\"\n[defender]\ngraph_url = \"http://127.0.0.1:1/v1.0\"",
        );
        Config::parse(&format!("[cloud]\nname = \"usgov-dod\"\n{WORKSPACE}arm_url = \"https://management.usgovcloudapi.net\"\n"), "rb.toml").unwrap();
        let e = problems(&format!("[cloud]\nname = \"china\"\n{WORKSPACE}"));
        assert!(e.contains("/cloud/name: the Microsoft Graph security incidents API is not offered in the 21Vianet (China) cloud"), "{e}");
        let e = problems(&format!("[cloud]\nname = \"mars\"\n{WORKSPACE}"));
        assert!(e.contains("/cloud/name"), "{e}");
    }

    #[test]
    fn the_kind_is_implied_by_the_environment_in_the_sdks_order() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "federated\n").unwrap();
        let token = token.to_str().unwrap();
        let c = config("[defender]\ntenant_id = \"t\"\n[credentials]\nclient_id = \"c\"");
        let kind = |vars: &[(&str, &str)]| c.identity_in(&env(vars)).map(|i| (i.kind, i.chosen));
        assert_eq!(
            kind(&[("AZURE_CLIENT_SECRET", "x")]).unwrap(),
            (CredentialKind::Secret, "kind implied")
        );
        assert_eq!(
            kind(&[
                ("AZURE_FEDERATED_TOKEN_FILE", token),
                ("AZURE_CLIENT_SECRET", "x")
            ])
            .unwrap()
            .0,
            CredentialKind::Secret
        );
        assert_eq!(
            kind(&[("AZURE_FEDERATED_TOKEN_FILE", token)]).unwrap().0,
            CredentialKind::WorkloadIdentity
        );
        assert_eq!(
            kind(&[
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
                ("IDENTITY_HEADER", "h")
            ])
            .unwrap()
            .0,
            CredentialKind::ManagedIdentity
        );
        let e = kind(&[("IDENTITY_ENDPOINT", "http://x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no credential found") && e.contains("managed_identity"),
            "{e}"
        );
    }

    #[test]
    fn secrets_come_from_the_variable_the_file_or_azure_client_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "  s3cret-from-file-41d0\n").unwrap();
        let path = file.to_str().unwrap();
        let c = config("[defender]\ntenant_id = \"t-1\"\n[credentials]\nclient_id = \"c-1\"");
        let secret_of = |i: Identity| match i.graph {
            SignIn::App {
                proof, client_id, ..
            } => match &*proof {
                Proof::Secret(s) => (client_id, s.expose().to_string()),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        // README's AZURE_CLIENT_SECRET_FILE, as Kubernetes and systemd mount secrets.
        let i = c
            .identity_in(&env(&[("AZURE_CLIENT_SECRET_FILE", path)]))
            .unwrap();
        assert_eq!(
            i.source,
            format!("client secret from AZURE_CLIENT_SECRET_FILE {path}")
        );
        assert_eq!(secret_of(i), ("c-1".into(), "s3cret-from-file-41d0".into()));
        let i = c
            .identity_in(&env(&[
                ("AZURE_CLIENT_SECRET", "v"),
                ("AZURE_CLIENT_SECRET_FILE", path),
            ]))
            .unwrap();
        assert_eq!(secret_of(i).1, "v");

        let from_key = Config::parse(
            &format!("[defender]\ntenant_id = \"t\"\n[credentials]\nclient_id = \"c\"\nclient_secret_file = \"{path}\"\n{WORKSPACE}"),
            "rb.toml",
        )
        .unwrap();
        assert_eq!(
            secret_of(
                from_key
                    .identity_in(&env(&[("AZURE_CLIENT_SECRET", "v")]))
                    .unwrap()
            )
            .1,
            "s3cret-from-file-41d0"
        );
        std::fs::write(&file, "\n").unwrap();
        let e = from_key.identity_in(&env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("client_secret_file") && e.contains("is empty"),
            "{e}"
        );
        std::fs::remove_file(&file).unwrap();
        let e = from_key.identity_in(&env(&[])).unwrap_err().to_string();
        assert!(e.contains("cannot read client_secret_file"), "{e}");
    }

    #[test]
    fn a_named_kind_says_what_it_misses() {
        let c = config("[defender]\ntenant_id = \"t\"\n[credentials]\nkind = \"secret\"\nclient_id = \"c\"\nclient_secret_env = \"RB_NEVER_SET_9a1f\"");
        let e = c.identity_in(&env(&[])).unwrap_err().to_string();
        assert!(e.starts_with("<configuration>: credentials: no client secret: the environment variable RB_NEVER_SET_9a1f is not set"), "{e}");
        let c = config("[defender]\ntenant_id = \"t\"\n[credentials]\nkind = \"certificate\"\nclient_id = \"c\"");
        let e = c.identity_in(&env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("set credentials.certificate_path or AZURE_CLIENT_CERTIFICATE_PATH"),
            "{e}"
        );
        let e = c
            .identity_in(&env(&[(
                "AZURE_CLIENT_CERTIFICATE_PATH",
                "/nonexistent/c.pem",
            )]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/c.pem: cannot read the certificate file"),
            "{e}"
        );
        let c =
            config("[defender]\ntenant_id = \"t\"\n[credentials]\nkind = \"workload_identity\"");
        let e = c
            .identity_in(&env(&[("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/t")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "cannot read the federated token file /nonexistent/t (AZURE_FEDERATED_TOKEN_FILE)"
            ),
            "{e}"
        );
        let c = config("[credentials]\nkind = \"managed_identity\"");
        let e = c.identity_in(&env(&[])).unwrap_err().to_string();
        assert!(e.contains("no tenant"), "{e}");
    }

    #[test]
    fn managed_identity_picks_its_endpoint_from_the_environment() {
        let c = config("[defender]\ntenant_id = \"t\"\n[credentials]\nkind = \"managed_identity\"");
        let endpoint = |vars: &[(&str, &str)]| match c.identity_in(&env(vars)).unwrap().graph {
            SignIn::Managed(m) => (format!("{:?}", m.endpoint), m.client_id.clone()),
            other => panic!("{other:?}"),
        };
        let (imds, id) = endpoint(&[]);
        assert!(
            imds.contains("http://169.254.169.254/metadata/identity/oauth2/token"),
            "{imds}"
        );
        assert_eq!(id, None, "system-assigned without a client id");
        let (moved, id) = endpoint(&[
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9/"),
            ("AZURE_CLIENT_ID", "u-1"),
        ]);
        assert!(
            moved.contains("http://127.0.0.1:9/metadata/identity/oauth2/token"),
            "{moved}"
        );
        assert_eq!(id.as_deref(), Some("u-1"));
        let (app, _) = endpoint(&[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", "hdr-secret-77"),
        ]);
        assert!(
            app.contains("AppService") && !app.contains("hdr-secret-77"),
            "the header is a secret: {app}"
        );
    }
}
