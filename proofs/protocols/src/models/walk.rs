//! P5: lockless page-table walkers vs a zapper that unlinks and frees a table page.
//!
//! **Threads.** `walkers` identical vCPUs, each doing one lockless walk, and one zapper. The
//! page table is a root whose one entry links a table page; the zapper unlinks it and frees
//! it. A walker that read the link dereferences the table page; doing so after the free is the
//! violation.
//!
//! **IPI-and-wait** ([`Reclaim::Ipi`], `core/src/walk.rs`, `flush_remote_tlbs` in
//! `core/src/vcpu.rs`, `ZapList::commit`). Walker: L1 disable interrupts; L2 `mode =
//! READING_SHADOW_PAGE_TABLES`; `Mb` the full barrier of `smp_store_mb`
//! (`WalkBeginModeBeforeSpteReads`); `ReadRoot` (read the link); `ReadTable` (dereference the
//! table page, if linked); L3 `mode = OUTSIDE`; L4 enable interrupts. `TakeIpi`: a walker with
//! interrupts on takes a pending IPI (acks it) — at any point, as an IPI is taken at once when
//! interrupts are on. Zapper: `Unlink` (under `mmu_lock`, which walkers do not take); `Mb`
//! (`KickRequestBeforeModeRead`); `ReadMode(v)` for each walker, in any order (KVM's loop has
//! one order; any order covers it): a walker not `OUTSIDE` gets an IPI; `WaitAcks` until every
//! IPI was taken; `Free`.
//!
//! **Epoch/RCU** ([`Reclaim::Epoch`], `core/src/epoch.rs`, `zap_epoch`). Walker: `Pin`
//! (announce the read-side section), `Mb` (crossbeam's `pin` fence), `ReadRoot`, `ReadTable`,
//! `Unpin`. Zapper: `ZPin`, `Unlink`, `Flush` (remote TLB flush: clears every guest TLB's
//! cached pointer to the table page; a full barrier), `Defer` (the free is queued: a full
//! barrier, then the grace period scans), `ScanReader(v)` (the grace period reads walker `v`'s
//! pin; a pinned walker must unpin before the free), `ZUnpin`, `Free` (the grace period is
//! over: every scanned pinned walker and the zapper have unpinned). The guest's hardware walker
//! is one more reader, not an RCU one: `GuestFill` caches the table page's address in a TLB
//! (paging-structure cache) while it is linked, `GuestUse` dereferences the cached address.
//! Flushing before unpinning (`FlushBeforeUnpin`) is what keeps `GuestUse` off a freed page.
//!
//! **Memory.** Under [`Memory::Tso`] every thread's stores (the mode
//! or pin store, the unlink, the mode-back store) go through its FIFO store buffer; loads
//! forward from the own buffer; `Drain(t)` moves thread `t`'s oldest store to memory; `Mb`,
//! `Flush` and `Defer` wait for the own buffer to be empty. This is where the full barriers
//! matter: the walker's mode store vs its SPTE reads and the zapper's unlink vs its mode reads
//! are the store-buffering (SB) pair.
//!
//! **Abstracted away.** One table page, one level; the walk is two reads; interrupt delivery is
//! not a barrier on the target; `mmu_lock` (only the zapper takes it); crossbeam's epoch
//! counter (modelled as the RCU grace period it implements); the walkers' own TLB use in the
//! IPI scheme (the same IPI-and-wait covers guest mode, checked by loom's `sb-entry`).
//!
//! **Properties.** `no-walker-reads-freed-table`: no `ReadTable` dereferences a freed page.
//! `no-guest-uses-freed-table` (epoch): no `GuestUse` dereferences a freed page.

use crate::tso::{Memory, StoreBuffer};
use serde::Serialize;
use stateright::{Model, Property, Representative};
use std::fmt;

/// Which reclamation scheme the zapper uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Reclaim {
    /// IPI-and-wait (`kvm_flush_remote_tlbs` with `KVM_REQUEST_WAIT`), shadow MMU.
    Ipi,
    /// Epoch/RCU deferral, TDP MMU.
    Epoch,
}

/// A rule of P5 a mutant breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum WalkMutant {
    /// The walker does not publish `READING_SHADOW_PAGE_TABLES` (no L2 store).
    NoModeStore,
    /// The walker leaves interrupts on (`Rule::WalkDisablesInterrupts`).
    NoIrqDisable,
    /// The flush IPIs only vCPUs in guest mode, not readers (`Rule::FlushWaitsForReaders`).
    IpiOnlyInGuest,
    /// The zapper frees right after the unlink, before its flush (`Rule::FreeAfterFlush`: core's
    /// mutant calls `free_all` before `flush_remote_tlbs`).
    FreeBeforeFlush,
    /// TSO: no full barrier after the walker's mode store (`WalkBeginModeBeforeSpteReads`).
    NoWalkerMb,
    /// TSO: no full barrier between the zapper's unlink and its mode reads
    /// (`KickRequestBeforeModeRead`).
    NoZapperMb,
    /// Epoch: the zapper unpins before it flushes (`Rule::FlushBeforeUnpin`).
    UnpinBeforeFlush,
    /// Epoch, TSO: no full barrier after the walker's pin store.
    NoPinMb,
}

/// The walkers-vs-zapper model.
#[derive(Clone, Debug)]
pub struct WalkModel {
    /// Number of walkers.
    pub walkers: usize,
    /// The scheme.
    pub reclaim: Reclaim,
    /// The memory model.
    pub memory: Memory,
    /// The broken rule, if any.
    pub mutant: Option<WalkMutant>,
}

/// A walker's program counter: the index of its next step in [`WalkModel::walker_program`].
pub type Pc = u8;

/// A shared variable a store buffer may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Var {
    /// The walker's own `mode` (IPI scheme: 1 = READING) or pin flag (epoch: 1 = pinned).
    Own,
    /// The root's link to the table page (1 = linked).
    Link,
}

/// One walker's state, including what the zapper knows or did about it (so the whole slot
/// can be permuted with the walker).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalkerState {
    /// Next step.
    pub pc: Pc,
    /// Interrupts disabled.
    pub irq_off: bool,
    /// Its mode / pin flag in memory.
    pub own_mem: u8,
    /// Its store buffer.
    pub buf: StoreBuffer<Var>,
    /// What `ReadRoot` returned.
    pub saw_link: bool,
    /// It dereferenced a freed table page.
    pub read_freed: bool,
    /// The zapper has read its mode / pin.
    pub scanned: bool,
    /// An IPI is pending for it (IPI scheme) / the grace period waits for it (epoch).
    pub waited_for: bool,
}

/// Zapper steps, in program order (the mutants reorder or drop some).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ZStep {
    /// Epoch: pin (`rcu_read_lock`; `ReclaimHandle::zap`'s pin).
    ZPin,
    /// Z1: unlink the table page (under `mmu_lock`).
    Unlink,
    /// Q3's full barrier (`KickRequestBeforeModeRead`).
    Mb,
    /// Q3/Q4: read a walker's mode (IPI) / the grace period scans a walker's pin (epoch); one
    /// action per walker, in any order.
    Scan,
    /// Q5: wait until every IPI sent was taken.
    WaitAcks,
    /// Epoch: flush remote TLBs (a full barrier).
    Flush,
    /// Epoch: queue the free (`call_rcu` / `defer_destroy`; a full barrier).
    Defer,
    /// Epoch: unpin (`rcu_read_unlock`).
    ZUnpin,
    /// Z2 (IPI scheme): free the table page.
    Free,
    /// Finished.
    Done,
}

/// Walker steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WStep {
    /// L1: disable interrupts (IPI scheme).
    IrqOff,
    /// L2's store: `mode = READING_SHADOW_PAGE_TABLES` (IPI) / pin (epoch).
    Announce,
    /// L2's full barrier (`WalkBeginModeBeforeSpteReads`; crossbeam's `pin` fence).
    Mb,
    /// The walk's first read: the root SPTE (the link to the table page).
    ReadRoot,
    /// The walk's second read: the table page, if the link was present.
    ReadTable,
    /// L3: `mode = OUTSIDE` / unpin (a release store; TSO stores are ordered anyway).
    Retire,
    /// L4: enable interrupts (IPI scheme); a pending IPI can be taken now.
    IrqOn,
}

/// The whole state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WalkState {
    /// Walkers (interchangeable).
    pub walkers: Vec<WalkerState>,
    /// Zapper's next step index in [`WalkModel::zapper_program`].
    pub zpc: u8,
    /// Zapper's store buffer.
    pub zbuf: StoreBuffer<Var>,
    /// Zapper pinned (epoch).
    pub zpinned: bool,
    /// The link in memory.
    pub link: bool,
    /// The table page was freed.
    pub freed: bool,
    /// Epoch: the free is queued.
    pub deferred: bool,
    /// Epoch: the guest's TLB caches the table page's address.
    pub tlb: bool,
    /// Epoch: the guest used a cached address of a freed page.
    pub guest_used_freed: bool,
}

impl Representative for WalkState {
    fn representative(&self) -> Self {
        let mut s = self.clone();
        s.walkers.sort();
        s
    }
}

/// A step of a walker, the zapper, the guest or the memory subsystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalkAction {
    /// A walker step.
    Walker(usize, WStep),
    /// Walker takes a pending IPI (interrupts on).
    TakeIpi(usize),
    /// A zapper step; `Scan` reads walker `.1`.
    Zapper(ZStep, usize),
    /// TSO: walker's oldest buffered store reaches memory.
    DrainWalker(usize),
    /// TSO: zapper's oldest buffered store reaches memory.
    DrainZapper,
    /// Epoch: the guest's hardware walker caches the table page's address.
    GuestFill,
    /// Epoch: the guest dereferences the cached address.
    GuestUse,
    /// Epoch: the RCU callback frees the table page (grace period over).
    RcuFree,
}

impl fmt::Display for WalkAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalkAction::Walker(v, step) => {
                let s = match step {
                    WStep::IrqOff => "L1 local_irq_disable",
                    WStep::Announce => "L2 mode=READING / pin",
                    WStep::Mb => "full barrier (smp_mb)",
                    WStep::ReadRoot => "read root SPTE (link)",
                    WStep::ReadTable => "read table page",
                    WStep::Retire => "L3 mode=OUTSIDE / unpin",
                    WStep::IrqOn => "L4 local_irq_enable",
                };
                write!(f, "walker{v} {s}")
            }
            WalkAction::TakeIpi(v) => write!(f, "walker{v} takes the IPI (acks)"),
            WalkAction::Zapper(ZStep::Scan, v) => write!(f, "zapper Q3 reads walker{v}'s mode / pin"),
            WalkAction::Zapper(step, _) => {
                let s = match step {
                    ZStep::ZPin => "pins (rcu_read_lock)",
                    ZStep::Unlink => "Z1 unlinks the table page",
                    ZStep::Mb => "Q3 full barrier",
                    ZStep::Scan => "reads a mode / pin",
                    ZStep::WaitAcks => "Q5 waits for the IPI acks",
                    ZStep::Flush => "flushes remote TLBs",
                    ZStep::Defer => "defers the free (call_rcu)",
                    ZStep::ZUnpin => "unpins (rcu_read_unlock)",
                    ZStep::Free => "Z2 frees the table page",
                    ZStep::Done => "done",
                };
                write!(f, "zapper {s}")
            }
            WalkAction::DrainWalker(v) => write!(f, "walker{v}'s store buffer drains one store"),
            WalkAction::DrainZapper => write!(f, "zapper's store buffer drains one store"),
            WalkAction::GuestFill => write!(f, "guest hardware walk caches table page address"),
            WalkAction::GuestUse => write!(f, "guest uses cached table page address"),
            WalkAction::RcuFree => write!(f, "RCU callback frees the table page"),
        }
    }
}

impl WalkModel {
    /// A correct or mutant instance.
    pub fn new(walkers: usize, reclaim: Reclaim, memory: Memory, mutant: Option<WalkMutant>) -> Self {
        WalkModel { walkers, reclaim, memory, mutant }
    }

    fn broken(&self, m: WalkMutant) -> bool {
        self.mutant == Some(m)
    }

    /// The walker's steps, in program order.
    pub fn walker_program(&self) -> Vec<WStep> {
        let mut p = Vec::new();
        if self.reclaim == Reclaim::Ipi && !self.broken(WalkMutant::NoIrqDisable) {
            p.push(WStep::IrqOff);
        }
        if !self.broken(WalkMutant::NoModeStore) {
            p.push(WStep::Announce);
        }
        if !self.broken(WalkMutant::NoWalkerMb) && !self.broken(WalkMutant::NoPinMb) {
            p.push(WStep::Mb);
        }
        p.extend([WStep::ReadRoot, WStep::ReadTable, WStep::Retire]);
        if self.reclaim == Reclaim::Ipi && !self.broken(WalkMutant::NoIrqDisable) {
            p.push(WStep::IrqOn);
        }
        p
    }

    /// The zapper's steps, in program order.
    pub fn zapper_program(&self) -> Vec<ZStep> {
        match self.reclaim {
            Reclaim::Ipi => {
                let mut p = vec![ZStep::Unlink];
                if !self.broken(WalkMutant::NoZapperMb) {
                    p.push(ZStep::Mb);
                }
                if self.broken(WalkMutant::FreeBeforeFlush) {
                    p.extend([ZStep::Free, ZStep::Scan, ZStep::WaitAcks, ZStep::Done]);
                } else {
                    p.extend([ZStep::Scan, ZStep::WaitAcks, ZStep::Free, ZStep::Done]);
                }
                p
            }
            Reclaim::Epoch => {
                // The free is not the zapper's: the RCU callback runs once the grace period
                // is over (the separate `Free` action).
                if self.broken(WalkMutant::UnpinBeforeFlush) {
                    vec![
                        ZStep::ZPin,
                        ZStep::Unlink,
                        ZStep::Defer,
                        ZStep::Scan,
                        ZStep::ZUnpin,
                        ZStep::Flush,
                        ZStep::Done,
                    ]
                } else {
                    vec![
                        ZStep::ZPin,
                        ZStep::Unlink,
                        ZStep::Flush,
                        ZStep::Defer,
                        ZStep::Scan,
                        ZStep::ZUnpin,
                        ZStep::Done,
                    ]
                }
            }
        }
    }

    fn store(&self, buf: &mut StoreBuffer<Var>, mem: &mut u8, var: Var, value: u8) {
        match self.memory {
            Memory::Sc => *mem = value,
            Memory::Tso => buf.push(var, value),
        }
    }

    fn link_seen_by_walker(s: &WalkState) -> bool {
        // Walkers never store the link: they read memory.
        s.link
    }

    fn grace_period_over(s: &WalkState) -> bool {
        let scanned = s.walkers.iter().all(|w| w.scanned);
        scanned && !s.zpinned && s.walkers.iter().all(|w| !w.waited_for || w.own_mem == 0)
    }
}

impl Model for WalkModel {
    type State = WalkState;
    type Action = WalkAction;

    fn init_states(&self) -> Vec<WalkState> {
        let w = WalkerState {
            pc: 0,
            irq_off: false,
            own_mem: 0,
            buf: StoreBuffer::new(),
            saw_link: false,
            read_freed: false,
            scanned: false,
            waited_for: false,
        };
        vec![WalkState {
            walkers: vec![w; self.walkers],
            zpc: 0,
            zbuf: StoreBuffer::new(),
            zpinned: false,
            link: true,
            freed: false,
            deferred: false,
            tlb: false,
            guest_used_freed: false,
        }]
    }

    fn actions(&self, s: &WalkState, out: &mut Vec<WalkAction>) {
        let wprog = self.walker_program();
        for (v, w) in s.walkers.iter().enumerate() {
            if let Some(step) = wprog.get(w.pc as usize) {
                if *step != WStep::Mb || w.buf.is_empty() {
                    out.push(WalkAction::Walker(v, *step));
                }
            }
            if self.reclaim == Reclaim::Ipi && w.waited_for && !w.irq_off {
                out.push(WalkAction::TakeIpi(v));
            }
            if !w.buf.is_empty() {
                out.push(WalkAction::DrainWalker(v));
            }
        }
        let zprog = self.zapper_program();
        let zstep = zprog[s.zpc as usize];
        match zstep {
            ZStep::Mb | ZStep::Flush | ZStep::Defer if !s.zbuf.is_empty() => {}
            ZStep::Scan => {
                for (v, w) in s.walkers.iter().enumerate() {
                    if !w.scanned {
                        out.push(WalkAction::Zapper(ZStep::Scan, v));
                    }
                }
            }
            ZStep::WaitAcks if s.walkers.iter().any(|w| w.waited_for) => {}
            ZStep::Done => {}
            _ => out.push(WalkAction::Zapper(zstep, 0)),
        }
        if self.reclaim == Reclaim::Epoch && s.deferred && !s.freed && Self::grace_period_over(s) {
            out.push(WalkAction::RcuFree);
        }
        if !s.zbuf.is_empty() {
            out.push(WalkAction::DrainZapper);
        }
        if self.reclaim == Reclaim::Epoch {
            if s.link && !s.tlb {
                out.push(WalkAction::GuestFill);
            }
            if s.tlb && s.freed && !s.guest_used_freed {
                out.push(WalkAction::GuestUse);
            }
        }
    }

    fn next_state(&self, last: &WalkState, action: WalkAction) -> Option<WalkState> {
        let mut s = last.clone();
        match action {
            WalkAction::Walker(v, step) => {
                let link = Self::link_seen_by_walker(last);
                let freed = last.freed;
                let w = &mut s.walkers[v];
                w.pc += 1;
                match step {
                    WStep::IrqOff => w.irq_off = true,
                    WStep::IrqOn => w.irq_off = false,
                    WStep::Announce => self.store(&mut w.buf, &mut w.own_mem, Var::Own, 1),
                    WStep::Retire => self.store(&mut w.buf, &mut w.own_mem, Var::Own, 0),
                    WStep::Mb => {}
                    WStep::ReadRoot => w.saw_link = link,
                    WStep::ReadTable => {
                        if w.saw_link && freed {
                            w.read_freed = true;
                        }
                    }
                }
            }
            WalkAction::TakeIpi(v) => s.walkers[v].waited_for = false,
            WalkAction::DrainWalker(v) => {
                let w = &mut s.walkers[v];
                if let Some((_, value)) = w.buf.pop() {
                    w.own_mem = value;
                }
            }
            WalkAction::DrainZapper => {
                if let Some((_, value)) = s.zbuf.pop() {
                    s.link = value == 1;
                }
            }
            WalkAction::Zapper(step, v) => {
                match step {
                    ZStep::ZPin => s.zpinned = true,
                    ZStep::ZUnpin => s.zpinned = false,
                    ZStep::Unlink => {
                        let mut link = u8::from(s.link);
                        self.store(&mut s.zbuf, &mut link, Var::Link, 0);
                        s.link = link == 1;
                    }
                    ZStep::Flush => s.tlb = false,
                    ZStep::Defer => s.deferred = true,
                    ZStep::Mb | ZStep::WaitAcks | ZStep::Done => {}
                    ZStep::Free => s.freed = true,
                    ZStep::Scan => {
                        // Zappers never store walkers' variables: read memory.
                        let ipi_only_in_guest = self.broken(WalkMutant::IpiOnlyInGuest);
                        let w = &mut s.walkers[v];
                        w.scanned = true;
                        if w.own_mem != 0 && !ipi_only_in_guest {
                            w.waited_for = true;
                        }
                    }
                }
                let scan_left = step == ZStep::Scan && s.walkers.iter().any(|w| !w.scanned);
                if !scan_left {
                    s.zpc += 1;
                }
            }
            WalkAction::GuestFill => s.tlb = true,
            WalkAction::GuestUse => s.guest_used_freed = true,
            WalkAction::RcuFree => s.freed = true,
        }
        Some(s)
    }

    fn format_action(&self, action: &WalkAction) -> String {
        action.to_string()
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no-walker-reads-freed-table", |_: &WalkModel, s: &WalkState| {
                s.walkers.iter().all(|w| !w.read_freed)
            }),
            Property::always("no-guest-uses-freed-table", |_: &WalkModel, s: &WalkState| !s.guest_used_freed),
            Property::sometimes("walker-reads-live-table", |m: &WalkModel, s: &WalkState| {
                let end = m.walker_program().len();
                s.walkers.iter().any(|w| w.saw_link && w.pc as usize == end && !w.read_freed)
            }),
            Property::sometimes("table-freed", |_: &WalkModel, s: &WalkState| s.freed),
        ]
    }
}
