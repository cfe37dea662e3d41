//! Development tokens and PKCS#11 handles for the HSM tests.
//!
//! PKCS#11 library state and `SOFTHSM2_CONF` are per process, so every HSM test runs in its
//! own child process with its own temporary token directory ([`super::child::isolated`]).

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::slot::Slot;
use mpcp_pa::hsm::dev::SOFTHSM2_MODULE;
use mpcp_pa::hsm::{HsmBackend, HsmConfig};

/// The error of a call that must fail (also for results whose value is not `Debug`).
pub fn refused<T>(r: mpcp_pa::Result<T>) -> mpcp_pa::Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Development tokens in `dir` and a backend on them.
pub fn dev_backend(dir: &Path) -> (HsmBackend, HsmConfig) {
    dev_backend_with(dir, None)
}

/// [`dev_backend`] with `pool_size` sessions per token (`None`: the configuration's own).
pub fn dev_backend_with(dir: &Path, pool_size: Option<usize>) -> (HsmBackend, HsmConfig) {
    let mut init = mpcp_pa::app::DataDir::new(dir)
        .init_dev()
        .expect("init-dev");
    if let Some(n) = pool_size {
        init.config.pool_size = n;
    }
    let backend = HsmBackend::open(&init.config).expect("open backend");
    (backend, init.config)
}

/// Development tokens in `dir`, then `edit` applied to the text of `pkcs11.toml`; returns
/// the config path.
pub fn dev_config_edited(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let init = mpcp_pa::app::DataDir::new(dir)
        .init_dev()
        .expect("init-dev");
    let text = std::fs::read_to_string(&init.config_path).unwrap();
    std::fs::write(&init.config_path, edit(text)).unwrap();
    init.config_path
}

/// A second, independent handle on the (process-wide) SoftHSM2 library.
pub fn other_handle() -> Pkcs11 {
    let p = Pkcs11::new(SOFTHSM2_MODULE).expect("load module");
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => panic!("initialize: {e}"),
    }
    p
}

/// The slot of the token labelled `label`.
pub fn slot_of(p: &Pkcs11, label: &str) -> Slot {
    p.get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label() == label)
        .unwrap_or_else(|| panic!("no token {label}"))
}

/// The user PIN that init-dev wrote for `role`.
pub fn user_pin(dir: &Path, role: &str) -> String {
    std::fs::read_to_string(dir.join(format!("secrets/{role}.user.pin")))
        .unwrap()
        .trim_end()
        .to_string()
}
