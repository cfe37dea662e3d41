//! Property tests (proptest, stable toolchain) of the parsers and verifiers that face
//! untrusted input: the strict JSON parser and canonical form, grant / bundle / allowlist
//! validation, checkpoint and signed-note parsing, and `audit verify` on mutated exports.
//!
//! `cargo test` runs a few thousand cases per property (`PROPERTY_CASES` overrides it; the
//! long run in the issue note used `PROPERTY_CASES=1000000`). Each property states what must
//! hold for every input, not only that nothing panics.

use std::path::{Path, PathBuf};

use mpcp_pa::audit::export::{CHECKPOINT_FILE, ENTRIES_FILE, export};
use mpcp_pa::audit::note::Note;
use mpcp_pa::audit::verify::{VerifyOptions, verify_export};
use mpcp_pa::audit::{Checkpoint, NoteSigner};
use mpcp_pa::canonical::{canonical_bytes, parse_strict, strip_nulls};
use mpcp_pa::error::ErrorCode;
use mpcp_pa::model::{DestinationAllowlist, PolicyGrant, TrustBundle};
use mpcp_pa::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

use crate::kit;
use crate::kit::audit::*;

fn cases(default: u32) -> u32 {
    std::env::var("PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(default: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: cases(default),
        failure_persistence: None,
        ..Config::default()
    })
}

/// JSON values the strict parser must accept: integers within ±(2^53-1), any strings, and
/// objects with unique member names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(|n| Value::Number(n.into())),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn vector(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("test-vectors/l2/artifacts")
        .join(name);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// One change of a document: a member replaced by an arbitrary value, removed, or added,
/// at the top level or one level down.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, Option<usize>, Value),
    Remove(usize),
    Add(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<Option<usize>>(), json_value())
            .prop_map(|(i, j, v)| Mutation::Replace(i, j, v)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<String>(), json_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
    ]
}

fn apply(doc: &Value, m: &Mutation) -> Value {
    let mut doc = doc.clone();
    let obj = doc.as_object_mut().unwrap();
    let keys: Vec<String> = obj.keys().cloned().collect();
    match m {
        Mutation::Replace(i, j, v) => {
            let k = &keys[i % keys.len()];
            let slot = obj.get_mut(k).unwrap();
            match (j, slot.as_object_mut()) {
                (Some(j), Some(inner)) if !inner.is_empty() => {
                    let ik: Vec<String> = inner.keys().cloned().collect();
                    inner.insert(ik[j % ik.len()].clone(), v.clone());
                }
                _ => *slot = v.clone(),
            }
        }
        Mutation::Remove(i) => {
            obj.remove(&keys[i % keys.len()]);
        }
        Mutation::Add(k, v) => {
            obj.insert(k.clone(), v.clone());
        }
    }
    doc
}

#[test]
fn strict_parser_accepts_exactly_what_it_can_round_trip() {
    // Arbitrary bytes (and near-JSON text): never a panic; whatever is accepted has a
    // canonical form that parses back to the same value (nulls stripped) and is a fixed point.
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "[\\[\\]{}\",:0-9a-z. \\\\-]{0,48}".prop_map(String::into_bytes),
    ];
    runner(3000)
        .run(&bytes, |b| {
            if let Ok(v) = parse_strict(&b) {
                let c = canonical_bytes(&v).expect("accepted input has a canonical form");
                let back = parse_strict(&c).expect("canonical form parses");
                prop_assert_eq!(&back, &strip_nulls(&v));
                prop_assert_eq!(canonical_bytes(&back).unwrap(), c);
            }
            Ok(())
        })
        .unwrap();
    // Every value of the accepted kind, however serialised, is accepted and canonicalises
    // to one byte string.
    runner(3000)
        .run(&(json_value(), any::<bool>()), |(v, pretty)| {
            let text = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            let parsed = parse_strict(&text).expect("valid strict JSON is accepted");
            prop_assert_eq!(&parsed, &v);
            let c = canonical_bytes(&parsed).unwrap();
            prop_assert_eq!(parse_strict(&c).unwrap(), strip_nulls(&v));
            Ok(())
        })
        .unwrap();
    // Ambiguity is refused: a duplicated member, a non-integer number.
    runner(2000)
        .run(
            &(any::<String>(), json_value(), json_value()),
            |(k, a, b)| {
                let key = serde_json::to_string(&k).unwrap();
                let text = format!(
                    "{{{key}:{},{key}:{}}}",
                    serde_json::to_string(&a).unwrap(),
                    serde_json::to_string(&b).unwrap()
                );
                prop_assert_eq!(
                    parse_strict(text.as_bytes()).unwrap_err().code,
                    ErrorCode::JsonDuplicateKey
                );
                Ok(())
            },
        )
        .unwrap();
    runner(2000)
        .run(&(any::<i32>(), 1u32..1000), |(i, f)| {
            let text = format!("{{\"n\":{i}.{f}}}");
            prop_assert_eq!(
                parse_strict(text.as_bytes()).unwrap_err().code,
                ErrorCode::JsonNumberNotInteger
            );
            Ok(())
        })
        .unwrap();
}

/// Validation of one artifact kind under mutation: never a panic; a document that passes
/// serialises back to a document that passes again with the same canonical bytes.
fn validation_is_total_and_stable<T, P, V>(valid: &Value, parse: P, validate: V)
where
    T: serde::Serialize,
    P: Fn(&Value) -> mpcp_pa::Result<T>,
    V: Fn(&T) -> mpcp_pa::Result<()>,
{
    let parsed = parse(valid).expect("the vector parses");
    validate(&parsed).expect("the vector is valid");
    runner(1000)
        .run(&prop::collection::vec(mutation(), 1..4), |ms| {
            let doc = ms.iter().fold(valid.clone(), |d, m| apply(&d, m));
            if let Ok(t) = parse(&doc)
                && validate(&t).is_ok()
            {
                let again = serde_json::to_value(&t).unwrap();
                let t2 = parse(&again).expect("what passed parses again");
                prop_assert!(validate(&t2).is_ok());
                prop_assert_eq!(
                    canonical_bytes(&serde_json::to_value(&t2).unwrap()).unwrap(),
                    canonical_bytes(&again).unwrap()
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn grant_bundle_and_allowlist_validation_is_total_and_stable() {
    validation_is_total_and_stable(
        &vector("grant-eddsa-valid.json"),
        PolicyGrant::from_value,
        |g: &PolicyGrant| g.validate(),
    );
    validation_is_total_and_stable(
        &vector("bundle-es256-valid.json"),
        TrustBundle::from_value,
        |b: &TrustBundle| b.validate(),
    );
    validation_is_total_and_stable(
        &vector("allowlist-es256k-valid.json"),
        DestinationAllowlist::from_value,
        |a: &DestinationAllowlist| a.validate(),
    );
}

#[test]
fn checkpoints_and_signed_notes_parse_totally_and_round_trip() {
    // Any text: never a panic.
    runner(3000)
        .run(&any::<String>(), |t| {
            let _ = Checkpoint::parse_body(&t);
            let _ = Note::parse(&t);
            Ok(())
        })
        .unwrap();
    // A checkpoint's body parses back to itself; its signed note verifies, and any one
    // changed byte of the note fails to parse or to verify.
    let strategy = (
        "[a-z][a-z0-9.]{0,20}/[a-z]{1,8}",
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<usize>(),
        any::<u8>(),
    );
    // Software Ed25519 in a debug build: fewer cases here, the long run does 10^6.
    runner(300)
        .run(&strategy, |(origin, size, root, at, byte)| {
            let cp = Checkpoint {
                origin: origin.clone(),
                size,
                root,
            };
            let back = Checkpoint::parse_body(&cp.body()).unwrap();
            prop_assert_eq!(
                (&back.origin, back.size, back.root),
                (&cp.origin, cp.size, cp.root)
            );
            let signer =
                mpcp_pa::audit::SoftwareNoteSigner::from_seed(&origin, &[0x11; 32]).unwrap();
            let note = cp.sign(&signer).unwrap();
            let vk = mpcp_pa::audit::Vkey::ed25519(&origin, signer.public_key());
            prop_assert!(
                Note::parse(&note)
                    .unwrap()
                    .verify(std::slice::from_ref(&vk))
                    .is_ok()
            );
            let mut bytes = note.clone().into_bytes();
            let i = at % bytes.len();
            if bytes[i] != byte {
                bytes[i] = byte;
                if let Ok(text) = String::from_utf8(bytes) {
                    let ok = Note::parse(&text)
                        .and_then(|n| n.verify(&[vk]))
                        .is_ok_and(|v| !v.is_empty());
                    prop_assert!(!ok, "a changed note still verifies: {text:?}");
                }
            }
            Ok(())
        })
        .unwrap();
}

/// A small exported log: 12 entries with a checkpoint.
fn exported() -> (kit::tmp::TmpDir, Vec<(String, Vec<u8>)>) {
    let dir = kit::tmp::dir("properties-export");
    let store = Store::open(&mpcp_pa::app::DataDir::new(&dir).store()).unwrap();
    let log = open(&store);
    fill(&log, 12);
    log.sign_checkpoint(&log_signer()).unwrap();
    let out = dir.join("export");
    export(&store, &out).unwrap();
    let files = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    (dir, files)
}

fn write_all(dir: &Path, files: &[(String, Vec<u8>)]) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn audit_verify_refuses_every_mutated_export() {
    let (dir, files) = exported();
    let options = VerifyOptions {
        trusted_vkeys: vec![log_vkey()],
        trusted_checkpoint: None,
    };
    let work = dir.join("mutated");
    write_all(&work, &files);
    let good = verify_export(&work, &options, &mut |_| {}).expect("the export verifies");
    // Mutations: one byte set, one byte removed, or two lines swapped, in any file.
    let strategy = (
        0..files.len(),
        any::<usize>(),
        any::<u8>(),
        0u8..3,
        any::<usize>(),
    );
    runner(400)
        .run(&strategy, |(f, at, byte, kind, other)| {
            let mut mutated = files.clone();
            let (name, bytes) = &mut mutated[f];
            let before = bytes.clone();
            match kind {
                0 if !bytes.is_empty() => {
                    let i = at % bytes.len();
                    bytes[i] = byte;
                }
                1 if !bytes.is_empty() => {
                    bytes.remove(at % bytes.len());
                }
                _ => {
                    let mut lines: Vec<&[u8]> = before.split(|b| *b == b'\n').collect();
                    if lines.len() > 2 {
                        let (a, b) = (at % lines.len(), other % lines.len());
                        lines.swap(a, b);
                    }
                    *bytes = lines.join(&b'\n');
                }
            }
            if *bytes == before {
                return Ok(());
            }
            let name = name.clone();
            write_all(&work, &mutated);
            let verdict = verify_export(&work, &options, &mut |_| {});
            if name == ENTRIES_FILE || name == CHECKPOINT_FILE {
                // The signed data itself: always refused.
                prop_assert!(verdict.is_err(), "a mutated {name} verified");
            } else if let Ok(r) = verdict {
                // Files the verifier does not trust by themselves: when it still accepts,
                // it reports the same signed log.
                prop_assert_eq!(r.entries, good.entries);
                prop_assert_eq!(&r.root, &good.root);
            }
            Ok(())
        })
        .unwrap();
}
