//! AWS profiles from the shared files `aws configure` writes (`~/.aws/credentials`, `~/.aws/config`, or
//! `$AWS_SHARED_CREDENTIALS_FILE`, `$AWS_CONFIG_FILE`), as boto3's session reads them: keys, session token,
//! region and endpoint.
//!
//! - `session_profile` (`AWS_S3_SESSION_PROFILE`) names a profile that must exist, and goes with no keys, as in
//!   django-storages.
//! - Without keys, `$AWS_PROFILE`, else the `default` profile, is used when the files have it; otherwise the
//!   rest of the AWS chain (web identity, container, instance credentials) is asked, as before.

use crate::S3Options;
use ini::Ini;
use std::path::PathBuf;
use storage_core::Secret;

/// The message of django-storages' `ImproperlyConfigured` for a profile given with keys.
const WITH_KEYS: &str = "AWS_S3_SESSION_PROFILE/session_profile should not be provided with \
                         AWS_S3_ACCESS_KEY_ID/access_key and AWS_S3_SECRET_ACCESS_KEY/secret_key";

/// `options` with what their profile gives filled in: keys and token, the region unless `region_given`, the
/// endpoint unless set. The error is the setting to name and a sentence that repeats no secret.
pub(crate) fn apply(mut options: S3Options, region_given: bool) -> Result<S3Options, (&'static str, String)> {
    let keys = options.access_key.is_some() || options.secret_key.is_some();
    if options.session_profile.is_some() && keys {
        return Err(("session_profile", WITH_KEYS.into()));
    }
    if keys {
        return Ok(options);
    }
    let named = options.session_profile.clone().or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()));
    let name = named.clone().unwrap_or_else(|| "default".into());
    let (credentials, config) = (credentials_file(), config_file());
    let read = |path: &Option<PathBuf>| -> Result<Option<Ini>, (&'static str, String)> {
        match path {
            Some(path) if path.exists() => Ini::load_from_file_noescape(path).map(Some).map_err(|e| {
                ("session_profile", format!("{} cannot be read as an AWS shared file: {e}", path.display()))
            }),
            _ => Ok(None),
        }
    };
    let (credentials_ini, config_ini) = (read(&credentials)?, read(&config)?);
    // In the credentials file a profile is `[name]`; in the config file `[profile name]`, but `[default]`.
    let config_section = if name == "default" { "default".to_owned() } else { format!("profile {name}") };
    let from_credentials = credentials_ini.as_ref().and_then(|ini| ini.section(Some(name.as_str())));
    let from_config = config_ini.as_ref().and_then(|ini| ini.section(Some(config_section.as_str())));
    if from_credentials.is_none() && from_config.is_none() {
        return match named {
            Some(name) => Err((
                "session_profile",
                format!("the AWS profile '{name}' is in neither {} nor {}", shown(&credentials), shown(&config)),
            )),
            None => Ok(options),
        };
    }
    // The credentials file wins for keys, as boto3 reads them.
    let value = |key: &str| {
        from_credentials
            .and_then(|section| section.get(key))
            .or_else(|| from_config.and_then(|section| section.get(key)))
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    match (value("aws_access_key_id"), value("aws_secret_access_key")) {
        (Some(key), Some(secret)) => {
            options.access_key = Some(key);
            options.secret_key = Some(Secret::from(secret));
            options.security_token = value("aws_session_token").map(Secret::from).or(options.security_token);
        }
        (None, None) => {
            // Credentials other than keys: boto3 would assume a role, log in with SSO or run a process. Using
            // the instance's credentials instead would act as someone else without a word.
            let other = ["role_arn", "credential_process", "sso_session", "sso_start_url", "web_identity_token_file"];
            if let Some(key) = other.iter().find(|key| value(key).is_some()) {
                return Err((
                    "session_profile",
                    format!(
                        "the AWS profile '{name}' gets its credentials by `{key}`, which this storage does not \
                         support: give keys (aws_access_key_id and aws_secret_access_key), or export them \
                         (`aws configure export-credentials --profile {name} --format env`)"
                    ),
                ));
            }
        }
        _ => {
            let message =
                format!("the AWS profile '{name}' has only one of aws_access_key_id and aws_secret_access_key");
            return Err(("session_profile", message));
        }
    }
    if !region_given {
        if let Some(region) = value("region") {
            options.region_name = region;
        }
    }
    if options.endpoint_url.is_none() {
        options.endpoint_url = value("endpoint_url");
    }
    Ok(options)
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|home| !home.is_empty()).map(PathBuf::from)
}

fn credentials_file() -> Option<PathBuf> {
    std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|home| home.join(".aws/credentials")))
}

fn config_file() -> Option<PathBuf> {
    std::env::var_os("AWS_CONFIG_FILE").map(PathBuf::from).or_else(|| home().map(|home| home.join(".aws/config")))
}

fn shown(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or_else(|| "(no home directory)".into(), |path| path.display().to_string())
}
