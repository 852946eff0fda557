package node

import (
	"fmt"
	"time"

	"github.com/cometbft/cometbft/consensus"
	sm "github.com/cometbft/cometbft/state"
)

// fallBack boots the node into block sync from genesis after state sync
// found no usable snapshot (Config.OnNoSnapshot = "blocksync"): the app
// gets the ABCI handshake NewNode skipped for a state-syncing node
// (InitChain, with the genesis state saved), then block sync starts at the
// initial height. The app must be at height 0, as it is when no snapshot
// was restored; a failed handshake stops the node.
func (n *Node) fallBack(cause error, start time.Time) {
	n.logger.Info("No usable snapshot; falling back to block sync from genesis (on_no_snapshot = blocksync)",
		"cause", cause)
	n.metrics.FallbackToBlockSync()
	state, err := n.handshake()
	if n.ctx.Err() != nil {
		return // stopping
	}
	if err != nil {
		n.fail(fmt.Errorf("%w: falling back to block sync after %w: %w", ErrHandoverFailed, cause, err))
		return
	}
	n.complete(SyncResult{Synced: false, FellBack: true, State: state}, state, start)
}

// handshake runs CometBFT's ABCI handshake with the app and returns the
// state it leaves in the state store.
func (n *Node) handshake() (sm.State, error) {
	ss := n.StateStore()
	state, err := ss.LoadFromDBOrGenesisDoc(n.cmt.GenesisDoc())
	if err != nil {
		return sm.State{}, fmt.Errorf("loading the genesis state: %w", err)
	}
	h := consensus.NewHandshaker(ss, state, n.cmt.BlockStore(), n.cmt.GenesisDoc())
	h.SetLogger(n.logger.With("module", "consensus"))
	h.SetEventBus(n.cmt.EventBus())
	if err := h.HandshakeWithContext(n.ctx, n.cmt.ProxyApp()); err != nil {
		return sm.State{}, fmt.Errorf("ABCI handshake: %w", err)
	}
	if state, err = ss.Load(); err != nil {
		return sm.State{}, fmt.Errorf("loading the state after the handshake: %w", err)
	}
	if state.IsEmpty() || state.LastBlockHeight != 0 {
		return sm.State{}, fmt.Errorf("unexpected state after the handshake (height %d)", state.LastBlockHeight)
	}
	return state, nil
}
