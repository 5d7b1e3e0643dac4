//! The emulator checks what Entra ID, Graph and ARM check (issue 11), over real HTTP on
//! 127.0.0.1 with plain reqwest: JWT-shaped tokens, clouds, the app's secret,
//! certificate-signed client assertions (signed here with ring, so a real RS256
//! signature verifies and a tampered one does not), federated tokens, the managed
//! identity endpoints, Graph roles, ARM RBAC and the permissions read, and the 404s of
//! a wrong subscription, resource group or workspace. Each check has a request that
//! passes and one that fails with the service's code.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Client, StatusCode};
use ring::signature::RsaKeyPair;
use rulebridge::emulator::faults::{Endpoint, FaultKind, FaultRule};
use rulebridge::emulator::{Cloud, Emulator, EmulatorConfig, EmulatorInfo};
use serde_json::{json, Value};

const GRAPH: &str = "https://graph.microsoft.com/.default";
const ARM: &str = "https://management.azure.com/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Env {
    emulator: Emulator,
    info: EmulatorInfo,
    client: Client,
}

async fn start_with(config: EmulatorConfig) -> Env {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let info = emulator.info();
    Env {
        emulator,
        info,
        client: Client::new(),
    }
}

async fn start() -> Env {
    start_with(EmulatorConfig::default()).await
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims of a JWT (not verified: the test reads what the emulator put there).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// DER blocks labelled `label` of a PEM file.
fn pem(path: &str, label: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    x509_parser::pem::Pem::iter_from_buffer(&bytes)
        .map(Result::unwrap)
        .find(|p| p.label == label)
        .unwrap_or_else(|| panic!("{path} has no {label}"))
        .contents
}

/// A signer built from a PEM file holding a key and a certificate, as a client would.
struct Signer {
    key: RsaKeyPair,
    cert_der: Vec<u8>,
}

impl Signer {
    fn from_pem(path: &str) -> Signer {
        Signer {
            key: RsaKeyPair::from_pkcs8(&pem(path, "PRIVATE KEY")).unwrap(),
            cert_der: pem(path, "CERTIFICATE"),
        }
    }

    fn x5t_s256(&self) -> String {
        b64(ring::digest::digest(&ring::digest::SHA256, &self.cert_der).as_ref())
    }

    fn x5t_sha1(&self) -> String {
        b64(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.cert_der).as_ref())
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", b64(&sig))
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A client assertion's claims as MSAL makes them.
fn assertion_claims(info: &EmulatorInfo, jti: &str) -> Value {
    json!({
        "aud": info.token_url, "iss": info.client_id, "sub": info.client_id,
        "jti": jti, "nbf": now(), "iat": now(), "exp": now() + 600,
    })
}

impl Env {
    async fn token_form(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .client
            .post(&self.info.token_url)
            .form(form)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn secret_token(&self, secret: &str, scope: &str) -> (StatusCode, Value) {
        self.token_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.info.client_id),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .await
    }

    async fn token(&self, scope: &str) -> String {
        let (status, body) = self.secret_token(&self.info.client_secret, scope).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn assertion_token(&self, assertion: &str, scope: &str) -> (StatusCode, Value) {
        self.token_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.info.client_id),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", scope),
        ])
        .await
    }

    async fn federated_token(&self, query: &[(&str, &str)]) -> String {
        let response = self
            .client
            .get(&self.info.federated_token_url)
            .query(query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        response.text().await.unwrap()
    }

    async fn get(&self, url: &str, token: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn imds(&self, query: &[(&str, &str)], metadata: bool) -> (StatusCode, Value) {
        let mut request = self.client.get(&self.info.imds_endpoint).query(query);
        if metadata {
            request = request.header("Metadata", "true");
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn app_service(
        &self,
        query: &[(&str, &str)],
        header: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.get(&self.info.identity_endpoint).query(query);
        if let Some(h) = header {
            request = request.header("X-IDENTITY-HEADER", h);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    fn graph_incidents(&self) -> String {
        format!("{}/security/incidents", self.info.graph_base_url)
    }

    fn sentinel(&self, suffix: &str) -> String {
        let (base, query) = self.info.sentinel_incidents_url.split_once('?').unwrap();
        format!("{base}{suffix}?{query}")
    }

    fn permissions_url(&self, workspace_id: &str) -> String {
        format!(
            "http://{}{workspace_id}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01",
            self.emulator.addr
        )
    }

    async fn requests(&self) -> Vec<Value> {
        let body: Value = self
            .client
            .get(format!("http://{}/_emulator/requests", self.emulator.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["value"].as_array().unwrap().clone()
    }
}

/// `error`, the first error code and the description of an Entra ID error body.
fn aad(body: &Value) -> (&str, u64, &str) {
    (
        body["error"].as_str().unwrap_or(""),
        body["error_codes"][0].as_u64().unwrap_or(0),
        body["error_description"].as_str().unwrap_or(""),
    )
}

#[tokio::test]
async fn access_tokens_are_jwts_naming_the_principal_with_graph_roles_on_graph_tokens_only() {
    let env = start().await;
    let graph = env.token(GRAPH).await;
    let claims = claims_of(&graph);
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(
        claims["iss"],
        format!("https://sts.windows.net/{}/", env.info.tenant_id)
    );
    assert_eq!(claims["tid"], env.info.tenant_id);
    assert_eq!(claims["appid"], env.info.client_id);
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["roles"], json!(["SecurityIncident.ReadWrite.All"]));
    let oid = claims["oid"].as_str().unwrap().to_string();
    assert_eq!(oid.len(), 36);
    for stamp in ["iat", "nbf", "exp"] {
        assert!(claims[stamp].as_i64().is_some(), "{stamp}");
    }
    assert!(claims["exp"].as_i64().unwrap() > now() + 3000);
    assert_eq!(
        env.get(&env.graph_incidents(), &graph).await.0,
        StatusCode::OK
    );

    let arm = env.token(ARM).await;
    let claims = claims_of(&arm);
    assert_eq!(claims["aud"], "https://management.azure.com");
    assert!(claims.get("roles").is_none(), "ARM tokens carry no roles");
    assert_eq!(claims["oid"], oid, "one object id per principal");
    // The Graph app id form is Graph too, and its aud is the form asked for.
    let by_id = env
        .token("00000003-0000-0000-c000-000000000000/.default")
        .await;
    assert_eq!(
        claims_of(&by_id)["aud"],
        "00000003-0000-0000-c000-000000000000"
    );
    // Audiences still hold, and a token that is not one we issued is a 401.
    assert_eq!(
        env.get(&env.sentinel(""), &graph).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.get(&env.graph_incidents(), &arm).await.0,
        StatusCode::UNAUTHORIZED
    );
    let forged = format!("{}x", &graph[..graph.len() - 1]);
    assert_eq!(
        env.get(&env.graph_incidents(), &forged).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn each_cloud_issues_tokens_for_its_own_resources_and_500011_for_another_clouds() {
    let env = start_with(EmulatorConfig {
        cloud: Cloud::UsGov,
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(env.info.cloud, "usgov");
    assert_eq!(env.info.graph_resource, "https://graph.microsoft.us");
    assert_eq!(
        env.info.arm_resource,
        "https://management.usgovcloudapi.net"
    );
    let graph = env.token("https://graph.microsoft.us/.default").await;
    assert_eq!(claims_of(&graph)["aud"], "https://graph.microsoft.us");
    assert_eq!(
        env.get(&env.graph_incidents(), &graph).await.0,
        StatusCode::OK
    );
    let arm = env
        .token("https://management.usgovcloudapi.net/.default")
        .await;
    assert_eq!(env.get(&env.sentinel(""), &arm).await.0, StatusCode::OK);
    env.token("https://management.core.usgovcloudapi.net/.default")
        .await;

    let (status, body) = env.secret_token(&env.info.client_secret, GRAPH).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (error, code, description) = aad(&body);
    assert_eq!((error, code), ("invalid_resource", 500011));
    assert!(
        description.starts_with(&format!(
            "AADSTS500011: The resource principal named https://graph.microsoft.com was not found in the tenant named {}.",
            env.info.tenant_id
        )),
        "{description}"
    );
    let (status, body) = env.secret_token(&env.info.client_secret, ARM).await;
    assert_eq!((status, aad(&body).1), (StatusCode::BAD_REQUEST, 500011));
    // An unknown scope stays invalid_scope.
    let (status, body) = env
        .secret_token(&env.info.client_secret, "https://example.com/.default")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(aad(&body).0, "invalid_scope");
    assert_eq!(aad(&body).1, 70011);

    // DoD: its own Graph, Azure Government's ARM; GCC High's Graph is another cloud's.
    let dod = start_with(EmulatorConfig {
        cloud: Cloud::UsGovDod,
        ..EmulatorConfig::default()
    })
    .await;
    dod.token("https://dod-graph.microsoft.us/.default").await;
    dod.token("https://management.usgovcloudapi.net/.default")
        .await;
    let (_, body) = dod
        .secret_token(
            &dod.info.client_secret,
            "https://graph.microsoft.us/.default",
        )
        .await;
    assert_eq!(aad(&body).1, 500011);
    // The public cloud (the default) refuses government resources.
    let public = start().await;
    assert_eq!(public.info.cloud, "public");
    let (_, body) = public
        .secret_token(
            &public.info.client_secret,
            "https://graph.microsoft.us/.default",
        )
        .await;
    assert_eq!(aad(&body).1, 500011);
}

#[tokio::test]
async fn an_unknown_client_a_wrong_secret_and_an_expired_secret_get_their_aadsts_codes() {
    let env = start().await;
    let (status, body) = env
        .token_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "11111111-2222-3333-4444-555555555555"),
            ("client_secret", &env.info.client_secret),
            ("scope", GRAPH),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (error, code, description) = aad(&body);
    assert_eq!((error, code), ("unauthorized_client", 700016));
    assert!(description.starts_with(&format!("AADSTS700016: Application with identifier '11111111-2222-3333-4444-555555555555' was not found in the directory '{}'.", env.info.tenant_id)), "{description}");

    let (status, body) = env.secret_token("wrong", GRAPH).await;
    assert_eq!((status, aad(&body).1), (StatusCode::UNAUTHORIZED, 7000215));
    let (status, body) = env
        .token_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &env.info.client_id),
            ("scope", GRAPH),
        ])
        .await;
    assert_eq!((status, aad(&body).1), (StatusCode::UNAUTHORIZED, 7000218));

    let expired = start_with(EmulatorConfig {
        client_secret_expired: true,
        ..EmulatorConfig::default()
    })
    .await;
    let (status, body) = expired
        .secret_token(&expired.info.client_secret, GRAPH)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (error, code, description) = aad(&body);
    assert_eq!((error, code), ("invalid_client", 7000222));
    assert!(description.starts_with(&format!(
        "AADSTS7000222: The provided client secret keys for app '{}' are expired.",
        expired.info.client_id
    )));
    // A wrong secret is still just wrong.
    let (_, body) = expired.secret_token("wrong", GRAPH).await;
    assert_eq!(aad(&body).1, 7000215);
}

#[tokio::test]
async fn a_client_assertion_signed_by_the_registered_certificate_gets_a_token_and_a_tampered_one_does_not(
) {
    let env = start().await;
    let signer = Signer::from_pem(&env.info.client_certificate_path);
    let header = json!({ "alg": "RS256", "typ": "JWT", "x5t#S256": signer.x5t_s256() });
    let assertion = signer.sign(&header, &assertion_claims(&env.info, "jti-good"));
    let (status, body) = env.assertion_token(&assertion, GRAPH).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(claims_of(token)["appid"], env.info.client_id);
    assert_eq!(
        env.get(&env.graph_incidents(), token).await.0,
        StatusCode::OK
    );

    // The legacy SHA-1 `x5t` names the same certificate.
    let legacy = json!({ "alg": "RS256", "typ": "JWT", "x5t": signer.x5t_sha1() });
    let (status, _) = env
        .assertion_token(
            &signer.sign(&legacy, &assertion_claims(&env.info, "jti-sha1")),
            ARM,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // One changed claim after signing: the signature no longer verifies.
    let (head, rest) = assertion.split_once('.').unwrap();
    let sig = rest.split_once('.').unwrap().1;
    let mut claims = assertion_claims(&env.info, "jti-good");
    claims["sub"] = json!("someone-else");
    let tampered = format!("{head}.{}.{sig}", b64(claims.to_string().as_bytes()));
    let (status, body) = env.assertion_token(&tampered, GRAPH).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (error, code, description) = aad(&body);
    assert_eq!((error, code), ("invalid_client", 700027));
    assert!(
        description.contains("Client assertion contains an invalid signature"),
        "{description}"
    );

    // The request log keeps how each request signed in and the assertion's jti, never
    // the assertion itself.
    let requests = env.requests().await;
    let tokens: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/oauth2/v2.0/token"))
        .collect();
    assert_eq!(tokens[0]["grant"], "certificate");
    assert_eq!(tokens[0]["jti"], "jti-good");
    assert_eq!(tokens[1]["jti"], "jti-sha1");
    assert!(tokens[0]["body"].is_null());
    assert!(!serde_json::to_string(&requests).unwrap().contains(sig));
}

#[tokio::test]
async fn certificate_assertions_fail_on_an_unknown_or_expired_key_and_on_wrong_claims_or_times() {
    let env = start().await;
    let signer = Signer::from_pem(&env.info.client_certificate_path);
    let header = json!({ "alg": "RS256", "typ": "JWT", "x5t#S256": signer.x5t_s256() });
    let sign = |claims: &Value| signer.sign(&header, claims);
    let code_of = |body: &Value| (aad(body).1, aad(body).2.to_string());

    // A certificate nobody registered.
    let extra = Signer::from_pem("tests/fixtures/identity/test-extra-client.pem");
    let extra_header = json!({ "alg": "RS256", "x5t#S256": extra.x5t_s256() });
    let extra_assertion = extra.sign(&extra_header, &assertion_claims(&env.info, "x"));
    let (status, body) = env.assertion_token(&extra_assertion, GRAPH).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (code, description) = code_of(&body);
    assert_eq!(code, 700027);
    assert!(
        description.contains("The key was not found."),
        "{description}"
    );
    assert!(description.contains("Thumbprint of key used by client: '"));

    // The registered expired certificate, signed with its own key.
    let expired = Signer::from_pem(&env.info.expired_client_certificate_path);
    let expired_header = json!({ "alg": "RS256", "x5t#S256": expired.x5t_s256() });
    let (status, body) = env
        .assertion_token(
            &expired.sign(&expired_header, &assertion_claims(&env.info, "x")),
            GRAPH,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (code, description) = code_of(&body);
    assert_eq!(code, 700027);
    assert!(
        description.contains("The key used is expired."),
        "{description}"
    );

    // Signed by the wrong key for the thumbprint it names.
    let (_, body) = env
        .assertion_token(
            &expired.sign(&header, &assertion_claims(&env.info, "x")),
            GRAPH,
        )
        .await;
    assert!(code_of(&body).1.contains("invalid signature"));

    // aud must be the token endpoint.
    let mut claims = assertion_claims(&env.info, "x");
    claims["aud"] = json!("https://login.microsoftonline.com/common/oauth2/v2.0/token");
    let (status, body) = env.assertion_token(&sign(&claims), GRAPH).await;
    assert_eq!(
        (status, code_of(&body).0),
        (StatusCode::UNAUTHORIZED, 700212)
    );

    // iss and sub must be the client id.
    let mut claims = assertion_claims(&env.info, "x");
    claims["iss"] = json!("not-the-app");
    let (_, body) = env.assertion_token(&sign(&claims), GRAPH).await;
    assert_eq!(code_of(&body).0, 700021);
    let mut claims = assertion_claims(&env.info, "x");
    claims["sub"] = json!("not-the-app");
    let (_, body) = env.assertion_token(&sign(&claims), GRAPH).await;
    assert_eq!(code_of(&body).0, 700021);

    // Time range, with five minutes of skew either way.
    let mut claims = assertion_claims(&env.info, "x");
    claims["exp"] = json!(now() - 301);
    let (status, body) = env.assertion_token(&sign(&claims), GRAPH).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (code, description) = code_of(&body);
    assert_eq!(code, 700024);
    assert!(description
        .starts_with("AADSTS700024: Client assertion is not within its valid time range."));
    let mut claims = assertion_claims(&env.info, "x");
    claims["nbf"] = json!(now() + 400);
    let (_, body) = env.assertion_token(&sign(&claims), GRAPH).await;
    assert_eq!(code_of(&body).0, 700024);
    let mut claims = assertion_claims(&env.info, "x");
    claims["exp"] = json!(now() - 60);
    claims["nbf"] = json!(now() + 60);
    let (status, _) = env.assertion_token(&sign(&claims), GRAPH).await;
    assert_eq!(status, StatusCode::OK, "within the skew");

    // An HMAC "assertion" is not a certificate signature.
    let hs = json!({ "alg": "HS256", "x5t#S256": signer.x5t_s256() });
    let (_, body) = env
        .assertion_token(
            &sign_with_header(&hs, &assertion_claims(&env.info, "x")),
            GRAPH,
        )
        .await;
    assert_eq!(code_of(&body).0, 700027);
}

/// A JWT with `header` and a junk signature.
fn sign_with_header(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(b"junk")
    )
}

#[tokio::test]
async fn a_certificate_given_by_client_certificates_is_registered_too() {
    let path = "tests/fixtures/identity/test-extra-client.pem";
    let env = start_with(EmulatorConfig {
        client_certificates: vec![path.into()],
        ..EmulatorConfig::default()
    })
    .await;
    let extra = Signer::from_pem(path);
    let header = json!({ "alg": "RS256", "x5t#S256": extra.x5t_s256() });
    let (status, body) = env
        .assertion_token(
            &extra.sign(&header, &assertion_claims(&env.info, "x")),
            GRAPH,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A file that is no certificate stops the start.
    let bad = Emulator::start(
        "127.0.0.1:0".parse().unwrap(),
        EmulatorConfig {
            client_certificates: vec!["Cargo.toml".into()],
            ..EmulatorConfig::default()
        },
    )
    .await;
    assert!(bad.is_err());
}

#[tokio::test]
async fn federated_tokens_from_the_emulators_issuer_sign_in_and_each_mismatch_has_its_code() {
    let env = start().await;
    let file = env.federated_token(&[]).await;
    let claims = claims_of(&file);
    assert_eq!(claims["iss"], format!("http://{}/oidc", env.emulator.addr));
    assert_eq!(claims["sub"], env.info.federated_subject);
    assert_eq!(
        env.info.federated_subject,
        "system:serviceaccount:rulebridge:rulebridge"
    );
    assert_eq!(claims["aud"], json!(["api://AzureADTokenExchange"]));
    assert!(claims["exp"].as_i64().unwrap() > now() + 3000);
    let (status, body) = env.assertion_token(&file, ARM).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(env.get(&env.sentinel(""), token).await.0, StatusCode::OK);

    // A rotated file: another jti, and the log tells which one a request presented.
    let rotated = env.federated_token(&[]).await;
    assert_ne!(claims_of(&rotated)["jti"], claims["jti"]);
    env.assertion_token(&rotated, GRAPH).await;
    let requests = env.requests().await;
    let grants: Vec<(&Value, &Value)> = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/oauth2/v2.0/token"))
        .map(|r| (&r["grant"], &r["jti"]))
        .collect();
    assert_eq!(grants.len(), 2);
    assert_eq!(grants[0], (&json!("federated"), &claims["jti"]));
    assert_eq!(grants[1].1, &claims_of(&rotated)["jti"]);

    let code = |body: &Value| aad(body).1;
    // Expired (lifetime 0 or negative is allowed for exactly this).
    let old = env.federated_token(&[("lifetime_secs", "-600")]).await;
    let (status, body) = env.assertion_token(&old, GRAPH).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, 700024));
    // Another subject than the federated credential's.
    let other = env
        .federated_token(&[("subject", "system:serviceaccount:other:other")])
        .await;
    let (_, body) = env.assertion_token(&other, GRAPH).await;
    assert_eq!(code(&body), 700213);
    assert!(aad(&body)
        .2
        .contains("assertion subject 'system:serviceaccount:other:other'"));
    // Another audience.
    let aud = env.federated_token(&[("audience", "api://other")]).await;
    let (_, body) = env.assertion_token(&aud, GRAPH).await;
    assert_eq!(code(&body), 700212);
    // Another issuer (a key of its own, no certificate thumbprint: a federated token).
    let signer = Signer::from_pem(&env.info.client_certificate_path);
    let mut foreign = claims.clone();
    foreign["iss"] = json!("https://oidc.prod-aks.azure.com/some-other-cluster/");
    let foreign = signer.sign(&json!({ "alg": "RS256", "kid": "k" }), &foreign);
    let (_, body) = env.assertion_token(&foreign, GRAPH).await;
    assert_eq!(code(&body), 700211);
    assert!(aad(&body).2.contains("assertion issuer"));
    // Our issuer's name, someone else's signature.
    let forged = signer.sign(&json!({ "alg": "RS256", "kid": "k" }), &claims);
    let (_, body) = env.assertion_token(&forged, GRAPH).await;
    assert_eq!(code(&body), 700027);
}

#[tokio::test]
async fn the_federated_subject_is_configurable() {
    let env = start_with(EmulatorConfig {
        federated_subject: "system:serviceaccount:security:bridge".into(),
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(
        env.info.federated_subject,
        "system:serviceaccount:security:bridge"
    );
    let default_subject = env.federated_token(&[]).await;
    let (_, body) = env.assertion_token(&default_subject, GRAPH).await;
    assert_eq!(aad(&body).1, 700213);
    let right = env
        .federated_token(&[("subject", "system:serviceaccount:security:bridge")])
        .await;
    assert_eq!(env.assertion_token(&right, GRAPH).await.0, StatusCode::OK);
}

#[tokio::test]
async fn imds_issues_system_and_user_assigned_tokens_with_numbers_as_strings() {
    let env = start().await;
    let graph = [
        ("api-version", "2018-02-01"),
        ("resource", "https://graph.microsoft.com"),
    ];
    let (status, body) = env.imds(&graph, false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );

    let (status, body) = env.imds(&graph, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for field in ["expires_in", "expires_on", "ext_expires_in", "not_before"] {
        let text = body[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is a string"));
        text.parse::<i64>().unwrap();
    }
    assert_eq!(body["expires_in"], "86399");
    assert_eq!(body["resource"], "https://graph.microsoft.com");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["client_id"], env.info.managed_identity_client_id);
    let token = body["access_token"].as_str().unwrap();
    let claims = claims_of(token);
    assert_eq!(claims["appid"], env.info.managed_identity_client_id);
    assert_eq!(claims["roles"], json!(["SecurityIncident.ReadWrite.All"]));
    assert_eq!(
        env.get(&env.graph_incidents(), token).await.0,
        StatusCode::OK
    );

    // User-assigned, for ARM, trailing slash tolerated.
    let (status, body) = env
        .imds(
            &[
                ("api-version", "2018-02-01"),
                ("resource", "https://management.azure.com/"),
                ("client_id", &env.info.user_assigned_client_id),
            ],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["client_id"], env.info.user_assigned_client_id);
    let token = body["access_token"].as_str().unwrap();
    assert!(claims_of(token).get("roles").is_none());
    assert_ne!(claims_of(token)["oid"], claims["oid"], "another principal");
    assert_eq!(env.get(&env.sentinel(""), token).await.0, StatusCode::OK);

    let (status, body) = env
        .imds(
            &[
                ("api-version", "2018-02-01"),
                ("resource", "https://graph.microsoft.com"),
                ("client_id", "99999999-9999-4999-8999-999999999999"),
            ],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
    // Another cloud's resource, and a scope where a resource belongs.
    for resource in [
        "https://graph.microsoft.us",
        "https://graph.microsoft.com/.default",
    ] {
        let (status, body) = env
            .imds(
                &[("api-version", "2018-02-01"), ("resource", resource)],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_resource");
        assert!(body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS500011"));
    }
}

#[tokio::test]
async fn the_app_service_endpoint_needs_its_identity_header() {
    let env = start().await;
    let query = [
        ("api-version", "2019-08-01"),
        ("resource", "https://management.azure.com"),
    ];
    let (status, body) = env.app_service(&query, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string());
    let (status, body) = env.app_service(&query, Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].is_string());
    assert_eq!(env.info.identity_header.len(), 32);
    let (status, body) = env
        .app_service(&query, Some(&env.info.identity_header))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expires_on: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(expires_on > now() + 80_000);
    assert_eq!(body["resource"], "https://management.azure.com");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["client_id"], env.info.managed_identity_client_id);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(env.get(&env.sentinel(""), token).await.0, StatusCode::OK);
    let (status, body) = env
        .app_service(
            &[
                ("api-version", "2019-08-01"),
                ("resource", "https://graph.microsoft.com"),
                ("client_id", &env.info.user_assigned_client_id),
            ],
            Some(&env.info.identity_header),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["client_id"], env.info.user_assigned_client_id);
    let (status, body) = env
        .app_service(
            &[
                ("api-version", "2019-08-01"),
                ("resource", "https://dod-graph.microsoft.us"),
            ],
            Some(&env.info.identity_header),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_codes"][0], 500011);
}

#[tokio::test]
async fn fault_rules_throttle_the_identity_endpoints_and_the_token_endpoint_separately() {
    let env = start().await;
    env.emulator.add_fault(FaultRule {
        kind: FaultKind::Throttle { retry_after: 1 },
        endpoint: Endpoint::Identity,
        rate: 0.0,
        count: Some(2),
        after: 0,
    });
    let graph = [
        ("api-version", "2018-02-01"),
        ("resource", "https://graph.microsoft.com"),
    ];
    // The token endpoint is not the identity endpoint.
    env.token(GRAPH).await;
    let response = env
        .client
        .get(&env.info.imds_endpoint)
        .query(&graph)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let query = [
        ("api-version", "2019-08-01"),
        ("resource", "https://graph.microsoft.com"),
    ];
    let (status, _) = env
        .app_service(&query, Some(&env.info.identity_header))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(env.imds(&graph, true).await.0, StatusCode::OK, "recovered");

    env.emulator.add_fault(FaultRule {
        kind: FaultKind::ServerError { status: 503 },
        endpoint: Endpoint::Token,
        rate: 0.0,
        count: Some(1),
        after: 0,
    });
    assert_eq!(env.imds(&graph, true).await.0, StatusCode::OK);
    let (status, _) = env.secret_token(&env.info.client_secret, GRAPH).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    env.token(GRAPH).await;
}

#[tokio::test]
async fn graph_enforces_the_tokens_application_roles() {
    // Read only: lists and gets pass, updates and comments are 403.
    let env = start_with(EmulatorConfig {
        graph_roles: vec!["SecurityIncident.Read.All".into()],
        ..EmulatorConfig::default()
    })
    .await;
    env.emulator
        .store()
        .seed_graph(json!({"id": "42", "displayName": "x"}))
        .unwrap();
    let token = env.token(GRAPH).await;
    assert_eq!(
        claims_of(&token)["roles"],
        json!(["SecurityIncident.Read.All"])
    );
    assert_eq!(
        env.get(&env.graph_incidents(), &token).await.0,
        StatusCode::OK
    );
    let one = format!("{}/42", env.graph_incidents());
    assert_eq!(env.get(&one, &token).await.0, StatusCode::OK);
    let alerts = format!("{}/security/alerts_v2", env.info.graph_base_url);
    assert_eq!(env.get(&alerts, &token).await.0, StatusCode::OK);
    let response = env
        .client
        .patch(&one)
        .bearer_auth(&token)
        .json(&json!({"status": "active"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Forbidden");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("SecurityIncident.ReadWrite.All"));
    let response = env
        .client
        .post(format!("{one}/comments"))
        .bearer_auth(&token)
        .json(&json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // ReadWrite (the default): the same PATCH passes.
    let full = start().await;
    full.emulator
        .store()
        .seed_graph(json!({"id": "42", "displayName": "x"}))
        .unwrap();
    let token = full.token(GRAPH).await;
    let response = full
        .client
        .patch(format!("{}/42", full.graph_incidents()))
        .bearer_auth(&token)
        .json(&json!({"status": "active"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // No consent: no roles claim, every read is 403 too.
    let none = start_with(EmulatorConfig {
        graph_roles: Vec::new(),
        ..EmulatorConfig::default()
    })
    .await;
    let token = none.token(GRAPH).await;
    assert!(claims_of(&token).get("roles").is_none());
    let (status, body) = none.get(&none.graph_incidents(), &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "Forbidden");
}

#[tokio::test]
async fn arm_checks_rbac_actions_with_wildcards_and_reports_them_on_the_permissions_route() {
    let env = start_with(EmulatorConfig {
        arm_actions: vec![
            "*/read".into(),
            "Microsoft.SecurityInsights/incidents/write".into(),
        ],
        arm_not_actions: vec!["microsoft.securityinsights/incidents/comments/*".into()],
        ..EmulatorConfig::default()
    })
    .await;
    let arm = env.token(ARM).await;
    let oid = claims_of(&arm)["oid"].as_str().unwrap().to_string();
    assert_eq!(env.get(&env.sentinel(""), &arm).await.0, StatusCode::OK);
    let incident = json!({"properties": {"title": "t", "severity": "Low", "status": "New"}});
    let put = env
        .client
        .put(env.sentinel("/abc"))
        .bearer_auth(&arm)
        .json(&incident)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    // Comments are excluded by notActions (case-insensitive wildcard).
    let comment = env
        .client
        .put(env.sentinel("/abc/comments/c1"))
        .bearer_auth(&arm)
        .json(&json!({"properties": {"message": "m"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(comment.status(), StatusCode::FORBIDDEN);
    let body: Value = comment.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
    let scope = format!(
        "{}/providers/Microsoft.SecurityInsights/incidents/abc/comments/c1",
        env.info.workspace_resource_id
    );
    assert_eq!(
        body["error"]["message"],
        format!("The client '{}' with object id '{oid}' does not have authorization to perform action 'Microsoft.SecurityInsights/incidents/comments/write' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.", env.info.client_id)
    );
    let (status, _) = env.get(&env.sentinel("/abc/comments"), &arm).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Delete is not granted at all.
    let delete = env
        .client
        .delete(env.sentinel("/abc"))
        .bearer_auth(&arm)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::FORBIDDEN);

    let (status, body) = env
        .get(&env.permissions_url(&env.info.workspace_resource_id), &arm)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"value": [{
            "actions": ["*/read", "Microsoft.SecurityInsights/incidents/write"],
            "notActions": ["microsoft.securityinsights/incidents/comments/*"],
            "dataActions": [], "notDataActions": []
        }]})
    );
    let graph = env.token(GRAPH).await;
    let (status, _) = env
        .get(
            &env.permissions_url(&env.info.workspace_resource_id),
            &graph,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The defaults: Microsoft.SecurityInsights/*, nothing excluded; a reader of nothing
    // gets 403 on every incident route.
    let default = start().await;
    let arm = default.token(ARM).await;
    let (_, body) = default
        .get(
            &default.permissions_url(&default.info.workspace_resource_id),
            &arm,
        )
        .await;
    assert_eq!(
        body["value"][0]["actions"],
        json!(["Microsoft.SecurityInsights/*"])
    );
    assert_eq!(body["value"][0]["notActions"], json!([]));
    let nothing = start_with(EmulatorConfig {
        arm_actions: Vec::new(),
        ..EmulatorConfig::default()
    })
    .await;
    let arm = nothing.token(ARM).await;
    let (status, body) = nothing.get(&nothing.sentinel(""), &arm).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'Microsoft.SecurityInsights/incidents/read'"));
}

#[tokio::test]
async fn a_wrong_subscription_resource_group_or_workspace_is_arms_404() {
    let env = start().await;
    let arm = env.token(ARM).await;
    let id = env.info.workspace_resource_id.clone();
    let sub = id.split('/').nth(2).unwrap().to_string();
    let cases = [
        (
            id.replace(&sub, "00000000-0000-4000-8000-00000000dead"),
            "SubscriptionNotFound",
        ),
        (
            id.replace("rulebridge-emulator", "another-group"),
            "ResourceGroupNotFound",
        ),
        (
            id.replace("rulebridge-workspace", "another-workspace"),
            "ResourceNotFound",
        ),
    ];
    assert_ne!(cases[1].0, id);
    assert_ne!(cases[2].0, id);
    for (workspace, code) in &cases {
        let (status, body) = env.get(&env.permissions_url(workspace), &arm).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{workspace}");
        assert_eq!(body["error"]["code"], *code);
        let list = format!(
            "http://{}{workspace}/providers/Microsoft.SecurityInsights/incidents?api-version=2024-03-01",
            env.emulator.addr
        );
        let (status, body) = env.get(&list, &arm).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], *code);
    }
    // ARM names are case-insensitive.
    let upper = env.permissions_url(&id.replace("rulebridge-workspace", "RuleBridge-Workspace"));
    assert_eq!(env.get(&upper, &arm).await.0, StatusCode::OK);
}

#[tokio::test]
async fn info_reports_every_identity_field_and_the_test_certificates_live_as_long_as_the_emulator()
{
    let env = start().await;
    let info = &env.info;
    let base = format!("http://{}", env.emulator.addr);
    assert_eq!(info.authority_host, format!("{base}/"));
    assert_eq!(
        format!(
            "{}{}/oauth2/v2.0/token",
            info.authority_host, info.tenant_id
        ),
        info.token_url
    );
    assert_eq!(info.graph_resource, "https://graph.microsoft.com");
    assert_eq!(info.arm_resource, "https://management.azure.com");
    assert_eq!(
        info.imds_endpoint,
        format!("{base}/metadata/identity/oauth2/token")
    );
    assert_eq!(info.identity_endpoint, format!("{base}/msi/token"));
    assert_eq!(
        info.federated_token_url,
        format!("{base}/_emulator/federated-token")
    );
    assert_eq!(info.client_certificate_pfx_password, "rulebridge-test");
    assert_ne!(
        info.managed_identity_client_id,
        info.user_assigned_client_id
    );
    assert!(info.sentinel_incidents_url.contains(&format!(
        "{}/providers/Microsoft.SecurityInsights/incidents?",
        info.workspace_resource_id
    )));
    assert!(info.workspace_resource_id.starts_with("/subscriptions/"));
    // The PEM holds a key and a certificate; the PFX is a PKCS#12 file.
    let pem = std::fs::read_to_string(&info.client_certificate_path).unwrap();
    assert!(pem.contains("BEGIN PRIVATE KEY") && pem.contains("BEGIN CERTIFICATE"));
    let expired = std::fs::read_to_string(&info.expired_client_certificate_path).unwrap();
    assert!(expired.contains("BEGIN PRIVATE KEY") && expired.contains("BEGIN CERTIFICATE"));
    assert!(!std::fs::read(&info.client_certificate_pfx_path)
        .unwrap()
        .is_empty());
    // The control API answers the same.
    let got: EmulatorInfo = env
        .client
        .get(format!("{base}/_emulator/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got.client_certificate_path, info.client_certificate_path);
    assert_eq!(got.identity_header, info.identity_header);
    assert_eq!(got.cloud, "public");
    // An older emulator's info (without the new fields) still reads.
    let old: EmulatorInfo = serde_json::from_value(json!({
        "token_url": "t", "graph_base_url": "g", "sentinel_incidents_url": "s",
        "tenant_id": "x", "client_id": "c", "client_secret": "p"
    }))
    .unwrap();
    assert_eq!(old.cloud, "");
    let path = info.client_certificate_path.clone();
    drop(env);
    assert!(
        !std::path::Path::new(&path).exists(),
        "removed with the emulator"
    );
}
