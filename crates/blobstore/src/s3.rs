//! Blobs in an S3 API (Garage, SeaweedFS, Ceph RGW, AWS S3, MinIO).

use std::ops::Range;

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::{BlobError, BlobReader, BlobSource, BlobStore, check_name};

/// Bodies larger than this go up in parts of this size (S3 wants at least 5 MiB but the last).
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// How to reach an S3 endpoint.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:3900`
    pub endpoint: String,
    /// e.g. `garage`, `us-east-1`
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`); what Garage and MinIO expect.
    pub path_style: bool,
}

/// A [`BlobStore`] on S3. A successful PutObject is durable by the S3 contract.
#[derive(Clone, Debug)]
pub struct S3BlobStore {
    client: Client,
    part_size: u64,
}

impl S3BlobStore {
    pub fn new(config: &S3Config) -> Self {
        let credentials = Credentials::new(
            &config.access_key_id,
            &config.secret_access_key,
            None,
            None,
            "mail-platform",
        );
        let s3 = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.path_style)
            // Checksums only where an operation needs them: Garage refuses the streamed
            // (aws-chunked) trailing checksums the SDK would add to every UploadPart.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(s3),
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Uses multipart uploads of `part_size` bytes for larger bodies (at least 5 MiB on AWS).
    pub fn with_part_size(mut self, part_size: u64) -> Self {
        self.part_size = part_size.max(1);
        self
    }

    /// The body of an object (an HTTP `range` of it), or `None` when there is no such object.
    async fn object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<String>,
    ) -> Result<Option<ByteStream>, BlobError> {
        check_name(bucket)?;
        check_name(key)?;
        let request = self.client.get_object().bucket(bucket).key(key);
        match request.set_range(range).send().await {
            Ok(object) => Ok(Some(object.body)),
            Err(err) if err.code() == Some("NoSuchKey") => Ok(None),
            // A range starting past the end holds nothing of the object.
            Err(err) if err.code() == Some("InvalidRange") => {
                Ok(Some(ByteStream::from_static(b"")))
            }
            Err(err) => Err(s3_error("GetObject", bucket, key, err)),
        }
    }

    /// Uploads `source` in parts; an upload that fails is aborted so no parts are left behind.
    async fn put_multipart(
        &self,
        bucket: &str,
        key: &str,
        source: &BlobSource,
    ) -> Result<(), BlobError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| s3_error("CreateMultipartUpload", bucket, key, err))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(bucket, key, &upload_id, source).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        source: &BlobSource,
    ) -> Result<(), BlobError> {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < source.len() {
            let len = self.part_size.min(source.len() - offset);
            let uploaded = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(byte_stream(source, offset, len).await?)
                .send()
                .await
                .map_err(|err| s3_error("UploadPart", bucket, key, err))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|err| s3_error("CompleteMultipartUpload", bucket, key, err))?;
        Ok(())
    }
}

/// `len` bytes of the source from `offset`, read from the file as they are sent.
async fn byte_stream(source: &BlobSource, offset: u64, len: u64) -> Result<ByteStream, BlobError> {
    match source {
        BlobSource::Bytes(bytes) => {
            let (start, end) = (offset as usize, (offset + len) as usize);
            Ok(ByteStream::from(bytes.slice(start..end)))
        }
        BlobSource::File { path, .. } => ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(Length::Exact(len))
            .build()
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e))),
    }
}

async fn collect(body: ByteStream, bucket: &str, key: &str) -> Result<Vec<u8>, BlobError> {
    let data = body.collect().await.map_err(|e| BlobError::S3 {
        operation: "GetObject",
        bucket: bucket.to_string(),
        key: key.to_string(),
        message: e.to_string(),
    })?;
    Ok(data.into_bytes().to_vec())
}

fn s3_error<E, R>(
    operation: &'static str,
    bucket: &str,
    key: &str,
    err: SdkError<E, R>,
) -> BlobError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if err.code() == Some("NoSuchBucket") {
        return BlobError::NoSuchBucket(bucket.to_string());
    }
    BlobError::S3 {
        operation,
        bucket: bucket.to_string(),
        key: key.to_string(),
        message: DisplayErrorContext(&err).to_string(),
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn create_bucket(&self, bucket: &str) -> Result<(), BlobError> {
        check_name(bucket)?;
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(err) => match err.code() {
                Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists") => Ok(()),
                _ => Err(s3_error("CreateBucket", bucket, "", err)),
            },
        }
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<(), BlobError> {
        check_name(bucket)?;
        loop {
            let listed = match self.client.list_objects_v2().bucket(bucket).send().await {
                Ok(listed) => listed,
                Err(err) if err.code() == Some("NoSuchBucket") => return Ok(()),
                Err(err) => return Err(s3_error("ListObjectsV2", bucket, "", err)),
            };
            let keys: Vec<String> = listed
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect();
            if keys.is_empty() {
                break;
            }
            for key in keys {
                self.delete(bucket, &key).await?;
            }
        }
        match self.client.delete_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("NoSuchBucket") => Ok(()),
            Err(err) => Err(s3_error("DeleteBucket", bucket, "", err)),
        }
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, BlobError> {
        check_name(bucket)?;
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(err) => {
                if let SdkError::ServiceError(service) = &err
                    && service.raw().status().as_u16() == 404
                {
                    return Ok(false);
                }
                Err(s3_error("HeadBucket", bucket, "", err))
            }
        }
    }

    async fn put_source(
        &self,
        bucket: &str,
        key: &str,
        source: &BlobSource,
    ) -> Result<(), BlobError> {
        check_name(bucket)?;
        check_name(key)?;
        if source.len() > self.part_size {
            return self.put_multipart(bucket, key, source).await;
        }
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(byte_stream(source, 0, source.len()).await?)
            .send()
            .await
            .map_err(|err| s3_error("PutObject", bucket, key, err))?;
        Ok(())
    }

    async fn open(&self, bucket: &str, key: &str) -> Result<Option<BlobReader>, BlobError> {
        let body = self.object(bucket, key, None).await?;
        Ok(body.map(|body| Box::pin(body.into_async_read()) as BlobReader))
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
    ) -> Result<Option<Vec<u8>>, BlobError> {
        check_name(bucket)?;
        check_name(key)?;
        if range.end <= range.start {
            // An empty range has no HTTP form: answer whether the blob exists.
            return match self
                .client
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
            {
                Ok(_) => Ok(Some(Vec::new())),
                Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
                Err(err) => Err(s3_error("HeadObject", bucket, key, err)),
            };
        }
        let range = format!("bytes={}-{}", range.start, range.end - 1);
        match self.object(bucket, key, Some(range)).await? {
            Some(body) => Ok(Some(collect(body, bucket, key).await?)),
            None => Ok(None),
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        match self.object(bucket, key, None).await? {
            Some(body) => Ok(Some(collect(body, bucket, key).await?)),
            None => Ok(None),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BlobError> {
        check_name(bucket)?;
        check_name(key)?;
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| s3_error("DeleteObject", bucket, key, err))?;
        Ok(())
    }
}
