//! The format marker of an on-disk storage directory.
//!
//! Every persisted format is versioned from its first release. A directory made by
//! [`crate::FjallEngine`] holds a small text file, [`FORMAT_FILE_NAME`], whose single line names
//! the engine and the layout version ([`FJALL_FORMAT`]). Opening checks it before fjall reads
//! anything:
//!
//! - missing directory, or an empty one: create it and write the marker (atomically: temporary
//!   file, fsync, rename, fsync of the directory);
//! - marker present and equal: open;
//! - marker present and different: refuse, naming the path and both formats;
//! - marker missing but directory not empty: refuse; it was made by something else (or by a
//!   different program entirely), and guessing could destroy data.

use crate::StorageError;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;

/// Name of the marker file inside a storage directory.
pub const FORMAT_FILE_NAME: &str = "ONGGI_STORAGE_FORMAT";

/// The marker line of the current fjall layout. Change it whenever the layout changes
/// incompatibly (fjall major version, key encoding of this crate, directory structure).
pub const FJALL_FORMAT: &str = "onggi-storage fjall v1";

/// Suffix of the temporary file used while writing the marker.
const TEMPORARY_SUFFIX: &str = ".tmp";

/// Creates `path` if needed and checks or writes its format marker; see the module docs.
pub(crate) fn prepare_directory(path: &Path, expected: &str) -> Result<(), StorageError> {
    fs::create_dir_all(path).map_err(|error| StorageError::io("create directory", path, error))?;
    let marker = path.join(FORMAT_FILE_NAME);
    match fs::read(&marker) {
        Ok(content) => {
            let content = String::from_utf8_lossy(&content);
            let found = content.trim_end();
            if found == expected {
                Ok(())
            } else {
                Err(StorageError::FormatMismatch {
                    path: path.to_owned(),
                    found: found.to_owned(),
                    expected: expected.to_owned(),
                })
            }
        }
        Err(error) if error.kind() == ErrorKind::NotFound => create_marker(path, expected),
        Err(error) => Err(StorageError::io("read format marker", marker, error)),
    }
}

/// Writes the marker into a directory that has none, if the directory is empty.
fn create_marker(path: &Path, expected: &str) -> Result<(), StorageError> {
    let temporary = path.join(format!("{FORMAT_FILE_NAME}{TEMPORARY_SUFFIX}"));
    // A crash while creating the marker leaves only this file behind; it carries no data.
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => return Err(StorageError::io("remove temporary format marker", temporary, error)),
    }
    let mut entries = fs::read_dir(path).map_err(|error| StorageError::io("list directory", path, error))?;
    if entries.next().is_some() {
        return Err(StorageError::NotStorageDirectory {
            path: path.to_owned(),
            marker_file: FORMAT_FILE_NAME.to_owned(),
            expected: expected.to_owned(),
        });
    }
    let write = || -> std::io::Result<()> {
        let mut file = File::create_new(&temporary)?;
        file.write_all(format!("{expected}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path.join(FORMAT_FILE_NAME))?;
        File::open(path)?.sync_all()
    };
    write().map_err(|error| StorageError::io("write format marker", path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_lifecycle() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("data");
        prepare_directory(&path, "format a").unwrap();
        prepare_directory(&path, "format a").unwrap();
        assert_eq!(fs::read_to_string(path.join(FORMAT_FILE_NAME)).unwrap(), "format a\n");

        let error = prepare_directory(&path, "format b").unwrap_err();
        assert_eq!(
            error,
            StorageError::FormatMismatch { path: path.clone(), found: "format a".into(), expected: "format b".into() }
        );
        let message = error.to_string();
        assert!(message.contains("format a") && message.contains("format b") && message.contains("data"), "{message}");

        let foreign = root.path().join("foreign");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("something"), b"x").unwrap();
        let error = prepare_directory(&foreign, "format a").unwrap_err();
        assert!(matches!(error, StorageError::NotStorageDirectory { .. }), "{error}");
        assert!(error.to_string().contains("foreign"), "{error}");

        let interrupted = root.path().join("interrupted");
        fs::create_dir(&interrupted).unwrap();
        fs::write(interrupted.join(format!("{FORMAT_FILE_NAME}{TEMPORARY_SUFFIX}")), b"half").unwrap();
        prepare_directory(&interrupted, "format a").unwrap();
    }
}
