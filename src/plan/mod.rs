//! The resolved plan: what each stage is built from, derived once from the
//! validated config.

mod memory;

pub use memory::{MemoryPlan, PREFETCH_PROPERTY};
