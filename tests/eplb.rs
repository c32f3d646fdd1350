//! DeepSeek's EPLB against upstream's own outputs: `tests/eplb/golden.json`
//! holds 25 cases `eplb.rebalance_experts` computed (deepseek-ai/EPLB at
//! d52c72d, torch on the CPU; a copy of `../shared/fixtures/eplb/`), and
//! moec's `rebalance_experts` must give the same physical-to-logical map
//! and replica counts, slot for slot.

use moec::passes::eplb_upstream::rebalance_experts;

#[test]
fn every_golden_case_is_upstreams_map() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/eplb/golden.json");
    let text = std::fs::read_to_string(&path).expect("the golden file");
    let golden: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let cases = golden["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 25);
    let ints = |v: &serde_json::Value| -> Vec<Vec<usize>> {
        v.as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_u64().expect("int") as usize)
                    .collect()
            })
            .collect()
    };
    let mut wrong = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let weight: Vec<Vec<f32>> = case["weight"]
            .as_array()
            .expect("weight")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_f64().expect("load") as f32)
                    .collect()
            })
            .collect();
        let n = |k: &str| case[k].as_u64().expect("count") as usize;
        let got = rebalance_experts(
            &weight,
            n("num_replicas"),
            n("num_groups"),
            n("num_nodes"),
            n("num_gpus"),
        )
        .expect("upstream accepted it");
        if got.physical_to_logical != ints(&case["physical_to_logical_map"])
            || got.logical_count != ints(&case["logical_count"])
        {
            wrong.push(name.to_string());
        }
        // Every slot's replica rank counts its expert's earlier slots.
        for (map, ranks) in got.physical_to_logical.iter().zip(&got.replica_rank) {
            let mut seen = vec![0usize; map.len()];
            let mut expected = Vec::new();
            for &e in map {
                expected.push(seen[e]);
                seen[e] += 1;
            }
            let mut sorted_ranks: Vec<(usize, usize)> = map.iter().copied().zip(ranks.iter().copied()).collect();
            sorted_ranks.sort_unstable();
            let mut want: Vec<(usize, usize)> = map.iter().copied().zip(expected).collect();
            want.sort_unstable();
            assert_eq!(sorted_ranks, want, "{name}");
        }
    }
    assert!(wrong.is_empty(), "cases unlike upstream: {wrong:?}");
}

#[test]
fn what_upstream_asserts_is_refused() {
    let loads = vec![vec![1.0f32; 8]];
    assert!(rebalance_experts(&loads, 10, 1, 1, 4).is_err(), "10 slots over 4 GPUs");
    assert!(
        rebalance_experts(&loads, 4, 1, 1, 4).is_err(),
        "fewer slots than experts"
    );
    assert!(rebalance_experts(&loads, 16, 3, 1, 8).is_err(), "8 experts in 3 groups");
    // 4 groups over 3 nodes: the global policy, as upstream falls back.
    assert!(rebalance_experts(&loads, 12, 4, 3, 6).is_ok());
}

#[test]
fn a_plan_balances_the_counts_its_workload_records() {
    // Mixtral on 8 H100s with OLMoE's recorded counts for it and 8 redundant
    // slots: the `eplb` plan's slots are upstream's on those counts (one
    // node, one group: the global policy), GPU g being the g-th die.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let reader = moec::source::FsReader;
    let session = moec::driver::check(&reader, &root.join("examples/mixtral-8x7b-real-routing.moe")).unwrap();
    let options = moec::driver::CompileOptions {
        plan: Some("prefill_eplb".into()),
        ..Default::default()
    };
    let schedule = session.schedule(&options, &mut |_, _| {}).unwrap();
    let moec_runtime::workload::RoutingSource::Counts { counts, .. } = &schedule.workload.routing else {
        panic!("the plan's workload replays recorded counts");
    };
    let map = counts.layer_map(&schedule.model);
    let weight: Vec<Vec<f32>> = map
        .iter()
        .map(|&(_, recorded)| {
            let l = counts.layers.iter().find(|l| l.layer == recorded).unwrap();
            l.counts.iter().map(|&c| c as f32).collect()
        })
        .collect();
    let upstream = rebalance_experts(&weight, 16, 1, 1, 8).unwrap();
    for (row, &(layer, _)) in map.iter().enumerate() {
        let mut expected: Vec<Vec<u32>> = vec![Vec::new(); 8];
        for (slot, &e) in upstream.physical_to_logical[row].iter().enumerate() {
            expected[e].push((slot / 2) as u32);
        }
        expected.iter_mut().for_each(|d| d.sort_unstable());
        let placed: Vec<Vec<u32>> = schedule.placement.experts[layer as usize]
            .iter()
            .map(|d| d.iter().map(|x| x.0).collect())
            .collect();
        assert_eq!(placed, expected, "layer {layer}");
    }
}
