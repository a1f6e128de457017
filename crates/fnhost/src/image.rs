//! `fnhost image import` and `fnhost image list`: the layer store of the
//! configured state directory, driven from the command line.

use std::path::Path;

use anyhow::Context;
use fnhost_layers::LayerStore;

use crate::cli::{ConfigArgs, ImageCommand, StoreArgs};
use crate::serve::load_config;

pub fn run(store: StoreArgs, command: ImageCommand) -> anyhow::Result<()> {
    let state_dir = match store.state_dir {
        Some(dir) => std::path::absolute(&dir)
            .with_context(|| format!("invalid --state-dir {}", dir.display()))?,
        None => {
            load_config(&ConfigArgs {
                config: store.config,
            })?
            .0
            .server
            .state_dir
        }
    };
    let store = LayerStore::open(&state_dir.join("layers"))?;
    match command {
        ImageCommand::Import { path, name } => import(&store, &path, &name),
        ImageCommand::List => list(&store),
    }
}

fn import(store: &LayerStore, path: &Path, name: &str) -> anyhow::Result<()> {
    let image = store.import_image(path, name)?;
    println!(
        "imported {} from {} ({:?}, {} layers)",
        image.reference,
        path.display(),
        image.format,
        image.layers.len()
    );
    for layer in &image.layers {
        println!("  {}", layer.digest);
    }
    Ok(())
}

fn list(store: &LayerStore) -> anyhow::Result<()> {
    let images = store.list_images()?;
    if images.is_empty() {
        println!("no images; import one with `fnhost image import PATH --name NAME:TAG`");
    }
    for image in images {
        let layers: Vec<&str> = image
            .layers
            .iter()
            .map(|l| &l.digest["sha256:".len()..][..12])
            .collect();
        println!(
            "{}\t{:?}\t{} layers\t{}",
            image.reference,
            image.format,
            layers.len(),
            layers.join(" ")
        );
    }
    Ok(())
}
