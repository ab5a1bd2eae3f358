//! Where the model files are looked for: see [`ModelLocation`] for the order.

use std::path::{Path, PathBuf};

/// Environment variable naming the model directory explicitly.
pub const MODEL_DIR_ENV: &str = "MEMORY_MODEL_DIR";

/// Name of the model directory under `<data_dir>/models/` and `.tools/models/`.
pub const MODEL_DIR_NAME: &str = "all-MiniLM-L6-v2";

/// The files a model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// Which rule found a model directory (see [`ModelLocation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// The `MEMORY_MODEL_DIR` environment variable.
    Env,
    /// `<data_dir>/models/all-MiniLM-L6-v2`.
    DataDir,
    /// The user's data directory: `$XDG_DATA_HOME/memory/models/all-MiniLM-L6-v2`, or
    /// `~/.local/share/memory/models/all-MiniLM-L6-v2`.
    User,
    /// `models/all-MiniLM-L6-v2` beside the running executable (a copied binary with its model).
    Executable,
    /// `.tools/models/all-MiniLM-L6-v2` in the workspace, installed by `scripts/install-model.sh`.
    Workspace,
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelSource::Env => MODEL_DIR_ENV,
            ModelSource::DataDir => "data directory",
            ModelSource::User => "user data directory",
            ModelSource::Executable => "beside the executable",
            ModelSource::Workspace => "workspace .tools",
        })
    }
}

/// A candidate model directory and the rule that named it.
///
/// [`ModelLocation::resolve`] looks in this order; the first that applies wins:
///
/// 1. `$MEMORY_MODEL_DIR`, when set and non-empty. An explicit setting is returned even if the
///    files are missing there, so that loading fails loudly instead of quietly using another copy.
/// 2. `<data_dir>/models/all-MiniLM-L6-v2`, when the caller passes its data directory (the CLI
///    passes `./.memory` or its `--data-dir`) and the files are there.
/// 3. the user's data directory, `$XDG_DATA_HOME/memory/models/all-MiniLM-L6-v2` (default
///    `~/.local/share/memory/models/all-MiniLM-L6-v2`), when the files are there;
/// 4. `models/all-MiniLM-L6-v2` beside the running executable, when the files are there;
/// 5. `<workspace>/.tools/models/all-MiniLM-L6-v2`, where `scripts/install-model.sh` puts them
///    (the workspace this crate was built from, if it still exists), when the files are there.
///
/// All but the last are found at run time, so a copied binary finds a model installed for its
/// user or shipped beside it.
///
/// A directory counts as installed when it holds [`MODEL_FILES`] (`model.safetensors`,
/// `tokenizer.json`, `config.json`).
///
/// ```
/// use std::path::Path;
/// use memory_embed::{ModelLocation, ModelSource};
///
/// let found = ModelLocation::resolve(Some(Path::new("/srv/memory")));
/// if let Some(location) = found {
///     // `location.source` says which rule matched; log it next to the path.
///     println!("model from {}: {}", location.source, location.dir.display());
/// }
/// let candidates = ModelLocation::candidates(Some(Path::new("/srv/memory")));
/// assert!(candidates.iter().any(|c| c.source == ModelSource::DataDir));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLocation {
    /// The directory.
    pub dir: PathBuf,
    /// Which rule named it.
    pub source: ModelSource,
}

impl ModelLocation {
    /// Every candidate, in priority order (see [`ModelLocation`]). Nothing is checked on disk.
    pub fn candidates(data_dir: Option<&Path>) -> Vec<ModelLocation> {
        let mut out = Vec::with_capacity(5);
        if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|v| !v.is_empty()) {
            out.push(ModelLocation {
                dir: PathBuf::from(dir),
                source: ModelSource::Env,
            });
        }
        if let Some(data_dir) = data_dir {
            out.push(ModelLocation {
                dir: data_dir.join("models").join(MODEL_DIR_NAME),
                source: ModelSource::DataDir,
            });
        }
        if let Some(dir) = user_model_dir() {
            out.push(ModelLocation {
                dir,
                source: ModelSource::User,
            });
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("models").join(MODEL_DIR_NAME)))
        {
            out.push(ModelLocation {
                dir,
                source: ModelSource::Executable,
            });
        }
        out.push(ModelLocation {
            dir: workspace_model_dir(),
            source: ModelSource::Workspace,
        });
        out
    }

    /// The model directory to use: `$MEMORY_MODEL_DIR` if set (installed or not), else the
    /// first other candidate that holds the model files, else `None` (no model: run
    /// `scripts/install-model.sh` or set `MEMORY_MODEL_DIR`).
    pub fn resolve(data_dir: Option<&Path>) -> Option<ModelLocation> {
        Self::candidates(data_dir)
            .into_iter()
            .find(|c| c.source == ModelSource::Env || c.is_installed())
    }

    /// True when the directory holds all of [`MODEL_FILES`].
    pub fn is_installed(&self) -> bool {
        missing_model_files(&self.dir).is_empty()
    }
}

/// The model directory from `$MEMORY_MODEL_DIR` or the workspace's `.tools/models/`, as
/// [`ModelLocation::resolve`] with no data directory.
///
/// ```
/// if let Some(dir) = memory_embed::default_model_dir() {
///     println!("model at {}", dir.display());
/// }
/// ```
pub fn default_model_dir() -> Option<PathBuf> {
    ModelLocation::resolve(None).map(|l| l.dir)
}

/// [`ModelLocation::resolve`] for a caller with a data directory, returning just the path.
pub fn model_dir_for(data_dir: &Path) -> Option<PathBuf> {
    ModelLocation::resolve(Some(data_dir)).map(|l| l.dir)
}

/// Which of [`MODEL_FILES`] are missing (or empty) in `dir`; empty when the model is installed.
///
/// ```
/// let missing = memory_embed::missing_model_files(std::path::Path::new("/nonexistent"));
/// assert_eq!(missing.len(), 3);
/// ```
pub fn missing_model_files(dir: &Path) -> Vec<&'static str> {
    MODEL_FILES
        .into_iter()
        .filter(|f| !std::fs::metadata(dir.join(f)).is_ok_and(|m| m.is_file() && m.len() > 0))
        .collect()
}

/// The user's copy: `$XDG_DATA_HOME/memory/models/all-MiniLM-L6-v2`, else
/// `$HOME/.local/share/memory/models/all-MiniLM-L6-v2` (`None` without either variable).
pub fn user_model_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("share"))
        })?;
    Some(base.join("memory").join("models").join(MODEL_DIR_NAME))
}

/// `<workspace>/.tools/models/all-MiniLM-L6-v2`, the workspace being the parent of this crate's
/// manifest directory at build time.
pub fn workspace_model_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or(manifest)
        .join(".tools")
        .join("models")
        .join(MODEL_DIR_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_dir_is_under_tools() {
        let dir = workspace_model_dir();
        assert!(
            dir.ends_with(".tools/models/all-MiniLM-L6-v2"),
            "{}",
            dir.display()
        );
    }

    #[test]
    fn data_dir_candidate_comes_before_workspace() {
        let c = ModelLocation::candidates(Some(Path::new("/data")));
        let data = c.iter().position(|l| l.source == ModelSource::DataDir);
        let ws = c.iter().position(|l| l.source == ModelSource::Workspace);
        assert!(data < ws);
        assert_eq!(
            c[data.unwrap_or(0)].dir,
            Path::new("/data/models/all-MiniLM-L6-v2")
        );
    }

    #[test]
    fn missing_files_are_listed() {
        let dir = std::env::temp_dir().join(format!("memory-embed-missing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        std::fs::write(dir.join("config.json"), b"{}").ok();
        std::fs::write(dir.join("tokenizer.json"), b"").ok();
        let missing = missing_model_files(&dir);
        assert_eq!(missing, vec!["model.safetensors", "tokenizer.json"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
