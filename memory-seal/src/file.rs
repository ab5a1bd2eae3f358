//! Sealed files: exports and backups written through a [`SealedWriter`] and read back
//! through a [`SealedReader`].
//!
//! Format: `MEMSEAL1`, a random 16-byte file id, then chunks of at most 64 KiB of plaintext,
//! each `u32 little-endian length ++ sealed record`. A chunk's associated data is the file id,
//! its index and whether it is the last, so chunks cannot be reordered, moved between files,
//! dropped or cut off at the end without the reader noticing.

use std::io::{self, Read, Write};

use crate::key::getrandom_fill;
use crate::record::{NONCE_LEN, TAG_LEN};
use crate::{SealError, Sealer};

/// The first bytes of a sealed file.
pub const SEALED_FILE_MAGIC: &[u8; 8] = b"MEMSEAL1";
/// Plaintext bytes per chunk.
const CHUNK: usize = 64 * 1024;
const FILE_ID_LEN: usize = 16;

/// Whether `head` (the first bytes of a file) starts a sealed file.
///
/// ```
/// assert!(memory_seal::is_sealed_file(b"MEMSEAL1...."));
/// assert!(!memory_seal::is_sealed_file(b"{\"kind\":\"memory-export\"}"));
/// ```
pub fn is_sealed_file(head: &[u8]) -> bool {
    head.starts_with(SEALED_FILE_MAGIC)
}

fn chunk_aad(file_id: &[u8; FILE_ID_LEN], index: u64, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(4 + FILE_ID_LEN + 9);
    aad.extend_from_slice(b"file");
    aad.extend_from_slice(file_id);
    aad.extend_from_slice(&index.to_le_bytes());
    aad.push(u8::from(last));
    aad
}

fn to_io(e: SealError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Writes a sealed file: everything written is sealed in chunks; [`SealedWriter::finish`]
/// seals the last chunk and must be called (a file without its last chunk does not open).
///
/// ```
/// use std::io::{Read, Write};
/// use memory_seal::{MasterKey, Sealer, SealedReader, SealedWriter};
/// let sealer = Sealer::new(&MasterKey::generate()?);
/// let mut w = SealedWriter::new(Vec::new(), sealer.clone())?;
/// w.write_all(b"{\"episode\":1}\n")?;
/// let file = w.finish()?;
/// let mut text = String::new();
/// SealedReader::new(file.as_slice(), sealer)?.read_to_string(&mut text)?;
/// assert_eq!(text, "{\"episode\":1}\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SealedWriter<W: Write> {
    out: W,
    sealer: Sealer,
    file_id: [u8; FILE_ID_LEN],
    index: u64,
    buf: Vec<u8>,
}

impl<W: Write> SealedWriter<W> {
    /// Starts a sealed file on `out` (writes its header).
    pub fn new(mut out: W, sealer: Sealer) -> io::Result<Self> {
        let mut file_id = [0u8; FILE_ID_LEN];
        getrandom_fill(&mut file_id).map_err(|e| to_io(SealError::Random(e)))?;
        out.write_all(SEALED_FILE_MAGIC)?;
        out.write_all(&file_id)?;
        Ok(SealedWriter {
            out,
            sealer,
            file_id,
            index: 0,
            buf: Vec::with_capacity(CHUNK),
        })
    }

    fn emit(&mut self, last: bool) -> io::Result<()> {
        let aad = chunk_aad(&self.file_id, self.index, last);
        let sealed = self.sealer.seal(&self.buf, &aad).map_err(to_io)?;
        let len = u32::try_from(sealed.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk too long"))?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&sealed)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals what is left as the last chunk, flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.emit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads a file written by [`SealedWriter`]. Every chunk is authenticated before a byte of it
/// is returned; a wrong key, a damaged chunk or a file cut short is an
/// [`io::ErrorKind::InvalidData`] error (never a shorter plaintext).
pub struct SealedReader<R: Read> {
    input: R,
    sealer: Sealer,
    file_id: [u8; FILE_ID_LEN],
    index: u64,
    plain: Vec<u8>,
    at: usize,
    done: bool,
}

impl<R: Read> SealedReader<R> {
    /// Reads and checks the header of `input`.
    pub fn new(mut input: R, sealer: Sealer) -> io::Result<Self> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(|_| not_sealed())?;
        if &magic != SEALED_FILE_MAGIC {
            return Err(not_sealed());
        }
        let mut file_id = [0u8; FILE_ID_LEN];
        input.read_exact(&mut file_id).map_err(|_| cut_short())?;
        Ok(SealedReader {
            input,
            sealer,
            file_id,
            index: 0,
            plain: Vec::new(),
            at: 0,
            done: false,
        })
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(|_| cut_short())?;
        let len = u32::from_le_bytes(len) as usize;
        if len > CHUNK + 1 + NONCE_LEN + TAG_LEN {
            return Err(to_io(SealError::Malformed(format!(
                "chunk {} claims {len} bytes",
                self.index
            ))));
        }
        let mut sealed = vec![0u8; len];
        self.input
            .read_exact(&mut sealed)
            .map_err(|_| cut_short())?;
        // A chunk opens as the last one or as a middle one, never both.
        for last in [false, true] {
            let aad = chunk_aad(&self.file_id, self.index, last);
            if let Ok(plain) = self.sealer.open(&sealed, &aad) {
                self.plain = plain;
                self.at = 0;
                self.index += 1;
                self.done = last;
                if last {
                    // Nothing may follow the last chunk: appended bytes are damage too.
                    let mut probe = [0u8; 1];
                    if self.input.read(&mut probe)? != 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "bytes follow the last chunk of the sealed file: it is damaged",
                        ));
                    }
                }
                return Ok(());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "chunk {} of the sealed file does not open: another key, or the file is damaged",
                self.index
            ),
        ))
    }
}

fn not_sealed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "not a sealed file")
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the sealed file is cut short (its last chunk is missing)",
    )
}

impl<R: Read> Read for SealedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::MasterKey;

    fn seal(sealer: &Sealer, data: &[u8]) -> Vec<u8> {
        let mut w = SealedWriter::new(Vec::new(), sealer.clone()).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn unseal(sealer: &Sealer, file: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        SealedReader::new(file, sealer.clone())?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn files_of_every_size_round_trip_and_hide_their_text() {
        let s = Sealer::new(&MasterKey::generate().unwrap());
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let data: Vec<u8> = b"MARKER ".iter().copied().cycle().take(size).collect();
            let file = seal(&s, &data);
            assert!(is_sealed_file(&file));
            assert!(!file.windows(6).any(|w| w == b"MARKER"), "size {size}");
            assert_eq!(unseal(&s, &file).unwrap(), data, "size {size}");
        }
    }

    #[test]
    fn a_cut_reordered_or_foreign_file_does_not_open() {
        let s = Sealer::new(&MasterKey::generate().unwrap());
        let data = vec![7u8; 2 * CHUNK + 10];
        let file = seal(&s, &data);
        // Cut at a chunk boundary: the first two chunks are intact, the last is missing.
        let boundary = 8 + FILE_ID_LEN + 2 * (4 + CHUNK + 1 + NONCE_LEN + TAG_LEN);
        let err = unseal(&s, &file[..boundary]).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
        assert!(unseal(&s, &file[..file.len() - 1]).is_err());
        let other = Sealer::new(&MasterKey::generate().unwrap());
        assert_eq!(
            unseal(&other, &file).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Chunk 0 swapped with chunk 1.
        let first = 8 + FILE_ID_LEN;
        let len = 4 + CHUNK + 1 + NONCE_LEN + TAG_LEN;
        let mut swapped = file[..first].to_vec();
        swapped.extend_from_slice(&file[first + len..first + 2 * len]);
        swapped.extend_from_slice(&file[first..first + len]);
        swapped.extend_from_slice(&file[first + 2 * len..]);
        assert!(unseal(&s, &swapped).is_err());
        assert!(unseal(&s, b"{\"plain\":1}").is_err());
        let mut appended = file.clone();
        appended.push(0);
        let err = unseal(&s, &appended).unwrap_err();
        assert!(err.to_string().contains("follow the last chunk"), "{err}");
        let mut huge = file[..first].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(unseal(&s, &huge).is_err());
    }
}
