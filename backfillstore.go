package statesync

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"

	dbm "github.com/cometbft/cometbft-db"
	cmtstate "github.com/cometbft/cometbft/proto/tendermint/state"
	"github.com/cometbft/cometbft/types"
)

// BackfillStore persists what Backfill verified: the headers and commits
// of historical heights and the validator sets in force at them, so that
// the node can verify evidence from before its snapshot and serve those
// heights to peers as light blocks.
//
// Backfill calls it from one goroutine, highest heights first. Writes may
// be buffered until Flush; an implementation must make them visible to
// the node's own loaders after Flush returns.
type BackfillStore interface {
	// SaveSignedHeader stores the header and commit of one height. blockID
	// is the block's verified ID (its hash and part-set header, taken from
	// the LastBlockID of the block above it). Storing a height twice
	// overwrites it with the same data.
	SaveSignedHeader(blockID types.BlockID, sh *types.SignedHeader) error

	// SaveValidatorSets records vals as the validator set of every height
	// from lo to hi (lo <= hi). vals is the set at lo, with its proposer
	// priorities; the sets of the heights above lo are vals with priorities
	// advanced once per height, as CometBFT derives them.
	SaveValidatorSets(lo, hi int64, vals *types.ValidatorSet) error

	// Flush durably writes everything saved since the last Flush.
	Flush() error
}

// The key layout of CometBFT v0.40's block store (store/store.go) and state
// store (state/store.go), pinned here because NewDBBackfillStore writes
// under those keys for CometBFT's own loaders to read. Keys are plain
// strings with decimal heights (v0.40 does not use orderedcode):
//
//	block DB  "H:<height>"            cmtproto.BlockMeta (BlockSize and NumTxs -1: not known from a header)
//	block DB  "C:<height>"            cmtproto.Commit of that height (v0.40 writes it with the block above)
//	block DB  "BH:<lowercase hex>"    the height, as decimal ASCII
//	state DB  "validatorsKey:<height>" cmtstate.ValidatorsInfo: LastHeightChanged, plus the full
//	                                  ValidatorSet where it was stored (at LastHeightChanged and at
//	                                  every multiple of 100000, v0.40's valSetCheckpointInterval)
//
// Not written: block parts ("P:"), seen commits ("SC:"), extended commits
// ("EC:") and the "blockStore" base/height record. The base stays the
// lowest height with a complete block: lowering it would make blocksync
// peers ask this node for blocks it cannot serve, and CometBFT's LoadBlock
// return nil inside [base, height]. LoadBlockMeta, LoadBlockCommit and
// LoadBlockMetaByHash do not consult the base, nor does the evidence
// module, which reads only those and LoadValidators. CometBFT's RPC still
// refuses heights below the base.
const valSetCheckpointInterval = 100000

func blockMetaKey(height int64) []byte {
	return []byte("H:" + strconv.FormatInt(height, 10))
}

func blockCommitKey(height int64) []byte {
	return []byte("C:" + strconv.FormatInt(height, 10))
}

func blockHashKey(hash []byte) []byte {
	return []byte(fmt.Sprintf("BH:%x", hash))
}

func validatorsKey(height int64) []byte {
	return []byte("validatorsKey:" + strconv.FormatInt(height, 10))
}

// dbBackfillStore writes through the node's own database handles.
type dbBackfillStore struct {
	mtx     sync.Mutex
	blockDB dbm.DB
	stateDB dbm.DB
	blocks  dbm.Batch // nil when nothing is buffered
	states  dbm.Batch
}

// NewDBBackfillStore returns a BackfillStore writing into a CometBFT v0.40
// node's block-store and state-store databases, under the key layout
// those versions read (see valSetCheckpointInterval's documentation).
// Pass the very handles the node's store.BlockStore and sm.Store use —
// never open a second BlockStore on them. Each Flush writes one batch per
// database, the block DB first; a crash between the two leaves headers
// whose validators are missing, which the node treats as not backfilled.
// Safe for concurrent use.
func NewDBBackfillStore(blockDB, stateDB dbm.DB) BackfillStore {
	return &dbBackfillStore{blockDB: blockDB, stateDB: stateDB}
}

func (s *dbBackfillStore) blockBatch() dbm.Batch {
	if s.blocks == nil {
		s.blocks = s.blockDB.NewBatch()
	}
	return s.blocks
}

func (s *dbBackfillStore) stateBatch() dbm.Batch {
	if s.states == nil {
		s.states = s.stateDB.NewBatch()
	}
	return s.states
}

// SaveSignedHeader implements BackfillStore.
func (s *dbBackfillStore) SaveSignedHeader(blockID types.BlockID, sh *types.SignedHeader) error {
	if sh == nil || sh.Header == nil || sh.Commit == nil {
		return errors.New("statesync: saving an incomplete signed header")
	}
	meta := types.BlockMeta{BlockID: blockID, BlockSize: -1, Header: *sh.Header, NumTxs: -1}
	metaBytes, err := meta.ToProto().Marshal()
	if err != nil {
		return fmt.Errorf("encoding the block meta of height %d: %w", sh.Height, err)
	}
	commitBytes, err := sh.Commit.ToProto().Marshal()
	if err != nil {
		return fmt.Errorf("encoding the commit of height %d: %w", sh.Height, err)
	}
	s.mtx.Lock()
	defer s.mtx.Unlock()
	b := s.blockBatch()
	if err := b.Set(blockMetaKey(sh.Height), metaBytes); err != nil {
		return err
	}
	if err := b.Set(blockCommitKey(sh.Height), commitBytes); err != nil {
		return err
	}
	return b.Set(blockHashKey(blockID.Hash), []byte(strconv.FormatInt(sh.Height, 10)))
}

// SaveValidatorSets implements BackfillStore. It stores the full set at lo
// and at every checkpoint height in (lo, hi], and pointers to lo at the
// other heights, exactly as CometBFT's own saveValidatorsInfo would had
// the set changed at lo.
func (s *dbBackfillStore) SaveValidatorSets(lo, hi int64, vals *types.ValidatorSet) error {
	switch {
	case vals.IsNilOrEmpty():
		return errors.New("statesync: saving an empty validator set")
	case lo <= 0 || hi < lo:
		return fmt.Errorf("statesync: saving validators for heights %d..%d", lo, hi)
	case hi-lo >= math.MaxInt32:
		return fmt.Errorf("statesync: validator range %d..%d too long", lo, hi)
	}
	full, err := vals.ToProto()
	if err != nil {
		return fmt.Errorf("encoding the validator set of height %d: %w", lo, err)
	}
	pointer, err := (&cmtstate.ValidatorsInfo{LastHeightChanged: lo}).Marshal()
	if err != nil {
		return err
	}
	s.mtx.Lock()
	defer s.mtx.Unlock()
	b := s.stateBatch()
	for h := lo; h <= hi; h++ {
		value := pointer
		if h == lo || h%valSetCheckpointInterval == 0 {
			set := full
			if h != lo {
				if set, err = vals.CopyIncrementProposerPriority(int32(h - lo)).ToProto(); err != nil {
					return err
				}
			}
			if value, err = (&cmtstate.ValidatorsInfo{ValidatorSet: set, LastHeightChanged: lo}).Marshal(); err != nil {
				return err
			}
		}
		if err := b.Set(validatorsKey(h), value); err != nil {
			return err
		}
	}
	return nil
}

// Flush implements BackfillStore.
func (s *dbBackfillStore) Flush() error {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	for _, b := range []*dbm.Batch{&s.blocks, &s.states} {
		if *b == nil {
			continue
		}
		err := (*b).WriteSync()
		if cerr := (*b).Close(); err == nil {
			err = cerr
		}
		*b = nil
		if err != nil {
			return fmt.Errorf("writing backfilled data: %w", err)
		}
	}
	return nil
}
