//! Blobs in an S3 API (Garage, SeaweedFS, Ceph RGW, AWS S3, MinIO).

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use crate::{BlobError, BlobStore, check_name};

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
            .build();
        Self {
            client: Client::from_conf(s3),
        }
    }
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

    async fn put(&self, bucket: &str, key: &str, data: &[u8]) -> Result<(), BlobError> {
        check_name(bucket)?;
        check_name(key)?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .map_err(|err| s3_error("PutObject", bucket, key, err))?;
        Ok(())
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        check_name(bucket)?;
        check_name(key)?;
        let object = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(err) if err.code() == Some("NoSuchKey") => return Ok(None),
            Err(err) => return Err(s3_error("GetObject", bucket, key, err)),
        };
        let body = object.body.collect().await.map_err(|e| BlobError::S3 {
            operation: "GetObject",
            bucket: bucket.to_string(),
            key: key.to_string(),
            message: e.to_string(),
        })?;
        Ok(Some(body.into_bytes().to_vec()))
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
