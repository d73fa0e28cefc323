//! Token-at-a-time generation with llama2.c's step semantics, for a host loop
//! or a board's main loop alike.

use crate::error::{SamplerError, SessionError};
use crate::sampler::Sampler;
use crate::session::Session;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stop {
    /// The requested number of steps (positions, prompt included) was reached.
    /// Steps of 0 (the whole context) end with [`Stop::ContextFull`] instead,
    /// or in window mode with this after as many positions as the context holds.
    Steps,
    /// The model produced BOS (llama2.c's stop condition).
    Bos,
    /// The model produced EOS.
    Eos,
    /// Every position of the KV cache is used.
    ContextFull,
}

/// What one call to [`Generation::step`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Step {
    /// A token to print: decode it with `Tokenizer::decode(prev, token)`.
    Token {
        /// The token before it.
        prev: u32,
        /// The new token.
        token: u32,
        /// True while the token comes from the prompt rather than the sampler.
        forced: bool,
    },
    /// Generation is over; further calls return the same value.
    Done(Stop),
}

/// An error during generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GenerateError {
    /// The forward pass failed.
    Session(SessionError),
    /// The sampler failed.
    Sampler(SamplerError),
    /// The forward pass produced a NaN or infinite logit.
    NonFiniteLogits {
        /// The position whose logits these are.
        position: usize,
        /// The first token whose logit is not finite.
        index: usize,
    },
}

impl From<SessionError> for GenerateError {
    fn from(e: SessionError) -> Self {
        GenerateError::Session(e)
    }
}

impl From<SamplerError> for GenerateError {
    fn from(e: SamplerError) -> Self {
        GenerateError::Sampler(e)
    }
}

impl core::fmt::Display for GenerateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GenerateError::Session(e) => e.fmt(f),
            GenerateError::Sampler(e) => e.fmt(f),
            GenerateError::NonFiniteLogits { position, index } => write!(
                f,
                "the model produced a non-finite logit (token {index}) at position {position}: its weights overflow"
            ),
        }
    }
}

impl core::error::Error for GenerateError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            GenerateError::Session(e) => Some(e),
            GenerateError::Sampler(e) => Some(e),
            GenerateError::NonFiniteLogits { .. } => None,
        }
    }
}

/// The generation loop as a state machine: prompt forcing, then sampling.
#[derive(Debug)]
pub struct Generation<'p> {
    /// Prompt token ids, BOS first.
    prompt: &'p [u32],
    /// Positions to run, prompt included (llama2.c `steps`).
    steps: usize,
    /// `steps` was 0: run the whole context (it is then the context length).
    whole_context: bool,
    /// Next position to run.
    pos: usize,
    /// Token to feed at `pos`.
    token: u32,
    bos: u32,
    eos: u32,
    /// Window mode: the number of attention sinks (see [`Generation::with_window`]).
    window: Option<usize>,
    done: Option<Stop>,
}

impl<'p> Generation<'p> {
    /// Starts a generation of `steps` positions (0 means the whole context: it
    /// stops with [`Stop::ContextFull`], as asked) from `prompt` (BOS first) in
    /// `session`.
    pub fn new(session: &Session<'_>, prompt: &'p [u32], steps: usize) -> Result<Generation<'p>, SessionError> {
        let ctx_len = session.ctx_len();
        let &first = prompt.first().ok_or(SessionError::EmptyPrompt)?;
        if prompt.len() > ctx_len {
            return Err(SessionError::PromptTooLong { tokens: prompt.len(), ctx_len });
        }
        let tok = session.model().tokenizer();
        let vocab_size = tok.vocab_size();
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(SessionError::TokenOutOfRange { token: bad, vocab_size });
        }
        let whole_context = steps == 0;
        let steps = if whole_context { ctx_len } else { steps };
        Ok(Generation {
            prompt,
            steps,
            whole_context,
            pos: 0,
            token: first,
            bos: tok.bos_id(),
            eos: tok.eos_id(),
            window: None,
            done: None,
        })
    }

    /// Keeps generating when the cache is full instead of stopping with
    /// [`Stop::ContextFull`]: the first `sinks` positions stay cached (attention
    /// sinks, 4 is typical) and the other slots hold the most recent positions
    /// (see [`Session::forward_window`]). Memory stays the session's arena.
    /// `sinks` must be below the context length (else the first step fails with
    /// `SessionError::BadWindow`).
    pub fn with_window(mut self, sinks: usize) -> Generation<'p> {
        self.window = Some(sinks);
        self
    }

    /// Positions run so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Runs one position: returns the next token (forced from the prompt or
    /// sampled) or why generation stopped.
    pub fn step(&mut self, session: &mut Session<'_>, sampler: &mut Sampler) -> Result<Step, GenerateError> {
        if let Some(stop) = self.done {
            return Ok(Step::Done(stop));
        }
        if self.pos >= self.steps {
            // Steps of 0 asked for the whole context, and it is full: say that, not "steps reached".
            let stop = if self.whole_context && self.window.is_none() { Stop::ContextFull } else { Stop::Steps };
            return Ok(self.finish(stop));
        }
        // Without a window, a position below the context runs exactly as
        // `forward` (the window's slots are the linear ones there): one copy
        // of the forward pass serves both modes.
        let sinks = match self.window {
            Some(sinks) => sinks,
            None if self.pos >= session.ctx_len() => return Ok(self.finish(Stop::ContextFull)),
            None => 0,
        };
        session.forward_window(self.token, self.pos, sinks)?;
        let forced = self.pos + 1 < self.prompt.len();
        let next = match self.prompt.get(self.pos + 1) {
            Some(&t) => t,
            None => {
                let (logits, scratch) = session.logits_and_scratch();
                match sampler.sample(logits, scratch) {
                    Ok(t) => t,
                    Err(SamplerError::NonFiniteLogit { index }) => {
                        return Err(GenerateError::NonFiniteLogits { position: self.pos, index })
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        self.pos += 1;
        if !forced && next == self.bos {
            return Ok(self.finish(Stop::Bos));
        }
        if !forced && next == self.eos {
            return Ok(self.finish(Stop::Eos));
        }
        let prev = core::mem::replace(&mut self.token, next);
        Ok(Step::Token { prev, token: next, forced })
    }

    fn finish(&mut self, stop: Stop) -> Step {
        self.done = Some(stop);
        Step::Done(stop)
    }
}
