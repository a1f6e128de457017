//! Image records: `<store>/images/<name>/<tag>.json`, naming an image's
//! layers (topmost first) and its run config. Written to a temporary file
//! and renamed, so a reader sees the old record or the new one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ImageError;
use super::reference::ImageRef;
use super::{Image, ImageConfig, ImageFormat};
use crate::error::LayerError;
use crate::store::{Layer, LayerStore};

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    name: String,
    tag: String,
    format: ImageFormat,
    /// Layer digests, topmost first.
    layers: Vec<String>,
    config: ImageConfig,
    #[serde(default)]
    manifest_digest: Option<String>,
}

impl LayerStore {
    fn images_dir(&self) -> PathBuf {
        self.root().join("images")
    }

    pub(crate) fn save_record(&self, image: &Image) -> Result<(), LayerError> {
        let record = Record {
            name: image.reference.name.clone(),
            tag: image.reference.tag.clone(),
            format: image.format,
            layers: image.layers.iter().map(|l| l.digest.clone()).collect(),
            config: image.config.clone(),
            manifest_digest: image.manifest_digest.clone(),
        };
        let path = self.images_dir().join(image.reference.record_path());
        let err = |source| ImageError::Record {
            action: "write",
            path: path.clone(),
            source,
        };
        let dir = path.parent().expect("record path has a parent");
        fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            image.reference.tag,
            std::process::id()
        ));
        let json = serde_json::to_vec_pretty(&record).expect("a record always serializes");
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(&json)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return Err(err(e).into());
        }
        Ok(())
    }

    /// The imported image `reference` (`name[:tag]`), with every layer
    /// checked to be present.
    pub fn image(&self, reference: &str) -> Result<Image, LayerError> {
        let reference = ImageRef::parse(reference)?;
        let path = self.images_dir().join(reference.record_path());
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let imported = self
                    .list_images()?
                    .iter()
                    .map(|i| i.reference.to_string())
                    .collect::<Vec<_>>();
                return Err(ImageError::NotFound {
                    reference: reference.to_string(),
                    imported: if imported.is_empty() {
                        "none".into()
                    } else {
                        imported.join(", ")
                    },
                }
                .into());
            }
            Err(source) => {
                return Err(ImageError::Record {
                    action: "read",
                    path,
                    source,
                }
                .into())
            }
        };
        self.parse_record(&path, &bytes)
    }

    fn parse_record(&self, path: &Path, bytes: &[u8]) -> Result<Image, LayerError> {
        let record: Record = serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            what: format!("image record {}", path.display()),
            source,
        })?;
        let reference = ImageRef::parse(&format!("{}:{}", record.name, record.tag))?;
        let mut layers = Vec::with_capacity(record.layers.len());
        for digest in &record.layers {
            let valid = digest.strip_prefix("sha256:").is_some_and(|h| {
                h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
            let layer = valid.then(|| self.layer_for(digest));
            let trusted = |layer: &Layer| -> Result<bool, LayerError> {
                Ok(self.trusted(layer, &self.lock_digest(&layer.digest)?))
            };
            match layer {
                Some(layer) if trusted(&layer)? => layers.push(layer),
                _ => {
                    return Err(ImageError::MissingLayer {
                        reference: reference.to_string(),
                        digest: digest.clone(),
                    }
                    .into())
                }
            }
        }
        Ok(Image {
            reference,
            format: record.format,
            layers,
            config: record.config,
            manifest_digest: record.manifest_digest,
        })
    }

    /// Every imported image, sorted by reference. Records that cannot be
    /// read (or whose layers are gone) are logged and left out.
    pub fn list_images(&self) -> Result<Vec<Image>, LayerError> {
        let mut images = Vec::new();
        let mut stack = vec![self.images_dir()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(LayerError::List { path: dir, source }),
            };
            for entry in entries {
                let entry = entry.map_err(|source| LayerError::List {
                    path: dir.clone(),
                    source,
                })?;
                let path = entry.path();
                let file_type = entry.file_type().map_err(|source| LayerError::List {
                    path: path.clone(),
                    source,
                })?;
                let is_record = path.extension().is_some_and(|e| e == "json")
                    && !entry.file_name().to_string_lossy().starts_with('.');
                if file_type.is_dir() {
                    stack.push(path);
                } else if file_type.is_file() && is_record {
                    let parsed = fs::read(&path)
                        .map_err(|source| {
                            LayerError::from(ImageError::Record {
                                action: "read",
                                path: path.clone(),
                                source,
                            })
                        })
                        .and_then(|bytes| self.parse_record(&path, &bytes));
                    match parsed {
                        Ok(image) => images.push(image),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "skipping unreadable image record")
                        }
                    }
                }
            }
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(images)
    }
}
