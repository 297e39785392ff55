//! What S3 would say of local content: the ETags of multipart objects and the MD5 of gzipped uploads, so that
//! a listing is enough to tell whether a stored object holds that content.

use async_compression::tokio::write::GzipEncoder;
use md5::{Digest, Md5};
use std::pin::Pin;
use std::task::{Context, Poll};
use storage_core::Local;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `local` as a reader.
async fn reader<'a>(local: Local<'a>) -> std::io::Result<Pin<Box<dyn AsyncRead + Send + 'a>>> {
    match local {
        Local::Bytes(bytes) => Ok(Box::pin(bytes)),
        Local::Path(path) => Ok(Box::pin(tokio::fs::File::open(path).await?)),
    }
}

/// The ETags (`<md5 of the parts' md5s>-<parts>`) the content would have if uploaded in parts of each of
/// `part_sizes`, computed in one pass.
pub(crate) async fn multipart_etags(local: Local<'_>, part_sizes: &[u64]) -> std::io::Result<Vec<String>> {
    struct Scheme {
        part: u64,
        filled: u64,
        current: Md5,
        digests: Vec<[u8; 16]>,
    }
    let mut schemes: Vec<Scheme> = part_sizes
        .iter()
        .map(|&part| Scheme { part: part.max(1), filled: 0, current: Md5::new(), digests: Vec::new() })
        .collect();
    let mut input = reader(local).await?;
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let n = input.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        for scheme in &mut schemes {
            let mut data = &buffer[..n];
            while !data.is_empty() {
                let room = usize::try_from(scheme.part - scheme.filled).unwrap_or(usize::MAX);
                let take = room.min(data.len());
                scheme.current.update(&data[..take]);
                scheme.filled += take as u64;
                data = &data[take..];
                if scheme.filled == scheme.part {
                    scheme.digests.push(std::mem::take(&mut scheme.current).finalize().into());
                    scheme.filled = 0;
                }
            }
        }
    }
    Ok(schemes
        .into_iter()
        .map(|mut scheme| {
            if scheme.filled > 0 {
                scheme.digests.push(std::mem::take(&mut scheme.current).finalize().into());
            }
            crate::protocol::multipart_etag(&scheme.digests)
        })
        .collect())
}

/// The MD5 and size of the content gzipped as uploads gzip it.
pub(crate) async fn gzipped(local: Local<'_>) -> std::io::Result<(String, u64)> {
    let mut encoder = GzipEncoder::new(HashingSink::default());
    let mut input = reader(local).await?;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        encoder.write_all(&buffer[..n]).await?;
    }
    encoder.shutdown().await?;
    let sink = encoder.into_inner();
    Ok((hex::encode(sink.hasher.finalize()), sink.size))
}

/// An `AsyncWrite` that only hashes and counts.
#[derive(Default)]
struct HashingSink {
    hasher: Md5,
    size: u64,
}

impl AsyncWrite for HashingSink {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn multipart_etags_are_md5s_of_part_md5s() {
        let content = [7u8; 10];
        let etags = multipart_etags(Local::Bytes(&content), &[4, 100]).await.unwrap();
        let parts: Vec<u8> =
            [&[7u8; 4][..], &[7u8; 4], &[7u8; 2]].iter().flat_map(|p| Md5::digest(p).to_vec()).collect();
        assert_eq!(etags[0], format!("{}-3", hex::encode(Md5::digest(&parts))));
        assert_eq!(etags[1], format!("{}-1", hex::encode(Md5::digest(Md5::digest([7u8; 10])))));
    }
}
