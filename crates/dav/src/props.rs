//! Dead properties (PROPPATCH), kept in memory per user for the server's lifetime.
//!
//! Properties are keyed by the path in the user's home. WebDAV's MOVE, COPY and DELETE carry
//! or drop them with their resources. A file renamed or deleted through SFTP or FTP leaves its
//! entry behind, and a new file at the old path then inherits it. Memory is the only store
//! because the file layer offers no extended attributes and a sidecar file would show up in
//! other protocols' listings.

use std::collections::BTreeMap;
use std::sync::Mutex;

use dav_server::fs::DavProp;
use ferry_vfs::VPath;
use http::StatusCode;

/// Bytes of property names, values and paths that one user may store. The limit stops an
/// authenticated client from exhausting the server's memory with PROPPATCH requests.
pub(crate) const MAX_BYTES_PER_USER: usize = 4 << 20;

/// Bookkeeping cost of one stored property beyond its text, so that many tiny properties
/// also reach the limit.
const ENTRY_OVERHEAD: usize = 64;

/// A property name: namespace URI (empty for none) and local name.
type PropName = (String, String);

/// One user's dead properties.
#[derive(Debug, Default)]
pub(crate) struct PropStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_path: BTreeMap<VPath, BTreeMap<PropName, DavProp>>,
    bytes: usize,
}

fn name_of(prop: &DavProp) -> PropName {
    (
        prop.namespace.clone().unwrap_or_default(),
        prop.name.clone(),
    )
}

fn cost(path: &VPath, prop: &DavProp) -> usize {
    ENTRY_OVERHEAD
        + path.as_str().len()
        + prop.name.len()
        + prop.namespace.as_ref().map_or(0, String::len)
        + prop.prefix.as_ref().map_or(0, String::len)
        + prop.xml.as_ref().map_or(0, Vec::len)
}

/// Returns the property without its value, as PROPFIND `propname` lists it.
fn without_value(prop: &DavProp) -> DavProp {
    DavProp {
        xml: None,
        ..prop.clone()
    }
}

impl PropStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns every property of `path`, with values when `with_values` is set.
    pub(crate) fn list(&self, path: &VPath, with_values: bool) -> Vec<DavProp> {
        let inner = self.lock();
        let Some(props) = inner.by_path.get(path) else {
            return Vec::new();
        };
        props
            .values()
            .map(|p| {
                if with_values {
                    p.clone()
                } else {
                    without_value(p)
                }
            })
            .collect()
    }

    /// Returns the XML of one property, or `None` when it is not set.
    pub(crate) fn get(&self, path: &VPath, prop: &DavProp) -> Option<Vec<u8>> {
        let inner = self.lock();
        inner.by_path.get(path)?.get(&name_of(prop))?.xml.clone()
    }

    /// Applies a PROPPATCH: `true` sets a property, `false` removes one (removing a property
    /// that is not set succeeds). The changes are applied all together or not at all: when
    /// they would pass [`MAX_BYTES_PER_USER`], every set gets 507 and every other change
    /// 424, and nothing changes.
    pub(crate) fn patch(
        &self,
        path: &VPath,
        changes: Vec<(bool, DavProp)>,
    ) -> Vec<(StatusCode, DavProp)> {
        let mut inner = self.lock();
        let current = inner.by_path.get(path);

        let mut bytes = inner.bytes;
        let mut pending: BTreeMap<PropName, Option<usize>> = BTreeMap::new();
        for (set, prop) in &changes {
            let name = name_of(prop);
            let old = match pending.get(&name) {
                Some(size) => *size,
                None => current
                    .and_then(|props| props.get(&name))
                    .map(|p| cost(path, p)),
            };
            bytes = bytes.saturating_sub(old.unwrap_or(0));
            let new = set.then(|| cost(path, prop));
            bytes += new.unwrap_or(0);
            pending.insert(name, new);
        }

        if bytes > MAX_BYTES_PER_USER {
            tracing::warn!(
                %path, stored_bytes = inner.bytes, limit_bytes = MAX_BYTES_PER_USER,
                "PROPPATCH rejected: dead property storage limit reached"
            );
            return changes
                .into_iter()
                .map(|(set, prop)| {
                    let status = if set {
                        StatusCode::INSUFFICIENT_STORAGE
                    } else {
                        StatusCode::FAILED_DEPENDENCY
                    };
                    (status, without_value(&prop))
                })
                .collect();
        }

        let mut results = Vec::with_capacity(changes.len());
        let props = inner.by_path.entry(path.clone()).or_default();
        for (set, prop) in changes {
            let reply = without_value(&prop);
            if set {
                props.insert(name_of(&prop), prop);
            } else {
                props.remove(&name_of(&prop));
            }
            results.push((StatusCode::OK, reply));
        }
        if props.is_empty() {
            inner.by_path.remove(path);
        }
        inner.bytes = bytes;
        results
    }

    /// Drops the properties of `path` and of everything below it.
    pub(crate) fn remove_tree(&self, path: &VPath) {
        let mut inner = self.lock();
        for key in subtree(&inner.by_path, path) {
            if let Some(props) = inner.by_path.remove(&key) {
                let freed: usize = props.values().map(|p| cost(&key, p)).sum();
                inner.bytes = inner.bytes.saturating_sub(freed);
            }
        }
    }

    /// Moves the properties of `from` and everything below it to the same places under `to`.
    pub(crate) fn move_tree(&self, from: &VPath, to: &VPath) {
        self.transfer(from, to, true);
    }

    /// Copies the properties of `from` and everything below it to the same places under
    /// `to`, replacing what was there.
    pub(crate) fn copy_tree(&self, from: &VPath, to: &VPath) {
        self.transfer(from, to, false);
    }

    /// Copies the properties of `from` alone to `to`, replacing those of `to`.
    pub(crate) fn copy_one(&self, from: &VPath, to: &VPath) {
        let mut inner = self.lock();
        let Some(props) = inner.by_path.get(from).cloned() else {
            return;
        };
        let added: usize = props.values().map(|p| cost(to, p)).sum();
        if inner.bytes + added > MAX_BYTES_PER_USER {
            tracing::warn!(%from, %to, "dead properties not copied: storage limit reached");
            return;
        }
        insert_replacing(&mut inner, to.clone(), props);
    }

    fn transfer(&self, from: &VPath, to: &VPath, remove_source: bool) {
        let mut inner = self.lock();
        let mut moved = Vec::new();
        for key in subtree(&inner.by_path, from) {
            let Some(props) = (if remove_source {
                inner.by_path.remove(&key)
            } else {
                inner.by_path.get(&key).cloned()
            }) else {
                continue;
            };
            if remove_source {
                let freed: usize = props.values().map(|p| cost(&key, p)).sum();
                inner.bytes = inner.bytes.saturating_sub(freed);
            }
            let suffix = &key.as_str()[from.as_str().len()..];
            let target = if from.is_root() {
                VPath::resolve(to, &key.as_str()[1..])
            } else {
                VPath::parse(&format!("{to}{suffix}"))
            };
            if let Ok(target) = target {
                moved.push((target, props));
            }
        }
        for (target, props) in moved {
            let added: usize = props.values().map(|p| cost(&target, p)).sum();
            if !remove_source && inner.bytes + added > MAX_BYTES_PER_USER {
                tracing::warn!(%from, %to, "dead properties not copied: storage limit reached");
                return;
            }
            insert_replacing(&mut inner, target, props);
        }
    }
}

fn insert_replacing(inner: &mut Inner, path: VPath, props: BTreeMap<PropName, DavProp>) {
    let added: usize = props.values().map(|p| cost(&path, p)).sum();
    if let Some(old) = inner.by_path.insert(path.clone(), props) {
        let freed: usize = old.values().map(|p| cost(&path, p)).sum();
        inner.bytes = inner.bytes.saturating_sub(freed);
    }
    inner.bytes += added;
}

/// Returns `root` and every stored path below it.
fn subtree<V>(map: &BTreeMap<VPath, V>, root: &VPath) -> Vec<VPath> {
    if root.is_root() {
        return map.keys().cloned().collect();
    }
    // Every path that has `root` as a string prefix sorts in one run starting at `root`;
    // the run also contains siblings such as "<root> 2", which are skipped.
    let prefix = format!("{root}/");
    map.range(root.clone()..)
        .map(|(key, _)| key)
        .take_while(|key| key.as_str().starts_with(root.as_str()))
        .filter(|key| *key == root || key.as_str().starts_with(&prefix))
        .cloned()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn p(text: &str) -> VPath {
        VPath::parse(text).unwrap()
    }

    fn prop(name: &str, value: &str) -> DavProp {
        DavProp {
            name: name.into(),
            prefix: Some("x".into()),
            namespace: Some("urn:test".into()),
            xml: Some(format!("<x:{name} xmlns:x=\"urn:test\">{value}</x:{name}>").into_bytes()),
        }
    }

    fn names(store: &PropStore, path: &str) -> Vec<String> {
        store
            .list(&p(path), false)
            .into_iter()
            .map(|d| d.name)
            .collect()
    }

    #[test]
    fn set_get_remove() {
        let store = PropStore::default();
        let results = store.patch(
            &p("/f"),
            vec![(true, prop("a", "1")), (true, prop("b", "2"))],
        );
        assert!(results.iter().all(|(s, _)| *s == StatusCode::OK));
        assert_eq!(names(&store, "/f"), ["a", "b"]);
        let value = store.get(&p("/f"), &prop("a", "")).unwrap();
        assert!(String::from_utf8(value).unwrap().contains(">1<"));
        store.patch(&p("/f"), vec![(false, prop("a", ""))]);
        assert_eq!(names(&store, "/f"), ["b"]);
        assert!(store.list(&p("/f"), false)[0].xml.is_none());
    }

    #[test]
    fn move_tree_carries_children() {
        let store = PropStore::default();
        store.patch(&p("/d"), vec![(true, prop("dir", "1"))]);
        store.patch(&p("/d/f"), vec![(true, prop("file", "1"))]);
        store.patch(&p("/d 2"), vec![(true, prop("sibling", "1"))]);
        store.move_tree(&p("/d"), &p("/e"));
        assert!(names(&store, "/d").is_empty());
        assert!(names(&store, "/d/f").is_empty());
        assert_eq!(names(&store, "/e"), ["dir"]);
        assert_eq!(names(&store, "/e/f"), ["file"]);
        assert_eq!(names(&store, "/d 2"), ["sibling"]);
    }

    #[test]
    fn copy_and_remove() {
        let store = PropStore::default();
        store.patch(&p("/a"), vec![(true, prop("x", "1"))]);
        store.copy_tree(&p("/a"), &p("/b"));
        assert_eq!(names(&store, "/a"), ["x"]);
        assert_eq!(names(&store, "/b"), ["x"]);
        store.remove_tree(&p("/a"));
        assert!(names(&store, "/a").is_empty());
        assert_eq!(names(&store, "/b"), ["x"]);
        store.remove_tree(&p("/b"));
        assert_eq!(store.lock().bytes, 0);
    }

    #[test]
    fn limit_rejects_whole_patch() {
        let store = PropStore::default();
        let big = "v".repeat(MAX_BYTES_PER_USER);
        let results = store.patch(
            &p("/f"),
            vec![(false, prop("a", "")), (true, prop("b", &big))],
        );
        assert_eq!(results[0].0, StatusCode::FAILED_DEPENDENCY);
        assert_eq!(results[1].0, StatusCode::INSUFFICIENT_STORAGE);
        assert!(names(&store, "/f").is_empty());
        assert_eq!(store.lock().bytes, 0);
    }

    #[test]
    fn replacing_keeps_count_exact() {
        let store = PropStore::default();
        store.patch(&p("/f"), vec![(true, prop("a", "1111"))]);
        let first = store.lock().bytes;
        store.patch(&p("/f"), vec![(true, prop("a", "22"))]);
        assert_eq!(store.lock().bytes, first - 2);
    }
}
