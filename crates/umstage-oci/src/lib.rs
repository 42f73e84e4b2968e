//! Images as data: digests, the content store, image configs and manifests, layers, archives and the registry client.

pub mod changes;
