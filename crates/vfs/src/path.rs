//! Virtual paths: what a client names, normalized before it touches the disk.

use std::path::{Path, PathBuf};

use crate::VfsError;

/// An absolute path inside a user's home, always starting with `/`, never containing `.`,
/// `..` or empty components. `/` is the home directory itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VPath(String);

impl VPath {
    /// The home directory.
    pub fn root() -> VPath {
        VPath("/".to_owned())
    }

    /// Resolves `input` against `base` (used when `input` is relative).
    ///
    /// `..` stops at the root, as it does at `/` on a real system, so no client path can name
    /// anything above the home directory. Symlinks are not resolved here; the file layer
    /// refuses any link that leads out of the home when it is followed. NUL bytes are
    /// rejected, since no file name can contain one.
    pub fn resolve(base: &VPath, input: &str) -> Result<VPath, VfsError> {
        if input.contains('\0') {
            return Err(VfsError::InvalidPath("path contains a NUL byte".into()));
        }
        let mut parts: Vec<&str> = if input.starts_with('/') {
            Vec::new()
        } else {
            base.components().collect()
        };
        for part in input.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => parts.push(name),
            }
        }
        Ok(VPath(format!("/{}", parts.join("/"))))
    }

    /// Parses an absolute path from a client; relative paths are taken from the root.
    pub fn parse(input: &str) -> Result<VPath, VfsError> {
        VPath::resolve(&VPath::root(), input)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// Returns the path components, none of which is empty, `.` or `..`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|part| !part.is_empty())
    }

    /// Returns the last component, or `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.components().last()
    }

    /// Returns the parent directory; the root is its own parent.
    pub fn parent(&self) -> VPath {
        match self.0.rfind('/') {
            Some(0) | None => VPath::root(),
            Some(i) => VPath(self.0[..i].to_owned()),
        }
    }

    /// Appends one name, which must not contain `/`.
    pub fn join(&self, name: &str) -> Result<VPath, VfsError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(VfsError::InvalidPath(format!("invalid file name {name:?}")));
        }
        if self.is_root() {
            Ok(VPath(format!("/{name}")))
        } else {
            Ok(VPath(format!("{}/{name}", self.0)))
        }
    }

    /// Returns whether `self` is `prefix` or lies below it, comparing whole components.
    pub fn starts_with(&self, prefix: &VPath) -> bool {
        prefix.is_root()
            || self.0 == prefix.0
            || (self.0.starts_with(&prefix.0)
                && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }

    /// Returns the path relative to the home directory, as the file layer opens it.
    pub(crate) fn to_relative(&self) -> PathBuf {
        if self.is_root() {
            PathBuf::from(".")
        } else {
            Path::new(&self.0[1..]).to_path_buf()
        }
    }

    /// Returns the path of `target` relative to the directory that contains `self`, as a
    /// symlink at `self` must store it to point at `target` from inside the home.
    pub(crate) fn relative_link_to(&self, target: &VPath) -> String {
        let parent = self.parent();
        let base: Vec<&str> = parent.components().collect();
        let to: Vec<&str> = target.components().collect();
        let common = base.iter().zip(&to).take_while(|(a, b)| a == b).count();
        let mut parts: Vec<&str> = vec![".."; base.len() - common];
        parts.extend(to.iter().skip(common));
        if parts.is_empty() {
            ".".to_owned()
        } else {
            parts.join("/")
        }
    }
}

impl std::fmt::Display for VPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> VPath {
        VPath::parse(s).unwrap()
    }

    #[test]
    fn dotdot_stops_at_root() {
        assert_eq!(p("/../../etc/passwd").as_str(), "/etc/passwd");
        assert_eq!(p("a/../../..").as_str(), "/");
        assert_eq!(
            VPath::resolve(&p("/a/b"), "../../../../c")
                .unwrap()
                .as_str(),
            "/c"
        );
    }

    #[test]
    fn relative_resolved_against_base() {
        assert_eq!(
            VPath::resolve(&p("/a"), "b/./c//d").unwrap().as_str(),
            "/a/b/c/d"
        );
        assert_eq!(VPath::resolve(&p("/a"), "/x").unwrap().as_str(), "/x");
        assert_eq!(VPath::resolve(&p("/a"), "").unwrap().as_str(), "/a");
        assert_eq!(VPath::resolve(&p("/a"), ".").unwrap().as_str(), "/a");
    }

    #[test]
    fn nul_rejected() {
        assert!(matches!(
            VPath::parse("a\0b"),
            Err(VfsError::InvalidPath(_))
        ));
    }

    #[test]
    fn parent_and_name() {
        assert_eq!(p("/a/b").parent().as_str(), "/a");
        assert_eq!(p("/a").parent().as_str(), "/");
        assert_eq!(p("/").parent().as_str(), "/");
        assert_eq!(p("/a/b").file_name(), Some("b"));
        assert_eq!(p("/").file_name(), None);
    }

    #[test]
    fn prefix_matches_whole_components() {
        assert!(p("/public/x").starts_with(&p("/public")));
        assert!(p("/public").starts_with(&p("/public")));
        assert!(!p("/publicity").starts_with(&p("/public")));
        assert!(p("/anything").starts_with(&p("/")));
    }

    #[test]
    fn join_rejects_separators() {
        assert!(p("/a").join("b/c").is_err());
        assert!(p("/a").join("..").is_err());
        assert_eq!(p("/").join("b").unwrap().as_str(), "/b");
    }

    #[test]
    fn relative_links() {
        assert_eq!(p("/a/link").relative_link_to(&p("/b/c")), "../b/c");
        assert_eq!(p("/link").relative_link_to(&p("/b/c")), "b/c");
        assert_eq!(
            p("/a/b/link").relative_link_to(&p("/a/target")),
            "../target"
        );
        assert_eq!(p("/a/link").relative_link_to(&p("/a")), ".");
        assert_eq!(p("/a/link").relative_link_to(&p("/")), "..");
    }

    #[test]
    fn relative_path_for_disk() {
        assert_eq!(p("/").to_relative(), PathBuf::from("."));
        assert_eq!(p("/a/b").to_relative(), PathBuf::from("a/b"));
    }
}
