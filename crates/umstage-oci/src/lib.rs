//! Images as data: digests, the content store, image configs and manifests, layers, archives and the registry client.
//!
//! The crate runs no processes and mounts nothing. The main entry points:
//! - [`ContentStore`]: verified, atomic, streaming blob storage.
//! - [`layer::write_layer`]: a [`changes::ChangeSet`] becomes a compressed layer in the store.
//! - [`unpack::unpack_blob`] / [`unpack::unpack_image`]: layers applied onto a directory, plainly or
//!   overlay-natively, with every path resolved by [`inroot`].
//! - [`image::write_image`] / [`Image::load`]: configs and manifests.
//! - [`archive`]: `image.tar`, OCI layout dirs, and importing OCI/Docker archives.
//! - [`registry::RegistryClient`]: pull and push.
//! - [`lease::Lease`] / [`lease::GcLock`]: what running builds hold, kept from garbage collection.

pub mod archive;
pub mod auth;
pub mod changes;
pub mod compress;
pub mod config;
pub mod device;
pub mod digest;
pub mod image;
pub mod inroot;
mod json;
pub mod layer;
pub mod lease;
pub mod owner;
mod pgzip;
pub mod reference;
pub mod registry;
pub mod regular;
pub mod store;
pub mod tarball;
pub mod unpack;

pub use config::ImageConfig;
pub use digest::Digest;
pub use image::{Image, ImageError, ManifestFormat, Platform};
pub use json::to_canonical_vec;
pub use store::{BlobInfo, ContentStore, StoreError};
