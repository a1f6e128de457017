//! Container images in the layer store: import from an OCI image layout
//! (directory or tar), a `docker save` archive, a rootfs tarball (plain,
//! gzip or zstd) or a directory; each image layer becomes its own
//! content-addressed layer (identical layers of different images are one
//! directory, so sandboxes of both share its page cache), with OCI whiteouts
//! turned into overlayfs ones. An image is a record naming its layers and
//! its run config.

mod archive;
mod docker;
mod error;
mod extract;
mod oci;
mod record;
mod reference;
mod whiteout;

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use error::ImageError;
pub use reference::ImageRef;

use crate::error::LayerError;
use crate::store::{Layer, LayerStore};
use archive::{buffered, is_limit, sniff, Compression, Decoder, Hashing, Members};
use extract::{Budget, Extraction};

/// Caps on what one image import may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLimits {
    /// Entries over all layers (files, directories, links, whiteouts).
    pub max_entries: u64,
    /// Bytes of file contents over all layers, once extracted.
    pub max_bytes: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_bytes: 16 << 30,
        }
    }
}

/// The run config an image carries (from its OCI/Docker config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `KEY=value` entries.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

impl ImageConfig {
    /// `env` as (key, value) pairs; entries without `=` are skipped.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// How an image was given to `import_image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    OciLayout,
    DockerArchive,
    RootfsTarball,
    Directory,
}

/// An imported image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub reference: ImageRef,
    pub format: ImageFormat,
    /// Its layers, topmost first (the order of overlayfs lower dirs).
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
    /// Digest of the OCI manifest it came from, if any.
    pub manifest_digest: Option<String>,
}

/// One layer blob of an image source, before import.
pub(crate) struct LayerBlob {
    /// Member of the source holding the layer tar.
    pub(crate) member: String,
    /// Digest and size of the (possibly compressed) blob, when known.
    pub(crate) digest: Option<String>,
    pub(crate) size: Option<u64>,
    /// Digest of the uncompressed tar, when the config lists it.
    pub(crate) diff_id: Option<String>,
}

/// What an image source describes, layers bottom first.
pub(crate) struct SourceImage {
    pub(crate) layers: Vec<LayerBlob>,
    pub(crate) config: ImageConfig,
    pub(crate) manifest_digest: Option<String>,
}

impl LayerStore {
    /// Imports the image at `source` as `reference` (`name[:tag]`) with the
    /// default [`ImportLimits`].
    pub fn import_image(&self, source: &Path, reference: &str) -> Result<Image, LayerError> {
        self.import_image_with(source, reference, &ImportLimits::default())
    }

    /// Imports the image at `source` as `reference`, each layer into its
    /// own content-addressed layer, and records it (replacing an earlier
    /// image of that name and tag).
    pub fn import_image_with(
        &self,
        source: &Path,
        reference: &str,
        limits: &ImportLimits,
    ) -> Result<Image, LayerError> {
        let reference = ImageRef::parse(reference)?;
        let meta = std::fs::metadata(source).map_err(|source_err| ImageError::ReadSource {
            path: source.to_owned(),
            source: source_err,
        })?;
        let mut budget = Budget::default();
        let (format, layers, config, manifest_digest) = if meta.is_dir() {
            if source.join("oci-layout").is_file() && source.join("index.json").is_file() {
                let members = Members::Dir(source.to_owned());
                let image = oci::read(&members, &reference.tag)?;
                let layers = self.import_blobs(&members, &image, limits, &mut budget)?;
                (
                    ImageFormat::OciLayout,
                    layers,
                    image.config,
                    image.manifest_digest,
                )
            } else if source.join("manifest.json").is_file() {
                let members = Members::Dir(source.to_owned());
                let image = docker::read(&members, &reference.to_string())?;
                let layers = self.import_blobs(&members, &image, limits, &mut budget)?;
                (ImageFormat::DockerArchive, layers, image.config, None)
            } else {
                let layer = self.import_dir(source, Path::new(""))?;
                (
                    ImageFormat::Directory,
                    vec![layer],
                    ImageConfig::default(),
                    None,
                )
            }
        } else {
            self.import_archive_file(source, &reference, limits, &mut budget)?
        };
        let mut top_first = layers;
        top_first.reverse();
        let image = Image {
            reference,
            format,
            layers: top_first,
            config,
            manifest_digest,
        };
        self.save_record(&image)?;
        tracing::info!(image = %image.reference, layers = image.layers.len(), format = ?image.format, "image imported");
        Ok(image)
    }

    /// A tar file: an OCI layout or `docker save` archive if it holds their
    /// metadata, else a rootfs tarball. A compressed one is first
    /// decompressed into the store's `tmp/` (image archives need random
    /// access).
    #[allow(clippy::type_complexity)]
    fn import_archive_file(
        &self,
        source: &Path,
        reference: &ImageRef,
        limits: &ImportLimits,
        budget: &mut Budget,
    ) -> Result<(ImageFormat, Vec<Layer>, ImageConfig, Option<String>), LayerError> {
        let read_err = |source_err| ImageError::ReadSource {
            path: source.to_owned(),
            source: source_err,
        };
        let mut reader = buffered(File::open(source).map_err(read_err)?);
        let what = source.display().to_string();
        let compression = sniff(&mut reader, &what)?;
        let spool = if compression == Compression::None {
            None
        } else {
            let build = self.new_build("spool")?;
            let path = build.path.join("archive.tar");
            let mut out = File::create(&path).map_err(|e| LayerError::Write {
                path: path.clone(),
                source: e,
            })?;
            let limit = stream_limit(limits);
            let mut decoded = Hashing::new(Decoder::new(reader, compression, &what)?, limit);
            io::copy(&mut decoded, &mut out).map_err(|e| {
                if is_limit(&e) {
                    LayerError::from(ImageError::TooLarge {
                        layer: what.clone(),
                        limit,
                    })
                } else {
                    LayerError::from(ImageError::ReadLayer {
                        layer: what.clone(),
                        source: e,
                    })
                }
            })?;
            Some((build, path))
        };
        let tar_path = spool.as_ref().map_or(source, |(_, p)| p.as_path());
        let members = match Members::index_tar(tar_path) {
            Ok(members) => members,
            Err(_) if compression == Compression::None && !looks_like_tar(source) => {
                return Err(ImageError::UnknownFormat {
                    path: source.to_owned(),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        if members.contains("oci-layout") && members.contains("index.json") {
            let image = oci::read(&members, &reference.tag)?;
            let layers = self.import_blobs(&members, &image, limits, budget)?;
            return Ok((
                ImageFormat::OciLayout,
                layers,
                image.config,
                image.manifest_digest,
            ));
        }
        if members.contains("manifest.json") {
            let image = docker::read(&members, &reference.to_string())?;
            let layers = self.import_blobs(&members, &image, limits, budget)?;
            return Ok((ImageFormat::DockerArchive, layers, image.config, None));
        }
        drop(members);
        let file = File::open(tar_path).map_err(read_err)?;
        let blob = LayerBlob {
            member: what,
            digest: None,
            size: None,
            diff_id: None,
        };
        let layer = self.import_layer(Box::new(file), &blob, limits, budget)?;
        Ok((
            ImageFormat::RootfsTarball,
            vec![layer],
            ImageConfig::default(),
            None,
        ))
    }

    /// Imports each layer blob of `image`, bottom first.
    fn import_blobs(
        &self,
        members: &Members,
        image: &SourceImage,
        limits: &ImportLimits,
        budget: &mut Budget,
    ) -> Result<Vec<Layer>, LayerError> {
        let mut layers = Vec::with_capacity(image.layers.len());
        for blob in &image.layers {
            let (reader, len) = members.open(&blob.member)?;
            if let Some(size) = blob.size {
                if size != len {
                    return Err(ImageError::SizeMismatch {
                        what: format!("layer {}", blob.member),
                        expected: size,
                        actual: len,
                    }
                    .into());
                }
            }
            layers.push(self.import_layer(reader, blob, limits, budget)?);
        }
        Ok(layers)
    }

    /// Extracts one layer tar (compressed or not) from `reader` into a
    /// build directory, verifies the blob and diff digests the image
    /// promised, and commits it under the digest of the extracted tree.
    fn import_layer(
        &self,
        reader: Box<dyn Read + '_>,
        blob: &LayerBlob,
        limits: &ImportLimits,
        budget: &mut Budget,
    ) -> Result<Layer, LayerError> {
        let what = blob.digest.clone().unwrap_or_else(|| blob.member.clone());
        let read_err = |source| ImageError::ReadLayer {
            layer: what.clone(),
            source,
        };
        let mut raw = buffered(Hashing::new(reader, u64::MAX));
        let compression = sniff(&mut raw, &what)?;
        let limit = stream_limit(limits);
        let tar_stream = Hashing::new(Decoder::new(raw, compression, &what)?, limit);

        let build = self.new_build("layer")?;
        let mut extraction = Extraction::new(what.clone(), &build.path, limits, budget)?;
        let tar_stream = extraction.extract(tar_stream).map_err(|e| match e {
            ImageError::ReadLayer { source, .. } if is_limit(&source) => ImageError::TooLarge {
                layer: what.clone(),
                limit,
            },
            other => other,
        })?;
        let (diff_id, _, decoder) = tar_stream.finish().map_err(read_err)?;
        let (blob_digest, blob_len, _) = decoder
            .into_inner()
            .into_inner()
            .finish()
            .map_err(read_err)?;
        if let Some(expected) = &blob.digest {
            if *expected != blob_digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer blob {}", blob.member),
                    expected: expected.clone(),
                    actual: blob_digest,
                }
                .into());
            }
        }
        if let Some(size) = blob.size {
            if size != blob_len {
                return Err(ImageError::SizeMismatch {
                    what: format!("layer blob {}", blob.member),
                    expected: size,
                    actual: blob_len,
                }
                .into());
            }
        }
        if let Some(expected) = &blob.diff_id {
            if *expected != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!("uncompressed layer {} (diff_id)", blob.member),
                    expected: expected.clone(),
                    actual: diff_id,
                }
                .into());
            }
        }
        let (digest, entries) = extraction.finish()?;
        let layer = self.layer_for(&digest);
        let held = self.lock_digest(&digest)?;
        if self.trusted(&layer, &held) {
            tracing::debug!(digest = %layer.digest, blob = %what, "layer already present");
            return Ok(layer);
        }
        self.commit(
            build,
            layer,
            entries,
            &held,
            crate::write::Durability::EachFile,
        )
    }
}

/// Most bytes a decompressed layer stream may have: the content limit
/// plus room for tar headers and padding.
fn stream_limit(limits: &ImportLimits) -> u64 {
    limits
        .max_bytes
        .saturating_add(limits.max_entries.saturating_mul(1536))
        .saturating_add(1 << 20)
}

/// True if the file has a ustar magic at offset 257.
fn looks_like_tar(path: &Path) -> bool {
    let mut header = [0u8; 262];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| &header[257..262] == b"ustar")
}

#[cfg(test)]
mod tests;
