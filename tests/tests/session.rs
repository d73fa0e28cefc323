//! Memory planning and the bounds a caller can set wrongly, each a specific error.

use microlm::{Generation, KvDtype, Session, SessionError};
use microlm_tests::{arena, converted, ModelFile};

#[test]
fn plan_is_exact_and_itemized() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let c = *model.config();
    let rows = c.n_layers * 128;
    // i8 adds the query head as i16 (2 bytes a value) for the integer Q·K.
    let query = c.head_size() * 2;
    for (kv, value_bytes, scale_bytes, query_bytes) in
        [(KvDtype::F32, 4, 0, 0), (KvDtype::F16, 2, 0, 0), (KvDtype::I8, 1, 4, query)]
    {
        let plan = model.plan(128, kv).unwrap();
        assert_eq!(plan.kv, kv);
        assert_eq!(plan.kv_cache, 2 * (rows * c.kv_dim() * value_bytes + rows * scale_bytes) + query_bytes, "{kv}");
        assert_eq!(plan.activations, (4 * c.dim + 2 * c.kv_dim() + 2 * c.hidden_dim + 128 + c.head_size()) * 4);
        assert_eq!(plan.logits, c.vocab_size * 4);
        assert_eq!(plan.sampler, c.vocab_size * 8);
        assert_eq!(plan.total, plan.activations + plan.kv_cache + plan.logits + plan.sampler);

        // Exactly the plan works; one byte less is ArenaTooSmall with both numbers.
        let mut mem = arena(plan.total);
        assert!(Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 128, kv).is_ok(), "{kv}");
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut mem);
        let err = Session::new(&model, &mut bytes[..plan.total - 1], 128, kv).unwrap_err();
        assert_eq!(err, SessionError::ArenaTooSmall { needed: plan.total, given: plan.total - 1 }, "{kv}");
    }
    // Narrower caches need strictly less memory.
    let totals = KvDtype::ALL.map(|kv| model.plan(128, kv).unwrap().total);
    assert!(totals[0] > totals[1] && totals[1] > totals[2], "{totals:?}");
}

#[test]
fn plan_from_header_matches_the_parsed_plan() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let bytes = std::fs::read(converted("f32")).unwrap();
    for kv in KvDtype::ALL {
        for ctx in [1, 100, model.config().seq_len] {
            assert_eq!(microlm::plan_from_header(&bytes, ctx, kv), Ok(model.plan(ctx, kv).unwrap()));
        }
    }
    // The header alone is enough; a cut header, bad magic or bad context is an error value.
    let header_end = 16 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert!(microlm::plan_from_header(&bytes[..header_end], 64, KvDtype::I8).is_ok());
    assert!(microlm::plan_from_header(&bytes[..header_end - 1], 64, KvDtype::I8).is_err());
    assert!(microlm::plan_from_header(b"nope", 64, KvDtype::I8).is_err());
    assert!(microlm::plan_from_header(&[], 64, KvDtype::I8).is_err());
    assert_eq!(
        microlm::plan_from_header(&bytes, 0, KvDtype::F32),
        Err(microlm::PlanError::Session(SessionError::BadContext { requested: 0, max: model.config().seq_len }))
    );
}

#[test]
fn misaligned_arena_and_bad_context_are_errors() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let plan = model.plan(16, KvDtype::F32).unwrap();
    let mut mem = arena(plan.total + 4);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut mem);
    assert_eq!(Session::new(&model, &mut bytes[1..], 16, KvDtype::F32).unwrap_err(), SessionError::ArenaMisaligned);
    let seq_len = model.config().seq_len;
    assert_eq!(model.plan(0, KvDtype::F32).unwrap_err(), SessionError::BadContext { requested: 0, max: seq_len });
    assert_eq!(
        model.plan(seq_len + 1, KvDtype::F32).unwrap_err(),
        SessionError::BadContext { requested: seq_len + 1, max: seq_len }
    );
}

#[test]
fn forward_rejects_bad_tokens_and_positions() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let plan = model.plan(4, KvDtype::F32).unwrap();
    let mut mem = arena(plan.total);
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 4, KvDtype::F32).unwrap();
    assert_eq!(session.forward(512, 0).unwrap_err(), SessionError::TokenOutOfRange { token: 512, vocab_size: 512 });
    assert_eq!(session.forward(1, 4).unwrap_err(), SessionError::ContextFull { ctx_len: 4 });
    assert!(session.forward(1, 3).is_ok());
}

#[test]
fn generation_checks_the_prompt() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let plan = model.plan(4, KvDtype::F32).unwrap();
    let mut mem = arena(plan.total);
    let session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 4, KvDtype::F32).unwrap();
    assert_eq!(Generation::new(&session, &[], 10).unwrap_err(), SessionError::EmptyPrompt);
    assert_eq!(
        Generation::new(&session, &[1, 5, 6, 7, 8], 10).unwrap_err(),
        SessionError::PromptTooLong { tokens: 5, ctx_len: 4 }
    );
    assert_eq!(
        Generation::new(&session, &[1, 9999], 10).unwrap_err(),
        SessionError::TokenOutOfRange { token: 9999, vocab_size: 512 }
    );
}

#[test]
fn context_full_is_reported_as_a_value() {
    use microlm::{Sampler, SamplerConfig, Step, Stop};
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let plan = model.plan(8, KvDtype::F32).unwrap();
    let mut mem = arena(plan.total);
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 8, KvDtype::F32).unwrap();
    let mut sampler = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() }, 512).unwrap();
    let mut generation = Generation::new(&session, &[1], 100).unwrap();
    let mut tokens = 0;
    let stop = loop {
        match generation.step(&mut session, &mut sampler).unwrap() {
            Step::Token { .. } => tokens += 1,
            Step::Done(stop) => break stop,
        }
    };
    assert_eq!((stop, tokens), (Stop::ContextFull, 8));
    assert_eq!(generation.step(&mut session, &mut sampler).unwrap(), Step::Done(Stop::ContextFull));
}

#[test]
fn zero_steps_means_the_whole_context() {
    use microlm::{Sampler, SamplerConfig, Step, Stop};
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let plan = model.plan(5, KvDtype::F32).unwrap();
    let mut mem = arena(plan.total);
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 5, KvDtype::F32).unwrap();
    let mut sampler = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() }, 512).unwrap();
    let mut generation = Generation::new(&session, &[1], 0).unwrap();
    let mut tokens = 0;
    while let Step::Token { .. } = generation.step(&mut session, &mut sampler).unwrap() {
        tokens += 1;
    }
    assert_eq!(tokens, 5);
    // Every position of the context ran: the context is full, whatever -n 0 is called.
    assert_eq!(generation.step(&mut session, &mut sampler).unwrap(), Step::Done(Stop::ContextFull));

    // In window mode the context is never full: 0 steps run as many positions as it holds.
    let mut generation = Generation::new(&session, &[1], 0).unwrap().with_window(2);
    let mut tokens = 0;
    while let Step::Token { .. } = generation.step(&mut session, &mut sampler).unwrap() {
        tokens += 1;
    }
    assert_eq!(tokens, 5);
    assert_eq!(generation.step(&mut session, &mut sampler).unwrap(), Step::Done(Stop::Steps));
}
