//! Files only the service's own user may read: the data directory (0700) and what is in it (0600): the store,
//! `credentials.toml`, the outbox's `.eml` files. Shared by `config`, `store` and `mailer`, which all write there.
//!
//! On platforms without Unix modes these are plain directories and files.

use std::path::Path;

/// Creates a directory (and its parents) that only its owner can enter: the data directory holds the store,
/// the credentials and the outbox.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Replaces a file atomically with one only its owner can read: the text goes to a temporary file in the same
/// directory (created 0600), which is flushed to disk and renamed over the old one, and the directory is flushed
/// too, so that a crash leaves either the old file or the new one, never a part of either.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temporary =
        dir.join(format!(".{name}.{}.{:016x}.tmp", std::process::id(), rand::random::<u64>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Makes a file private (0600) if it is there, as a file the service created before this was enforced, or one SQLite
/// created with its default mode. A file that is not there, or that goes while this runs (SQLite removes its WAL and
/// shared-memory files when the last connection to the database closes, in this process or another), needs
/// nothing: whoever creates it again gives it the database file's mode.
pub fn make_private_if_present(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates an empty private file if there is none, so that whatever opens it later finds it 0600.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_file_is_made_private_and_a_file_that_is_gone_is_left_gone() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("store.sqlite3-wal");
        std::fs::write(&present, b"frames").unwrap();
        std::fs::set_permissions(&present, std::fs::Permissions::from_mode(0o644)).unwrap();
        make_private_if_present(&present).unwrap();
        assert_eq!(mode(&present), 0o600);

        // As when another connection closes the last handle and SQLite removes its shared-memory file.
        let gone = dir.path().join("store.sqlite3-shm");
        make_private_if_present(&gone).expect("a file that is not there needs nothing");
        assert!(!gone.exists(), "nothing is created in its place");
    }
}
