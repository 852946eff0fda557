package statesync

import "sync"

// TEMPORARY (helper D): the contract puts the BackfillStore in
// Deps.Backfill, which reactor.go does not have yet. Until it does, the
// store is attached with setBackfillStore and read with backfillStore, so
// the package builds. Once Deps.Backfill exists, backfillStore returns
// r.deps.Backfill, setBackfillStore sets it, and this file goes.
var pendingBackfillStores sync.Map // *Reactor -> BackfillStore

func (r *Reactor) backfillStore() BackfillStore {
	if s, ok := pendingBackfillStores.Load(r); ok {
		return s.(BackfillStore)
	}
	return nil
}

func setBackfillStore(r *Reactor, s BackfillStore) {
	if s == nil {
		pendingBackfillStores.Delete(r)
		return
	}
	pendingBackfillStores.Store(r, s)
}
