//! What a crash leaves in the bucket, and the lifecycle rule that removes it without anyone's help: staging
//! objects and name claims under `<location>/.storages-staging/`, and pending multipart uploads under
//! `<location>/`.

use crate::Inner;
use crate::protocol::{Failure, Request, encode_query, parse, to_xml};
use http::Method;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;
use storage_core::{Cleaned, Cleanup, Result};

/// The IDs of the lifecycle rules this crate installs; rules with other IDs are kept as they are.
const ABORT_RULE: &str = "storages-abort-incomplete-uploads";
const EXPIRE_RULE: &str = "storages-expire-staging";

/// One page of ListMultipartUploads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    #[serde(default)]
    is_truncated: bool,
    encoding_type: Option<String>,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload", default)]
    uploads: Vec<PendingUpload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PendingUpload {
    key: String,
    upload_id: String,
    initiated: Option<String>,
}

/// A pending multipart upload.
pub(crate) struct Pending {
    pub(crate) key: String,
    pub(crate) upload_id: String,
    pub(crate) initiated: Option<SystemTime>,
}

/// A lifecycle rule of this crate, as S3 takes it.
#[derive(Debug, Serialize)]
#[serde(rename = "Rule", rename_all = "PascalCase")]
struct Rule {
    #[serde(rename = "ID")]
    id: &'static str,
    filter: Filter,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<Days>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abort_incomplete_multipart_upload: Option<DaysAfterInitiation>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Filter {
    prefix: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Days {
    days: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DaysAfterInitiation {
    days_after_initiation: u32,
}

/// Only the ID of a rule found in the bucket.
#[derive(Debug, Deserialize)]
struct RuleId {
    #[serde(rename = "ID")]
    id: Option<String>,
}

fn parse_time(text: Option<&str>) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text?).ok().map(SystemTime::from)
}

impl Inner {
    /// [`storage_core::Storage::cleanup`] for S3.
    pub(crate) async fn cleanup(&self, options: &Cleanup) -> Result<Cleaned> {
        let cutoff = SystemTime::now().checked_sub(options.older_than).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut cleaned = Cleaned::default();
        self.clean_staging(cutoff, &mut cleaned).await?;
        self.abort_pending_uploads(cutoff, &mut cleaned).await?;
        if options.install_lifecycle {
            self.install_lifecycle().await?;
            cleaned.notes.push(format!(
                "installed the lifecycle rules {ABORT_RULE} and {EXPIRE_RULE} on bucket '{}' (other rules kept)",
                self.options.bucket_name
            ));
        }
        Ok(cleaned)
    }

    /// Deletes staging objects and claims older than `cutoff`.
    async fn clean_staging(&self, cutoff: SystemTime, cleaned: &mut Cleaned) -> Result<()> {
        let fail = |failure: Failure| failure.into_error(self, "cleanup", crate::upload::STAGING_DIR);
        let root = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let claims = format!("{}claims/", self.staging_prefix);
        let (mut old, mut token) = (Vec::new(), None::<String>);
        loop {
            let mut page = self.list_page(&self.staging_prefix, false, None, token.as_deref()).await.map_err(fail)?;
            for object in std::mem::take(&mut page.contents) {
                if object.modified().is_some_and(|modified| modified <= cutoff) {
                    let key = page.key(&object);
                    let kind = if key.starts_with(&claims) { "claims" } else { "staging objects" };
                    old.push((key.strip_prefix(&root).unwrap_or(&key).to_owned(), kind));
                }
            }
            match (page.is_truncated, page.next_continuation_token) {
                (true, Some(next)) => token = Some(next),
                _ => break,
            }
        }
        let names: Vec<String> = old.iter().map(|(name, _)| name.clone()).collect();
        let failed = self.delete_names(&names).await;
        if let Some((_, error)) = failed.into_iter().next() {
            return Err(error);
        }
        for (_, kind) in old {
            cleaned.count(kind);
        }
        Ok(())
    }

    /// Aborts the multipart uploads under the location started before `cutoff`.
    async fn abort_pending_uploads(&self, cutoff: SystemTime, cleaned: &mut Cleaned) -> Result<()> {
        let fail = |failure: Failure| failure.into_error(self, "cleanup", "");
        let prefix = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        for upload in self.pending_uploads(&prefix).await.map_err(fail)? {
            if upload.initiated.is_some_and(|initiated| initiated <= cutoff) {
                self.abort_upload(&upload.key, &upload.upload_id).await.map_err(fail)?;
                cleaned.count("pending uploads");
            }
        }
        Ok(())
    }

    /// The multipart uploads pending under the key prefix `prefix` (ListMultipartUploads, every page).
    pub(crate) async fn pending_uploads(&self, prefix: &str) -> Result<Vec<Pending>, Failure> {
        let mut markers: Option<(String, String)> = None;
        let mut pending = Vec::new();
        loop {
            let mut url = format!("{}?uploads&encoding-type=url&prefix={}", self.bucket_url, encode_query(prefix));
            if let Some((key, id)) = &markers {
                url.push_str(&format!("&key-marker={}&upload-id-marker={}", encode_query(key), encode_query(id)));
            }
            let reply = self.send(Request::new("LIST_UPLOADS", Method::GET, url)).await?;
            if !reply.ok() {
                return Err(reply.failure("ListMultipartUploads"));
            }
            let page: ListMultipartUploadsResult = parse("ListMultipartUploads", &reply.body)?;
            let encoded = page.encoding_type.as_deref() == Some("url");
            pending.extend(page.uploads.into_iter().map(|upload| Pending {
                key: if encoded { crate::list::decode(&upload.key) } else { upload.key },
                upload_id: upload.upload_id,
                initiated: parse_time(upload.initiated.as_deref()),
            }));
            match (page.is_truncated, page.next_key_marker, page.next_upload_id_marker) {
                (true, Some(key), Some(id)) => markers = Some((key, id)),
                _ => return Ok(pending),
            }
        }
    }

    /// Aborts the upload `upload_id` of `key`; one that is gone already (completed or aborted) is no error.
    pub(crate) async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), Failure> {
        self.abort_upload_reporting(key, upload_id).await.map(drop)
    }

    /// [`Inner::abort_upload`], telling whether this abort ended the upload (`false`: it was gone already).
    pub(crate) async fn abort_upload_reporting(&self, key: &str, upload_id: &str) -> Result<bool, Failure> {
        let url = format!("{}?uploadId={}", self.object_url(key), encode_query(upload_id));
        let reply = self.send(Request::new("ABORT_MULTIPART", Method::DELETE, url)).await?;
        if reply.ok() {
            return Ok(true);
        }
        if reply.status == 404 || reply.code().as_deref() == Some("NoSuchUpload") {
            return Ok(false);
        }
        Err(reply.failure("AbortMultipartUpload"))
    }

    /// Puts this crate's two lifecycle rules on the bucket, keeping every other rule there: pending multipart
    /// uploads under the location are aborted a day after they began, staging objects and claims expire after a
    /// day.
    pub(crate) async fn install_lifecycle(&self) -> Result<()> {
        let fail = |failure: Failure| failure.into_error(self, "install the lifecycle rules", "");
        let url = format!("{}?lifecycle", self.bucket_url);
        let reply = self.send(Request::new("GET_LIFECYCLE", Method::GET, url.clone())).await.map_err(fail)?;
        let kept = match reply.status {
            404 => Vec::new(),
            _ if reply.ok() => foreign_rules(&reply.body).map_err(fail)?,
            _ => return Err(fail(reply.failure("GetBucketLifecycleConfiguration"))),
        };
        let location = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let ours = [
            Rule {
                id: ABORT_RULE,
                filter: Filter { prefix: location },
                status: "Enabled",
                expiration: None,
                abort_incomplete_multipart_upload: Some(DaysAfterInitiation { days_after_initiation: 1 }),
            },
            Rule {
                id: EXPIRE_RULE,
                filter: Filter { prefix: self.staging_prefix.clone() },
                status: "Enabled",
                expiration: Some(Days { days: 1 }),
                abort_incomplete_multipart_upload: None,
            },
        ];
        let mut body = String::from("<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        for rule in kept {
            body.push_str(&rule);
        }
        for rule in &ours {
            body.push_str(&to_xml(rule).map_err(fail)?);
        }
        body.push_str("</LifecycleConfiguration>");
        let request =
            Request::new("PUT_LIFECYCLE", Method::PUT, url).body(body.into_bytes()).content_md5().map_err(fail)?;
        let reply = self.send(request).await.map_err(fail)?;
        if !reply.ok() {
            return Err(fail(reply.failure("PutBucketLifecycleConfiguration")));
        }
        Ok(())
    }
}

/// The `<Rule>` elements of a lifecycle configuration that are not this crate's, each as it was written.
fn foreign_rules(document: &[u8]) -> std::result::Result<Vec<String>, Failure> {
    use quick_xml::events::Event;
    let malformed = |e: &dyn std::fmt::Display| Failure {
        kind: storage_core::ErrorKind::Other,
        retryable: false,
        message: format!("GetBucketLifecycleConfiguration answered a document that does not parse: {e}"),
    };
    let mut reader = quick_xml::Reader::from_reader(document);
    let mut rules = Vec::new();
    loop {
        let start = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match reader.read_event().map_err(|e| malformed(&e))? {
            Event::Start(element) if element.local_name().as_ref() == b"Rule" => {
                let name = element.name().as_ref().to_vec();
                reader.read_to_end(quick_xml::name::QName(&name)).map_err(|e| malformed(&e))?;
                let end = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
                let raw = document.get(start..end).ok_or_else(|| malformed(&"a rule out of the document"))?;
                let raw = String::from_utf8_lossy(raw).trim().to_owned();
                let id: RuleId = parse("GetBucketLifecycleConfiguration", raw.as_bytes())?;
                if !matches!(id.id.as_deref(), Some(ABORT_RULE | EXPIRE_RULE)) {
                    rules.push(raw);
                }
            }
            Event::Eof => return Ok(rules),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_rules_are_kept_as_written_and_ours_replaced() {
        let document = br#"<?xml version="1.0" encoding="UTF-8"?>
<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Rule><ID>logs</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>30</Days></Expiration></Rule>
  <Rule><ID>storages-expire-staging</ID><Filter><Prefix>old/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>9</Days></Expiration></Rule>
  <Rule><Filter><Prefix>tmp/</Prefix></Filter><Status>Disabled</Status><Expiration><Days>1</Days></Expiration></Rule>
</LifecycleConfiguration>"#;
        let kept = foreign_rules(document).unwrap();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept[0].starts_with("<Rule><ID>logs</ID>") && kept[0].ends_with("</Rule>"), "{}", kept[0]);
        assert!(kept[1].contains("<Prefix>tmp/</Prefix>"), "{}", kept[1]);
    }

    #[test]
    fn our_rules_are_written_as_s3_takes_them() {
        let rule = Rule {
            id: ABORT_RULE,
            filter: Filter { prefix: "media/".into() },
            status: "Enabled",
            expiration: None,
            abort_incomplete_multipart_upload: Some(DaysAfterInitiation { days_after_initiation: 1 }),
        };
        assert_eq!(
            to_xml(&rule).unwrap(),
            "<Rule><ID>storages-abort-incomplete-uploads</ID><Filter><Prefix>media/</Prefix></Filter>\
             <Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>\
             </AbortIncompleteMultipartUpload></Rule>"
        );
    }
}
