//! Mutants: one named barrier dropped, or one named rule broken.
//!
//! Model backends ([`hal::loom`](crate::hal) under `--cfg loom`, `hal::shuttle` with the
//! `shuttle` feature) take an optional [`Mutant`] per execution and apply it at run time: the
//! barrier's fence is not issued ([`Hal::barrier`](crate::hal::Hal::barrier)), or the rule is
//! reported as not kept ([`Hal::keeps`](crate::hal::Hal::keeps)). Production backends never
//! see one.

use crate::barrier::Protocol;
use crate::{Barrier, Rule};
use core::fmt;

/// A single change to the protocol code, made at run time by a model HAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutant {
    /// The named barrier is not issued.
    Barrier(Barrier),
    /// The named lock, check or ordering step is not kept.
    Rule(Rule),
}

impl Mutant {
    /// Every mutant: each barrier, then each rule.
    pub fn all() -> impl Iterator<Item = Mutant> {
        Barrier::ALL.iter().map(|b| Mutant::Barrier(*b)).chain(Rule::ALL.iter().map(|r| Mutant::Rule(*r)))
    }

    /// The variant name (barrier and rule names do not collide).
    pub const fn name(self) -> &'static str {
        match self {
            Mutant::Barrier(b) => b.name(),
            Mutant::Rule(r) => r.name(),
        }
    }

    /// `"barrier"` or `"rule"`.
    pub const fn kind(self) -> &'static str {
        match self {
            Mutant::Barrier(_) => "barrier",
            Mutant::Rule(_) => "rule",
        }
    }

    /// The protocol the mutated point belongs to.
    pub const fn protocol(self) -> Protocol {
        match self {
            Mutant::Barrier(b) => b.protocol(),
            Mutant::Rule(r) => r.protocol(),
        }
    }

    /// The mutant with this variant name.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::all().find(|m| m.name() == name)
    }
}

impl fmt::Display for Mutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for m in Mutant::all() {
            assert_eq!(Mutant::from_name(m.name()), Some(m), "{m} collides with another mutant");
        }
    }
}
