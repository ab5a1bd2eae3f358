//! A database file copied under another encryption key: for encrypting a memory in place and
//! rotating its key.

use std::path::Path;

use memory_core::{Error, Result};
use memory_seal::MasterKey;

/// Writes a consistent, compacted copy of the local database `src` (encrypted under `from`, or
/// not encrypted) to the new file `dst`, encrypted under `to`. `src` is only read; `dst` must
/// not exist. Needs the `encryption` feature.
///
/// One `VACUUM INTO` whose target is a URI naming the cipher and the new key: `SQLite3`
/// Multiple Ciphers writes the copy encrypted under it. The URI is a bound parameter, so the
/// key never appears in a statement's text (libsql traces statement texts).
#[cfg(feature = "encryption")]
pub async fn reencrypt_file(
    src: &Path,
    from: Option<&MasterKey>,
    dst: &Path,
    to: &MasterKey,
) -> Result<()> {
    use crate::connection::encryption_config;
    use crate::error::Failure;
    use libsql::Builder;

    let fail = |e: libsql::Error| Failure::from(e).into_core("reencrypt");
    // Created here, empty and 0600 (VACUUM INTO fills an empty file): also the check that
    // nothing is at `dst` yet.
    match memory_files::create_new(dst) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::invalid(
                "reencrypt",
                format!("{} already exists", dst.display()),
            ));
        }
        Err(e) => return Err(Failure::from(e).into_core("reencrypt")),
    }
    let builder = Builder::new_local(src);
    let builder = match from {
        Some(k) => builder.encryption_config(encryption_config(k)),
        None => builder,
    };
    let db = builder.build().await.map_err(fail)?;
    let conn = db.connect().map_err(fail)?;
    let passphrase = to.database_passphrase();
    let target = zeroize::Zeroizing::new(format!(
        "file:{}?cipher=aes256cbc&key={}",
        uri_path(dst),
        passphrase.as_str()
    ));
    let copied = conn
        .execute(
            "VACUUM INTO ?1",
            vec![libsql::Value::Text(target.to_string())],
        )
        .await;
    if let Err(e) = copied {
        // At best a partial copy, and ours.
        let _ = std::fs::remove_file(dst);
        return Err(fail(e));
    }
    Ok(())
}

/// `path` for a `file:` URI: every byte but unreserved ones and `/` percent-encoded (so `?`,
/// `#` and `%` in a directory name are not read as URI syntax).
#[cfg(feature = "encryption")]
fn uri_path(path: &Path) -> String {
    use std::fmt::Write as _;
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Without the `encryption` feature: refused.
#[cfg(not(feature = "encryption"))]
pub async fn reencrypt_file(
    _src: &Path,
    _from: Option<&MasterKey>,
    _dst: &Path,
    _to: &MasterKey,
) -> Result<()> {
    Err(Error::invalid(
        "reencrypt",
        "this build cannot encrypt the database file: build with the `encryption` feature",
    ))
}
