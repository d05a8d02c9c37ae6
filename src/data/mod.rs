//! CIFAR-10: the in-memory dataset and its batches (`dataset`), the official binary format
//! that normlab keeps data in (`binary`), and `normlab data`, which imports the official
//! archive, its URL or an image folder into that format (`import`, `download`, `folder`),
//! recording each file's size and checksum so readers notice a damaged copy (`integrity`).

pub mod binary;
pub mod cli;
pub mod dataset;
pub mod download;
pub mod folder;
pub mod import;
pub mod integrity;
mod progress;

pub use binary::{load_dir, write_dir};
pub use dataset::{epoch_order, Cifar10, Split, CLASSES, IMAGE_BYTES};
