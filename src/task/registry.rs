//! The pod's containers by ID, and the shutdown gate: once Shutdown found the pod empty,
//! no Create gets in any more (the daemon is going away, so a container created now would
//! be served by nobody).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves consistent data; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Registry<T> {
    containers: Mutex<HashMap<String, Arc<T>>>,
    /// Raised (under the `containers` lock) when Shutdown found the pod empty.
    closing: AtomicBool,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            containers: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
        }
    }
}

impl<T> Registry<T> {
    pub fn is_empty(&self) -> bool {
        lock(&self.containers).is_empty()
    }

    /// If the pod serves nothing, closes it for good (every later `reserve` is refused)
    /// and says so. Checked and raised under one lock with `reserve`'s insertion, so a
    /// container is either in before it or refused.
    pub fn close_if_empty(&self) -> bool {
        let map = lock(&self.containers);
        if map.is_empty() {
            self.closing.store(true, Ordering::SeqCst);
        }
        self.closing.load(Ordering::SeqCst)
    }

    /// Takes `id` for a new container: refused when the pod is closing or the ID is in use.
    /// Nothing has been touched yet when this refuses (no mount, no cleanup).
    pub fn reserve(&self, id: &str, entry: Arc<T>) -> Result<()> {
        let mut map = lock(&self.containers);
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::FailedPrecondition(format!(
                "create {id:?}: this shim is shutting down (its pod was empty and containerd \
                 asked it to exit); start a new one"
            )));
        }
        if map.contains_key(id) {
            return Err(Error::AlreadyExists(format!(
                "container {id:?} already exists"
            )));
        }
        map.insert(id.to_string(), entry);
        Ok(())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.containers).len()
    }

    pub fn get(&self, id: &str) -> Result<Arc<T>> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    /// Removes `id` only while it is still `entry` (never a later container of that ID).
    pub fn remove(&self, id: &str, entry: &Arc<T>) {
        let mut map = lock(&self.containers);
        if map.get(id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(id);
        }
    }
}

pub fn not_found(id: &str) -> Error {
    Error::NotFound(format!("container {id:?} not found"))
}

pub fn exec_not_found(id: &str, exec_id: &str) -> Error {
    Error::NotFound(format!("exec {exec_id:?} not found in container {id:?}"))
}
