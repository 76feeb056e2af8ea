//! Keeps the benchmarks from rotting: each scenario runs in `--quick` mode and must
//! produce a sane report. No assertion on timings.

/// Runs `confab-bench --quick ARGS...` and returns its row for `scenario`.
fn quick_row(args: &[&str], scenario: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_confab-bench"))
        .arg("--quick")
        .args(args)
        .output()
        .expect("run confab-bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {scenario} |")))
        .unwrap_or_else(|| panic!("a {scenario} row in {stdout}"))
        .to_owned()
}

/// The operations column of a row.
fn operations(row: &str) -> u64 {
    row.split('|').nth(2).unwrap().trim().parse().unwrap()
}

#[test]
fn store_scenario_runs_quick() {
    let row = quick_row(&["store"], "store");
    assert!(operations(&row) > 0, "{row}");
    assert!(row.contains("fsyncs"), "{row}");
}

#[test]
fn fanout_scenario_delivers_everything() {
    let row = quick_row(&["fanout"], "fanout");
    assert!(operations(&row) > 0, "{row}");
    // Every acknowledged message reached every member, exactly once, none refused.
    assert!(row.contains("lost 0 of"), "{row}");
    assert!(row.contains(" 0 duplicates, 0 disconnected"), "{row}");
    assert!(row.contains("rejected 0"), "{row}");
}

#[test]
fn fanout_ceiling_runs_the_same_generator() {
    let row = quick_row(&["fanout", "--target", "ceiling"], "fanout (ceiling)");
    assert!(operations(&row) > 0, "{row}");
    assert!(row.contains("lost 0 of"), "{row}");
}

#[test]
fn idle_scenario_opens_every_connection() {
    let row = quick_row(&["idle"], "idle");
    assert_eq!(operations(&row), 20, "{row}");
    assert!(row.contains("KiB per connection"), "{row}");
}

#[test]
fn history_scenario_reads_full_pages() {
    let row = quick_row(&["history"], "history");
    assert!(operations(&row) > 0, "{row}");
    assert!(row.contains("2000 messages filled"), "{row}");
    assert!(row.contains(" 0 short pages"), "{row}");
}

#[test]
fn boot_scenario_is_smaller_than_a_snapshot() {
    let row = quick_row(&["boot"], "boot");
    assert!(operations(&row) > 0, "{row}");
    let bytes = |label: &str| -> u64 {
        let at = row.find(label).unwrap() + label.len();
        row[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(bytes("; boot ") > 0, "{row}");
    assert!(bytes("full snapshot ") > 0, "{row}");
}

#[test]
fn fanout_search_reports_a_maximum_and_the_run_at_half() {
    let row = quick_row(&["fanout", "--search", "--rate", "10"], "fanout-search");
    assert!(operations(&row) > 0, "{row}");
    // Quick mode caps the search at 80 msg/s; 5 members on loopback pass every step.
    assert!(row.contains("max 80 msg/s"), "{row}");
    assert!(row.contains("at half: 40 msg/s"), "{row}");
    assert!(row.contains("steps: 10/s"), "{row}");
}

#[test]
fn a_recorded_run_is_one_json_line_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results.jsonl");
    let file_arg = file.to_str().unwrap();
    for _ in 0..2 {
        quick_row(
            &["--record", file_arg, "--label", "five members", "fanout"],
            "fanout",
        );
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let run = &lines[1];
    assert_eq!(run["scenario"], "fanout");
    assert_eq!(run["target"], "confab");
    assert_eq!(run["label"], "five members");
    assert!(run["operations"].as_u64().unwrap() > 0, "{run}");
    assert!(run["p99_ms"].as_f64().unwrap() > 0.0, "{run}");
    assert!(
        run["command"].as_str().unwrap().contains("--record"),
        "{run}"
    );
}

/// A number in a row right after `label`.
fn number_after(row: &str, label: &str) -> f64 {
    let at = row
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {row}"))
        + label.len();
    row[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches([',', ';'])
        .parse()
        .unwrap()
}

#[test]
fn presence_scenario_reaches_subscribers_only() {
    let row = quick_row(&["presence"], "presence");
    assert_eq!(operations(&row), 10, "{row}");
    // Every subscriber of a changing user saw the change, nobody else got it, and the
    // entries per change stay below the naive fan-out to every member.
    assert!(number_after(&row, "missed 0 of ") > 0.0, "{row}");
    assert!(row.contains(" 0 unexpected"), "{row}");
    assert!(row.contains(" 0 rejected, 0 disconnected"), "{row}");
    let per_change = number_after(&row, " entries = ");
    assert!(per_change > 0.0, "{row}");
    assert!(per_change < number_after(&row, "vs naive "), "{row}");
}

#[test]
fn many_channels_scenario_delivers_every_acked_send() {
    let row = quick_row(&["many-channels"], "many-channels");
    assert!(operations(&row) > 0, "{row}");
    assert!(row.contains("rejected 0"), "{row}");
    assert!(row.contains("lost 0 of"), "{row}");
    assert!(row.contains(" 0 duplicates, 0 disconnected"), "{row}");
    // Every send was acknowledged: acked equals sent.
    assert_eq!(
        number_after(&row, "; sent "),
        number_after(&row, ", acked "),
        "{row}"
    );
}
