//! stories260K reproduces llama2.c `run.c` token for token: all five reference
//! cases through the library API and through `microlm generate`, and the logits
//! of the first 32 greedy positions within 1e-4.

use microlm::{KvDtype, Session};
use microlm_tests::{arena, assert_reproduces_reference_cases, converted, reference_cases, run_cli, shared, ModelFile};

#[test]
fn library_reproduces_every_reference_case() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    assert_reproduces_reference_cases(&model);
}

#[test]
fn cli_reproduces_every_reference_case() {
    let model = converted("f32");
    for case in reference_cases() {
        let mut args = vec![
            "generate".to_string(),
            model.display().to_string(),
            "-t".into(),
            case.temperature.to_string(),
            "--top-p".into(),
            case.topp.to_string(),
            "-n".into(),
            case.steps.to_string(),
            "-p".into(),
            case.prompt.clone(),
            "--json".into(),
        ];
        if let Some(seed) = case.seed {
            args.extend(["-s".into(), seed.to_string()]);
        }
        let (code, stdout, stderr) = run_cli(&args);
        assert_eq!(code, 0, "case {}: {stderr}", case.name);
        let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let ids: Vec<u32> = serde_json::from_value(json["ids"].clone()).unwrap();
        assert_eq!(ids, case.ids, "case {}", case.name);
        // The streamed text (everything before the JSON line) is exactly what run.c printed.
        let streamed = &stdout[..stdout.len() - stdout.lines().last().unwrap().len() - 1];
        assert_eq!(streamed, case.stdout, "case {}: streamed text", case.name);
        assert_eq!(json["text"].as_str().unwrap().to_string() + "\n", case.stdout);
        assert_eq!(
            json["prompt_tokens"].as_u64().unwrap() as usize + json["generated_tokens"].as_u64().unwrap() as usize,
            ids.len()
        );
    }
}

#[test]
fn logits_match_llama2c_for_32_greedy_positions() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let raw = std::fs::read(shared().join("reference/stories260K_greedy_logits_f32le.bin")).unwrap();
    let reference: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let vocab = model.config().vocab_size;
    assert_eq!(reference.len(), 32 * vocab);
    let ids = &reference_cases()[0].ids;
    let plan = model.plan(64, KvDtype::F32).unwrap();
    let mut mem = arena(plan.total);
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 64, KvDtype::F32).unwrap();
    let mut worst = 0.0f32;
    for pos in 0..32 {
        let logits = session.forward(ids[pos], pos).unwrap();
        for (i, (&got, &want)) in logits.iter().zip(&reference[pos * vocab..(pos + 1) * vocab]).enumerate() {
            let err = (got - want).abs();
            worst = worst.max(err);
            assert!(err <= 1e-4, "position {pos}, logit {i}: {got} vs llama2.c {want}");
        }
    }
    println!("largest |logit - llama2.c| over 32 positions: {worst:e}");
}
