//! Snapshots of the IR after every pass, for every plan of every example.
//!
//! Each snapshot shows the layers up to the second MoE layer in full (the
//! dense layers and two MoE layers, so a placement's pattern across layers
//! is visible) and the per-die memory table of the whole model. Review every
//! change with `cargo insta review`; never accept one unread.

mod common;

use moec_runtime::model::LayerKind;

#[test]
fn ir_after_every_pass_for_every_example_plan() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(common::root().join("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for path in common::examples() {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let session = common::checked(&path);
            for plan in &session.program.plans {
                let model = session.program.model(plan.model).unwrap();
                let second_moe = (0..model.layers)
                    .filter(|&l| model.layer_kind(l) == LayerKind::Moe)
                    .nth(1)
                    .unwrap_or(0);
                let printed = common::compile_printing(&session, &plan.name, Some(0..=second_moe as u32));
                assert!(!printed.is_empty(), "{stem}/{}: no pass ran", plan.name);
                for (pass, text) in printed {
                    // `parallel(moeshard(4, fused = false))` -> `parallel_moeshard_4_fused_false`.
                    let words: Vec<&str> = pass.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').collect();
                    let pass = words
                        .into_iter()
                        .filter(|w| !w.is_empty())
                        .collect::<Vec<_>>()
                        .join("_");
                    insta::assert_snapshot!(format!("{stem}.{}.{pass}", plan.name), text);
                }
            }
        }
    });
}

#[test]
fn every_file_in_examples_checks_without_errors_or_warnings() {
    for path in common::all_example_files() {
        let session = common::checked(&path);
        let warnings = session.diagnostics.sorted();
        assert!(
            warnings.is_empty(),
            "{}: {}",
            path.display(),
            moec::diag::render(&session.loaded.sources, &warnings)
        );
    }
}
