//! The five axiomatic models, each a predicate on a candidate execution.
//!
//! Every model here is *axiomatic*: an execution (events, program order `po`, dependencies,
//! reads-from `rf`, coherence `co`, from-reads `fr = rf⁻¹;co`) is allowed when some derived
//! relations are acyclic or irreflexive. The enumerator ([`crate::exec`]) has already checked
//! the two axioms all five share, SC-per-location ([`sc_per_location`]) and RMW atomicity
//! ([`atomicity`]); [`consistent`] checks the rest. The definitions follow the papers, in the
//! papers' names:
//!
//! * **SC** (Lamport 1979), axiomatically: `acyclic(po | rf | co | fr)`.
//! * **x86-TSO** (Owens, Sarkar, Sewell, TPHOLs 2009; axiomatic form of Alglave, Maranget,
//!   Tautschnig, "Herding Cats", TOPLAS 2014): `acyclic(ppo | implied | mfence | rfe | co |
//!   fr)` with `ppo = po \ (W×R)`; a `lock`ed instruction (any atomic RMW, even a failed
//!   `cmpxchg`, and the `xchg` a C11 seq_cst store compiles to) orders everything around it.
//! * **ARMv8** (Pulte, Flur, Deacon, French, Sarkar, Sewell, "Simplifying ARM Concurrency:
//!   Multicopy-Atomic Axiomatic and Operational Models for ARMv8", POPL 2018): external
//!   `acyclic(ob)`, `ob = (obs | dob | aob | bob)+` with observed-by `obs = rfe | coe | fre`,
//!   dependency-ordered-before `dob`, atomic-ordered-before `aob` and barrier-ordered-before
//!   `bob`; no ISB, no `LDAPR` (no test needs them).
//! * **RC11** (Lahav, Vafeiadis, Kang, Hur, Dreyer, "Repairing Sequential Consistency in
//!   C/C++11", PLDI 2017): coherence `irreflexive(hb ; eco?)`, the SC condition
//!   `acyclic(psc_base | psc_F)`, and no-thin-air `acyclic(sb | rf)`. Every access is atomic
//!   (kernel "once" accesses are relaxed atomics), so there are no data races to report.
//! * **LKMM** (Alglave, Maranget, McKenney, Parri, Stern, "Frightening Small Children and
//!   Disconcerting Grown-ups: Concurrency in the Linux Kernel", ASPLOS 2018; with the later
//!   kernel revisions of `po-unlock-lock-po`, `rmw-sequence` and failed-`cmpxchg` ordering by
//!   `smp_mb__after_atomic`): `acyclic(hb)` (happens-before), `acyclic(pb)` (propagation),
//!   and the RCU axiom `irreflexive(rb)` (grace periods against read-side critical sections,
//!   `rcu-order` as in the kernel's model since 2019); marked accesses only, no SRCU.
//!
//! How each primitive maps to each model's events is in [`crate::ast`] and `docs/memmodel.md`.

use crate::ast::{Fence, LoadOrd, Model, RmwOrd, Stmt, StoreOrd, Test};
use crate::exec::{Exec, Kind, Unsupported, ACQ, ATOMIC, FAILED, LKR, LKW, NORETURN, REL, SC, UL};
use crate::rel::Rel;

/// SC per location: `acyclic(po-loc | rf | co | fr)`. Every model here implies it.
pub fn sc_per_location(x: &Exec) -> bool {
    ((x.po & x.same_loc) | x.rf | x.co | x.fr).is_acyclic()
}

/// RMW atomicity: no write comes between an RMW's read and its write, `rmw ∩ (fr ; co) = ∅`.
pub fn atomicity(x: &Exec) -> bool {
    (x.rmw & x.fr.seq(&x.co)).is_empty()
}

/// Whether `model` can judge every primitive `test` uses.
///
/// LKMM has no counterpart of C11 seq_cst accesses or of C11 acquire/release fences (a C11
/// seq_cst fence is taken as `smp_mb()`); the other models take every primitive.
pub fn supports(model: Model, test: &Test) -> Result<(), Unsupported> {
    fn walk(body: &[Stmt]) -> Option<&'static str> {
        body.iter().find_map(|s| match s {
            Stmt::Load { ord: LoadOrd::Sc, .. } => Some("C11 seq_cst load"),
            Stmt::Store { ord: StoreOrd::Sc, .. } => Some("C11 seq_cst store"),
            Stmt::Rmw { ord: RmwOrd::Sc, .. } => Some("C11 seq_cst RMW"),
            Stmt::Fence(f @ (Fence::C11Acquire | Fence::C11Release | Fence::C11AcqRel)) => Some(f.name()),
            Stmt::If { then, els, .. } => walk(then).or_else(|| walk(els)),
            _ => None,
        })
    }
    fn grace_period(body: &[Stmt]) -> bool {
        body.iter().any(|s| match s {
            Stmt::Fence(Fence::SyncRcu) => true,
            Stmt::If { then, els, .. } => grace_period(then) || grace_period(els),
            _ => false,
        })
    }
    if model == Model::Lkmm {
        if let Some(what) = test.threads.iter().find_map(|t| walk(&t.body)) {
            return Err(Unsupported(format!("LKMM has no {what}")));
        }
    } else if test.threads.iter().any(|t| grace_period(&t.body)) {
        return Err(Unsupported("RCU grace periods are modelled by LKMM only".into()));
    }
    Ok(())
}

/// Whether `model` allows the candidate execution `x` (which already satisfies
/// [`sc_per_location`] and [`atomicity`]).
pub fn consistent(model: Model, x: &Exec) -> bool {
    match model {
        Model::Sc => sc(x),
        Model::Tso => tso(x),
        Model::Armv8 => armv8(x),
        Model::Rc11 => rc11(x),
        Model::Lkmm => lkmm(x),
    }
}

fn sc(x: &Exec) -> bool {
    (x.po | x.rf | x.co | x.fr).is_acyclic()
}

fn tso(x: &Exec) -> bool {
    let (m, r, w) = (x.mem(), x.reads(), x.writes());
    let ext = x.ext();
    let po_m = x.po.restrict(m, m);
    let ppo = po_m - Rel::product(x.n(), w, r);
    // Locked instructions: every atomic RMW (a failed lock cmpxchg too) and the xchg that a
    // C11 seq_cst store becomes.
    let locked = x.tagged(ATOMIC) | (x.tagged(SC) & w);
    let implied = x.po.restrict(m, locked) | x.po.restrict(locked, m);
    let mfence = x.fencerel(x.fences(|f| matches!(f, Fence::Mb | Fence::C11SeqCst))).restrict(m, m);
    (ppo | implied | mfence | (x.rf & ext) | x.co | x.fr).is_acyclic()
}

/// ARMv8 `dmb ish`: `smp_mb()` (and the brackets of fully ordered RMWs),
/// `smp_mb__{before,after}_atomic()`, `smp_mb__after_spinlock()`, C11 release/acq_rel/seq_cst
/// fences.
fn dmb_full(f: Fence) -> bool {
    matches!(
        f,
        Fence::Mb
            | Fence::BeforeAtomic
            | Fence::AfterAtomic
            | Fence::AfterSpinlock
            | Fence::C11Release
            | Fence::C11AcqRel
            | Fence::C11SeqCst
    )
}

fn armv8(x: &Exec) -> bool {
    let (r, w) = (x.reads(), x.writes());
    let all = x.po.all();
    let (int, ext) = (x.same_thread, x.ext());
    let (rfe, rfi) = (x.rf & ext, x.rf & int);
    let (coe, coi, fre) = (x.co & ext, x.co & int, x.fr & ext);
    let acq = x.tagged(ACQ) & r;
    let rel = x.tagged(REL) & w;
    let obs = rfe | coe | fre;
    let dob = x.addr
        | x.data
        | x.ctrl.restrict(all, w)
        | x.addr.seq(&x.po).restrict(all, w)
        | (x.ctrl | x.data).seq(&coi)
        | (x.addr | x.data).seq(&rfi);
    let aob = x.rmw | rfi.restrict(x.rmw.range(), acq);
    let dmb = x.fencerel(x.fences(dmb_full));
    let dmb_ld = x.fencerel(x.fences(|f| matches!(f, Fence::Rmb | Fence::C11Acquire)));
    let dmb_st = x.fencerel(x.fences(|f| f == Fence::Wmb));
    let bob = dmb
        | x.po.restrict(rel, acq)
        | dmb_ld.restrict(r, all)
        | x.po.restrict(acq, all)
        | dmb_st.restrict(w, w)
        | x.po.restrict(all, rel)
        | x.po.restrict(all, rel).seq(&coi);
    (obs | dob | aob | bob).is_acyclic()
}

fn rc11(x: &Exec) -> bool {
    let n = x.n();
    let (r, w) = (x.reads(), x.writes());
    let all = x.po.all();
    let init = x.set(|e| e.thread.is_none());
    // Initial writes are sequenced before every thread's events.
    let sb = x.po | Rel::product(n, init, all & !init);
    let sc_fence = |f: Fence| {
        matches!(
            f,
            Fence::Mb | Fence::BeforeAtomic | Fence::AfterAtomic | Fence::AfterSpinlock | Fence::C11SeqCst
        )
    };
    let f_sc = x.fences(sc_fence);
    let f_acq = x.fences(|f| sc_fence(f) || matches!(f, Fence::Rmb | Fence::C11Acquire | Fence::C11AcqRel));
    let f_rel = x.fences(|f| sc_fence(f) || matches!(f, Fence::Wmb | Fence::C11Release | Fence::C11AcqRel));
    let fences = x.fences(|_| true);
    let e_acq = (x.tagged(ACQ) & r) | f_acq;
    let e_rel = (x.tagged(REL) & w) | f_rel;
    let e_sc = x.tagged(SC);
    // rs = [W] ; sb|loc? ; [W] ; (rf ; rmw)*
    let rs = (sb & x.same_loc).opt().restrict(w, w).seq(&x.rf.seq(&x.rmw).star());
    // sw = [E⊒rel] ; ([F] ; sb)? ; rs ; rf ; [R] ; (sb ; [F])? ; [E⊒acq]
    let pre = x.id(e_rel & w) | sb.restrict(e_rel & fences, all);
    let post = x.id(e_acq & r) | sb.restrict(all, e_acq & fences);
    let sw = pre.seq(&rs).seq(&x.rf.restrict(all, r)).seq(&post);
    let hb = (sb | sw).plus();
    let eco = (x.rf | x.co | x.fr).plus();
    if !hb.is_irreflexive() || !hb.seq(&eco).is_irreflexive() {
        return false;
    }
    let sb_nl = sb - x.same_loc;
    let scb = sb | sb_nl.seq(&hb).seq(&sb_nl) | (hb & x.same_loc) | x.co | x.fr;
    let left = x.id(e_sc) | x.id(f_sc).seq(&hb.opt());
    let right = x.id(e_sc) | hb.opt().restrict(all, f_sc);
    let psc_base = left.seq(&scb).seq(&right);
    let psc_f = (hb | hb.seq(&eco).seq(&hb)).restrict(f_sc, f_sc);
    (psc_base | psc_f).is_acyclic() && (sb | x.rf).is_acyclic()
}

fn lkmm(x: &Exec) -> bool {
    let (m, r, w) = (x.mem(), x.reads(), x.writes());
    let all = x.po.all();
    let (int, ext) = (x.same_thread, x.ext());
    let (rfe, rfi) = (x.rf & ext, x.rf & int);
    let acquire = x.tagged(ACQ) & r;
    let release = x.tagged(REL) & w;
    let noreturn = x.tagged(NORETURN);
    // The events of atomic RMW operations, failed compare-exchanges included (the kernel's
    // cmpxchg-fail-ordered tests need `smp_mb__after_atomic()` to order a failed one).
    let rmw_ops = x.rmw.domain() | x.rmw.range() | x.tagged(FAILED);
    let (lkr, lkw, ul) = (x.tagged(LKR), x.tagged(LKW), x.tagged(UL));
    let po_opt = x.po.opt();

    let rmb = x.fencerel(x.fences(|f| f == Fence::Rmb)).restrict(r & !noreturn, r & !noreturn);
    let wmb = x.fencerel(x.fences(|f| f == Fence::Wmb)).restrict(w, w);
    let mb = x.fencerel(x.fences(|f| matches!(f, Fence::Mb | Fence::C11SeqCst))).restrict(m, m)
        | x.fencerel(x.fences(|f| f == Fence::BeforeAtomic))
            .restrict(m, rmw_ops)
            .seq(&po_opt)
            .restrict(all, m)
        | po_opt
            .restrict(m, rmw_ops)
            .seq(&x.fencerel(x.fences(|f| f == Fence::AfterAtomic)))
            .restrict(all, m)
        | po_opt.restrict(m, lkw).seq(&x.fencerel(x.fences(|f| f == Fence::AfterSpinlock))).restrict(all, m);
    // gp = po ; [Sync-rcu] ; po?
    let gp = x.po.restrict(m, x.fences(|f| f == Fence::SyncRcu)).seq(&po_opt);
    let strong_fence = mb | gp;
    let po_rel = x.po.restrict(m, release);
    let acq_po = x.po.restrict(acquire, m);
    let po_unlock_lock_po =
        x.po.restrict(m, ul).seq(&(x.po | x.rf).restrict(ul, lkr)).seq(&x.po).restrict(m, m);
    let fence = strong_fence | po_rel | acq_po | wmb | rmb;

    let dep = x.addr | x.data;
    let rwdep = (dep | x.ctrl).restrict(all, w);
    let overwrite = x.co | x.fr;
    let to_w = rwdep | (overwrite & int);
    let to_r = x.addr.restrict(all, r) | dep.seq(&rfi);
    let ppo = to_r | to_w | (fence & int) | (po_unlock_lock_po & int);

    let rmw_sequence = x.rf.seq(&x.rmw).star();
    let a_cumul = rfe.opt().seq(&(strong_fence | po_rel));
    let cumul_fence = (a_cumul | wmb | po_unlock_lock_po).seq(&rmw_sequence);
    let prop = (overwrite & ext).opt().seq(&cumul_fence.star()).seq(&rfe.opt());
    let id = x.id(all);
    let hb = ppo | rfe | ((prop - id) & int);
    if !hb.is_acyclic() {
        return false;
    }
    let pb = prop.seq(&strong_fence).seq(&hb.star()).restrict(all, m);
    if !pb.is_acyclic() {
        return false;
    }
    rcu(x, &hb, &pb, &prop)
}

/// LKMM's RCU axiom, `irreflexive(rb)`: a cycle of grace periods and read-side critical
/// sections joined by `rcu-link` is forbidden when it has at least as many grace periods as
/// critical sections (`rcu-order`, computed as a least fixpoint).
fn rcu(x: &Exec, hb: &Rel, pb: &Rel, prop: &Rel) -> bool {
    let sync = x.fences(|f| f == Fence::SyncRcu);
    if sync == 0 {
        return true;
    }
    // rcu-rscs: each rcu_read_unlock() matches the innermost open rcu_read_lock() of its thread.
    let mut rscsi = Rel::empty(x.n());
    let mut open: Vec<usize> = Vec::new();
    let mut thread = None;
    for (i, e) in x.ev.iter().enumerate() {
        if e.thread != thread {
            open.clear();
            thread = e.thread;
        }
        match e.kind {
            Kind::Fence(Fence::RcuLock) => open.push(i),
            Kind::Fence(Fence::RcuUnlock) => {
                if let Some(l) = open.pop() {
                    rscsi.add(i, l);
                }
            }
            _ => {}
        }
    }
    let gp = x.id(sync);
    let link = x.po.opt().seq(&hb.star()).seq(&pb.star()).seq(prop).seq(&x.po);
    let mut order = gp;
    loop {
        let next = gp
            | gp.seq(&link).seq(&rscsi)
            | rscsi.seq(&link).seq(&gp)
            | gp.seq(&link).seq(&order).seq(&link).seq(&rscsi)
            | rscsi.seq(&link).seq(&order).seq(&link).seq(&gp)
            | order.seq(&link).seq(&order);
        if next == order {
            break;
        }
        order = next;
    }
    let rcu_fence = x.po.seq(&order).seq(&x.po.opt());
    let rb = prop.seq(&rcu_fence).seq(&hb.star()).seq(&pb.star()).restrict(x.po.all(), x.mem());
    rb.is_irreflexive()
}
