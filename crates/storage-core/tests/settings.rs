//! Settings: origins of misspelt keys, secrets, legacy variables and the registry's errors.

use figment::providers::{Format, Serialized, Toml};
use serde::Deserialize;
use storage_core::{Secret, Settings, SettingsError, Storages};

fn write_toml(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("storages.toml");
    std::fs::write(&path, text).expect("write storages.toml");
    (dir, path)
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn misspelt_key_in_the_file_names_key_alias_file_and_closest_key() {
    let (_dir, path) = write_toml(
        r#"
        [storages.uploads]
        backend = "storages.backends.memory.InMemoryStorage"
        base_ulr = "/up/"
        "#,
    );
    let storages = Storages::new(Settings::from_file_and_env(&path, env(&[])).expect("settings"));
    let error = storages.get("uploads").expect_err("misspelt key must fail");
    let message = error.to_string();
    assert!(message.contains("`base_ulr`"), "{message}");
    assert!(message.contains("storage 'uploads'"), "{message}");
    assert!(message.contains(&format!("file {}", path.display())), "{message}");
    assert!(message.contains("did you mean `base_url`?"), "{message}");
    match error {
        storage_core::Error::Settings(error) if matches!(*error, SettingsError::UnknownKey { .. }) => {
            let SettingsError::UnknownKey { key, alias, closest, .. } = *error else { unreachable!() };
            assert_eq!((key.as_str(), alias.as_str(), closest), ("base_ulr", "uploads", Some("base_url")));
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn misspelt_key_in_the_environment_names_the_variable() {
    let (_dir, path) = write_toml("[storages.default]\nbackend = \"storages.backends.memory.InMemoryStorage\"\n");
    let settings =
        Settings::from_file_and_env(&path, env(&[("STORAGES__DEFAULT__FILE_OVERWRITTE", "true")])).expect("settings");
    let message = Storages::new(settings).get("default").expect_err("misspelt key must fail").to_string();
    assert!(message.contains("`file_overwritte`"), "{message}");
    assert!(message.contains("storage 'default'"), "{message}");
    assert!(message.contains("environment variable STORAGES__DEFAULT__FILE_OVERWRITTE"), "{message}");
    assert!(message.contains("did you mean `file_overwrite`?"), "{message}");
}

#[test]
fn environment_overrides_the_file_and_is_typed() {
    let (_dir, path) = write_toml(
        "[storages.default]\nbackend = \"storages.backends.memory.InMemoryStorage\"\nfile_overwrite = false\n",
    );
    let settings =
        Settings::from_file_and_env(&path, env(&[("STORAGES__DEFAULT__FILE_OVERWRITE", "true")])).expect("settings");
    let options: storage_core::MemoryOptions =
        settings.storage("default").expect("storage").options().expect("options");
    assert!(options.file_overwrite);
}

#[test]
fn environment_text_that_looks_like_a_number_stays_text() {
    #[derive(Debug, Deserialize)]
    struct Text {
        bucket_name: String,
        secret_key: Secret,
        max_retries: u32,
    }
    let env = env(&[
        ("STORAGES__S3__BUCKET_NAME", "12345"),
        ("STORAGES__S3__SECRET_KEY", "0042"),
        ("STORAGES__S3__MAX_RETRIES", "7"),
        ("STORAGES__S3__BACKEND", "x"),
    ]);
    let (_dir, path) = write_toml("");
    let settings = Settings::from_file_and_env(&path, env).expect("settings");
    let text: Text = settings.storage("s3").expect("storage").options().expect("options");
    assert_eq!((text.bucket_name.as_str(), text.secret_key.expose(), text.max_retries), ("12345", "0042", 7));
}

#[test]
fn a_value_of_the_wrong_type_names_key_origin_and_value_but_never_a_secret() {
    let (_dir, path) = write_toml(
        "[storages.default]\nbackend = \"storages.backends.memory.InMemoryStorage\"\nfile_overwrite = \"sometimes\"\n",
    );
    let settings = Settings::from_file_and_env(&path, env(&[])).expect("settings");
    let message = Storages::new(settings).get("default").expect_err("bad type").to_string();
    assert!(message.contains("invalid setting `file_overwrite`"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("sometimes"), "the value helps: {message}");

    let settings = Settings::empty().merge(Toml::string(
        "[storages.s3]\nbackend = \"x\"\naccess_key = \"AKID\"\nsecret_key = [\"s3cr3t-in-a-list\"]\n",
    ));
    let message = settings.storage("s3").expect("storage").options::<WithSecret>().expect_err("bad type").to_string();
    assert!(message.contains("invalid setting `secret_key`"), "{message}");
    assert!(!message.contains("s3cr3t"), "{message}");
}

#[test]
fn malformed_files_and_misspelt_backends_are_named() {
    let (_dir, path) = write_toml("[storages.default\n");
    let message = Settings::from_file_and_env(&path, env(&[])).expect_err("syntax error").to_string();
    assert!(message.contains("cannot read the settings"), "{message}");
    let (_dir, path) = write_toml("storages = 3\n");
    let message = Settings::from_file_and_env(&path, env(&[])).expect_err("not a table").to_string();
    assert!(message.contains("`storages` must be a table"), "{message}");

    let settings = Settings::empty().merge(Toml::string("[storages.default]\nbacknd = \"x\"\n"));
    let message = Storages::new(settings.clone()).get("default").expect_err("typo").to_string();
    assert!(message.contains("`backnd`") && message.contains("did you mean `backend`?"), "{message}");
    let message = Storages::new(settings).get("Default").expect_err("alias typo").to_string();
    assert!(message.contains("did you mean 'default'?"), "{message}");
}

#[test]
fn legacy_variables_choose_the_backend_of_default_and_staticfiles() {
    let (_dir, path) = write_toml("");
    let settings = Settings::from_file_and_env(
        &path,
        env(&[
            ("DEFAULT_FILE_STORAGE", "django.core.files.storage.InMemoryStorage"),
            ("STATICFILES_STORAGE", "storages.backends.memory.InMemoryStorage"),
        ]),
    )
    .expect("settings");
    assert_eq!(settings.aliases(), ["default", "staticfiles"]);
    let storages = Storages::new(settings);
    assert_eq!(storages.get("default").expect("default").alias(), "default");
    assert_eq!(storages.get("staticfiles").expect("staticfiles").alias(), "staticfiles");
}

#[test]
fn an_unconfigured_alias_says_how_to_configure_it() {
    let message = Storages::new(Settings::empty()).get("default").expect_err("not configured").to_string();
    assert!(message.contains("storage 'default' is not configured"), "{message}");
    assert!(message.contains("DEFAULT_FILE_STORAGE"), "{message}");
}

#[test]
fn an_unknown_dotted_path_lists_the_registered_ones_and_the_closest() {
    let settings = Settings::empty()
        .merge(Toml::string("[storages.default]\nbackend = \"storages.backends.memory.InMemoryStorag\"\n"));
    let error = Storages::new(settings).get("default").expect_err("unknown path");
    let message = error.to_string();
    assert!(message.contains("unknown backend `storages.backends.memory.InMemoryStorag`"), "{message}");
    assert!(message.contains("did you mean `storages.backends.memory.InMemoryStorage`?"), "{message}");
    assert!(message.contains("django.core.files.storage.InMemoryStorage"), "{message}");
    assert!(message.contains("not linked"), "{message}");
    match error {
        storage_core::Error::Settings(error) if matches!(*error, SettingsError::UnknownBackend { .. }) => {
            let SettingsError::UnknownBackend { registered, .. } = *error else { unreachable!() };
            assert_eq!(
                registered,
                ["django.core.files.storage.InMemoryStorage", "storages.backends.memory.InMemoryStorage"]
            );
        }
        other => panic!("expected UnknownBackend, got {other:?}"),
    }
}

#[test]
fn core_alone_registers_exactly_the_memory_backend() {
    assert_eq!(storage_core::registered_paths().expect("registry"), ["storages.backends.memory.InMemoryStorage"]);
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Fields are read only through Debug, which is what this test checks.
struct WithSecret {
    access_key: String,
    secret_key: Secret,
    security_token: Option<Secret>,
}

#[test]
fn debug_of_settings_never_shows_a_secret() {
    let settings = Settings::empty()
        .merge(Toml::string(
            "[storages.s3]\nbackend = \"x\"\naccess_key = \"AKIDEXAMPLE\"\nsecret_key = \"wJalrXUtnFEMI-s3cr3t\"\n",
        ))
        .merge(Serialized::default("storages.s3.security_token", "t0k3n-s3cr3t"));
    let options: WithSecret = settings.storage("s3").expect("storage").options().expect("options");
    assert_eq!(options.secret_key.expose(), "wJalrXUtnFEMI-s3cr3t");
    for shown in [format!("{options:?}"), format!("{options:#?}")] {
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
    // A misspelt key next to secrets: the error shows neither secret.
    let typo = settings.clone().merge(Serialized::default("storages.s3.secret_kye", "other-s3cr3t"));
    let message = typo.storage("s3").expect("storage").options::<WithSecret>().expect_err("typo").to_string();
    assert!(message.contains("did you mean `secret_key`?"), "{message}");
    assert!(!message.contains("s3cr3t"), "{message}");
}
