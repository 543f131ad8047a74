//! The first panic of a loom exploration, with its location.
//!
//! loom reports a failing execution by panicking out of `loom::model`; the message that matters
//! is the first one (an invariant violation in some role), not loom's own re-panic. One
//! process-wide hook records the first message of the current exploration in a thread-local
//! (loom runs every thread of an execution on the OS thread that explores it), and prints
//! panics only when `MMUSYNC_LOOM_PANICS` is set.

use std::cell::RefCell;
use std::string::{String, ToString};
use std::sync::Once;

std::thread_local! {
    static FIRST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the hook (once per process) and forgets any earlier panic: call it before an
/// exploration.
pub(crate) fn start() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(std::boxed::Box::new(move |info| {
            let msg = message(info.payload());
            let at = info.location().map(|l| l.to_string()).unwrap_or_default();
            let first = FIRST.with(|p| {
                let mut p = p.borrow_mut();
                let first = p.is_none();
                if first {
                    *p = Some(std::format!("{msg} (at {at})"));
                }
                first
            });
            if first && std::env::var_os("MMUSYNC_LOOM_PANICS").is_some() {
                default(info);
            }
        }));
    });
    FIRST.with(|p| p.borrow_mut().take());
}

/// The first panic since [`start`], or else the message of `payload` (what `catch_unwind`
/// returned).
pub(crate) fn first(payload: &(dyn std::any::Any + Send)) -> String {
    FIRST.with(|p| p.borrow_mut().take()).unwrap_or_else(|| message(payload))
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_string()
    }
}
