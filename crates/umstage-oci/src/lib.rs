//! Images as data: digests, the content store, image configs and manifests, layers, archives and the registry client.

pub mod archive;
pub mod auth;
pub mod changes;
pub mod compress;
pub mod config;
pub mod digest;
pub mod image;
pub mod inroot;
mod json;
pub mod layer;
mod pgzip;
pub mod reference;
pub mod registry;
pub mod store;
pub mod tarball;
pub mod unpack;

pub use config::ImageConfig;
pub use digest::Digest;
pub use image::{Image, ImageError, ManifestFormat, Platform};
pub use json::to_canonical_vec;
pub use store::{BlobInfo, ContentStore, StoreError};
