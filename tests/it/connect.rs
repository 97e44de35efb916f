//! `connect file` against the real hub: the samples import, a re-run sends nothing new, and a
//! row with a bad byte is reported with its offset while the rows around it are sent.

use std::path::{Path, PathBuf};

use leadbridge::connectors::file::{import, FileOptions, RunResult};
use leadbridge::connectors::hub::HubOptions;
use leadbridge::connectors::Summary;
use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::Principal;
use leadbridge::Roles;

use crate::helpers::{app, Backend, TestApp};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/samples")
}

/// The agency's certificate and the CA, written where a connector reads them.
pub fn hub_options(app: &TestApp, agency: Agency, dir: &Path) -> HubOptions {
    let issued = app.pki.ca.issue_client(&Principal::Agency(agency)).unwrap();
    let cert = dir.join(format!("{agency}.pem"));
    let key = dir.join(format!("{agency}.key"));
    let ca = dir.join("ca.pem");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::write(&ca, app.pki.ca.cert_pem()).unwrap();
    HubOptions {
        url: app.url(""),
        cert,
        key,
        ca,
        attempts: 2,
        backoff: leadbridge::shared::retry::Backoff {
            initial_ms: 100,
            max_ms: 200,
        },
        timeout: std::time::Duration::from_secs(30),
    }
}

async fn run(
    hub: &HubOptions,
    mapping: &Path,
    input: &Path,
    state: &Path,
    report: Option<PathBuf>,
) -> RunResult {
    import(FileOptions {
        mapping: mapping.to_owned(),
        inputs: vec![input.to_owned()],
        hub: Some(hub.clone()),
        state: state.to_owned(),
        report,
        batch_size: 4,
    })
    .await
}

pub fn counts(rows: u64, accepted: u64, replayed: u64, rejected: u64, skipped: u64) -> Summary {
    Summary {
        rows,
        accepted,
        replayed,
        rejected,
        skipped,
    }
}

#[tokio::test]
async fn each_sample_imports_and_a_rerun_sends_nothing_new() {
    let app = app(Backend::Real).roles(Roles::HUB).spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            Agency::Land,
            "land/spots.toml",
            "land/spots.xlsx",
            counts(10, 10, 0, 0, 0),
        ),
        (
            Agency::Environment,
            "environment/penalties.toml",
            "environment/penalties.csv",
            counts(12, 12, 0, 0, 0),
        ),
        (
            Agency::Safety,
            "safety/express_reports.toml",
            "safety/express_reports.jsonl",
            counts(8, 8, 0, 0, 0),
        ),
        (
            Agency::Water,
            "water/sand_mining.toml",
            "water/sand_mining.csv",
            counts(11, 10, 0, 0, 1),
        ),
    ];
    for (agency, mapping, input, expected) in cases {
        let hub = hub_options(&app, agency, dir.path());
        let state = dir.path().join("state");
        let (mapping, input) = (samples().join(mapping), samples().join(input));
        let first = run(&hub, &mapping, &input, &state, None).await;
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert_eq!(first.summary, expected, "{}", input.display());
        let again = run(&hub, &mapping, &input, &state, None).await;
        assert!(again.errors.is_empty(), "{:?}", again.errors);
        assert_eq!(
            again.summary,
            counts(expected.rows, 0, 0, 0, expected.rows),
            "the checkpoint skips every row"
        );
        // Without the checkpoint, the hub itself recognises every lead: replays, not new leads.
        let fresh_state = dir.path().join(format!("fresh-{agency}"));
        let replayed = run(&hub, &mapping, &input, &fresh_state, None).await;
        assert_eq!(
            replayed.summary,
            counts(expected.rows, 0, expected.accepted, 0, expected.skipped),
            "{}",
            input.display()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_row_with_a_bad_byte_is_reported_at_its_offset_and_the_others_are_sent() {
    let app = app(Backend::Real).roles(Roles::HUB).spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_options(&app, Agency::Environment, dir.path());
    let mut bytes = std::fs::read(samples().join("environment/penalties.csv")).unwrap();
    // Line 4 (the third case) gets a byte that no GB18030 sequence starts with.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(at, _)| at + 1),
        )
        .collect();
    let bad_at = line_starts[3] + 5;
    bytes[bad_at] = 0xFF;
    let input = dir.path().join("penalties-broken.csv");
    std::fs::write(&input, &bytes).unwrap();
    let report = dir.path().join("report.csv");
    let state = dir.path().join("state");
    let mapping = samples().join("environment/penalties.toml");
    let result = run(&hub, &mapping, &input, &state, Some(report.clone())).await;
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    assert_eq!(result.summary, counts(12, 11, 0, 1, 0));
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.starts_with('\u{FEFF}'), "the report starts with a BOM");
    let mut reader = csv::Reader::from_reader(text.trim_start_matches('\u{FEFF}').as_bytes());
    let lines: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(&lines[0][1], "4");
    assert_eq!(&lines[0][4], "encoding");
    assert_eq!(&lines[0][6], bad_at.to_string());
    // The rejected row is read again on a re-run (and rejected again); the others are skipped.
    let again = run(&hub, &mapping, &input, &state, None).await;
    assert_eq!(again.summary, counts(12, 0, 0, 1, 11));
    app.stop().await;
}
