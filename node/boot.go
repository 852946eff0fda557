package node

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	dbm "github.com/cometbft/cometbft-db"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/log"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
)

// captureDBs wraps dbProvider to capture the node's own state and block DB
// handles as NewNode opens them, and to repair the offline state sync
// height (restoreOfflineHeight) before NewNode reads it.
func (n *Node) captureDBs(dbProvider cmtcfg.DBProvider, logger log.Logger) cmtcfg.DBProvider {
	var mtx sync.Mutex
	return func(ctx *cmtcfg.DBContext) (dbm.DB, error) {
		db, err := dbProvider(ctx)
		if err != nil {
			return nil, err
		}
		mtx.Lock()
		defer mtx.Unlock()
		switch ctx.ID {
		case "state":
			n.stateDB = db
			// NewNode opens the block DB first, then this one, and reads
			// the offline state sync height after both.
			if n.blockDB != nil {
				if err := restoreOfflineHeight(db, n.blockDB, logger); err != nil {
					return nil, err
				}
			}
		case "blockstore":
			n.blockDB = db
		}
		return db, nil
	}
}

// restoreOfflineHeight makes a node whose stores were state-synced to a
// height S, but which has not stored block S+1 yet, bootable: CometBFT's
// block sync reactor panics ("state (S) and store (0) height mismatch")
// unless the offline state sync height is S, and node.NewNode resets that
// height to 0 at every boot. So before every NewNode: state at S > 0 and
// an empty block store mean the stores were state-synced (or bootstrapped
// offline) to S, and the height is set to S again. Once block sync stores
// S+1 the block store is not empty and nothing is done. Conversely, a state
// sync stopped after writing the offline height but before Bootstrap left
// a state at height 0 with that height set, on which block sync would
// panic too: the height is cleared, and the node state-syncs again.
func restoreOfflineHeight(stateDB, blockDB dbm.DB, logger log.Logger) error {
	if store.LoadBlockStoreState(blockDB).Height > 0 {
		return nil
	}
	ss := sm.NewStore(stateDB, sm.StoreOptions{})
	state, err := ss.Load()
	if err != nil {
		return fmt.Errorf("loading state: %w", err)
	}
	if state.LastBlockHeight <= 0 {
		// A state sync that stopped between the offline height and
		// Bootstrap: the node syncs again, and block sync must not be
		// told the stores are at that height.
		if h, err := ss.GetOfflineStateSyncHeight(); err == nil && h != 0 {
			logger.Info("Clearing the offline state sync height of an unfinished state sync", "height", h)
			return ss.SetOfflineStateSyncHeight(0)
		}
		return nil
	}
	if err := ss.SetOfflineStateSyncHeight(state.LastBlockHeight); err != nil {
		return fmt.Errorf("setting the offline state sync height %d: %w", state.LastBlockHeight, err)
	}
	logger.Info("State-synced stores without blocks yet; block sync continues from the snapshot height",
		"height", state.LastBlockHeight)
	return nil
}

// removeStaleSpools removes the chunk spool directories ("statesync-*")
// a killed state sync left in dir, once the node no longer needs one (it
// is synced). Only an explicitly configured temp_dir is cleaned: in the
// OS temporary directory the spools could be another node's.
func removeStaleSpools(dir string, logger log.Logger) {
	if dir == "" {
		return
	}
	matches, err := filepath.Glob(filepath.Join(dir, "statesync-*"))
	if err != nil {
		return
	}
	for _, m := range matches {
		if err := os.RemoveAll(m); err != nil {
			logger.Error("Failed to remove a stale chunk spool", "dir", m, "err", err)
			continue
		}
		logger.Info("Removed a chunk spool left by an interrupted state sync", "dir", m)
	}
}
