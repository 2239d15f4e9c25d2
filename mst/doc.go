// Package mst implements the atproto Merkle Search Tree (repository spec, v3)
// over content-addressed blocks that are read on demand.
//
// Unlike an in-memory tree, a Tree loads only the nodes an operation touches:
// an insert or remove into a repository of n records reads O(log n) nodes, and
// memory does not grow with the repository. Mutations happen in memory; Commit
// encodes the changed nodes and reports exactly the blocks a sync-1.1 #commit
// must carry (new nodes plus the unchanged neighbours needed to invert the
// operations) and the node blocks that are no longer linked.
//
// A Tree is not safe for concurrent use. Its BlockSource must stay valid (for a
// bbolt-backed source: its transaction must stay open) for as long as the Tree
// is used.
package mst
