//! The raw baseline both benches compare against: `C_Sign` called directly through cryptoki
//! on a session of the grant-signing token, with the service's key and the input the token
//! signs for the service (`D` for EdDSA, SHA-256(D) for ECDSA).

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use mpcp_pa::crypto::{Alg, ecdsa_prehash};
use mpcp_pa::hsm::dev::SOFTHSM2_MODULE;

/// A second handle on the (process-wide) SoftHSM2 library and the slot of the token
/// labelled `label`.
pub fn open(label: &str) -> (Pkcs11, Slot) {
    let p11 = Pkcs11::new(SOFTHSM2_MODULE).unwrap();
    match p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("initialize: {e}"),
    }
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == label)
        .unwrap();
    (p11, slot)
}

/// The private key object with CKA_ID `id`.
pub fn find_private(session: &Session, id: &[u8]) -> ObjectHandle {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.to_vec()),
        ])
        .unwrap()[0]
}

/// The mechanism the service signs with for `alg`.
pub fn mechanism(alg: Alg) -> Mechanism<'static> {
    match alg {
        Alg::EdDSA => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        _ => Mechanism::Ecdsa,
    }
}

/// What the token signs for digest `d`: `d` itself for EdDSA, SHA-256(d) for ECDSA.
pub fn token_input(alg: Alg, d: &[u8; 32]) -> [u8; 32] {
    match alg {
        Alg::EdDSA => *d,
        _ => ecdsa_prehash(d),
    }
}
