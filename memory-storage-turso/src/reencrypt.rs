//! A database file copied under another encryption key: for encrypting a memory in place and
//! rotating its key.

use std::path::Path;

use memory_core::{Error, Result};
use memory_seal::MasterKey;

/// Writes a consistent, compacted copy of the local database `src` (encrypted under `from`, or
/// not encrypted) to the new file `dst`, encrypted under `to`. `src` is only read; `dst` must
/// not exist. Needs the `encryption` feature.
///
/// The copy is made with `VACUUM INTO` (under the source's key), then re-keyed in place with
/// `SQLite3` Multiple Ciphers' `PRAGMA rekey` (which rewrites every page; it runs in rollback
/// journal mode, after which the copy is put back into WAL mode).
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
    let open = async |path: &Path, key: Option<&MasterKey>| {
        let builder = Builder::new_local(path);
        let builder = match key {
            Some(k) => builder.encryption_config(encryption_config(k)),
            None => builder,
        };
        builder.build().await.map_err(fail)
    };
    if dst.exists() {
        return Err(Error::invalid(
            "reencrypt",
            format!("{} already exists", dst.display()),
        ));
    }
    memory_files::precreate(dst).map_err(|e| Failure::from(e).into_core("reencrypt"))?;
    {
        let db = open(src, from).await?;
        let conn = db.connect().map_err(fail)?;
        conn.execute(
            "VACUUM INTO ?1",
            vec![libsql::Value::Text(dst.to_string_lossy().into_owned())],
        )
        .await
        .map_err(fail)?;
    }
    let db = open(dst, from).await?;
    let conn = db.connect().map_err(fail)?;
    // The passphrase is 64 hexadecimal digits: nothing in it needs quoting.
    let passphrase = to.database_passphrase();
    for sql in [
        "PRAGMA journal_mode = DELETE".to_owned(),
        format!("PRAGMA rekey = '{}'", passphrase.as_str()),
        "PRAGMA journal_mode = WAL".to_owned(),
    ] {
        let mut rows = conn.query(&sql, ()).await.map_err(fail)?;
        while rows.next().await.map_err(fail)?.is_some() {}
    }
    Ok(())
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
