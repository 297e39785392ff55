//! Bucket-level requests object_store does not make: does the bucket exist, and CreateBucket.

use crate::Inner;
use crate::protocol::{Failure, Reply, Request};
use http::Method;
use storage_core::{Error, ErrorKind, Result};

impl Inner {
    /// Checks once that the bucket exists, creating it with `auto_create_bucket`.
    pub(crate) async fn ensure_bucket(&self) -> Result<()> {
        let reply = self.bucket_request(Request::new("HEAD_BUCKET", Method::HEAD, self.bucket_url.clone())).await?;
        let (bucket, endpoint) = (&self.options.bucket_name, &self.endpoint);
        match reply.status {
            200..=299 => Ok(()),
            404 if self.options.auto_create_bucket => self.create_bucket().await,
            404 => Err(self.bucket_error(
                ErrorKind::NotFound,
                format!("bucket '{bucket}' does not exist at {endpoint} (set auto_create_bucket = true to create it)"),
            )),
            // Wrong credentials, or credentials allowed to use objects but not to look at the bucket: the
            // requests that follow tell which.
            403 => Ok(()),
            status @ (301 | 400) => Err(self.bucket_error(
                ErrorKind::InvalidInput,
                format!(
                    "bucket '{bucket}' at {endpoint} answered {status}: is region_name ('{}') the bucket's region?",
                    self.options.region_name
                ),
            )),
            _ => Err(self.bucket_failure(reply.failure("checking the bucket (HEAD)"))),
        }
    }

    async fn create_bucket(&self) -> Result<()> {
        let mut request = Request::new("CREATE_BUCKET", Method::PUT, self.bucket_url.clone());
        if self.options.region_name != "us-east-1" {
            request = request.body(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.options.region_name
            ));
        }
        let reply = self.bucket_request(request).await?;
        if !reply.ok() && reply.code().as_deref() != Some("BucketAlreadyOwnedByYou") {
            return Err(self.bucket_failure(reply.failure("CreateBucket")));
        }
        // What a crash leaves behind then expires by itself. A service without lifecycle rules still stores.
        if let Err(error) = self.install_lifecycle().await {
            tracing::warn!("created bucket '{}' without its lifecycle rules: {error}", self.options.bucket_name);
        }
        Ok(())
    }

    async fn bucket_request(&self, request: Request) -> Result<Reply> {
        self.send(request).await.map_err(|failure| self.bucket_failure(failure))
    }

    fn bucket_failure(&self, failure: Failure) -> Error {
        failure.into_error(self, "check the bucket", "")
    }

    fn bucket_error(&self, kind: ErrorKind, message: String) -> Error {
        Error::backend(&self.alias, "check the bucket", "", kind, message)
    }
}

/// An error and its causes, on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
