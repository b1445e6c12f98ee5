//! Writes the generated manifests (CRDs, RBAC) under `config/`.
//!
//! Usage: `cargo run -p ferrolb-crds --bin crdgen [CONFIG_DIR]` (default: the workspace's config/).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let config_dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config"));
    let files = match ferrolb_crds::manifests::all_files() {
        Ok(files) => files,
        Err(error) => {
            eprintln!("crdgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    for file in files {
        let path = config_dir.join(&file.path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &file.content));
        if let Err(error) = written {
            eprintln!("crdgen: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
