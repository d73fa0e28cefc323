//! Memory planning and the bounds a caller can set wrongly, each a specific error.

use microlm::{Generation, Session, SessionError};
use microlm_tests::{arena, converted, ModelFile};

#[test]
fn plan_is_exact_and_itemized() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let c = *model.config();
    let plan = model.plan(128).unwrap();
    assert_eq!(plan.kv_cache, 2 * c.n_layers * 128 * c.kv_dim() * 4);
    assert_eq!(plan.activations, (4 * c.dim + 2 * c.hidden_dim + 128) * 4);
    assert_eq!(plan.logits, c.vocab_size * 4);
    assert_eq!(plan.sampler, c.vocab_size * 8);
    assert_eq!(plan.total, plan.activations + plan.kv_cache + plan.logits + plan.sampler);

    // Exactly the plan works; one 4-byte word less is ArenaTooSmall with both numbers.
    let mut mem = arena(plan.total);
    assert!(Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 128).is_ok());
    let mut small = arena(plan.total - 4);
    let err = Session::new(&model, bytemuck::cast_slice_mut(&mut small), 128).unwrap_err();
    assert_eq!(err, SessionError::ArenaTooSmall { needed: plan.total, given: plan.total - 4 });
}

#[test]
fn misaligned_arena_and_bad_context_are_errors() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let plan = model.plan(16).unwrap();
    let mut mem = arena(plan.total + 4);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut mem);
    assert_eq!(Session::new(&model, &mut bytes[1..], 16).unwrap_err(), SessionError::ArenaMisaligned);
    let seq_len = model.config().seq_len;
    assert_eq!(model.plan(0).unwrap_err(), SessionError::BadContext { requested: 0, max: seq_len });
    assert_eq!(model.plan(seq_len + 1).unwrap_err(), SessionError::BadContext { requested: seq_len + 1, max: seq_len });
}

#[test]
fn forward_rejects_bad_tokens_and_positions() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let plan = model.plan(4).unwrap();
    let mut mem = arena(plan.total);
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 4).unwrap();
    assert_eq!(session.forward(512, 0).unwrap_err(), SessionError::TokenOutOfRange { token: 512, vocab_size: 512 });
    assert_eq!(session.forward(1, 4).unwrap_err(), SessionError::ContextFull { ctx_len: 4 });
    assert!(session.forward(1, 3).is_ok());
}

#[test]
fn generation_checks_the_prompt() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let plan = model.plan(4).unwrap();
    let mut mem = arena(plan.total);
    let session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 4).unwrap();
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
    let plan = model.plan(8).unwrap();
    let mut mem = arena(plan.total);
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 8).unwrap();
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
    let plan = model.plan(5).unwrap();
    let mut mem = arena(plan.total);
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), 5).unwrap();
    let mut sampler = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() }, 512).unwrap();
    let mut generation = Generation::new(&session, &[1], 0).unwrap();
    let mut tokens = 0;
    while let Step::Token { .. } = generation.step(&mut session, &mut sampler).unwrap() {
        tokens += 1;
    }
    assert_eq!(tokens, 5);
    assert_eq!(generation.step(&mut session, &mut sampler).unwrap(), Step::Done(Stop::Steps));
}
