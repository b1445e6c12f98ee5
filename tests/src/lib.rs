//! FerroLB end-to-end harness.
