//! The protocol models, one module per protocol.

pub mod fault;
pub mod memslot;
pub mod pfncache;
pub mod walk;
