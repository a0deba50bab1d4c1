//! How a backend plugs into the suite: a [`Harness`] that opens stores at
//! fresh [`Location`]s, and the [`Capabilities`] it declares.

use std::{
    fmt,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
};

use runstore_core::{Result, Storage, StreamKey};

/// Environment variable that lets a run skip backends whose service is not
/// configured. Never set in CI: there a missing service fails the run.
pub const ALLOW_MISSING_SERVICES: &str = "RUNSTORE_ALLOW_MISSING_SERVICES";

/// Environment variable that sets the property test's case count
/// (default [`DEFAULT_PROPTEST_CASES`]).
pub const PROPTEST_CASES_VAR: &str = "RUNSTORE_PROPTEST_CASES";

/// Property test cases per backend when [`PROPTEST_CASES_VAR`] is unset.
pub const DEFAULT_PROPTEST_CASES: u32 = 256;

/// Where one store instance lives: a fresh directory (removed when the case
/// ends) and a unique name for backends that need a key prefix, schema or
/// database name instead. Opening the same location again reopens the same
/// store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// A fresh, empty directory owned by this case.
    pub dir: PathBuf,
    /// A unique name: lowercase ASCII letters, digits and `_`, starting with
    /// a letter, at most 40 bytes.
    pub name: String,
}

type OpenFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Storage>>> + Send>>;
type OpenFn = Arc<dyn Fn(Location) -> OpenFuture + Send + Sync>;
type CleanupFn = Arc<dyn Fn(Location) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
type SlowOpenFn = Arc<dyn Fn(Location, std::time::Duration) -> OpenFuture + Send + Sync>;
type DamageFn =
    Arc<dyn Fn(Location, StreamKey) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What a backend can do, declared once; cases that need a missing
/// capability say so on stderr instead of silently passing.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// Data survives dropping every handle and opening the location again.
    pub persistent: bool,
    /// Events the concurrency cases append (the contract's figure is 2,000).
    pub concurrency_events: usize,
    /// Tasks the concurrency cases run (the contract's figure is 64).
    pub concurrency_tasks: usize,
    /// Property test cases; `None` reads [`PROPTEST_CASES_VAR`] or uses
    /// [`DEFAULT_PROPTEST_CASES`].
    pub proptest_cases: Option<u32>,
    /// Several handles may be open on one location at once and append to
    /// one stream concurrently ([`Instance::open_again`] opens another):
    /// SQLite, S3, PostgreSQL.
    pub shared_writers: bool,
    /// A second open of a location while a handle on it is open answers
    /// `Locked`: JSONL, redb.
    pub exclusive_open: bool,
    /// The store has a change feed (CONTRACT §29). Without it, the feed
    /// cases check that `read_feed` answers `Unsupported` and say so.
    pub feed: bool,
}

impl Capabilities {
    /// A store that survives reopen, with the contract's full workloads.
    pub fn persistent() -> Self {
        Self {
            persistent: true,
            concurrency_events: 2_000,
            concurrency_tasks: 64,
            proptest_cases: None,
            shared_writers: false,
            exclusive_open: false,
            feed: true,
        }
    }

    /// These capabilities without a change feed ([`feed`](Self::feed)).
    #[must_use]
    pub fn without_feed(self) -> Self {
        Self {
            feed: false,
            ..self
        }
    }

    /// These capabilities with [`shared_writers`](Self::shared_writers).
    #[must_use]
    pub fn with_shared_writers(self) -> Self {
        Self {
            shared_writers: true,
            ..self
        }
    }

    /// These capabilities with [`exclusive_open`](Self::exclusive_open).
    #[must_use]
    pub fn with_exclusive_open(self) -> Self {
        Self {
            exclusive_open: true,
            ..self
        }
    }

    /// A store whose data lives only as long as its handles.
    pub fn in_memory() -> Self {
        Self {
            persistent: false,
            ..Self::persistent()
        }
    }

    /// The property test's case count.
    pub fn proptest_cases(&self) -> u32 {
        self.proptest_cases.unwrap_or_else(|| {
            std::env::var(PROPTEST_CASES_VAR)
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(DEFAULT_PROPTEST_CASES)
        })
    }
}

/// A backend enrolled in the suite.
#[derive(Clone)]
pub struct Harness {
    backend: &'static str,
    capabilities: Capabilities,
    open: OpenFn,
    missing_service: Option<String>,
    cleanup: Option<CleanupFn>,
    damage: Option<DamageFn>,
    slow: Option<SlowOpenFn>,
    /// Every location this harness (and its clones) opened, for cleanup.
    opened: Arc<Mutex<Vec<Location>>>,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("backend", &self.backend)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Enrolls `backend`: `open` opens (or reopens) a store at a location.
    pub fn new<F, Fut, S>(backend: &'static str, capabilities: Capabilities, open: F) -> Self
    where
        F: Fn(Location) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S>> + Send + 'static,
        S: Storage,
    {
        let open = Arc::new(move |location: Location| -> OpenFuture {
            let future = open(location);
            Box::pin(async move { Ok(Arc::new(future.await?) as Arc<dyn Storage>) })
        });
        Self {
            backend,
            capabilities,
            open,
            missing_service: None,
            cleanup: None,
            damage: None,
            slow: None,
            opened: Arc::default(),
        }
    }

    /// Registers what removes a location's data once its case has passed
    /// (for example dropping a Postgres schema). Temporary directories are
    /// removed anyway; a failed case leaves its data for inspection.
    #[must_use]
    pub fn on_cleanup<F, Fut>(mut self, cleanup: F) -> Self
    where
        F: Fn(Location) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.cleanup = Some(Arc::new(move |location| Box::pin(cleanup(location))));
        self
    }

    /// Registers how to damage a stored stream behind the store's back, for
    /// the cases that check a failing stream is isolated (CONTRACT §25).
    /// `damage(location, stream)` runs while no handle is open, and must leave
    /// a store that opens but cannot compact `stream`: for example its
    /// compaction marker's payload overwritten with something that is not a
    /// marker payload.
    #[must_use]
    pub fn on_damage<F, Fut>(mut self, damage: F) -> Self
    where
        F: Fn(Location, StreamKey) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.damage = Some(Arc::new(move |location, stream| {
            Box::pin(damage(location, stream))
        }));
        self
    }

    /// Registers how to open a handle whose commits are slowed, for the
    /// feed's late-commit case (CONTRACT §29): `open(location, delay)` opens
    /// the location (as the harness's `open` does) with a test hook that
    /// waits `delay` inside every commit that writes records, after the
    /// records have taken their feed positions and before the commit makes
    /// them visible.
    #[must_use]
    pub fn on_slow_commits<F, Fut, S>(mut self, open: F) -> Self
    where
        F: Fn(Location, std::time::Duration) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S>> + Send + 'static,
        S: Storage,
    {
        self.slow = Some(Arc::new(move |location, delay| -> OpenFuture {
            let future = open(location, delay);
            Box::pin(async move { Ok(Arc::new(future.await?) as Arc<dyn Storage>) })
        }));
        self
    }

    /// Whether the backend registered [`on_slow_commits`](Self::on_slow_commits).
    pub fn has_slow_commits(&self) -> bool {
        self.slow.is_some()
    }

    /// Opens a slowed handle at `instance`'s location (see
    /// [`on_slow_commits`](Self::on_slow_commits)); `None` when the backend
    /// registered no hook. A backend with
    /// [`exclusive_open`](Capabilities::exclusive_open) needs `instance`'s
    /// handle closed first ([`Instance::close`]).
    ///
    /// # Panics
    /// When the open fails.
    pub async fn open_slow(
        &self,
        instance: &Instance,
        delay: std::time::Duration,
    ) -> Option<Arc<dyn Storage>> {
        let slow = self.slow.as_ref()?;
        Some(
            slow(instance.location.clone(), delay)
                .await
                .unwrap_or_else(|err| panic!("{}: open a slowed handle: {err}", self.backend)),
        )
    }

    /// Closes `instance`, damages `stream` with the registered hook and
    /// reopens; `false` (and nothing done) when the backend registered none.
    pub async fn damage(&self, instance: &mut Instance, stream: &StreamKey) -> bool {
        let Some(damage) = &self.damage else {
            return false;
        };
        let store = instance.store.take().expect("the store is open");
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "damage needs every clone of the handle dropped first"
        );
        drop(store);
        damage(instance.location.clone(), stream.clone()).await;
        let store = (instance.open)(instance.location.clone())
            .await
            .unwrap_or_else(|err| panic!("reopen the damaged store: {err}"));
        instance.store = Some(store);
        true
    }

    /// Opens a store at `location`, as [`Instance::open_again`] does, without
    /// registering it for cleanup: for a child process that works on its
    /// parent's location.
    ///
    /// # Errors
    /// Whatever the backend's open returns.
    #[doc(hidden)]
    pub async fn open_at(&self, location: Location) -> Result<Arc<dyn Storage>> {
        (self.open)(location).await
    }

    /// Runs the cleanup for every location opened so far.
    #[doc(hidden)]
    pub async fn cleanup(&self) {
        let opened = std::mem::take(&mut *self.opened.lock().expect("not poisoned"));
        if let Some(cleanup) = &self.cleanup {
            for location in opened {
                cleanup(location).await;
            }
        }
    }

    /// Marks the backend's service as unavailable (for example because the
    /// environment variable naming its endpoint is unset). Every case then
    /// fails with `reason`, unless [`ALLOW_MISSING_SERVICES`] is set, in
    /// which case it prints a loud `SKIPPED` line and passes.
    #[must_use]
    pub fn missing_service(mut self, reason: impl Into<String>) -> Self {
        self.missing_service = Some(reason.into());
        self
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The declared capabilities.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Whether the case `case` can run; panics or prints why not.
    #[doc(hidden)]
    pub fn ready(&self, case: &str) -> bool {
        let Some(reason) = &self.missing_service else {
            return true;
        };
        crate::support::missing_service(&format!("{}::{case}", self.backend), reason);
        false
    }

    /// Prints that `case` does not apply to this backend, and why.
    pub fn not_applicable(&self, case: &str, why: &str) {
        eprintln!("NOT APPLICABLE {}::{case}: {why}", self.backend);
    }

    /// Opens a store at a fresh location.
    ///
    /// # Panics
    /// When the backend fails to open: the case cannot proceed.
    pub async fn fresh(&self) -> Instance {
        let dir = tempfile::Builder::new()
            .prefix("runstore-conformance-")
            .tempdir()
            .expect("create a temporary directory");
        let simple = uuid::Uuid::new_v4().simple().to_string();
        let location = Location {
            dir: dir.path().to_path_buf(),
            name: format!("t{}", &simple[..24]),
        };
        self.opened
            .lock()
            .expect("not poisoned")
            .push(location.clone());
        let store = (self.open)(location.clone())
            .await
            .unwrap_or_else(|err| panic!("{}: open a fresh store: {err}", self.backend));
        Instance {
            store: Some(store),
            location,
            open: self.open.clone(),
            _dir: dir,
        }
    }
}

/// One store under test, at its own location.
pub struct Instance {
    store: Option<Arc<dyn Storage>>,
    location: Location,
    open: OpenFn,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// The open store.
    pub fn store(&self) -> &Arc<dyn Storage> {
        self.store.as_ref().expect("the store is open")
    }

    /// Where the store lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.location.dir
    }

    /// Drops this instance's handle and opens the location again. Only
    /// meaningful for persistent backends.
    ///
    /// # Panics
    /// When another clone of the handle is still alive, or reopening fails.
    pub async fn reopen(&mut self) {
        let store = self.store.take().expect("the store is open");
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "reopen needs every clone of the handle dropped first"
        );
        drop(store);
        let store = (self.open)(self.location.clone())
            .await
            .unwrap_or_else(|err| panic!("reopen the store: {err}"));
        self.store = Some(store);
    }

    /// Drops this instance's handle; [`store`](Self::store) panics until
    /// [`put_back`](Self::put_back) gives it one again.
    ///
    /// # Panics
    /// When another clone of the handle is still alive.
    pub fn close(&mut self) {
        let store = self.store.take().expect("the store is open");
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "close needs every clone of the handle dropped first"
        );
    }

    /// Makes `store` (opened at this instance's location) its handle.
    pub fn put_back(&mut self, store: Arc<dyn Storage>) {
        assert!(self.store.is_none(), "close the open handle first");
        self.store = Some(store);
    }

    /// Opens a second, independent handle on the same location while this
    /// one stays open (for backends that allow it).
    ///
    /// # Errors
    /// Whatever the backend's open returns (for example `Locked`).
    pub async fn open_again(&self) -> Result<Arc<dyn Storage>> {
        (self.open)(self.location.clone()).await
    }
}
