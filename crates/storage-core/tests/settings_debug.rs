//! `Debug` of the settings themselves never shows a value: values include secrets.

use figment::providers::{Format, Toml};
use storage_core::Settings;

#[test]
fn debug_of_settings_shows_sources_not_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("storages.toml");
    std::fs::write(&path, "[storages.media]\nbackend = \"x\"\nsecret_key = \"file-s3cr3t\"\n").expect("write");
    let env = [
        ("AWS_SECRET_ACCESS_KEY".to_string(), "env-s3cr3t".to_string()),
        ("STORAGES__MEDIA__SECURITY_TOKEN".to_string(), "token-s3cr3t".to_string()),
    ];
    let settings = Settings::from_file_and_env(&path, env)
        .expect("settings")
        .merge(Toml::string("[storages.media]\nsecret_key = \"code-s3cr3t\"\n"));
    let storage = settings.storage("media").expect("storage");
    for shown in [format!("{settings:?}"), format!("{settings:#?}"), format!("{storage:?}")] {
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
    let shown = format!("{settings:?}");
    assert!(shown.contains("media") && shown.contains(&path.display().to_string()), "{shown}");
}
