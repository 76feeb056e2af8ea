//! Keeps the benchmarks from rotting: each scenario runs in `--quick` mode and must
//! produce a sane report. No assertion on timings.

#[test]
fn store_scenario_runs_quick() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_confab-bench"))
        .args(["--quick", "store"])
        .output()
        .expect("run confab-bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| store |"))
        .expect("a store row");
    let messages: u64 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!(messages > 0, "{row}");
    assert!(row.contains("fsyncs"), "{row}");
}
