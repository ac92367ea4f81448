//! Git object model: ids of blobs, trees and commits computed as git does,
//! Git LFS pointers, and `.gitattributes` LFS rules.

pub mod attributes;
pub mod ignore;
pub mod object;
pub mod pack;
pub mod patterns;
pub mod protocol;
pub mod tree;

pub use object::{blob_oid, lfs_pointer, BlobHasher, CommitObject, Mode, Signature, TreeEntry};
pub use tree::{build_trees, FlatFile};
