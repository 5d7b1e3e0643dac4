//! The shipped example configurations load as they are, and the emulator one points
//! exactly where `rulebridge emulate` (no flags) listens.

use rulebridge::config::Config;
use rulebridge::emulator::{Emulator, EmulatorConfig};
use std::net::SocketAddr;
use std::path::Path;

#[test]
fn the_tenant_example_loads_and_validates() {
    let config = Config::load(Path::new("examples/tenant.toml")).unwrap();
    assert_eq!(
        config.sentinel_incidents_url(),
        "https://management.azure.com/subscriptions/66666666-7777-8888-9999-000000000000/resourceGroups/rg-security/providers/Microsoft.OperationalInsights/workspaces/law-sentinel-prod/providers/Microsoft.SecurityInsights/incidents?api-version=2024-03-01"
    );
    assert_eq!(
        config.graph_token_url().unwrap(),
        "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token"
    );
    assert_eq!(config.credentials.client_secret_file, None);
    assert_eq!(config.credentials.client_secret_env, "AZURE_CLIENT_SECRET");
}

#[test]
fn the_tenant_example_mentions_every_key_of_the_schema() {
    let text = std::fs::read_to_string("examples/tenant.toml").unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("schemas/config.schema.json").unwrap())
            .unwrap();
    for (section, spec) in schema["properties"].as_object().unwrap() {
        assert!(text.contains(&format!("[{section}]")), "[{section}]");
        for key in spec["properties"].as_object().unwrap().keys() {
            assert!(text.contains(&format!("{key} = ")), "{section}.{key}");
        }
    }
}

#[tokio::test]
async fn the_emulator_example_points_at_a_default_emulator() {
    let config = Config::load(Path::new("examples/emulator.toml")).unwrap();
    // A default emulator on a free port tells what it serves; 8943 is `emulate`'s
    // default port, which the example names.
    let emulator = Emulator::start(
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        EmulatorConfig::default(),
    )
    .await
    .unwrap();
    let at_8943 = |url: &str| url.replace(&emulator.addr.to_string(), "127.0.0.1:8943");
    let info = emulator.info();
    assert_eq!(config.graph_url(), at_8943(&info.graph_base_url));
    assert_eq!(config.graph_token_url().unwrap(), at_8943(&info.token_url));
    assert_eq!(
        config.sentinel_token_url().unwrap(),
        at_8943(&info.token_url)
    );
    assert_eq!(
        config.sentinel_incidents_url(),
        at_8943(&info.sentinel_incidents_url)
    );

    let identity = config.identity().unwrap();
    assert_eq!(identity.tenant_id, info.tenant_id);
    assert_eq!(identity.kind, rulebridge::client::CredentialKind::Secret);
    match identity.graph {
        rulebridge::client::SignIn::App {
            client_id, proof, ..
        } => {
            assert_eq!(client_id, info.client_id);
            assert!(
                matches!(&*proof, rulebridge::client::Proof::Secret(s) if s.expose() == info.client_secret)
            );
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(config.sync.rules, Path::new("examples/../rules"));
    assert!(config.sync.rules.join("pack.toml").is_file());
    assert_eq!(
        config.sync.state,
        Path::new("examples/rulebridge-emulator.db")
    );
}

#[test]
fn the_emulator_example_matches_the_default_emulator_config() {
    let config = Config::load(Path::new("examples/emulator.toml")).unwrap();
    let emulator = EmulatorConfig::default();
    assert_eq!(
        config.defender.tenant_id.as_deref(),
        Some(emulator.tenant.as_str())
    );
    assert_eq!(
        config.credentials.client_id.as_deref(),
        Some(emulator.client_id.as_str())
    );
    assert_eq!(
        config.sentinel.subscription_id.as_deref(),
        Some(emulator.subscription.as_str())
    );
    assert_eq!(
        config.sentinel.resource_group.as_deref(),
        Some(emulator.resource_group.as_str())
    );
    assert_eq!(
        config.sentinel.workspace.as_deref(),
        Some(emulator.workspace.as_str())
    );
    assert_eq!(
        std::fs::read_to_string("examples/emulator.secret")
            .unwrap()
            .trim(),
        emulator.client_secret
    );
}
