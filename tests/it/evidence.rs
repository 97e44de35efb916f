//! `leadbridge audit verify-evidence`, the supervisor's offline check, run as the binary it
//! is: a bundle of a lead that went agency → police → decision → reconsideration verifies
//! with only the public keys; an altered one exits non-zero naming the first bad entry.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{Duration, TimeZone, Utc};
use leadbridge::contract::lead::LeadId;
use leadbridge::shared::tlog::memory::{self, MemoryLog};
use serde_json::{json, Value};

fn verify_evidence(bundle: &Path, keys: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadbridge"))
        .args(["audit", "verify-evidence"])
        .arg(bundle)
        .arg("--keys")
        .arg(keys)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_offline_check_accepts_a_true_bundle_and_names_the_first_altered_entry() {
    let lead = LeadId::generate();
    let start = Utc.with_ymd_and_hms(2026, 11, 20, 1, 0, 0).unwrap();
    let mut hub = MemoryLog::new("zibo", "hub");
    let mut police = MemoryLog::new("zibo", "police");
    let steps = [
        ("hub", 0, "agency:environment", "lead.received"),
        ("hub", 1, "relay", "lead.published"),
        ("police", 2, "police-adapter", "lead.received_by_police"),
        ("police", 3, "police-adapter", "lead.delivered"),
        ("police", 60, "investigator:370303", "lead.decided"),
        (
            "hub",
            90,
            "agency:environment",
            "lead.reconsideration_requested",
        ),
        (
            "police",
            120,
            "investigator:370303",
            "lead.reconsideration_answered",
        ),
    ];
    for (which, minutes, actor, action) in steps {
        let log = if which == "hub" {
            &mut hub
        } else {
            &mut police
        };
        // Another lead's entry first, so the proofs are not trivial.
        let at = start + Duration::minutes(minutes);
        log.append(
            at,
            "relay",
            "lead.received",
            Some(LeadId::generate()),
            Some(1),
            json!({}),
        )
        .unwrap();
        log.append(
            at,
            actor,
            action,
            Some(lead),
            Some(1),
            json!({"decision": "not_filed", "exceed_multiple": 3.6}),
        )
        .unwrap();
    }
    let bundle = serde_json::to_value(memory::bundle(lead, &[&hub, &police]).unwrap()).unwrap();
    let keys = json!({"hub": hub.key.verifier_key(), "police": police.key.verifier_key(), "witnesses": []});

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        path
    };
    let keys_file = write("KEYS.json", &keys);
    let good = verify_evidence(&write("bundle.json", &bundle), &keys_file);
    assert!(good.status.success(), "{}", text(&good.stderr));
    assert!(
        text(&good.stdout).contains(&format!("lead {lead}, 7 entries")),
        "{}",
        text(&good.stdout)
    );

    let mut altered = bundle.clone();
    altered["entries"][4]["entry"]["details"]["decision"] = json!("filed");
    let bad = verify_evidence(&write("altered.json", &altered), &keys_file);
    assert!(!bad.status.success());
    let stderr = text(&bad.stderr);
    assert!(stderr.contains("entry 4 (police log"), "{stderr}");

    let mut resigned = bundle.clone();
    resigned["checkpoints"]["hub"] = json!(police.signed_checkpoint().unwrap());
    let bad = verify_evidence(&write("crossed.json", &resigned), &keys_file);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("hub checkpoint"),
        "{}",
        text(&bad.stderr)
    );

    let missing = verify_evidence(
        &dir.path().join("bundle.json"),
        &dir.path().join("absent.json"),
    );
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("absent.json"),
        "{}",
        text(&missing.stderr)
    );
}
