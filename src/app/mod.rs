//! The appliance assembled, between [`crate::api`] (below) and [`crate::cli`] (above).
//!
//! - [`DataDir`] owns the data directory: every path of its layout (`pkcs11.toml`,
//!   `store/`, `tls/`, `secrets/`, `tokens/`) and its permission rules (umask 077, repair
//!   of anything open to group or others). Lower layers never join layout names onto a data
//!   directory; they take the paths `DataDir` gives them.
//! - [`Appliance`] is the one builder every command uses: a plain constructor over a
//!   `DataDir` and [`Options`] (HSM configuration override, algorithm policy, audit origin
//!   or open-existing, clock, store cache and reserve), then step methods that open the HSM
//!   backend, the store, the audit log, the key registry and the readiness probes, each
//!   once, and finally [`Appliance::service_parts`], what [`crate::api::AppState`] is built
//!   from.

pub mod builder;
pub mod data_dir;

pub use builder::{
    Appliance, AuditMode, DEFAULT_AUDIT_ORIGIN, Options, StoreMode, load_policy, open_audit,
};
pub use data_dir::DataDir;
