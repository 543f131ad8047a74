//! Litmus tests on this CPU. Asserted: only what x86-TSO forbids (SB with a full barrier, MP)
//! never shows. Reported, not asserted: how often SB shows its relaxed outcome without one
//! (it is probabilistic).

use mmusync::FenceKind;
use mmusync_hw::litmus::{mp, sb, Fence};

const ROUNDS: u64 = 200_000;

#[test]
fn sb_never_relaxes_with_a_full_barrier() {
    for fence in [Fence::X86(FenceKind::Mb), Fence::Mfence, Fence::StdSeqCst, Fence::SeqCstStore] {
        let r = sb(fence, ROUNDS, true, 0);
        assert_eq!(
            r.relaxed,
            0,
            "SB with {}: {} relaxed outcomes in {} rounds",
            r.fence_name(),
            r.relaxed,
            ROUNDS
        );
    }
    let plain = sb(Fence::None, ROUNDS, true, 0);
    println!(
        "SB without a fence: {} relaxed outcomes in {} rounds ({:.0} per million; pinned: {})",
        plain.relaxed,
        plain.iterations,
        plain.per_million(),
        plain.pinned
    );
}

#[test]
fn mp_never_relaxes_with_compiler_fences() {
    let x = Fence::X86;
    for (w, r) in [(Fence::None, Fence::None), (x(FenceKind::Wmb), x(FenceKind::Rmb))] {
        let res = mp(w, r, ROUNDS, true, 0);
        assert_eq!(res.relaxed, 0, "MP with {}: {} relaxed outcomes", res.fence_name(), res.relaxed);
        assert!(
            res.covered > 0,
            "MP with {}: the reader never saw a flag: the test was vacuous",
            res.fence_name()
        );
    }
}
