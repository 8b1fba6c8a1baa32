//! Per-path permissions: each path gets the permissions of its longest configured prefix.

use std::collections::BTreeMap;

use crate::VPath;

/// One operation a user may be allowed to perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Permission {
    List = 1 << 0,
    Download = 1 << 1,
    Upload = 1 << 2,
    Overwrite = 1 << 3,
    DeleteFiles = 1 << 4,
    DeleteDirs = 1 << 5,
    RenameFiles = 1 << 6,
    RenameDirs = 1 << 7,
    CreateDirs = 1 << 8,
    CreateSymlinks = 1 << 9,
    Chmod = 1 << 10,
    Chtimes = 1 << 11,
}

/// A set of [`Permission`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PermissionSet(u16);

impl PermissionSet {
    pub const ALL: PermissionSet = PermissionSet((1 << 12) - 1);
    pub const NONE: PermissionSet = PermissionSet(0);

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission as u16 != 0
    }

    pub fn insert(&mut self, permission: Permission) {
        self.0 |= permission as u16;
    }

    /// Parses the names of the users file: `*`, `list`, `download`, `upload`, `overwrite`,
    /// `delete` (files and directories), `delete_files`, `delete_dirs`, `rename` (files and
    /// directories), `rename_files`, `rename_dirs`, `create_dirs`, `create_symlinks`, `chmod`
    /// and `chtimes`.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<PermissionSet, String> {
        use Permission::*;
        let mut set = PermissionSet::NONE;
        for name in names {
            let granted: &[Permission] = match name {
                "*" => {
                    set = PermissionSet::ALL;
                    continue;
                }
                "list" => &[List],
                "download" => &[Download],
                "upload" => &[Upload],
                "overwrite" => &[Overwrite],
                "delete" => &[DeleteFiles, DeleteDirs],
                "delete_files" => &[DeleteFiles],
                "delete_dirs" => &[DeleteDirs],
                "rename" => &[RenameFiles, RenameDirs],
                "rename_files" => &[RenameFiles],
                "rename_dirs" => &[RenameDirs],
                "create_dirs" => &[CreateDirs],
                "create_symlinks" => &[CreateSymlinks],
                "chmod" => &[Chmod],
                "chtimes" => &[Chtimes],
                other => return Err(format!("unknown permission {other:?}")),
            };
            for permission in granted {
                set.insert(*permission);
            }
        }
        Ok(set)
    }
}

/// The permission rules of one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Rules sorted by path; lookups pick the longest prefix.
    rules: BTreeMap<VPath, PermissionSet>,
}

impl Default for Permissions {
    /// Everything is allowed everywhere.
    fn default() -> Self {
        Permissions {
            rules: BTreeMap::from([(VPath::root(), PermissionSet::ALL)]),
        }
    }
}

impl Permissions {
    /// Builds rules from `(path, names)` pairs. A missing `/` rule denies everything outside
    /// the configured paths.
    pub fn from_rules<'a>(
        rules: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Result<Permissions, String> {
        let mut map = BTreeMap::new();
        for (path, names) in rules {
            if !path.starts_with('/') {
                return Err(format!("permission path {path:?} must start with /"));
            }
            let vpath = VPath::parse(path).map_err(|e| format!("permission path {path:?}: {e}"))?;
            let set = PermissionSet::from_names(names.iter().map(String::as_str))
                .map_err(|e| format!("permissions for {path:?}: {e}"))?;
            map.insert(vpath, set);
        }
        Ok(Permissions { rules: map })
    }

    /// Returns the permissions that apply to `path`.
    pub fn for_path(&self, path: &VPath) -> PermissionSet {
        self.rules
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.as_str().len())
            .map(|(_, set)| *set)
            .unwrap_or(PermissionSet::NONE)
    }

    pub fn allows(&self, path: &VPath, permission: Permission) -> bool {
        self.for_path(path).contains(permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn longest_prefix_wins() {
        let all = names(&["*"]);
        let read = names(&["list", "download"]);
        let perms =
            Permissions::from_rules([("/", all.as_slice()), ("/public", read.as_slice())]).unwrap();
        let public = VPath::parse("/public/a.txt").unwrap();
        assert!(perms.allows(&public, Permission::Download));
        assert!(!perms.allows(&public, Permission::Upload));
        assert!(perms.allows(&VPath::parse("/publicity").unwrap(), Permission::Upload));
    }

    #[test]
    fn aliases_expand() {
        let set = PermissionSet::from_names(["delete", "rename_files"]).unwrap();
        assert!(set.contains(Permission::DeleteFiles));
        assert!(set.contains(Permission::DeleteDirs));
        assert!(set.contains(Permission::RenameFiles));
        assert!(!set.contains(Permission::RenameDirs));
    }

    #[test]
    fn unknown_name_rejected() {
        assert!(
            PermissionSet::from_names(["fly"])
                .unwrap_err()
                .contains("\"fly\"")
        );
    }

    #[test]
    fn no_root_rule_denies() {
        let read = names(&["download"]);
        let perms = Permissions::from_rules([("/pub", read.as_slice())]).unwrap();
        assert!(!perms.allows(&VPath::parse("/x").unwrap(), Permission::Download));
    }
}
