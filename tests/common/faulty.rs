//! A [`Store`] wrapper that fails chosen calls on demand: the fault seam of the
//! retry tests (a dropped connection, ENOSPC, EACCES as a store call sees them).

use std::sync::Mutex;
use std::time::Duration;

use fscache::store::{MergeFn, Store, Version, Versioned};
use fscache::{Error, Result};

/// When an injected failure strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Before the call reaches the store: nothing is applied.
    Before,
    /// After the store applied the call: only the reply is lost (a connection that
    /// dropped once the engine had written).
    After,
}

#[derive(Default)]
struct Plan {
    ops: Vec<&'static str>,
    left: usize,
    when: Option<When>,
    failed: Vec<&'static str>,
}

type Before = Box<dyn Fn(&'static str, &str) + Send + Sync>;

/// Wraps a store; [`fail_next`](Self::fail_next) arms failures,
/// [`before`](Self::before) runs code before chosen calls (forced interleavings).
pub struct Faulty<S> {
    inner: S,
    plan: Mutex<Plan>,
    calls: Mutex<Vec<&'static str>>,
    before: Mutex<Option<std::sync::Arc<Before>>>,
}

impl<S: Store> Faulty<S> {
    pub fn new(inner: S) -> Self {
        Faulty {
            inner,
            plan: Mutex::new(Plan::default()),
            calls: Mutex::new(Vec::new()),
            before: Mutex::new(None),
        }
    }

    /// Runs `f(op, key)` before every call reaches the store (`None` removes it).
    /// `f` may call the store itself: it is not run inside a lock.
    #[allow(dead_code)]
    pub fn before(&self, f: Option<Before>) {
        *self.before.lock().unwrap() = f.map(std::sync::Arc::new);
    }

    /// The next `n` calls of any of `ops` ("insert", "compare_and_set", "update",
    /// "remove", "touch", "save", "load", "replace") fail with a retryable
    /// [`Error::Engine`], `when` says before or after reaching the store.
    pub fn fail_next(&self, n: usize, ops: &[&'static str], when: When) {
        let mut p = self.plan.lock().unwrap();
        p.ops = ops.to_vec();
        p.left = n;
        p.when = Some(when);
        p.failed.clear();
    }

    /// The calls that failed since the last `fail_next`.
    pub fn failed(&self) -> Vec<&'static str> {
        self.plan.lock().unwrap().failed.clone()
    }

    /// The calls made since the last `take_calls` (cleanup excepted), in order.
    pub fn take_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn strike(&self, op: &'static str) -> Option<When> {
        let mut p = self.plan.lock().unwrap();
        if p.left == 0 || !p.ops.contains(&op) {
            return None;
        }
        p.left -= 1;
        p.failed.push(op);
        p.when
    }

    fn call<T>(&self, op: &'static str, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let hook = self.before.lock().unwrap().clone();
        if let Some(hook) = hook {
            hook(op, key);
        }
        let injected = || {
            Error::engine(
                "faulty",
                op,
                true,
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected fault"),
            )
        };
        self.calls.lock().unwrap().push(op);
        match self.strike(op) {
            None => f(),
            Some(When::Before) => Err(injected()),
            Some(When::After) => {
                f()?;
                Err(injected())
            }
        }
    }
}

impl<S: Store> Store for Faulty<S> {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        self.call("load", key, || self.inner.load(key))
    }
    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.call("save", key, || self.inner.save(key, value, ttl))
    }
    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.call("insert", key, || self.inner.insert(key, value, ttl))
    }
    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        self.call("compare_and_set", key, || {
            self.inner.compare_and_set(key, expected, new, ttl)
        })
    }
    fn remove(&self, key: &str) -> Result<bool> {
        self.call("remove", key, || self.inner.remove(key))
    }
    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.call("touch", key, || self.inner.touch(key, ttl))
    }
    fn update(&self, key: &str, ttl: Duration, merge: &mut MergeFn<'_>) -> Result<Option<Vec<u8>>> {
        self.call("update", key, || self.inner.update(key, ttl, merge))
    }
    fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.call("replace", key, || self.inner.replace(key, value, ttl))
    }
    fn cleanup(&self, batch: usize) -> Result<usize> {
        self.inner.cleanup(batch)
    }
}
