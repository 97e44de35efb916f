//! `connect file` against the real hub: the samples import, a re-run sends nothing new, and a
//! row with a bad byte is reported with its offset while the rows around it are sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leadbridge::connectors::file::{import, FileOptions, RunResult};
use leadbridge::connectors::hub::HubOptions;
use leadbridge::connectors::Summary;
use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::Principal;
use leadbridge::Roles;

use crate::helpers::{app, Backend, TestApp};

pub(crate) fn samples() -> PathBuf {
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

/// The land sample with its sheet's XML edited by `edit`.
fn edited_spots(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    use std::io::{Read, Write};
    let original = std::fs::File::open(samples().join("land/spots.xlsx")).unwrap();
    let mut archive = zip::ZipArchive::new(original).unwrap();
    let path = dir.join(name);
    let mut out = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).unwrap();
        let entry_name = entry.name().to_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if entry_name == "xl/worksheets/sheet1.xml" {
            let edited = edit(String::from_utf8(bytes).unwrap());
            bytes = edited.into_bytes();
        }
        out.start_file(entry_name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(&bytes).unwrap();
    }
    out.finish().unwrap();
    path
}

#[tokio::test]
async fn a_merged_header_is_refused_by_name_and_a_sheet_declaring_every_cell_streams() {
    let app = app(Backend::Real).roles(Roles::HUB).spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_options(&app, Agency::Land, dir.path());
    let mapping = samples().join("land/spots.toml");

    // 图斑编号 and 行政区划代码 merged into one header cell: the second column has no name.
    let merged = edited_spots(dir.path(), "merged.xlsx", |xml| {
        let emptied = xml.replace(
            r#"<c r="C2" s="2" t="inlineStr"><is><t>行政区划代码</t></is></c>"#,
            r#"<c r="C2" s="2" />"#,
        );
        assert_ne!(emptied, xml);
        emptied.replace(
            r#"<mergeCells count="1"><mergeCell ref="A1:S1" /></mergeCells>"#,
            r#"<mergeCells count="2"><mergeCell ref="A1:S1" /><mergeCell ref="B2:C2" /></mergeCells>"#,
        )
    });
    let result = run(&hub, &mapping, &merged, &dir.path().join("state"), None).await;
    assert_eq!(result.summary, Summary::default(), "no row is read");
    let message = result
        .errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    assert!(
        message.contains("行政区划代码") && message.contains("B2:C2"),
        "the message names the column and the merged cells: {message}"
    );

    // A sheet that declares all 17 billion cells of a worksheet but holds twelve rows is read
    // row by row: the declared range is never built.
    let declared = edited_spots(dir.path(), "declared.xlsx", |xml| {
        // A real cell in the sheet's last corner, so a reader that builds the whole range
        // would have to build all of it.
        let huge = xml
            .replace(
                r#"<dimension ref="A1:S12" />"#,
                r#"<dimension ref="A1:XFD1048576" />"#,
            )
            .replace(
                "</sheetData>",
                r#"<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>末</t></is></c></row></sheetData>"#,
            );
        assert_ne!(huge, xml);
        huge
    });
    let result = run(&hub, &mapping, &declared, &dir.path().join("state"), None).await;
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    // The corner cell's row is a row without the mapped columns: rejected, not sent.
    assert_eq!(result.summary, counts(11, 10, 0, 1, 0));
    app.stop().await;
}

#[tokio::test]
async fn a_hub_that_goes_down_mid_import_stops_the_run_and_the_next_run_resumes_from_the_checkpoint(
) {
    let mut first = app(Backend::Real).roles(Roles::HUB).spawn().await;
    first.keep_databases();
    let kept_dir = first.keep_data_dir();
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_options(&first, Agency::Environment, dir.path());
    let mapping = samples().join("environment/penalties.toml");
    // 240 rows: the sample's twelve, twenty times, with new case numbers (the line's first field).
    const ROWS: u64 = 240;
    let sample = std::fs::read(samples().join("environment/penalties.csv")).unwrap();
    let mut lines = sample.split_inclusive(|b| *b == b'\n');
    let mut bytes = lines.next().unwrap().to_vec();
    let bodies: Vec<&[u8]> = lines.collect();
    for i in 0..ROWS as usize {
        let body = bodies[i % bodies.len()];
        let comma = body.iter().position(|b| *b == b',').unwrap();
        bytes.extend_from_slice(format!("DOWN-{i:04}").as_bytes());
        bytes.extend_from_slice(&body[comma..]);
    }
    let input = dir.path().join("penalties-240.csv");
    std::fs::write(&input, bytes).unwrap();
    let state = dir.path().join("state");
    let importing = {
        let (hub, mapping, input, state) =
            (hub.clone(), mapping.clone(), input.clone(), state.clone());
        tokio::spawn(async move {
            import(FileOptions {
                mapping,
                inputs: vec![input],
                hub: Some(hub),
                state,
                report: None,
                batch_size: 1,
            })
            .await
        })
    };
    // The hub goes away, at once, once it holds a few of the leads.
    let pool = first.store.inspection_pool().await.unwrap().clone();
    let leads = |pool: sqlx::AnyPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM leads")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    for _ in 0..600 {
        if leads(pool.clone()).await >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settings = first.settings.clone();
    // Its relay's unpublished rows stay in the database for the hub that comes back.
    first
        .stop_leaving_work_unfinished("the hub is killed mid-import; its successor finishes")
        .await;
    let stopped = importing.await.unwrap();
    assert_eq!(stopped.errors.len(), 1, "{:?}", stopped.errors);
    assert!(
        stopped.errors[0]
            .to_string()
            .contains("could not be reached"),
        "{}",
        stopped.errors[0]
    );
    assert!(stopped.errors[0].stops_the_run());
    let accepted_before = stopped.summary.accepted;
    assert!(
        (3..ROWS).contains(&accepted_before),
        "stopped part-way: {}",
        stopped.summary
    );

    // The hub is back, on the same database: the next run sends only what is left.
    let second = app(Backend::Real)
        .roles(Roles::HUB)
        .with_settings(move |s| {
            s.database.url = settings.database.url.clone();
            s.police.database_url = settings.police.database_url.clone();
            s.transparency = settings.transparency.clone();
        })
        .spawn()
        .await;
    let hub = hub_options(&second, Agency::Environment, dir.path());
    let resumed = run(&hub, &mapping, &input, &state, None).await;
    assert!(resumed.errors.is_empty(), "{:?}", resumed.errors);
    let summary = resumed.summary;
    assert_eq!(summary.rows, ROWS);
    assert_eq!(summary.rejected, 0);
    assert_eq!(
        summary.skipped, accepted_before,
        "what was accepted is not sent again"
    );
    assert_eq!(summary.accepted + summary.replayed + summary.skipped, ROWS);
    let pool = second.store.inspection_pool().await.unwrap().clone();
    assert_eq!(leads(pool.clone()).await, ROWS as i64);
    let revisions: i64 = sqlx::query_scalar("SELECT count(*) FROM lead_revisions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(revisions, ROWS as i64, "each lead once");
    second.stop().await;
    // The first hub's signing keys lived in its data directory.
    drop(kept_dir);
}

#[tokio::test]
async fn every_declared_encoding_reads_the_same_rows_and_a_wrong_one_stops_at_the_header() {
    let app = app(Backend::Real).roles(Roles::HUB).spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let mapping_with = |sample: &str, encoding: &str| {
        let text = std::fs::read_to_string(samples().join(sample)).unwrap();
        let line = text
            .lines()
            .find(|line| line.starts_with("encoding"))
            .unwrap()
            .to_owned();
        let path = dir
            .path()
            .join(format!("{}-{encoding}.toml", sample.replace('/', "-")));
        std::fs::write(
            &path,
            text.replace(&line, &format!("encoding = \"{encoding}\"")),
        )
        .unwrap();
        path
    };
    // Water: UTF-8 with a BOM, and the same bytes without it; declared, or found by `auto`.
    let hub = hub_options(&app, Agency::Water, dir.path());
    let with_bom = samples().join("water/sand_mining.csv");
    let bytes = std::fs::read(&with_bom).unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"));
    let without_bom = dir.path().join("sand_mining-no-bom.csv");
    std::fs::write(&without_bom, &bytes[3..]).unwrap();
    for (index, (input, encoding)) in [
        (&with_bom, "utf-8"),
        (&without_bom, "utf-8"),
        (&without_bom, "auto"),
    ]
    .into_iter()
    .enumerate()
    {
        let mapping = mapping_with("water/sand_mining.toml", encoding);
        let state = dir.path().join(format!("water-state-{index}"));
        let result = run(&hub, &mapping, input, &state, None).await;
        assert!(result.errors.is_empty(), "{encoding}: {:?}", result.errors);
        // The first run sends the ten leads; the others are answered as replays.
        let expected = if index == 0 {
            counts(11, 10, 0, 0, 1)
        } else {
            counts(11, 0, 10, 0, 1)
        };
        assert_eq!(
            result.summary,
            expected,
            "{} as {encoding}",
            input.display()
        );
    }
    // Environment: GBK, found by `auto`; declared UTF-8 it stops at the header's first byte.
    let hub = hub_options(&app, Agency::Environment, dir.path());
    let gbk = samples().join("environment/penalties.csv");
    let auto = mapping_with("environment/penalties.toml", "auto");
    let result = run(&hub, &auto, &gbk, &dir.path().join("env-auto"), None).await;
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    assert_eq!(result.summary, counts(12, 12, 0, 0, 0));
    let wrong = mapping_with("environment/penalties.toml", "utf-8");
    let result = run(&hub, &wrong, &gbk, &dir.path().join("env-wrong"), None).await;
    assert_eq!(result.summary, Summary::default(), "no row is read");
    let message = result
        .errors
        .iter()
        .map(ToString::to_string)
        .collect::<String>();
    assert!(
        message.contains("line 1") && message.contains("UTF-8"),
        "{message}"
    );
    app.wait_until_outbox_drained().await;
    app.stop().await;
}
