//! Content-addressed files under `data_dir/media`: each file is named by the
//! SHA-256 of its bytes (`ab/cd/abcd…`), so identical content is stored once.
//! Uploads stream into `tmp/` first and move into place once their hash is known.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// A file written to the temporary directory, not yet part of the store.
/// Dropping it removes the file.
pub struct TempFile {
    path: PathBuf,
    pub size: u64,
    pub sha256: String,
    kept: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why streaming a body into the store failed.
#[derive(Debug)]
pub enum WriteError {
    /// The body grew past the limit; nothing was kept.
    TooLarge,
    /// The client's body stream failed (for example a dropped connection).
    Body(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for WriteError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err)
    }
}

#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Creates `root` and its temporary directory, and empties the latter of
    /// files that an interrupted upload left behind.
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of the content with hex digest `sha256`.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        let (first, rest) = sha256.split_at(2.min(sha256.len()));
        let second = rest.get(..2).unwrap_or_default();
        self.root.join(first).join(second).join(sha256)
    }

    /// Streams `body` into a temporary file, hashing it on the way, and stops
    /// with [`WriteError::TooLarge`] as soon as it passes `max_size` bytes.
    pub async fn write_temp<S, E>(&self, body: S, max_size: u64) -> Result<TempFile, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let name = format!("upload-{}", crate::rooms::random_localpart(24));
        let path = self.root.join("tmp").join(name);
        let mut temp = TempFile { path, size: 0, sha256: String::new(), kept: false };
        let mut file = tokio::fs::File::create(&temp.path).await?;
        let mut hasher = Sha256::new();
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| WriteError::Body(e.to_string()))?;
            temp.size += chunk.len() as u64;
            if temp.size > max_size {
                return Err(WriteError::TooLarge);
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        temp.sha256 = hex(&hasher.finalize());
        Ok(temp)
    }

    /// Writes `bytes` (a generated thumbnail) into a temporary file.
    pub async fn write_bytes(&self, bytes: Vec<u8>) -> Result<TempFile, WriteError> {
        let size = bytes.len() as u64;
        let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(Bytes::from(bytes)) });
        self.write_temp(stream, size).await
    }

    /// Moves a temporary file to its content address. When the content is
    /// already stored, the temporary file is dropped instead.
    pub async fn commit(&self, mut temp: TempFile) -> std::io::Result<()> {
        let target = self.path_of(&temp.sha256);
        if tokio::fs::try_exists(&target).await? {
            return Ok(());
        }
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(&temp.path, &target).await?;
        temp.kept = true;
        Ok(())
    }

    /// Removes the content `sha256`; a file already gone is not an error.
    pub async fn remove(&self, sha256: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.path_of(sha256)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
