//! Sealed exports: `memory export FILE --encrypt` and the import of such a file.
//!
//! A sealed export is the same JSON lines written through [`memory_seal::SealedWriter`] under
//! a key derived from the configured key (`MEMORY_ENCRYPTION_KEY`, `_FILE`, `_COMMAND`, or
//! `[encryption]`): 64 KiB chunks, each authenticated with its index and whether it is the
//! last. Nothing of the plaintext reaches the file: the file holds the header from its first
//! write on, and every chunk is sealed before it is written.
//!
//! Import recognises the file by its first bytes (`MEMSEAL1`) and reads it through
//! [`memory_seal::SealedReader`]. The first pass reads the whole file to its last chunk, so
//! a wrong key, a damaged chunk or a file cut short fails there, before anything is imported.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use memory_core::Error;
use memory_seal::{SEALED_FILE_MAGIC, SealedReader, SealedWriter, Sealer, is_sealed_file};

use super::lines::BoundedLines;
use crate::settings::Settings;

/// The key sources to name when a key is needed and none is configured.
const KEY_SOURCES: &str = "MEMORY_ENCRYPTION_KEY, MEMORY_ENCRYPTION_KEY_FILE or \
     MEMORY_ENCRYPTION_KEY_COMMAND (or `key_file` / `key_command` under `[encryption]` in \
     memory.toml)";

/// The sealer of `memory export --encrypt` (the configured key), or `None` for a plain
/// export. A plain export of an encrypted memory (`memory_key`: its fingerprint) is allowed,
/// with a warning on stderr (never on stdout, so `--json` output stays one document).
pub(super) fn export_sealer(
    encrypt: bool,
    memory_key: Option<&str>,
    file: &Path,
    s: &Settings,
) -> Result<Option<Sealer>> {
    if !encrypt {
        if let Some(fingerprint) = memory_key {
            errln!(
                "warning: the memory is encrypted (key {fingerprint}), but {} will be plain text: \
                 anyone who can read it can read the episodes. `memory export FILE --encrypt` \
                 seals the export under the key.",
                crate::display_safe::path(file)
            );
        }
        return Ok(None);
    }
    let Some(key) = s.load_key()? else {
        anyhow::bail!(
            "--encrypt needs the encryption key: set {KEY_SOURCES}; `memory key generate` makes \
             one. Nothing was written."
        );
    };
    Ok(Some(Sealer::new(&key)))
}

/// Where the export writes: the file itself, or sealed chunks of it.
pub(super) enum ExportSink {
    /// A plain JSON lines file.
    Plain(BufWriter<File>),
    /// A sealed file; its last chunk is written by [`ExportSink::finish`].
    Sealed(SealedWriter<BufWriter<File>>),
}

impl ExportSink {
    /// Writes into `file` (new and empty), sealed when `sealer` is given: then the sealed
    /// file's header is the first thing written.
    pub(super) fn new(file: File, sealer: Option<Sealer>) -> io::Result<Self> {
        let out = BufWriter::new(file);
        Ok(match sealer {
            Some(sealer) => ExportSink::Sealed(SealedWriter::new(out, sealer)?),
            None => ExportSink::Plain(out),
        })
    }

    /// Whether the export is sealed.
    pub(super) fn is_sealed(&self) -> bool {
        matches!(self, ExportSink::Sealed(_))
    }

    /// Seals the last chunk (a sealed export), flushes and fsyncs the file.
    pub(super) fn finish(self) -> io::Result<()> {
        let out = match self {
            ExportSink::Plain(out) => out,
            ExportSink::Sealed(w) => w.finish()?,
        };
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()
    }
}

impl Write for ExportSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ExportSink::Plain(out) => out.write(buf),
            ExportSink::Sealed(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ExportSink::Plain(out) => out.flush(),
            ExportSink::Sealed(w) => w.flush(),
        }
    }
}

/// The file an import reads: plain, or sealed and read with the configured key.
pub(super) struct ImportFile<'a> {
    /// The file.
    pub(super) path: &'a Path,
    /// The configured key's sealer when the file is sealed.
    sealer: Option<Sealer>,
}

/// The file's bytes, through the sealed reader when it is sealed.
pub(super) enum Input {
    /// A plain file.
    Plain(File),
    /// A sealed file, unsealed chunk by chunk as it is read.
    Sealed(SealedReader<File>),
}

impl Read for Input {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Plain(f) => f.read(out),
            Input::Sealed(r) => r.read(out),
        }
    }
}

impl<'a> ImportFile<'a> {
    /// `path`, recognised as sealed or not by its first bytes; a sealed file needs the
    /// configured key (an error naming where to set it, when there is none).
    pub(super) fn open(path: &'a Path, s: &Settings) -> Result<Self> {
        let mut head = Vec::with_capacity(SEALED_FILE_MAGIC.len());
        File::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?
            .take(SEALED_FILE_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !is_sealed_file(&head) {
            return Ok(ImportFile { path, sealer: None });
        }
        let Some(key) = s.load_key()? else {
            return Err(Error::invalid(
                path.display().to_string(),
                format!(
                    "it is a sealed export (`memory export --encrypt`) and no encryption key \
                     is configured: set {KEY_SOURCES} to the key it was sealed with; nothing \
                     was imported"
                ),
            )
            .into());
        };
        Ok(ImportFile {
            path,
            sealer: Some(Sealer::new(&key)),
        })
    }

    /// The fingerprint of the key a sealed file is read with; `None` for a plain file.
    pub(super) fn key(&self) -> Option<&str> {
        self.sealer.as_ref().map(Sealer::fingerprint)
    }

    /// The file's lines from the start (unsealed as they are read), at most `limit` bytes
    /// each.
    pub(super) fn lines(&self, limit: usize) -> Result<BoundedLines<BufReader<Input>>> {
        let file = File::open(self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        let input = match &self.sealer {
            None => Input::Plain(file),
            Some(sealer) => Input::Sealed(
                SealedReader::new(file, sealer.clone()).map_err(|e| self.read_error(e))?,
            ),
        };
        Ok(BoundedLines::new(
            BufReader::with_capacity(64 * 1024, input),
            limit,
        ))
    }

    /// The error for a failed read: for a sealed file whose chunk does not open (another
    /// key, damage, cut short), an invalid-input error that says so.
    pub(super) fn read_error(&self, e: io::Error) -> anyhow::Error {
        match self.key() {
            Some(fingerprint) if e.kind() == io::ErrorKind::InvalidData => Error::invalid(
                self.path.display().to_string(),
                format!(
                    "the sealed export does not open with the configured key (key \
                     {fingerprint}): {e}; nothing was imported"
                ),
            )
            .into(),
            _ => anyhow::Error::new(e).context(format!("cannot read {}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::super::lines::Next;
    use super::*;
    use memory_seal::MasterKey;

    fn lines_of(f: &ImportFile<'_>) -> std::result::Result<Vec<String>, anyhow::Error> {
        let mut lines = f.lines(1024)?;
        let mut out = Vec::new();
        loop {
            match lines.next_line().map_err(|e| f.read_error(e))? {
                Next::Line { bytes, .. } => out.push(String::from_utf8_lossy(bytes).into()),
                Next::TooLong { .. } => panic!("too long"),
                Next::End => return Ok(out),
            }
        }
    }

    #[test]
    fn a_sealed_sink_writes_no_plaintext_and_reads_back_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.jsonl");
        let key = MasterKey::generate().unwrap();
        let file = File::create(&path).unwrap();
        let mut sink = ExportSink::new(file, Some(Sealer::new(&key))).unwrap();
        assert!(sink.is_sealed());
        let text = "{\"task\":\"MARKER-ONE\"}\n".repeat(10_000);
        sink.write_all(text.as_bytes()).unwrap();
        sink.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(is_sealed_file(&bytes));
        assert!(!bytes.windows(10).any(|w| w == b"MARKER-ONE"));

        let f = ImportFile {
            path: &path,
            sealer: Some(Sealer::new(&key)),
        };
        assert_eq!(lines_of(&f).unwrap().len(), 10_000);
        let other = ImportFile {
            path: &path,
            sealer: Some(Sealer::new(&MasterKey::generate().unwrap())),
        };
        let err = lines_of(&other).unwrap_err().to_string();
        assert!(
            err.contains("does not open with the configured key"),
            "{err}"
        );
        // Cut short: the last chunk is missing.
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = lines_of(&f).unwrap_err().to_string();
        assert!(err.contains("nothing was imported"), "{err}");
    }
}
