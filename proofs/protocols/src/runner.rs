//! Running one model through stateright and collecting what it found.

use serde::Serialize;
use stateright::{Checker, Expectation, HasDiscoveries, Model, Representative};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

/// How to explore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Search {
    /// Breadth-first, no symmetry reduction: a counterexample found is a shortest one.
    Bfs,
    /// Depth-first with stateright's symmetry reduction (`checker().symmetry()`, which
    /// stateright 0.31 supports in its DFS checker only): each state is fingerprinted by its
    /// [`Representative`], the state with identical threads sorted.
    DfsSymmetry,
}

/// A property the checker found an example or counterexample for.
#[derive(Clone, Debug, Serialize)]
pub struct Discovery {
    /// The property's name.
    pub property: String,
    /// `true` for a violated `always`/`eventually` property, `false` for a `sometimes` example.
    pub failure: bool,
    /// The path's actions, in order, as readable protocol steps.
    pub steps: Vec<String>,
}

/// What one exploration found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The search used.
    pub search: Search,
    /// States generated (stateright's `state_count`).
    pub states: usize,
    /// Distinct states (after symmetry reduction, when used).
    pub unique_states: usize,
    /// The deepest path explored.
    pub max_depth: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Examples and counterexamples, sorted by property name.
    pub discoveries: Vec<Discovery>,
    /// The model's `sometimes` properties (each should have an example in a full run).
    pub sometimes: Vec<String>,
}

impl Report {
    /// The names of the properties that failed.
    pub fn failures(&self) -> Vec<&str> {
        self.discoveries.iter().filter(|d| d.failure).map(|d| d.property.as_str()).collect()
    }

    /// The counterexample for `property`, if it failed.
    pub fn counterexample(&self, property: &str) -> Option<&Discovery> {
        self.discoveries.iter().find(|d| d.failure && d.property == property)
    }

    /// The names of the `sometimes` properties an example was found for.
    pub fn examples(&self) -> Vec<&str> {
        self.discoveries.iter().filter(|d| !d.failure).map(|d| d.property.as_str()).collect()
    }

    /// The `sometimes` properties no example was found for (a vacuous model has some).
    pub fn missing_examples(&self) -> Vec<&str> {
        let found = self.examples();
        self.sometimes.iter().map(String::as_str).filter(|p| !found.contains(p)).collect()
    }
}

/// Explores `model` exhaustively (one thread, so runs are deterministic), or, when `stop_at`
/// names a property, until that property has a discovery.
///
/// With [`Search::Bfs`] and `stop_at`, the counterexample returned is a shortest one.
/// stateright 0.31's BFS visits states in breadth-first order, but it records a property's
/// discovery again for every later failing state of the same block of 1,500 states, so the path
/// it returns can be longer than the shortest. This function therefore re-runs the search with
/// `target_max_depth` just below the length found, until no shorter counterexample exists; the
/// statistics reported are those of the first run.
pub fn explore<M>(model: M, search: Search, stop_at: Option<&'static str>) -> Report
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: Hash + Send + Sync + Clone + PartialEq + Debug + Representative + 'static,
    M::Action: Clone + PartialEq + Debug,
{
    let mut report = explore_once(model.clone(), search, stop_at, None);
    let (Search::Bfs, Some(property)) = (search, stop_at) else { return report };
    while let Some(found) = report.counterexample(property).map(|d| d.steps.len()) {
        if found == 0 {
            break;
        }
        // Paths of at most `found - 1` steps: states of depth at most `found` (depth 1 is the
        // initial state), i.e. a target depth of `found + 1`.
        let shorter = explore_once(model.clone(), search, stop_at, Some(found + 1));
        match shorter.counterexample(property) {
            Some(d) if d.steps.len() < found => {
                let d = d.clone();
                report.discoveries.retain(|x| x.property != property);
                report.discoveries.push(d);
                report.discoveries.sort_by(|a, b| a.property.cmp(&b.property));
            }
            _ => break,
        }
    }
    report
}

fn explore_once<M>(
    model: M,
    search: Search,
    stop_at: Option<&'static str>,
    max_depth: Option<usize>,
) -> Report
where
    M: Model + Send + Sync + 'static,
    M::State: Hash + Send + Sync + Clone + PartialEq + Debug + Representative + 'static,
    M::Action: Clone + PartialEq + Debug,
{
    let failing: BTreeSet<&'static str> =
        model.properties().iter().filter(|p| p.expectation.discovery_is_failure()).map(|p| p.name).collect();
    let sometimes: Vec<String> = model
        .properties()
        .iter()
        .filter(|p| p.expectation == Expectation::Sometimes)
        .map(|p| p.name.to_string())
        .collect();
    let mut builder = model.checker().threads(1);
    if let Some(p) = stop_at {
        builder = builder.finish_when(HasDiscoveries::AnyOf([p].into_iter().collect()));
    }
    if let Some(d) = max_depth {
        builder = builder.target_max_depth(d);
    }
    let started = Instant::now();
    let mut report = match search {
        Search::Bfs => summarize(builder.spawn_bfs().join(), search, started, &failing),
        Search::DfsSymmetry => summarize(builder.symmetry().spawn_dfs().join(), search, started, &failing),
    };
    report.sometimes = sometimes;
    report
}

fn summarize<M, C>(checker: C, search: Search, started: Instant, failing: &BTreeSet<&'static str>) -> Report
where
    M: Model,
    M::State: Clone + PartialEq,
    M::Action: Clone + PartialEq + Debug,
    C: Checker<M>,
{
    let seconds = started.elapsed().as_secs_f64();
    let model = checker.model();
    let mut discoveries: Vec<Discovery> = checker
        .discoveries()
        .into_iter()
        .map(|(name, path)| Discovery {
            property: name.to_string(),
            failure: failing.contains(name),
            steps: path.into_actions().iter().map(|a| model.format_action(a)).collect(),
        })
        .collect();
    discoveries.sort_by(|a, b| a.property.cmp(&b.property));
    Report {
        search,
        states: checker.state_count(),
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        seconds,
        discoveries,
        sometimes: Vec::new(),
    }
}
