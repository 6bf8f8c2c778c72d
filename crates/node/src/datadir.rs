//! The data directory: its format marker and its lock.
//!
//! A data directory holds a `ONGGI_FORMAT` file naming the layout version that wrote it. A
//! directory written by another version is refused with a message naming both versions — never
//! silently reinterpreted. An exclusive lock on that file keeps a second server off the same
//! directory while the first one runs.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Name of the marker file.
pub const MARKER_FILE_NAME: &str = "ONGGI_FORMAT";
/// The marker while it is being written.
const MARKER_TEMPORARY_NAME: &str = "ONGGI_FORMAT.tmp";
/// The data directory layout this build writes and reads.
pub const DATA_FORMAT_VERSION: u32 = 1;

fn marker_text() -> String {
    format!("onggi data directory\nformat {DATA_FORMAT_VERSION}\n")
}

/// An opened, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    /// The directory.
    pub path: PathBuf,
    /// Held open for the lifetime of the node: the OS lock lives as long as this handle.
    _lock: File,
}

impl DataDir {
    /// Opens `path`, creating and marking it when it is missing or empty.
    pub fn open(path: &Path) -> Result<DataDir, String> {
        fs::create_dir_all(path)
            .map_err(|error| format!("cannot create data directory {}: {error}", path.display()))?;
        let marker_path = path.join(MARKER_FILE_NAME);
        let temporary_path = path.join(MARKER_TEMPORARY_NAME);
        // Empty, or holding only a marker whose writing a crash interrupted.
        let is_empty = fs::read_dir(path)
            .map_err(|error| format!("cannot read data directory {}: {error}", path.display()))?
            .filter_map(Result::ok)
            .all(|entry| entry.file_name() == MARKER_TEMPORARY_NAME);
        if is_empty {
            // Written whole or not at all: a temporary file, fsynced, renamed, directory fsynced.
            let write = || -> std::io::Result<()> {
                let mut marker = File::create(&temporary_path)?;
                marker.write_all(marker_text().as_bytes())?;
                marker.sync_all()?;
                fs::rename(&temporary_path, &marker_path)?;
                File::open(path)?.sync_all()
            };
            write().map_err(|error| format!("cannot write {}: {error}", marker_path.display()))?;
        }
        let mut marker = OpenOptions::new().read(true).open(&marker_path).map_err(|_| {
            format!(
                "{} is not empty and has no {MARKER_FILE_NAME} file: it is not an onggi data directory; refusing to use it",
                path.display()
            )
        })?;
        let mut text = String::new();
        marker.read_to_string(&mut text).map_err(|error| format!("cannot read {}: {error}", marker_path.display()))?;
        let version = text
            .lines()
            .find_map(|line| line.strip_prefix("format "))
            .and_then(|number| number.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("{} is damaged (no format line); refusing to use it", marker_path.display()))?;
        if version != DATA_FORMAT_VERSION {
            return Err(format!(
                "data directory {} was written in onggi data format {version}; this build reads format {DATA_FORMAT_VERSION} only. \
                 Refusing to reinterpret it: use a build that reads format {version}, or another directory",
                path.display()
            ));
        }
        marker.try_lock().map_err(|_| {
            format!(
                "data directory {} is in use by another onggi process (its {MARKER_FILE_NAME} is locked)",
                path.display()
            )
        })?;
        Ok(DataDir { path: path.to_path_buf(), _lock: marker })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_marks_and_reopens() {
        let directory = tempfile::tempdir().unwrap();
        drop(DataDir::open(directory.path()).unwrap());
        assert!(directory.path().join(MARKER_FILE_NAME).exists());
        DataDir::open(directory.path()).unwrap();
    }

    #[test]
    fn refuses_other_formats_foreign_directories_and_second_users() {
        let directory = tempfile::tempdir().unwrap();
        fs::write(directory.path().join(MARKER_FILE_NAME), "onggi data directory\nformat 99\n").unwrap();
        let error = DataDir::open(directory.path()).unwrap_err();
        assert!(error.contains("format 99") && error.contains("format 1"), "{error}");

        let foreign = tempfile::tempdir().unwrap();
        fs::write(foreign.path().join("something"), "x").unwrap();
        assert!(DataDir::open(foreign.path()).unwrap_err().contains("not an onggi data directory"));

        let shared = tempfile::tempdir().unwrap();
        let _first = DataDir::open(shared.path()).unwrap();
        assert!(DataDir::open(shared.path()).unwrap_err().contains("in use"));
    }
}
