//! `docker save` archives: `manifest.json` lists, per image, its config
//! member and its layer tars (bottom first). Older archives name layers by
//! a v1 id (`<id>/layer.tar`), newer ones by digest (`blobs/sha256/<hex>`);
//! the config's `rootfs.diff_ids` verifies either.

use serde::Deserialize;

use super::archive::Members;
use super::error::ImageError;
use super::oci::ConfigFile;
use super::{LayerBlob, SourceImage};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// `sha256:<hex>` a member's name promises (`<hex>.json`,
/// `blobs/sha256/<hex>`), if any.
fn named_digest(member: &str) -> Option<String> {
    let last = member.rsplit('/').next()?;
    let hex = last.strip_suffix(".json").unwrap_or(last);
    let by_name = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let in_blobs = member.contains("sha256/") || last.ends_with(".json");
    (by_name && in_blobs).then(|| format!("sha256:{hex}"))
}

/// Reads the image of a `docker save` archive; `reference` (`name:tag`)
/// picks one when the archive holds several.
pub(crate) fn read(members: &Members, reference: &str) -> Result<SourceImage, ImageError> {
    let (entries, _) = members.json::<Vec<Entry>>("manifest.json")?;
    let entry = match entries.len() {
        0 => {
            return Err(ImageError::NoImage {
                arch: super::oci::host_arch(),
            })
        }
        1 => &entries[0],
        count => {
            let tagged: Vec<_> = entries
                .iter()
                .filter(|e| e.repo_tags.iter().flatten().any(|t| t == reference))
                .collect();
            if tagged.len() != 1 {
                let names: Vec<String> = entries
                    .iter()
                    .map(|e| e.repo_tags.clone().unwrap_or_default().join("|"))
                    .collect();
                return Err(ImageError::AmbiguousImage {
                    count,
                    candidates: names.join(", "),
                });
            }
            tagged[0]
        }
    };
    let (config, sha) = members.json::<ConfigFile>(&entry.config)?;
    if let Some(expected) = named_digest(&entry.config) {
        let actual = format!("sha256:{}", hex::encode(sha));
        if actual != expected {
            return Err(ImageError::DigestMismatch {
                what: format!("image config {}", entry.config),
                expected,
                actual,
            });
        }
    }
    let diff_ids = config
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .unwrap_or_default();
    if !diff_ids.is_empty() && diff_ids.len() != entry.layers.len() {
        return Err(ImageError::Unsupported {
            what: "image".into(),
            detail: format!(
                "manifest.json lists {} layers but the config {} diff_ids",
                entry.layers.len(),
                diff_ids.len()
            ),
        });
    }
    let layers = entry
        .layers
        .iter()
        .enumerate()
        .map(|(i, member)| LayerBlob {
            member: member.clone(),
            digest: named_digest(member).filter(|_| member.contains("sha256/")),
            size: None,
            diff_id: diff_ids.get(i).cloned(),
        })
        .collect();
    Ok(SourceImage {
        layers,
        config: config.image_config(),
        manifest_digest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_promised_by_member_names() {
        let hex = "ab".repeat(32);
        assert_eq!(
            named_digest(&format!("{hex}.json")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            named_digest(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(named_digest(&format!("{hex}/layer.tar")), None);
        assert_eq!(named_digest("config.json"), None);
    }
}
