//! Every broken folder of [`ember_reference_tests::broken_folders::cases`] is refused by
//! `Embedder::from_dir` with an `Err` whose message names the file and what is wrong: no panic,
//! no abort, no model. (That none allocates more than its files justify is checked by
//! `broken_folder_allocations.rs`, which needs its own global allocator.)

use std::panic::{catch_unwind, AssertUnwindSafe};

use ember::Embedder;
use ember_reference_tests::broken_folders::cases;

#[test]
fn every_broken_folder_is_refused_with_the_file_and_the_fault_named() {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let dir = case.make();
        let outcome = catch_unwind(AssertUnwindSafe(|| Embedder::from_dir(dir.path())));
        let failure = match outcome {
            Err(_) => Some("panicked".to_owned()),
            Ok(Ok(_)) => Some("loaded".to_owned()),
            Ok(Err(e)) => case.check_message(dir.path(), &e.to_string()).err(),
        };
        if let Some(failure) = failure {
            failures.push(format!("{}: {failure}", case.name));
        }
    }
    println!(
        "broken folders: {} cases, {} refused as expected",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} broken folders were not refused as expected:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn case_names_are_unique() {
    let mut names: Vec<&str> = cases().iter().map(|case| case.name).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "two cases share a name");
}

#[test]
fn the_unbroken_folder_loads() {
    // Guards the table: every case must fail because of its mutation, not the copy.
    let dir = tempfile::tempdir().unwrap();
    ember_reference_tests::copy_dir(
        &ember_reference_tests::fixtures_dir().join("tiny-bert"),
        dir.path(),
    );
    Embedder::from_dir(dir.path()).unwrap();
}
