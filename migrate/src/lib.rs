//! `ferrolb-migrate`: MetalLB's configuration in, FerroLB's objects out, and a report of every
//! field that was converted, changed or could not be carried over.
//!
//! [`input`] and [`cluster`] read MetalLB objects, [`metallb`] is their model, [`convert`] (pure,
//! no I/O) turns them into `ferrolb-crds` types, [`report`] says what happened to each field, and
//! [`schema`] holds the output to FerroLB's own CRD schema.

pub mod bgp;
pub mod cli;
pub mod cluster;
pub mod convert;
pub mod input;
pub mod metallb;
pub mod report;
pub mod schema;

pub use cli::{Args, run};
pub use convert::{Conversion, convert};
