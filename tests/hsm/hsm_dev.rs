//! `hsm init-dev`: development tokens inside the data directory only, idempotent, PINs only
//! in private files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::kit;
use crate::kit::child::isolated;
use mpcp_pa::ErrorCode;
use mpcp_pa::hsm::HsmBackend;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for f in ["pkcs11.toml", "softhsm2.conf"] {
        out.push((f.to_string(), std::fs::read(dir.join(f)).unwrap()));
    }
    let mut secrets: Vec<_> = std::fs::read_dir(dir.join("secrets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    secrets.sort();
    for p in secrets {
        out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
    }
    out
}

#[test]
fn init_dev_is_idempotent_and_keeps_pins_private() {
    isolated(
        module_path!(),
        "init_dev_is_idempotent_and_keeps_pins_private",
        |dir| {
            let first = mpcp_pa::app::DataDir::new(dir).init_dev().unwrap();
            assert!(!first.unchanged());
            assert_eq!(mode(&dir.join("secrets")), 0o700);
            let config_text = std::fs::read_to_string(dir.join("pkcs11.toml")).unwrap();
            for role in ["grant-signing", "root", "audit"] {
                for kind in ["so", "user"] {
                    let p = dir.join(format!("secrets/{role}.{kind}.pin"));
                    assert_eq!(mode(&p), 0o600, "{}", p.display());
                    let pin = std::fs::read_to_string(&p).unwrap();
                    assert!(pin.trim_end().len() >= 16);
                    assert!(
                        !config_text.contains(pin.trim_end()),
                        "PIN value in pkcs11.toml"
                    );
                }
            }
            let conf = std::fs::read_to_string(dir.join("softhsm2.conf")).unwrap();
            let tokendir = dir.canonicalize().unwrap().join("tokens");
            assert!(conf.contains(&format!("directories.tokendir = {}", tokendir.display())));
            assert_eq!(
                std::fs::read_dir(&tokendir).unwrap().count(),
                mpcp_pa::keys::KeyRole::ALL.len(),
                "one token per role"
            );

            let before = snapshot(dir);
            let second = mpcp_pa::app::DataDir::new(dir).init_dev().unwrap();
            assert!(second.unchanged(), "{:?}", second.actions);
            assert_eq!(snapshot(dir), before);
            assert_eq!(second.config, first.config);
            HsmBackend::open(&second.config).unwrap();

            // An interrupted run is completed: only the missing file is written again.
            std::fs::remove_file(dir.join("pkcs11.toml")).unwrap();
            let third = mpcp_pa::app::DataDir::new(dir).init_dev().unwrap();
            assert_eq!(third.actions.len(), 1, "{:?}", third.actions);
            assert!(third.actions[0].ends_with("pkcs11.toml"));

            // A token whose PIN files vanished is not re-keyed with guessed PINs.
            std::fs::remove_file(dir.join("secrets/audit.so.pin")).unwrap();
            let e = mpcp_pa::app::DataDir::new(dir).init_dev().unwrap_err();
            assert_eq!(e.code, ErrorCode::ConfigInvalid);
            assert!(e.message.contains("refusing to guess"), "{e}");

            // One process, one SoftHSM2 data directory.
            let e = mpcp_pa::app::DataDir::new(dir.join("elsewhere"))
                .init_dev()
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::ConfigInvalid);
            assert!(e.message.contains("one process serves one"), "{e}");
        },
    );
}

#[test]
fn cli_init_dev_and_probe_touch_no_global_state() {
    let tmp = kit::tmp::dir("hsm_dev");
    let data = tmp.path().join("data");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let etc_before = std::fs::read("/etc/softhsm/softhsm2.conf").ok();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("HOME", &home)
            .env_remove("SOFTHSM2_CONF")
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let first = run(&["hsm", "init-dev"]);
    assert!(first.contains("initialised development tokens"), "{first}");
    assert!(first.contains("development only"), "{first}");
    let second = run(&["hsm", "init-dev"]);
    assert!(
        second.contains("already initialised") && second.contains("nothing changed"),
        "{second}"
    );
    let probe = run(&["hsm", "probe"]);
    for label in ["mpcp-grant-signing", "mpcp-root", "mpcp-audit"] {
        assert!(
            probe.contains(&format!("token \"{label}\"")) && probe.contains("OK"),
            "{probe}"
        );
    }
    // No PIN appears in what the commands print.
    for entry in std::fs::read_dir(data.join("secrets")).unwrap() {
        let pin = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let pin = pin.trim_end();
        assert!(!first.contains(pin) && !probe.contains(pin));
    }
    assert!(
        std::fs::read_dir(&home).unwrap().next().is_none(),
        "nothing written under HOME"
    );
    assert_eq!(std::fs::read("/etc/softhsm/softhsm2.conf").ok(), etc_before);
}
