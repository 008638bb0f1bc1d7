//! The element's model, loaded in the background: NULL→READY starts the load and returns at
//! once; the streaming thread asks for the model when it has a sample (realtime mode drops the
//! sample while the model is loading, complete mode waits for it).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::engine::Client;
use crate::sync::{lock, wait};

#[derive(Clone)]
enum Load {
    /// NULL, or READY→NULL happened.
    Idle,
    Loading,
    Ready(Arc<Client>),
    /// The error was posted by the load thread.
    Failed,
}

struct Inner {
    load: Load,
    /// Which load is current: a load thread whose generation is stale (the element went to NULL
    /// and maybe back while it ran) drops its result.
    generation: u64,
    /// Set by flushes and PAUSED→READY: a streaming thread waiting for the load gives up.
    interrupted: bool,
}

/// Why [`ModelSlot::wait_ready`] returned without a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotReady {
    /// Flushing or stopping.
    Interrupted,
    /// Loading failed (an error message was posted) or no load was started.
    Unavailable,
}

pub(super) struct ModelSlot {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Default for ModelSlot {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                load: Load::Idle,
                generation: 0,
                interrupted: false,
            }),
            changed: Condvar::new(),
        }
    }
}

impl ModelSlot {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The model if it is loaded.
    pub(super) fn client(&self) -> Option<Arc<Client>> {
        match &self.lock().load {
            Load::Ready(client) => Some(client.clone()),
            _ => None,
        }
    }

    /// Blocks while the model is loading.
    pub(super) fn wait_ready(&self) -> Result<Arc<Client>, NotReady> {
        let mut inner = self.lock();
        loop {
            if inner.interrupted {
                return Err(NotReady::Interrupted);
            }
            match &inner.load {
                Load::Ready(client) => return Ok(client.clone()),
                Load::Loading => (),
                Load::Idle | Load::Failed => return Err(NotReady::Unavailable),
            }
            inner = wait(&self.changed, inner);
        }
    }

    /// A new load starts; returns its generation.
    pub(super) fn begin(&self) -> u64 {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.load = Load::Loading;
        inner.generation
    }

    /// A model that needed no loading (a remote server's client) is ready at once.
    pub(super) fn set_ready(&self, client: Arc<Client>) {
        let generation = self.begin();
        self.finish(generation, Some(client));
    }

    /// Whether `generation` is the load the element still waits for.
    pub(super) fn is_current(&self, generation: u64) -> bool {
        self.lock().generation == generation
    }

    /// The load of `generation` ended. Returns false (and keeps nothing) when it is stale.
    pub(super) fn finish(&self, generation: u64, client: Option<Arc<Client>>) -> bool {
        let mut inner = self.lock();
        if inner.generation != generation {
            return false;
        }
        if let Some(client) = client.as_ref().filter(|_| inner.interrupted) {
            client.interrupt();
        }
        inner.load = client.map_or(Load::Failed, Load::Ready);
        drop(inner);
        self.changed.notify_all();
        true
    }

    /// READY→NULL: forget the model (freed when its last user lets go) and any load under way.
    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.load = Load::Idle;
        drop(inner);
        self.changed.notify_all();
    }

    /// Wakes and refuses every wait (model load and captions) until [`ModelSlot::resume`].
    pub(super) fn interrupt(&self) {
        let client = {
            let mut inner = self.lock();
            inner.interrupted = true;
            match &inner.load {
                Load::Ready(client) => Some(client.clone()),
                _ => None,
            }
        };
        self.changed.notify_all();
        if let Some(client) = client {
            client.interrupt();
        }
    }

    pub(super) fn resume(&self) {
        let client = {
            let mut inner = self.lock();
            inner.interrupted = false;
            match &inner.load {
                Load::Ready(client) => Some(client.clone()),
                _ => None,
            }
        };
        if let Some(client) = client {
            client.resume();
        }
    }
}
