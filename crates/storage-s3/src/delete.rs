//! Deleting objects: `DELETE /key` for one, DeleteObjects for many, single deletes where a service does not
//! implement DeleteObjects (it answers 501 NotImplemented, or 405).

use crate::Inner;
use crate::protocol::{Delete, DeleteResult, Failure, ObjectIdentifier, Request, parse, to_xml};
use futures::stream::StreamExt;
use http::Method;
use std::sync::atomic::Ordering;
use storage_core::Error;

/// Keys per DeleteObjects request, S3's limit.
const BATCH: usize = 1000;

impl Inner {
    /// Deletes `key`; a missing key is not an error (S3 answers 204 for it anyway).
    pub(crate) async fn delete_key(&self, key: &str) -> Result<(), Failure> {
        let reply = self.send(Request::new("DELETE", Method::DELETE, self.object_url(key))).await?;
        match reply.status {
            404 => Ok(()),
            _ if reply.ok() => Ok(()),
            _ => Err(reply.failure("DeleteObject")),
        }
    }

    /// Deletes the files `names` (checked names); the ones that failed, with why.
    pub(crate) async fn delete_names(&self, names: &[String]) -> Vec<(String, Error)> {
        let mut failed = Vec::new();
        for batch in names.chunks(BATCH) {
            if !self.bulk_delete_unsupported.load(Ordering::Relaxed) {
                match self.delete_batch(batch).await {
                    Ok(errors) => {
                        failed.extend(errors);
                        continue;
                    }
                    Err(None) => self.bulk_delete_unsupported.store(true, Ordering::Relaxed),
                    Err(Some(failure)) => {
                        let error = failure.into_error(self, "delete", "");
                        failed.extend(batch.iter().map(|name| (name.clone(), error.replay())));
                        continue;
                    }
                }
            }
            let singles = futures::stream::iter(batch.iter().cloned())
                .map(|name| async move {
                    let result = self.delete_key(&self.key(&name)).await;
                    result.err().map(|failure| {
                        let error = failure.into_error(self, "delete", &name);
                        (name, error)
                    })
                })
                .buffer_unordered(self.options.max_concurrency.max(8));
            let singles: Vec<Option<(String, Error)>> = singles.collect().await;
            failed.extend(singles.into_iter().flatten());
        }
        failed
    }

    /// One DeleteObjects request: the keys S3 could not delete (a missing key is deleted as far as a caller is
    /// concerned), or `Err(None)` when the service does not implement the request.
    async fn delete_batch(&self, names: &[String]) -> Result<Vec<(String, Error)>, Option<Failure>> {
        let objects = names.iter().map(|name| ObjectIdentifier { key: self.key(name) }).collect();
        let body = to_xml(&Delete { quiet: true, objects }).map_err(Some)?;
        let request = Request::new("DELETE_OBJECTS", Method::POST, format!("{}?delete", self.bucket_url))
            .body(body.into_bytes())
            .content_md5()
            .map_err(Some)?;
        let reply = self.send(request).await.map_err(Some)?;
        if matches!(reply.status, 501 | 405) || reply.code().as_deref() == Some("NotImplemented") {
            return Err(None);
        }
        if !reply.ok() {
            return Err(Some(reply.failure("DeleteObjects")));
        }
        let result: DeleteResult = parse("DeleteObjects", &reply.body).map_err(Some)?;
        let prefix = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        Ok(result
            .errors
            .into_iter()
            .filter(|error| error.code != "NoSuchKey")
            .map(|error| {
                let name = error.key.strip_prefix(&prefix).unwrap_or(&error.key).to_owned();
                let failure = Failure {
                    kind: match error.code.as_str() {
                        "AccessDenied" => storage_core::ErrorKind::PermissionDenied,
                        _ => storage_core::ErrorKind::Other,
                    },
                    retryable: error.code == "InternalError" || error.code == "SlowDown",
                    message: format!("DeleteObjects could not delete it: {} ({})", error.code, error.message),
                };
                let error = failure.into_error(self, "delete", &name);
                (name, error)
            })
            .collect())
    }
}
