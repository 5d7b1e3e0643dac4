//! Sign-in from the process environment, as `run` resolves it (its own test binary:
//! environment variables are process-wide, so nothing else runs beside this test).

use rulebridge::client::{CredentialKind, Proof, SignIn};
use rulebridge::config::Config;

const CONFIG: &str =
    "[sentinel]\nsubscription_id = \"s\"\nresource_group = \"g\"\nworkspace = \"w\"\n";

fn secret_of(config: &Config) -> Result<String, String> {
    let identity = config.identity().map_err(|e| e.to_string())?;
    assert_eq!(identity.kind, CredentialKind::Secret);
    assert_eq!(identity.tenant_id, "tenant-1");
    match identity.graph {
        SignIn::App {
            client_id, proof, ..
        } => {
            assert_eq!(client_id, "client-1");
            match &*proof {
                Proof::Secret(secret) => {
                    assert_eq!(format!("{secret:?} {secret}"), "*** ***");
                    Ok(secret.expose().to_string())
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_secret_comes_from_the_environment_or_a_secret_file_and_never_prints() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-a-file-7c1e\n").unwrap();
    let config = Config::parse(CONFIG, "rb.toml").unwrap();
    // SAFETY: this test binary has one test, so no other thread reads the environment.
    unsafe {
        std::env::set_var("AZURE_TENANT_ID", "tenant-1");
        std::env::set_var("AZURE_CLIENT_ID", "client-1");
        for name in [
            "AZURE_CLIENT_SECRET",
            "AZURE_CLIENT_SECRET_FILE",
            "AZURE_CLIENT_CERTIFICATE_PATH",
            "AZURE_FEDERATED_TOKEN_FILE",
            "IDENTITY_ENDPOINT",
        ] {
            std::env::remove_var(name);
        }
    }
    let missing = config.identity().unwrap_err().to_string();
    assert!(
        missing.contains("no credential found") && missing.contains("AZURE_CLIENT_SECRET_FILE"),
        "{missing}"
    );

    unsafe { std::env::set_var("AZURE_CLIENT_SECRET_FILE", &file) };
    assert_eq!(secret_of(&config).unwrap(), "from-a-file-7c1e");
    let identity = config.identity().unwrap();
    assert!(!format!("{identity:?}").contains("from-a-file-7c1e"));
    assert!(identity.source.contains("AZURE_CLIENT_SECRET_FILE"));

    unsafe { std::env::set_var("AZURE_CLIENT_SECRET", "from-env-55aa") };
    assert_eq!(
        secret_of(&config).unwrap(),
        "from-env-55aa",
        "the variable wins over the file"
    );
}
