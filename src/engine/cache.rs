//! Process-wide model cache: elements that ask for the same (model folder, device, dtype) share
//! one loaded model and its worker. The cache holds engines weakly, so the model is freed when
//! the last element using it goes away.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::load_log::StageLog;
use super::{Captioner, Engine, LoadError, LoadProgress};
use crate::model::{DTypeChoice, DeviceChoice, Result};
use crate::sync::lock;

/// What identifies one loaded model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelKey {
    /// The resolved snapshot folder (or the exact path a test captioner was registered under).
    pub dir: PathBuf,
    pub device: DeviceChoice,
    pub dtype: DTypeChoice,
}

/// One slot per key; its own mutex serialises loading so two elements starting together load
/// the model once, without holding the global map lock during a slow load.
type Slot = Arc<Mutex<Weak<Engine>>>;

static SLOTS: LazyLock<Mutex<HashMap<ModelKey, Slot>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Captioners injected by tests (or applications) under a model path; they are held strongly
/// until unregistered and take precedence over loading from disk, for any device and dtype.
static INJECTED: LazyLock<Mutex<HashMap<PathBuf, Arc<dyn Captioner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Makes `model=<path>` use `captioner` instead of loading BLIP-2 from `path`.
///
/// This is the test hook: integration tests register slow, failing or fake captioners (or the
/// real model wrapped to count calls) under a made-up path and set it as the element's `model`.
pub fn register_captioner(path: impl AsRef<Path>, captioner: Arc<dyn Captioner>) {
    lock(&INJECTED).insert(path.as_ref().to_path_buf(), captioner);
}

/// Removes a captioner registered with [`register_captioner`]; engines already running keep it.
pub fn unregister_captioner(path: impl AsRef<Path>) {
    lock(&INJECTED).remove(path.as_ref());
}

pub(crate) fn is_injected(path: &Path) -> bool {
    lock(&INJECTED).contains_key(path)
}

/// Returns the running engine for `key`, or starts one around the captioner that `loader`
/// returns (an injected captioner for `key.dir` wins over `loader`).
pub fn get_or_load(
    key: &ModelKey,
    loader: impl FnOnce() -> Result<Arc<dyn Captioner>>,
) -> Result<Arc<Engine>> {
    let slot = lock(&SLOTS).entry(key.clone()).or_default().clone();
    let mut slot = lock(&slot);
    if let Some(engine) = slot.upgrade() {
        return Ok(engine);
    }
    let injected = lock(&INJECTED).get(&key.dir).cloned();
    let captioner = match injected {
        Some(captioner) => captioner,
        None => loader()?,
    };
    let engine = Engine::spawn(captioner, &key.dir.display().to_string());
    *slot = Arc::downgrade(&engine);
    Ok(engine)
}

/// Resolves `model` (folder or hub id, downloading it into the hub cache when missing; see
/// [`super::HubSettings::from_env`]) and gets or loads it with the real BLIP-2 loader.
/// `progress` hears each stage and the download bytes.
pub fn get_or_load_with(
    model: &str,
    device: DeviceChoice,
    dtype: DTypeChoice,
    progress: &mut dyn FnMut(&LoadProgress),
) -> std::result::Result<Arc<Engine>, LoadError> {
    let mut stages = StageLog::new(model);
    let mut progress = |p: &LoadProgress| {
        if let LoadProgress::Stage(text) = p {
            stages.stage(text);
        }
        progress(p)
    };
    let dir = super::resolve_model(model, &super::HubSettings::from_env(), &mut progress)?;
    let key = ModelKey { dir, device, dtype };
    let mut stage = |text: &str| progress(&LoadProgress::Stage(text.to_string()));
    let engine = get_or_load(&key, || {
        super::load_blip2(&key.dir, device, dtype, &mut stage)
    })?;
    stages.finish();
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Caption, GenerationParams, RgbImage};

    struct Fixed;
    impl Captioner for Fixed {
        fn caption(
            &self,
            images: &[RgbImage],
            _prompt: &str,
            _params: &GenerationParams,
        ) -> crate::engine::Result<Vec<Caption>> {
            Ok(images
                .iter()
                .map(|_| Caption {
                    token_ids: vec![],
                    text: "fixed".into(),
                })
                .collect())
        }
    }

    fn key(name: &str) -> ModelKey {
        ModelKey {
            dir: PathBuf::from(format!("/cache-test/{name}")),
            device: DeviceChoice::Cpu,
            dtype: DTypeChoice::F32,
        }
    }

    #[test]
    fn same_key_shares_one_engine_and_loads_once() {
        let mut loads = 0;
        let a = get_or_load(&key("shared"), || {
            loads += 1;
            Ok(Arc::new(Fixed) as Arc<dyn Captioner>)
        })
        .unwrap();
        let b = get_or_load(&key("shared"), || {
            loads += 1;
            Ok(Arc::new(Fixed) as Arc<dyn Captioner>)
        })
        .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(loads, 1);
    }

    #[test]
    fn engine_is_freed_with_its_last_user() {
        let a = get_or_load(&key("freed"), || Ok(Arc::new(Fixed) as Arc<dyn Captioner>)).unwrap();
        let weak = Arc::downgrade(&a);
        drop(a);
        assert!(weak.upgrade().is_none());
        let mut loaded = false;
        let _b = get_or_load(&key("freed"), || {
            loaded = true;
            Ok(Arc::new(Fixed) as Arc<dyn Captioner>)
        })
        .unwrap();
        assert!(loaded, "a freed model is loaded again");
    }

    #[test]
    fn different_device_is_a_different_model() {
        let a = get_or_load(&key("dev"), || Ok(Arc::new(Fixed) as Arc<dyn Captioner>)).unwrap();
        let mut other = key("dev");
        other.dtype = DTypeChoice::BF16;
        let b = get_or_load(&other, || Ok(Arc::new(Fixed) as Arc<dyn Captioner>)).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn injected_captioner_wins_over_loader() {
        register_captioner("/cache-test/injected", Arc::new(Fixed));
        let engine = get_or_load(&key("injected"), || panic!("loader must not run")).unwrap();
        drop(engine);
        unregister_captioner("/cache-test/injected");
    }

    #[test]
    fn loader_error_is_returned_and_nothing_cached() {
        let err = get_or_load(&key("bad"), || {
            Err(crate::model::Error::Input("broken".into()))
        });
        assert!(err.is_err());
        let ok = get_or_load(&key("bad"), || Ok(Arc::new(Fixed) as Arc<dyn Captioner>));
        assert!(ok.is_ok());
    }
}
