//! Development tokens: what `mpcp-pa hsm init-dev --data-dir DIR` does.
//!
//! Creates, inside DIR only:
//! - `softhsm2.conf` with `directories.tokendir = DIR/tokens`;
//! - one SoftHSM2 token per role, labelled `mpcp-<role>`, each with a random SO PIN and user
//!   PIN written to `secrets/<role>.so.pin` / `secrets/<role>.user.pin` (mode 0600, directory
//!   0700). **Development only**: a production HSM's PINs come from the operator, never
//!   from files generated next to the tokens;
//! - `pkcs11.toml` naming those PIN files (never the PINs) and the SoftHSM2 configuration.
//!
//! It touches no global state (/etc/softhsm, ~/.config): it points `SOFTHSM2_CONF` at
//! DIR/softhsm2.conf for this process only ([`crate::hsm::bind_softhsm2_conf`]), so a process
//! works with one data directory. Running it again on an initialised DIR changes nothing and
//! reports so; a run interrupted half-way is completed by the next one.

use std::path::{Path, PathBuf};

use cryptoki::session::UserType;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorCode, Result};
use crate::hsm::config::HsmConfig;
use crate::hsm::module::{Module, bind_softhsm2_conf};
use crate::hsm::pin::{Pin, PinSource};
use crate::hsm::utils::to_error;
use crate::seams::key_role::KeyRole;

/// Where Debian/Ubuntu install the SoftHSM2 PKCS#11 module.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Where the development tokens and their files go. The appliance's layout comes from
/// `crate::app::DataDir::dev_layout`; this module only writes to the paths it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevLayout {
    /// The directory holding everything below (created if missing).
    pub dir: PathBuf,
    /// The HSM configuration file written (`pkcs11.toml`).
    pub config: PathBuf,
    /// The SoftHSM2 configuration file written and bound for this process.
    pub softhsm2_conf: PathBuf,
    /// SoftHSM2's token directory (created 0700).
    pub tokens: PathBuf,
    /// The directory of the PIN files (created 0700).
    pub secrets: PathBuf,
}

impl DevLayout {
    /// `path` as written into the configuration: relative to the configuration's directory
    /// when inside it (so the data directory can move), absolute otherwise.
    fn config_relative(&self, path: &Path) -> String {
        let base = self.config.parent().unwrap_or(Path::new(""));
        path.strip_prefix(base)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }
}

/// Creates `dir` if missing and resolves it (symbolic links, `..`), as the development
/// layout is written with the resolved path.
pub fn resolve_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
    dir.canonicalize()
        .map_err(|e| io_err("cannot resolve", dir, e))
}

/// The label of the development token of `role`.
pub fn token_label(role: KeyRole) -> String {
    format!("mpcp-{role}")
}

/// The outcome of [`init_dev`].
#[derive(Debug, Clone)]
pub struct DevInit {
    /// Path of the written (or existing) `pkcs11.toml`.
    pub config_path: PathBuf,
    /// The configuration, loaded and validated from that file.
    pub config: HsmConfig,
    /// What was created; empty when the directory was already initialised.
    pub actions: Vec<String>,
}

impl DevInit {
    /// True when this run changed nothing.
    pub fn unchanged(&self) -> bool {
        self.actions.is_empty()
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorCode::Io, format!("{what} {}: {e}", path.display()))
}

fn private_dir(path: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path)
        .map_err(|e| io_err("cannot create directory", path, e))
}

fn random_pin() -> Result<Pin> {
    let mut bytes = Zeroizing::new([0u8; 16]);
    getrandom::fill(bytes.as_mut())
        .map_err(|e| Error::new(ErrorCode::Internal, format!("no system randomness: {e}")))?;
    Pin::new(Zeroizing::new(hex::encode(bytes.as_ref())))
}

/// The PIN in `path`, creating the file with a random PIN if it does not exist.
fn pin_file(path: &Path, token: &str, actions: &mut Vec<String>) -> Result<(Pin, bool)> {
    if path.exists() {
        return Ok((
            Pin::load(&PinSource::File(path.to_path_buf()), token)?,
            false,
        ));
    }
    let pin = random_pin()?;
    pin.write_new_file(path)?;
    actions.push(format!("wrote {}", path.display()));
    Ok((pin, true))
}

/// Writes `content` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(|e| io_err("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("cannot write", path, e))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn config_text(module: &Path, layout: &DevLayout) -> String {
    let mut t = String::from(
        "# HSM configuration written by `mpcp-pa hsm init-dev` (DEVELOPMENT ONLY).\n\
         # PINs are never stored here: each token's user PIN is in a 0600 file under secrets/.\n",
    );
    t.push_str(&format!(
        "module = {}\n",
        toml_str(&module.to_string_lossy())
    ));
    t.push_str(&format!(
        "softhsm2_conf = {}\n",
        toml_str(&layout.config_relative(&layout.softhsm2_conf))
    ));
    t.push_str("pool_size = 4\ncall_timeout_ms = 5000\n");
    for role in KeyRole::ALL {
        t.push_str(&format!(
            "\n[tokens.{label}]\npin_file = {pin}\n",
            label = token_label(role),
            pin = toml_str(&layout.config_relative(&user_pin_file(layout, role))),
        ));
    }
    for role in KeyRole::ALL {
        t.push_str(&format!(
            "\n[roles.{role}]\ntoken = {token}\nlabel_prefix = {prefix}\n",
            token = toml_str(&token_label(role)),
            prefix = toml_str(&format!("mpcp-pa/{role}/")),
        ));
    }
    t
}

fn user_pin_file(layout: &DevLayout, role: KeyRole) -> PathBuf {
    layout.secrets.join(format!("{role}.user.pin"))
}

fn so_pin_file(layout: &DevLayout, role: KeyRole) -> PathBuf {
    layout.secrets.join(format!("{role}.so.pin"))
}

/// Initialises development tokens at the paths of `layout` using the PKCS#11 module at
/// `module` (a SoftHSM2 build). Idempotent; see the module documentation.
pub fn init_dev_in(layout: &DevLayout, module: &Path) -> Result<DevInit> {
    let mut actions = Vec::new();
    let dir = &layout.dir;
    std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
    let tokens = &layout.tokens;
    let secrets = &layout.secrets;
    for d in [tokens, secrets] {
        if !d.exists() {
            private_dir(d)?;
            actions.push(format!("created {}", d.display()));
        }
    }
    let conf = &layout.softhsm2_conf;
    if !conf.exists() {
        write_atomic(
            conf,
            &format!(
                "# SoftHSM2 configuration of this data directory (written by mpcp-pa hsm init-dev).\n\
                 directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.removable = false\n",
                tokens.display()
            ),
        )?;
        actions.push(format!("wrote {}", conf.display()));
    }
    bind_softhsm2_conf(conf)?;
    let m = Module::load(module)?;
    let p11 = m.ctx();

    for role in KeyRole::ALL {
        let label = token_label(role);
        let ctx = |what: &str| format!("token {label:?}: {what}");
        let (so, so_new) = pin_file(&so_pin_file(layout, role), &label, &mut actions)?;
        let (user, user_new) = pin_file(&user_pin_file(layout, role), &label, &mut actions)?;

        let mut existing = None;
        let mut blank = None;
        for slot in p11
            .get_slots_with_token()
            .map_err(|e| to_error(&e, &ctx("C_GetSlotList")))?
        {
            let info = p11
                .get_token_info(slot)
                .map_err(|e| to_error(&e, &ctx("C_GetTokenInfo")))?;
            if !info.token_initialized() {
                blank.get_or_insert(slot);
            } else if info.label() == label {
                existing = Some((slot, info.user_pin_initialized()));
            }
        }
        let slot = match existing {
            Some((_, true)) if !(so_new || user_new) => continue,
            Some(_) if so_new || user_new => {
                return Err(Error::new(
                    ErrorCode::ConfigInvalid,
                    format!(
                        "token {label:?} exists but its PIN files were missing; refusing to guess its PINs"
                    ),
                ));
            }
            Some((slot, _)) => slot,
            None => {
                let slot = blank.ok_or_else(|| {
                    Error::new(
                        ErrorCode::HsmTokenNotFound,
                        "no free SoftHSM2 slot to initialise a token in",
                    )
                })?;
                p11.init_token(slot, &so.to_auth_pin(), &label)
                    .map_err(|e| to_error(&e, &ctx("C_InitToken")))?;
                actions.push(format!("initialised token {label:?}"));
                slot
            }
        };
        let session = p11
            .open_rw_session(slot)
            .map_err(|e| to_error(&e, &ctx("C_OpenSession")))?;
        session
            .login(UserType::So, Some(&so.to_auth_pin()))
            .map_err(|e| to_error(&e, &ctx("C_Login (SO)")))?;
        session
            .init_pin(&user.to_auth_pin())
            .map_err(|e| to_error(&e, &ctx("C_InitPIN")))?;
        session
            .logout()
            .map_err(|e| to_error(&e, &ctx("C_Logout")))?;
        actions.push(format!("set the user PIN of token {label:?}"));
    }

    let config_path = layout.config.clone();
    if !config_path.exists() {
        write_atomic(&config_path, &config_text(module, layout))?;
        actions.push(format!("wrote {}", config_path.display()));
    }
    let config = HsmConfig::load(&config_path)?;
    Ok(DevInit {
        config_path,
        config,
        actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_is_valid_and_pin_free() {
        let layout = DevLayout {
            dir: "/data".into(),
            config: "/data/pkcs11.toml".into(),
            softhsm2_conf: "/data/softhsm2.conf".into(),
            tokens: "/data/tokens".into(),
            secrets: "/data/secrets".into(),
        };
        let text = config_text(Path::new("/usr/lib/softhsm/libsofthsm2.so"), &layout);
        let c = HsmConfig::parse(&text, Path::new("/data")).unwrap();
        assert_eq!(c.tokens.len(), KeyRole::ALL.len());
        assert_eq!(
            c.role(KeyRole::ReceiptSigning).unwrap().algorithms,
            vec![crate::crypto::Alg::ES256]
        );
        assert!(!c.allow_shared_tokens);
        assert_eq!(
            c.softhsm2_conf.as_deref(),
            Some(Path::new("/data/softhsm2.conf"))
        );
        assert_eq!(
            c.tokens["mpcp-root"].pin,
            PinSource::File("/data/secrets/root.user.pin".into())
        );
    }
}
