//! The replay: a trace's steps matched, one by one, to a path of a projection's model.

use super::{FaultSetup, Projected, Projection, State, TraceStep};
use stateright::Model;
use std::collections::HashSet;
use std::fmt;

/// The first step of a trace that the model does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Its index in the trace.
    pub index: usize,
    /// The step.
    pub step: TraceStep,
    /// The model thread of its CPU, when it has one.
    pub thread: Option<String>,
    /// Why: the reasons each candidate failed.
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = self.step.cpu.map(|c| format!("CPU {c}")).unwrap_or_else(|| "setup".into());
        let thread = self.thread.as_ref().map(|t| format!(" = {t}")).unwrap_or_default();
        write!(
            f,
            "step #{} [{cpu}{thread}] {}: not allowed by the model: {}",
            self.index, self.step.step, self.reason
        )
    }
}

impl std::error::Error for Mismatch {}

/// A trace that replayed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Steps matched to a model action.
    pub actions: usize,
    /// Steps observed (values checked, no transition).
    pub observed: usize,
    /// Steps abstracted.
    pub abstracted: usize,
    /// Steps of the setup and final-check phases, not replayed.
    pub outside_roles: usize,
    /// The most model states the replay held at once (paths the trace could still be).
    pub max_states: usize,
    /// Lagging steps ([`Projection::may_lag`]) matched earlier than they were reported.
    pub lagged: usize,
}

/// Every state reachable from `states` by silent actions.
fn closure<P: Projection>(p: &P, states: HashSet<State<P>>) -> HashSet<State<P>> {
    let model = p.model();
    let mut seen = states.clone();
    let mut todo: Vec<State<P>> = states.into_iter().collect();
    let mut acts = Vec::new();
    while let Some(s) = todo.pop() {
        acts.clear();
        model.actions(&s, &mut acts);
        for a in acts.iter().filter(|a| p.silent(&s, a)) {
            if let Some(n) = model.next_state(&s, a.clone()) {
                if seen.insert(n.clone()) {
                    todo.push(n);
                }
            }
        }
    }
    seen
}

/// Keeps the first few distinct reasons.
fn reasons(mut why: Vec<String>) -> String {
    why.sort();
    why.dedup();
    let more = why.len().saturating_sub(4);
    why.truncate(4);
    let mut s = why.join("; ");
    if more > 0 {
        s.push_str(&format!("; and {more} more"));
    }
    s
}

/// Replays `trace` in the fault model of `setup` ([`replay`]).
pub fn replay_fault(setup: &FaultSetup, trace: &[TraceStep]) -> Result<Replayed, Mismatch> {
    replay(setup, trace)
}

/// Which steps of a trace may have been reported late: after reports of other CPUs that came
/// after the access the step reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lag {
    /// The projection's own [`Projection::may_lag`] steps: a scheduled checker's trace (shuttle,
    /// loom) has a report right after its access except where the projection says otherwise.
    Projection,
    /// Every step: on real threads another CPU can report between any access and its report, so
    /// each access lies somewhere after its thread's previous report and before its own.
    Every,
}

/// Replays `trace` in `p`'s model, from its initial state ([`replay_lagging`] with
/// [`Lag::Projection`]).
pub fn replay<P: Projection>(p: &P, trace: &[TraceStep]) -> Result<Replayed, Mismatch> {
    replay_lagging(p, trace, Lag::Projection)
}

/// Replays `trace` in `p`'s model, from its initial state. `Ok` with counts when every step is
/// allowed; the first step the model does not allow (or whose values disagree with every path
/// the model allows) otherwise. Steps that may lag (`lag`) are also tried at each earlier
/// position after their thread's previous step; the trace conforms when one placement does, and
/// the mismatch reported is that of the trace as recorded.
pub fn replay_lagging<P: Projection>(p: &P, trace: &[TraceStep], lag: Lag) -> Result<Replayed, Mismatch> {
    let first = match replay_once(p, trace) {
        Ok(r) => return Ok(r),
        Err(m) => m,
    };
    let mut trace = trace.to_vec();
    match replay_lagged(p, lag, &mut trace, 0, first.index) {
        Some(r) => Ok(r),
        None => Err(first),
    }
}

/// Tries the earlier placements of each lagging step at index `from` or later, moved to at most
/// `fail` (the index where the current placement fails), recursively.
fn replay_lagged<P: Projection>(
    p: &P,
    lag: Lag,
    trace: &mut Vec<TraceStep>,
    from: usize,
    fail: usize,
) -> Option<Replayed> {
    for j in from..trace.len() {
        let ts = trace[j];
        if ts.cpu.is_none() || (lag == Lag::Projection && !p.may_lag(&ts.step)) {
            continue;
        }
        // Its thread's previous step, unless the projection lets it pass that one.
        let own = trace[..j]
            .iter()
            .rposition(|t| t.cpu == ts.cpu && !p.may_pass(&ts.step, &t.step))
            .map_or(0, |i| i + 1);
        for k in (own..j.min(fail + 1)).rev() {
            let step = trace.remove(j);
            trace.insert(k, step);
            let found = match replay_once(p, trace) {
                Ok(mut r) => {
                    r.lagged += 1;
                    Some(r)
                }
                Err(m) if m.index > k => replay_lagged(p, lag, trace, j + 1, m.index).map(|mut r| {
                    r.lagged += 1;
                    r
                }),
                Err(_) => None,
            };
            let step = trace.remove(k);
            trace.insert(j, step);
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// One replay of `trace`, in its order.
fn replay_once<P: Projection>(p: &P, trace: &[TraceStep]) -> Result<Replayed, Mismatch> {
    let model = p.model();
    let mut states = closure(p, p.init_states().into_iter().collect());
    let mut out = Replayed { max_states: states.len(), ..Replayed::default() };
    let mut acts = Vec::new();
    for (index, ts) in trace.iter().enumerate() {
        let Some(cpu) = ts.cpu else {
            out.outside_roles += 1;
            continue;
        };
        let fail = |thread: Option<String>, reason: String| Mismatch { index, step: *ts, thread, reason };
        let Some(thread) = p.thread(cpu) else {
            return Err(fail(None, format!("CPU {cpu} plays no thread of the model")));
        };
        let name = Some(thread.to_string());
        let mut next = HashSet::new();
        let mut why = Vec::new();
        match p.project(&ts.step) {
            Projected::Abstracted(_) => {
                out.abstracted += 1;
                continue;
            }
            Projected::Outside(reason) => return Err(fail(name, format!("outside the model: {reason}"))),
            Projected::Observe => {
                for s in &states {
                    match p.check_observe(s, thread, &ts.step) {
                        Ok(()) => {
                            next.insert(s.clone());
                        }
                        Err(e) => why.push(e),
                    }
                }
                out.observed += 1;
            }
            Projected::Action(want) => {
                for s in &states {
                    acts.clear();
                    model.actions(s, &mut acts);
                    let mut matched = false;
                    for a in acts.iter().filter(|a| !p.silent(s, a) && p.reports(a, want, thread, &ts.step)) {
                        matched = true;
                        let Some(n) = model.next_state(s, a.clone()) else { continue };
                        match p.check_action(thread, s, &n, &ts.step, &trace[..index]) {
                            Ok(()) => {
                                next.insert(n);
                            }
                            Err(e) => why.push(format!("{}: {e}", model.format_action(a))),
                        }
                    }
                    if !matched {
                        let enabled: Vec<String> =
                            acts.iter().filter(|a| !p.silent(s, a)).map(|a| model.format_action(a)).collect();
                        if !enabled.is_empty() {
                            why.push(format!(
                                "{thread} cannot take {want} here (the model enables: {})",
                                enabled.join(", ")
                            ));
                        }
                    }
                }
                out.actions += 1;
            }
        }
        if next.is_empty() && why.is_empty() {
            why.push(format!("{thread} cannot take this step here (the model enables no visible step)"));
        }
        if next.is_empty() {
            // A step the model enables but whose values disagree says more than the states
            // where the step is not enabled at all.
            let (disagree, disabled): (Vec<String>, Vec<String>) =
                why.into_iter().partition(|w| !w.contains(" cannot take "));
            let why = if disagree.is_empty() { disabled } else { disagree };
            return Err(fail(name, reasons(why)));
        }
        states = closure(p, next);
        out.max_states = out.max_states.max(states.len());
    }
    Ok(out)
}
