//! Placement files (docs/PLACEMENT_FORMATS.md): every format written from a
//! compiled plan and read back by `placement = file("...")` gives the same
//! expert placement in the IR and the schedule; each format's text on a
//! small example is a reviewed snapshot; malformed files get their codes
//! and never a panic.

mod common;

use moec::diag::Code;
use moec::driver::{self, CompileOptions, Session};
use moec::ir::{Ir, Op};
use moec::placement_file::{self, ExpertLayout, Format, Padding, Target};
use moec::source::{FsReader, MemoryReader};
use moec_runtime::machine::DieId;
use moec_runtime::units::Bytes;
use std::path::{Path, PathBuf};

const TINY: &str = "tests/placement_files/tiny.moe";

fn options(plan: &str) -> CompileOptions {
    CompileOptions {
        plan: Some(plan.into()),
        ..Default::default()
    }
}

/// `plan`'s placement in `format` (padded when `pad`).
fn export(session: &Session, plan: &str, format: Format, pad: bool) -> String {
    session
        .placement_file(&options(plan), format, pad, &mut |_, _| {})
        .unwrap_or_else(|d| panic!("{plan} as {format}: {}", d.message))
}

/// Every expert node's dies, in node order.
fn expert_dies(ir: &Ir) -> Vec<(u32, u32, Vec<u32>)> {
    ir.nodes()
        .filter_map(|(_, n)| match (&n.op, n.layer) {
            (Op::Expert { expert, .. }, Some(layer)) => {
                Some((layer.0, expert.0, n.ann.dies.iter().map(|d| d.0).collect()))
            }
            _ => None,
        })
        .collect()
}

/// A fresh folder under the system's temporary one.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moec-placement-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Exports `plan` of `example` in every format, reads each back through a
/// plan of the same model, machine and workload, and compares the IR's
/// expert placement and the schedule's placement.
fn round_trip(example: &str, plan: &str, model: &str, machine: &str, workload: &str, pad: bool) {
    let source = common::checked(&common::root().join(example));
    let original = source.compile(&options(plan), &mut |_, _| {}).unwrap();
    let original_schedule = source.schedule(&options(plan), &mut |_, _| {}).unwrap();
    let dir = scratch(&format!(
        "{}-{plan}",
        Path::new(example).file_stem().unwrap().to_string_lossy()
    ));
    let mut moe = format!("import \"{}\"\n", common::root().join(example).display());
    for format in Format::ALL {
        let name = format!("{plan}.{format}");
        std::fs::write(dir.join(&name), export(&source, plan, format, pad)).unwrap();
        moe.push_str(&format!(
            "plan read_{} {{ model = {model}; machine = {machine}; workload = {workload}; placement = file(\"{name}\") }}\n",
            format.name().replace('-', "_")
        ));
    }
    let root = dir.join("round-trip.moe");
    std::fs::write(&root, moe).unwrap();
    let imported = common::checked(&root);
    for format in Format::ALL {
        let from = format!("read_{}", format.name().replace('-', "_"));
        let ir = imported.compile(&options(&from), &mut |_, _| {}).unwrap();
        assert_eq!(ir.header.passes, ["from_file"], "{from}");
        assert_eq!(
            expert_dies(&ir),
            expert_dies(&original),
            "{example} {plan} through {format}"
        );
        let schedule = imported.schedule(&options(&from), &mut |_, _| {}).unwrap();
        assert_eq!(
            schedule.placement, original_schedule.placement,
            "{example} {plan} through {format}"
        );
        // Written again from the imported plan, the file is the same.
        assert_eq!(
            export(&imported, &from, format, pad)
                .replace(&format!("\"plan\": \"{from}\""), &format!("\"plan\": \"{plan}\"")),
            std::fs::read_to_string(dir.join(format!("{plan}.{format}"))).unwrap(),
            "{format} rewritten"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eplb_on_the_wafer_survives_every_format() {
    // EPLB with 64 redundant slots: 5 slots a die, and in some layers a die
    // with two slots of one expert, which every format writes as two slots
    // and reads back as two.
    let source = common::checked(&common::root().join("examples/deepseek-v3-wafer.moe"));
    let ir = source.compile(&options("eplb"), &mut |_, _| {}).unwrap();
    assert!(
        expert_dies(&ir)
            .iter()
            .any(|(_, _, d)| d.windows(2).any(|w| w[0] == w[1])),
        "no die holds two slots of an expert: the round trip does not test them"
    );
    round_trip(
        "examples/deepseek-v3-wafer.moe",
        "eplb",
        "deepseek_v3",
        "wafer_8x8",
        "decode_256",
        false,
    );
}

#[test]
fn equal_placements_survive_every_format_without_padding() {
    round_trip(TINY, "contiguous", "tiny", "mesh_2x2", "decode", false);
    round_trip(TINY, "eplb", "tiny", "mesh_2x2", "decode", false);
}

#[test]
fn each_format_of_a_small_plan_is_a_reviewed_snapshot() {
    let session = common::checked(&common::root().join(TINY));
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(common::root().join("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for format in Format::ALL {
            let text = export(&session, "eplb", format, true);
            assert_eq!(
                text,
                export(&session, "eplb", format, true),
                "{format}: not deterministic"
            );
            insta::assert_snapshot!(format!("placement_files.tiny.eplb.{format}"), text);
        }
    });
}

#[test]
fn unequal_dies_are_refused_by_the_engine_formats_unless_padded() {
    let session = common::checked(&common::root().join(TINY));
    let plan = "round_robin_defect";
    for format in [Format::Sglang, Format::VllmAscend, Format::Trtllm] {
        let d = session
            .placement_file(&options(plan), format, false, &mut |_, _| {})
            .unwrap_err();
        assert_eq!(d.code, Code::E0039, "{format}: {}", d.message);
        assert!(
            d.message.contains("3 on 2 dies") && d.message.contains("2 on 1 die ((0, 1))"),
            "{}",
            d.message
        );
        assert!(session
            .placement_file(&options(plan), format, true, &mut |_, _| {})
            .is_ok());
    }
    // moec's own format records any placement.
    assert!(session
        .placement_file(&options(plan), Format::Moec, false, &mut |_, _| {})
        .is_ok());
}

/// The tiny example without its plan that reads a file.
fn tiny_source() -> String {
    let text = std::fs::read_to_string(common::root().join(TINY)).unwrap();
    text.split("// The contiguous placement read back")
        .next()
        .unwrap()
        .to_string()
}

/// The tiny model and mesh (die (1, 1) dead when `defect`) as a target.
fn with_target<T>(defect: bool, f: impl FnOnce(Target) -> T) -> T {
    let text = tiny_source();
    let text = if defect {
        text.replace("latency = 10 ns }", "latency = 10 ns }\n  defects { die(1, 1) }")
    } else {
        text
    };
    let mut reader = MemoryReader::default();
    reader.0.insert(PathBuf::from("tiny.moe"), text.into_bytes());
    let session = driver::check(&reader, Path::new("tiny.moe")).unwrap();
    assert!(!session.has_errors(), "{:?}", session.diagnostics.sorted());
    let target = Target {
        model: session.program.model(0).unwrap(),
        machine: session.program.machine(0).unwrap(),
    };
    f(target)
}

/// The code reading `text` gives (`None`: it reads).
fn code_of(text: &str, format: Option<Format>, defect: bool) -> Option<Code> {
    with_target(defect, |t| {
        placement_file::parse(text, format, t).err().map(|p| p.kind.code())
    })
}

#[test]
fn malformed_files_get_their_codes() {
    // The tiny model: layers 0 (dense), 1, 2, 3 (MoE), 8 experts; 4 dies.
    let row = "[0, 1, 2, 3, 4, 5, 6, 7]";
    let sglang = |moe: &str| format!("{{\"physical_to_logical_map\": [{row}, {moe}, {row}, {row}]}}");
    let vllm = |devices: &str| {
        let layer = format!("{{\"layer_id\": 0, \"device_count\": 4, \"device_list\": [{devices}]}}");
        format!("{{\"moe_layer_count\": 3, \"layer_list\": [{layer}, {layer}, {layer}]}}")
    };
    let two_each = "{\"device_expert\": [0, 1]}, {\"device_expert\": [2, 3]}, {\"device_expert\": [4, 5]}, {\"device_expert\": [6, 7]}";
    let trt = |extra: &str, l1: &str| {
        format!("initial_global_assignments:\n  1: {l1}\n  2: {row}\n  3: {row}\n{extra}num_slots: 8\n")
    };
    let moec = |version: u32, alive: &str, replicas: &str| {
        format!(
            "{{\"format\": \"moec-placement\", \"version\": {version}, \"model\": {{\"name\": \"x\", \"layers\": 4, \"experts\": 8}}, \
             \"machine\": {{\"name\": \"y\", \"dies\": 4, \"alive\": [{alive}]}}, \"layers\": [\
             {{\"layer\": 1, \"replicas\": {replicas}}}, {{\"layer\": 2, \"replicas\": {replicas}}}, {{\"layer\": 3, \"replicas\": {replicas}}}]}}"
        )
    };
    let spread = "[[0], [0], [1], [1], [2], [2], [3], [3]]";
    // What, the text, the format named, whether die (1, 1) is dead, the code.
    type Case = (&'static str, String, Option<Format>, bool, Option<Code>);
    let cases: Vec<Case> = vec![
        // Each format read correctly first.
        ("sglang", sglang(row), None, false, None),
        ("vllm-ascend", vllm(two_each), None, false, None),
        ("trtllm", trt("layer_updates_per_iter: 0\n", row), None, false, None),
        ("trtllm as JSON", "{\"num_slots\": 8, \"initial_global_assignments\": {\"1\": [0, 1, 2, 3, 4, 5, 6, 7], \"2\": [0, 1, 2, 3, 4, 5, 6, 7], \"3\": [0, 1, 2, 3, 4, 5, 6, 7]}}".into(), None, false, None),
        ("moec", moec(1, "{\"id\": 0, \"name\": \"(0, 0)\"}", spread), None, false, None),
        // E0036: not a placement, or breaks its format's rules.
        ("prose", "hello world".into(), None, false, Some(Code::E0036)),
        ("broken JSON", "{\"physical_to_logical_map\": [[0, 1],".into(), None, false, Some(Code::E0036)),
        ("JSON array", "[1, 2]".into(), None, false, Some(Code::E0036)),
        ("string id", sglang("[0, 1, 2, 3, 4, 5, 6, \"7\"]"), None, false, Some(Code::E0036)),
        ("extra key", "{\"physical_to_logical_map\": [], \"x\": 1}".into(), None, false, Some(Code::E0036)),
        ("count mismatch", vllm(two_each).replace("\"moe_layer_count\": 3", "\"moe_layer_count\": 2"), None, false, Some(Code::E0036)),
        ("device_count mismatch", vllm(two_each).replace("\"device_count\": 4", "\"device_count\": 5"), None, false, Some(Code::E0036)),
        ("YAML alias", trt("", "&a [0, 1, 2, 3, 4, 5, 6, 7]").replace("2: [0, 1, 2, 3, 4, 5, 6, 7]", "2: *a"), None, false, Some(Code::E0036)),
        ("unknown YAML key", trt("colour: red\n", row), None, false, Some(Code::E0036)),
        ("YAML float id", trt("", "[0, 1, 2, 3, 4, 5, 6, 7.5]"), None, false, Some(Code::E0036)),
        ("wrong format named", sglang(row), Some(Format::Trtllm), false, Some(Code::E0036)),
        ("moec version 2", moec(2, "", spread), None, false, Some(Code::E0036)),
        ("moec die twice (two slots)", moec(1, "", "[[0, 0], [0], [1], [1], [2], [2], [3], [3]]"), None, false, None),
        // E0037: another model.
        ("sglang rows", "{\"physical_to_logical_map\": [[0, 1, 2, 3, 4, 5, 6, 7]]}".into(), None, false, Some(Code::E0037)),
        ("id out of range", sglang("[0, 1, 2, 3, 4, 5, 6, 8]"), None, false, Some(Code::E0037)),
        ("negative id", trt("", "[0, 1, 2, 3, 4, 5, 6, -1]"), None, false, Some(Code::E0037)),
        ("expert without replica", sglang("[0, 1, 2, 3, 4, 5, 6, 6]"), None, false, Some(Code::E0037)),
        ("vllm layers", vllm(two_each).replace("\"moe_layer_count\": 3", "\"moe_layer_count\": 2").replacen(&format!("{{\"layer_id\": 0, \"device_count\": 4, \"device_list\": [{two_each}]}}, "), "", 1), None, false, Some(Code::E0037)),
        ("dense layer key", trt("", row).replace("  1: ", "  0: "), None, false, Some(Code::E0037)),
        ("moec experts", moec(1, "", "[[0], [1]]"), None, false, Some(Code::E0037)),
        // E0038: another machine.
        ("vllm devices", vllm("{\"device_expert\": [0, 1, 2, 3]}, {\"device_expert\": [4, 5, 6, 7]}").replace("\"device_count\": 4", "\"device_count\": 2"), None, false, Some(Code::E0038)),
        ("ep_size", trt("ep_size: 8\n", row), None, false, Some(Code::E0038)),
        ("moec dead die", moec(1, "", spread), None, true, Some(Code::E0038)),
        ("moec die name", moec(1, "{\"id\": 1, \"name\": \"(0, 1)\"}", spread), None, false, Some(Code::E0038)),
        // E0039: slots that do not divide over the devices.
        ("sglang slots", sglang("[0, 1, 2, 3, 4, 5, 6, 7, 0]").replace(row, "[0, 1, 2, 3, 4, 5, 6, 7, 0]"), None, false, Some(Code::E0039)),
        ("sglang ragged", sglang("[0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]"), None, false, Some(Code::E0039)),
        ("vllm unequal", vllm("{\"device_expert\": [0, 1, 2]}, {\"device_expert\": [3]}, {\"device_expert\": [4, 5]}, {\"device_expert\": [6, 7]}"), None, false, Some(Code::E0039)),
        ("trt short list", trt("", "[0, 1, 2, 3, 4, 5, 6]"), None, false, Some(Code::E0039)),
    ];
    for (what, text, format, defect, want) in &cases {
        assert_eq!(code_of(text, *format, *defect), *want, "{what}:\n{text}");
    }
}

#[test]
fn padding_repeats_a_dies_experts_within_its_free_memory() {
    with_target(false, |t| {
        // Dies 0..3 hold 3, 2, 1 and 2 experts of each MoE layer.
        let dies = [0, 0, 0, 1, 1, 2, 3, 3].map(|d| vec![DieId(d)]).to_vec();
        let layout = ExpertLayout {
            experts: vec![Vec::new(), dies.clone(), dies.clone(), dies],
        };
        let tight = [Bytes(0); 4];
        let p = placement_file::write(Format::Sglang, &layout, "p", t, Padding::Repeat { free: &tight }).unwrap_err();
        assert_eq!(p.kind.code(), Code::E0020, "{}", p.message);
        assert!(p.message.contains("(1, 0)"), "{}", p.message);
        let roomy = [Bytes(1 << 30); 4];
        let text = placement_file::write(Format::Sglang, &layout, "p", t, Padding::Repeat { free: &roomy }).unwrap();
        // Die (0, 1) repeats its one expert twice more.
        assert!(text.contains("[0, 1, 2, 3, 4, 3, 5, 5, 5, 6, 7, 6]"), "{text}");
        // Read back, the repeats are slots: die (0, 1) holds expert 5 three times.
        let padded = [
            vec![0],
            vec![0],
            vec![0],
            vec![1, 1],
            vec![1],
            vec![2, 2, 2],
            vec![3, 3],
            vec![3],
        ]
        .map(|d| d.into_iter().map(DieId).collect::<Vec<_>>())
        .to_vec();
        let read = placement_file::parse(&text, None, t).unwrap();
        assert_eq!(read.experts[1..], [padded.clone(), padded.clone(), padded]);
    });
}

#[test]
fn a_file_of_another_format_than_named_says_what_it_looks_like() {
    let text = "{\"physical_to_logical_map\": [[0]]}";
    let p = with_target(false, |t| {
        placement_file::parse(text, Some(Format::VllmAscend), t).unwrap_err()
    });
    assert_eq!(p.kind.code(), Code::E0036);
    assert!(p.hint.contains("looks like sglang"), "{}", p.hint);
}

#[test]
fn unreadable_files_are_e0035_and_non_text_e0036() {
    with_target(false, |t| {
        let mut reader = MemoryReader::default();
        reader.0.insert(PathBuf::from("big.json"), vec![b' '; (16 << 20) + 1]);
        reader.0.insert(PathBuf::from("binary.json"), vec![b'{', 0xff, b'}']);
        let code = |p: &str| {
            placement_file::read(&reader, Path::new(p), None, t)
                .unwrap_err()
                .kind
                .code()
        };
        assert_eq!(code("missing.json"), Code::E0035);
        assert_eq!(code("big.json"), Code::E0035);
        assert_eq!(code("binary.json"), Code::E0036);
    });
}

#[test]
fn every_prefix_of_every_format_reads_or_fails_without_a_panic() {
    let session = common::checked(&common::root().join(TINY));
    with_target(false, |t| {
        for format in Format::ALL {
            let text = export(&session, "eplb", format, true);
            for end in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
                let _ = placement_file::parse(&text[..end], None, t);
                let _ = placement_file::parse(&text[..end], Some(format), t);
            }
        }
    });
}

#[test]
fn file_calls_are_checked_in_the_plan() {
    let tiny = tiny_source();
    let codes = |placement: &str| {
        let text = format!(
            "{tiny}\nplan x {{ model = tiny; machine = mesh_2x2; workload = decode; placement = {placement} }}\n"
        );
        let mut reader = MemoryReader::default();
        reader.0.insert(PathBuf::from("x.moe"), text.into_bytes());
        let session = driver::check(&reader, Path::new("x.moe")).unwrap();
        session.diagnostics.sorted().iter().map(|d| d.code).collect::<Vec<_>>()
    };
    assert_eq!(codes("file()"), [Code::E0018]);
    assert_eq!(codes("file(3)"), [Code::E0007]);
    assert_eq!(codes("file(\"a.json\", format = \"sglung\")"), [Code::E0017]);
    assert_eq!(codes("file(\"a.json\", formta = \"sglang\")"), [Code::E0018]);
    assert_eq!(codes("file(\"a.json\", \"b.json\")"), [Code::E0018]);
    assert_eq!(codes("fil(\"a.json\")"), [Code::E0017]);
    assert_eq!(codes("file(\"a.json\", format = trtllm)"), [Code::E0035]);
}

#[test]
fn a_plan_without_a_file_cannot_run_from_file() {
    let session = driver::check(&FsReader, &common::root().join(TINY)).unwrap();
    let d = session
        .compile(
            &CompileOptions {
                plan: Some("eplb".into()),
                passes: Some("from_file".into()),
                ..Default::default()
            },
            &mut |_, _| {},
        )
        .unwrap_err();
    assert!(d.message.contains("names no file"), "{}", d.message);
}

#[test]
fn split_experts_and_moving_experts_are_refused_by_every_format() {
    // EPLB + tp(2): every expert split over two dies; a file of whole
    // experts per device would claim a whole replica on each.
    let text = tiny_source()
        + "plan eplb_tp2 { model = tiny; machine = mesh_2x2; workload = decode; placement = eplb; redundant_experts = 4; parallel = tp(2) }\n";
    let (_dir, path) = common::written(&text, "tiny.moe");
    let session = common::checked(&path);
    let drift = common::checked(&common::root().join("tests/migration/drift.moe"));
    for format in [Format::Sglang, Format::VllmAscend, Format::Trtllm, Format::Moec] {
        let d = session
            .placement_file(&options("eplb_tp2"), format, true, &mut |_, _| {})
            .unwrap_err();
        assert_eq!(d.code, Code::E0048, "{format}: {}", d.message);
        assert!(d.message.contains("splits experts over dies"), "{}", d.message);
        // NI-Balancer replicates experts as the run goes: the file would hold step 0's only.
        let d = drift
            .placement_file(&options("ni_balancer"), format, true, &mut |_, _| {})
            .unwrap_err();
        assert_eq!(d.code, Code::E0048, "{format}: {}", d.message);
        assert!(d.message.contains("moves experts during the run"), "{}", d.message);
    }
    // The same plan without the split exports.
    assert!(session
        .placement_file(&options("eplb"), Format::Moec, false, &mut |_, _| {})
        .is_ok());
}
