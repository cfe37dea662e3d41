//! The one place where PKCS#11 failures become appliance errors.
//!
//! [`to_error`] maps every `cryptoki` error to a [`crate::Error`] with a stable code;
//! [`fault_of`] says which recovery the session pool owes after it. Messages name the token
//! and the PKCS#11 function, never a PIN or key material (cryptoki errors carry neither).

use std::sync::{Mutex, MutexGuard};

use cryptoki::error::{Error as CkError, RvError};

use crate::error::{Error, ErrorCode};

/// What a failure says about the state the pool keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// A cached object handle went stale: look the key up again by CKA_ID.
    StaleObject,
    /// The token's sessions or login are gone (or the token itself is): re-open sessions,
    /// re-resolve the slot and log in again. `session_gone` says the failing session's handle
    /// is already dead, so it must not be closed (its number may belong to another session).
    Token {
        /// The failing session no longer exists.
        session_gone: bool,
    },
    /// The module as a whole failed (lost its initialisation, device error or removal, token
    /// gone, slot list failing, or sessions lost again and again): finalise and initialise it
    /// again, then recover every token on it.
    Module,
}

/// A failed HSM operation: the error the caller sees and the recovery it calls for.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The appliance error returned to the caller.
    pub error: Error,
    /// The recovery the pool owes, if any.
    pub fault: Option<Fault>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure { error, fault: None }
    }
}

/// The one element of `found` (objects, slots, ...): the error `none` when there is none,
/// `many(n)` when there are `n > 1`; never a guess between several.
pub(crate) fn exactly_one<T: Copy>(
    found: &[T],
    none: impl FnOnce() -> Error,
    many: impl FnOnce(usize) -> Error,
) -> Result<T, Failure> {
    match found {
        [one] => Ok(*one),
        [] => Err(none().into()),
        more => Err(many(more.len()).into()),
    }
}

impl Failure {
    /// A failure of a PKCS#11 call, classified.
    pub(crate) fn pkcs11(err: &CkError, context: &str) -> Failure {
        Failure {
            error: to_error(err, context),
            fault: fault_of(err),
        }
    }
}

/// Converts a cryptoki result into one carrying a classified [`Failure`].
pub(crate) trait CkResultExt<T> {
    /// Attaches `context` (token and operation) to a PKCS#11 failure.
    fn ctx(self, context: &str) -> Result<T, Failure>;
    /// Same, with the context `token "<token>": <what>` built only on failure (hot paths).
    fn on(self, token: &str, what: &str) -> Result<T, Failure>;
}

impl<T> CkResultExt<T> for Result<T, CkError> {
    fn ctx(self, context: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::pkcs11(&e, context))
    }

    fn on(self, token: &str, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::pkcs11(&e, &format!("token {token:?}: {what}")))
    }
}

/// Maps a cryptoki error to the appliance error. `context` says what was being done
/// (e.g. `token "mpcp-root": C_Sign`), and for a module that fails to load it carries the
/// module path.
pub(crate) fn to_error(err: &CkError, context: &str) -> Error {
    use ErrorCode::*;
    let (code, what): (ErrorCode, String) = match err {
        CkError::LibraryLoading(e) => (HsmUnavailable, format!("cannot load PKCS#11 module ({e})")),
        CkError::MissingSymbol(s) => (
            HsmUnavailable,
            format!("not a PKCS#11 module (missing symbol {s})"),
        ),
        CkError::NullFunctionPointer => (
            HsmMechanismUnsupported,
            "the module does not implement this PKCS#11 function".into(),
        ),
        CkError::NotSupported => (
            HsmMechanismUnsupported,
            "operation not supported by the PKCS#11 wrapper".into(),
        ),
        CkError::PinNotSet => (HsmPinInvalid, "no PIN given for login".into()),
        CkError::Pkcs11(rv, function) => {
            let code = match rv {
                RvError::PinIncorrect
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinExpired
                | RvError::PinLocked
                | RvError::UserPinNotInitialized => HsmPinInvalid,
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::SessionCount
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                | RvError::CryptokiNotInitialized
                | RvError::LibraryLoadFailed
                | RvError::FipsSelfTestFailed => HsmUnavailable,
                RvError::MechanismInvalid
                | RvError::MechanismParamInvalid
                | RvError::CurveNotSupported
                | RvError::DomainParamsInvalid
                | RvError::FunctionNotSupported
                | RvError::KeySizeRange => HsmMechanismUnsupported,
                RvError::KeyFunctionNotPermitted | RvError::KeyTypeInconsistent => KeyAlgMismatch,
                _ => HsmError,
            };
            let f = format!("C_{function:?}");
            // Contexts usually end with the function already ("token \"x\": C_Sign").
            let msg = if context.ends_with(&f) {
                format!("{context} failed: {rv:?}")
            } else {
                format!("{context}: {f} failed: {rv:?}")
            };
            return Error::new(code, msg);
        }
        other => (HsmError, format!("PKCS#11 wrapper error: {other}")),
    };
    Error::new(code, format!("{context}: {what}"))
}

/// The recovery a failure calls for, if any.
pub(crate) fn fault_of(err: &CkError) -> Option<Fault> {
    match err {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => Some(Fault::StaleObject),
            RvError::SessionHandleInvalid | RvError::SessionClosed | RvError::SlotIdInvalid => {
                Some(Fault::Token { session_gone: true })
            }
            RvError::UserNotLoggedIn => Some(Fault::Token {
                session_gone: false,
            }),
            // No session or login of the module can be trusted after these; a p11-kit client
            // whose server went away keeps answering DEVICE_ERROR until it is re-initialised.
            RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::CryptokiNotInitialized => Some(Fault::Module),
            _ => None,
        },
        _ => None,
    }
}

/// Locks a mutex, taking over the data of a holder that panicked: the pool's bookkeeping
/// stays consistent under panics (every critical section is a few assignments), and a
/// request path must not panic because another one did.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    fn rv(rv: RvError) -> CkError {
        CkError::Pkcs11(rv, Function::Sign)
    }

    #[test]
    fn codes_and_faults() {
        use ErrorCode::*;
        use RvError as Rv;
        // A fault of the module as a whole, not of one session or object.
        let module = Some(Fault::Module);
        let cases = [
            (Rv::PinIncorrect, HsmPinInvalid, None),
            (
                Rv::SessionHandleInvalid,
                HsmUnavailable,
                Some(Fault::Token { session_gone: true }),
            ),
            (
                Rv::UserNotLoggedIn,
                HsmUnavailable,
                Some(Fault::Token {
                    session_gone: false,
                }),
            ),
            (Rv::DeviceRemoved, HsmUnavailable, module),
            (Rv::DeviceError, HsmUnavailable, module),
            (Rv::TokenNotPresent, HsmUnavailable, module),
            (
                Rv::ObjectHandleInvalid,
                HsmUnavailable,
                Some(Fault::StaleObject),
            ),
            (Rv::CryptokiNotInitialized, HsmUnavailable, module),
            (Rv::MechanismInvalid, HsmMechanismUnsupported, None),
            (Rv::CurveNotSupported, HsmMechanismUnsupported, None),
            (Rv::GeneralError, HsmError, None),
        ];
        for (r, code, fault) in cases {
            let e = rv(r);
            assert_eq!(to_error(&e, "token \"t\"").code, code, "{r:?}");
            assert_eq!(fault_of(&e), fault, "{r:?}");
        }
        let f = Failure::pkcs11(&rv(RvError::SessionClosed), "token \"t\": C_Sign");
        assert_eq!(f.fault, Some(Fault::Token { session_gone: true }));
        assert_eq!(f.error.message, "token \"t\": C_Sign failed: SessionClosed");
        let e = to_error(&rv(RvError::PinIncorrect), "token \"t\"");
        assert_eq!(e.message, "token \"t\": C_Sign failed: PinIncorrect");
    }
}
