//! [`RelPath`]: a validated relative path inside a content tree.
//!
//! A `RelPath` is UTF-8, `/`-separated, not absolute, has no empty, `.` or `..` component, no NUL byte,
//! components of at most [`MAX_COMPONENT_BYTES`] bytes and at most [`MAX_PATH_BYTES`] bytes in all. So it
//! can always be joined under a root directory without escaping it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::PathError;

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single component accepted, in bytes (the usual file-system limit).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// A relative path inside a content tree, validated (see the module doc). Ordered by its bytes, which is
/// the order of entries in a manifest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    /// Validates `s`.
    pub fn new(s: &str) -> Result<Self, PathError> {
        let err = |reason| Err(PathError { path: s.to_owned(), reason });
        if s.is_empty() {
            return err("is empty");
        }
        if s.len() > MAX_PATH_BYTES {
            return err("is longer than 4096 bytes");
        }
        if s.starts_with('/') {
            return err("is absolute (starts with `/`)");
        }
        if s.contains('\0') {
            return err("contains a NUL byte");
        }
        for c in s.split('/') {
            match c {
                "" => return err("has an empty component (`//` or a trailing `/`)"),
                "." => return err("has a `.` component"),
                ".." => return err("has a `..` component"),
                c if c.len() > MAX_COMPONENT_BYTES => return err("has a component longer than 255 bytes"),
                _ => {}
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The path as a string, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent path, or `None` for a single component.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_owned()))
    }

    /// This path joined under `root` (never escapes it: the path was validated).
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for c in self.components() {
            p.push(c);
        }
        p
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({:?})", self.0)
    }
}

impl std::str::FromStr for RelPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        let p = RelPath::new("DCP/reel 1/video.mxf").unwrap();
        assert_eq!(p.components().collect::<Vec<_>>(), ["DCP", "reel 1", "video.mxf"]);
        assert_eq!(p.parent().unwrap().as_str(), "DCP/reel 1");
        assert_eq!(p.under(Path::new("/data")), PathBuf::from("/data/DCP/reel 1/video.mxf"));
        assert!(RelPath::new("..hidden/.x").is_ok());
    }

    #[test]
    fn rejects_escaping_and_malformed_paths() {
        for bad in ["", "/etc/passwd", "a/../b", "..", "./a", "a//b", "a/", "a\0b"] {
            let e = RelPath::new(bad).unwrap_err();
            assert_eq!(e.path, bad);
        }
        assert!(RelPath::new(&"x".repeat(256)).is_err());
        assert!(RelPath::new(&["y"; 3000].join("/")).is_err());
    }
}
