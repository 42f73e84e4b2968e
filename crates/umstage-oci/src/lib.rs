//! Images as data: digests, the content store, image configs and manifests, layers, archives and the registry client.

pub mod changes;
pub mod compress;
pub mod digest;
pub mod inroot;
pub mod layer;
mod pgzip;
pub mod store;
pub mod tarball;
pub mod unpack;

pub use digest::Digest;
pub use store::{BlobInfo, ContentStore, StoreError};
