package node

import (
	"context"
	"errors"

	"github.com/cometbft/cometbft/p2p"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
)

// parkedSwitch is what CometBFT's replaced reactor sees as its switch: the
// node's own, except that broadcasts go nowhere. The node calls that
// reactor's Sync from Start (state sync enabled), which broadcasts a
// snapshot request first and, with discovery_time = 0 and no snapshots in
// its (never fed) pool, returns at once.
type parkedSwitch struct{ p2p.Switcher }

func (parkedSwitch) BroadcastAsync(p2p.Envelope) {}
func (parkedSwitch) TryBroadcast(p2p.Envelope)   {}

// errPlaceholder is what placeholderProvider answers; nothing reaches it.
var errPlaceholder = errors.New("node: CometBFT's state sync is replaced; its state provider is a placeholder")

// placeholderProvider satisfies CometBFT's statesync.StateProvider so that
// Start does not build a light client from rpc_servers (which fails when
// there are none, as with use_p2p). The parked reactor never finds a
// snapshot, so it never asks.
type placeholderProvider struct{}

func (placeholderProvider) AppHash(context.Context, uint64) ([]byte, error) {
	return nil, errPlaceholder
}

func (placeholderProvider) Commit(context.Context, uint64) (*types.Commit, error) {
	return nil, errPlaceholder
}

func (placeholderProvider) State(context.Context, uint64) (sm.State, error) {
	return sm.State{}, errPlaceholder
}
