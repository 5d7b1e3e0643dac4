//! Credentials from the environment (its own test binary: environment variables are
//! process-wide, so nothing else runs beside this test).

use rulebridge::client::Credentials;

#[test]
fn credentials_come_from_the_environment_or_a_secret_file_and_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-a-file-7c1e\n").unwrap();
    // SAFETY: this test binary has one test, so no other thread reads the environment.
    unsafe {
        std::env::set_var("AZURE_TENANT_ID", "tenant-1");
        std::env::set_var("AZURE_CLIENT_ID", "client-1");
        std::env::remove_var("AZURE_CLIENT_SECRET");
        std::env::remove_var("AZURE_CLIENT_SECRET_FILE");
    }
    let missing = Credentials::from_env().unwrap_err();
    assert!(missing.contains("AZURE_CLIENT_SECRET"), "{missing}");

    unsafe { std::env::set_var("AZURE_CLIENT_SECRET_FILE", &file) };
    let from_file = Credentials::from_env().unwrap();
    assert_eq!(from_file.client_secret.expose(), "from-a-file-7c1e");
    assert!(!format!("{from_file:?}").contains("from-a-file-7c1e"));

    unsafe { std::env::set_var("AZURE_CLIENT_SECRET", "from-env-55aa") };
    let from_env = Credentials::from_env().unwrap();
    assert_eq!(
        (from_env.tenant_id.as_str(), from_env.client_id.as_str()),
        ("tenant-1", "client-1")
    );
    assert_eq!(
        from_env.client_secret.expose(),
        "from-env-55aa",
        "the variable wins over the file"
    );
    assert_eq!(format!("{}", from_env.client_secret), "***");
}
