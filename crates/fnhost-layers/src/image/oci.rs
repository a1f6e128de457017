//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`), as a
//! directory or a tar archive: index → (nested index →) manifest → config
//! and layer blobs, every document and blob checked against its digest.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::archive::Members;
use super::error::ImageError;
use super::{ImageConfig, LayerBlob, SourceImage};

/// How deep image indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The parts of an image config we use.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub(crate) config: Option<RunConfig>,
    #[serde(default)]
    pub(crate) rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub(crate) diff_ids: Vec<String>,
}

impl ConfigFile {
    pub(crate) fn image_config(&self) -> ImageConfig {
        let run = self.config.as_ref();
        ImageConfig {
            env: run.and_then(|c| c.env.clone()).unwrap_or_default(),
            cmd: run.and_then(|c| c.cmd.clone()).unwrap_or_default(),
            entrypoint: run.and_then(|c| c.entrypoint.clone()).unwrap_or_default(),
            working_dir: run
                .and_then(|c| c.working_dir.clone())
                .filter(|d| !d.is_empty()),
            user: run.and_then(|c| c.user.clone()).filter(|u| !u.is_empty()),
        }
    }
}

/// `blobs/sha256/<hex>` for `sha256:<hex>`, refusing anything else.
pub(crate) fn blob_path(digest: &str) -> Result<String, ImageError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .ok_or_else(|| ImageError::Unsupported {
            what: "digest".into(),
            detail: format!("{digest:?} (only lowercase sha256:<64 hex> digests are supported)"),
        })?;
    Ok(format!("blobs/sha256/{hex}"))
}

/// Reads a small JSON blob and checks it against `desc`.
fn blob_json<T: serde::de::DeserializeOwned>(
    members: &Members,
    desc: &Descriptor,
    what: &str,
) -> Result<T, ImageError> {
    let path = blob_path(&desc.digest)?;
    let (value, sha) = members.json::<T>(&path)?;
    let actual = format!("sha256:{}", hex::encode(sha));
    if actual != desc.digest {
        return Err(ImageError::DigestMismatch {
            what: format!("{what} {path}"),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(value)
}

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// Reads the image of an OCI layout. `tag` picks among several images by
/// their `org.opencontainers.image.ref.name` annotation.
pub(crate) fn read(members: &Members, tag: &str) -> Result<SourceImage, ImageError> {
    let (index, _) = members.json::<Index>("index.json")?;
    let mut candidates = Vec::new();
    collect(members, &index.manifests, 0, &mut candidates)?;
    let arch = host_arch();
    candidates.retain(|d| match &d.platform {
        None => true,
        Some(p) => {
            (p.os.is_empty() || p.os == "linux")
                && (p.architecture.is_empty() || p.architecture == arch)
        }
    });
    let chosen = match candidates.len() {
        0 => return Err(ImageError::NoImage { arch }),
        1 => candidates.remove(0),
        count => {
            let tagged: Vec<_> = candidates
                .iter()
                .filter(|d| {
                    d.annotations
                        .get(REF_NAME)
                        .is_some_and(|r| r == tag || r.ends_with(&format!(":{tag}")))
                })
                .collect();
            if tagged.len() != 1 {
                let names: Vec<_> = candidates
                    .iter()
                    .map(|d| {
                        d.annotations
                            .get(REF_NAME)
                            .cloned()
                            .unwrap_or_else(|| d.digest.clone())
                    })
                    .collect();
                return Err(ImageError::AmbiguousImage {
                    count,
                    candidates: names.join(", "),
                });
            }
            tagged[0].clone()
        }
    };
    let manifest: Manifest = blob_json(members, &chosen, "manifest")?;
    let config: ConfigFile = blob_json(members, &manifest.config, "image config")?;
    let diff_ids = config
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .unwrap_or_default();
    if !diff_ids.is_empty() && diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Unsupported {
            what: "image".into(),
            detail: format!(
                "the manifest lists {} layers but the config {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (i, desc) in manifest.layers.iter().enumerate() {
        if !desc.media_type.is_empty() && !desc.media_type.contains("tar") {
            return Err(ImageError::Unsupported {
                what: format!("layer {}", desc.digest),
                detail: format!("media type {:?} is not a tar layer", desc.media_type),
            });
        }
        layers.push(LayerBlob {
            member: blob_path(&desc.digest)?,
            digest: Some(desc.digest.clone()),
            size: Some(desc.size),
            diff_id: diff_ids.get(i).cloned(),
        });
    }
    Ok(SourceImage {
        layers,
        config: config.image_config(),
        manifest_digest: Some(chosen.digest),
    })
}

/// Flattens nested indexes into the manifests they list.
fn collect(
    members: &Members,
    descs: &[Descriptor],
    depth: usize,
    out: &mut Vec<Descriptor>,
) -> Result<(), ImageError> {
    for desc in descs {
        if is_index(&desc.media_type) {
            if depth >= MAX_INDEX_DEPTH {
                return Err(ImageError::Unsupported {
                    what: "image index".into(),
                    detail: format!("nested more than {MAX_INDEX_DEPTH} deep"),
                });
            }
            let nested: Index = blob_json(members, desc, "image index")?;
            let mut inner = Vec::new();
            collect(members, &nested.manifests, depth + 1, &mut inner)?;
            // A tag on the index applies to what it lists.
            if let Some(name) = desc.annotations.get(REF_NAME) {
                for d in &mut inner {
                    d.annotations
                        .entry(REF_NAME.to_owned())
                        .or_insert_with(|| name.clone());
                }
            }
            out.extend(inner);
        } else {
            out.push(desc.clone());
        }
    }
    Ok(())
}

/// The OCI name of this machine's architecture.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
