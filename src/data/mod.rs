//! CIFAR-10: the in-memory dataset and its batches (more: the binary format and importers).

pub mod dataset;

pub use dataset::{epoch_order, Cifar10, Split, CLASSES, IMAGE_BYTES};
