package statesync

import (
	"context"
	"fmt"
	"time"

	"github.com/cometbft/cometbft/crypto/tmhash"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	cmtstate "github.com/cometbft/cometbft/proto/tendermint/state"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
)

// StateProvider gives Sync the verified data it trusts a snapshot with.
// Implementations must be safe for concurrent use, honour ctx (return soon
// after it ends) and return values the caller may keep and modify.
//
// A call can fail because:
//   - a height it needs does not exist yet (the snapshot is at the chain's
//     tip): the error wraps ErrHeightNotAvailable, and the snapshot is
//     tried again later;
//   - a source timed out, was unreachable, rate-limited or otherwise
//     unavailable, or ctx ended: the error wraps ErrProviderTransient and
//     says nothing about the snapshot, which is kept;
//   - the trust root is older than the trust period: the error wraps
//     ErrTrustExpired, and no snapshot can be verified until the
//     configuration changes;
//   - the sources disagree (about proposer priorities, headers or consensus
//     params no header commits to) and no majority settles it: the error
//     wraps ErrProvidersDisagree and ErrProviderTransient; a provider fault
//     is not a snapshot fault, and the snapshot is kept;
//   - anything else (data that does not verify against the trust root):
//     the error wraps ErrVerifyFailed and the snapshot is rejected.
type StateProvider interface {
	// AppHash returns the application hash after height was committed: the
	// AppHash of the verified header at height+1. It also verifies
	// height+2, which State needs, so a snapshot whose AppHash succeeds can
	// be restored.
	AppHash(ctx context.Context, height uint64) ([]byte, error)
	// Commit returns the verified commit of height, to be saved as the
	// node's seen commit.
	Commit(ctx context.Context, height uint64) (*types.Commit, error)
	// State returns the state after height was committed, with every field
	// derived from verified light blocks at height, height+1 and height+2,
	// from consensus params whose hash the header at height+1 commits to,
	// and from the node's own chain ID, initial height and software
	// version.
	State(ctx context.Context, height uint64) (sm.State, error)
}

// NewLightClientStateProvider returns a StateProvider on CometBFT's light
// client fed by any light providers (RPC servers, peers, a custom source):
// primary and at least one witness, rooted at trust. chainID, ver.Software
// and initialHeight are the node's own (from its genesis); every other
// State field comes from verified data. Consensus params come from params
// and are accepted only if their hash matches the verified header. Every
// verification, and this construction, is bounded by verifyTimeout
// (DefaultVerifyTimeout if not positive). A nil logger logs nothing.
//
// Proposer priorities, which no header commits to, are taken from the
// verified validator sets as served (never recomputed) and State requires
// at least two providers to serve identical ones for each of its three
// heights, and all of them, or a strict majority of three or more, to
// agree (the outvoted ones are left out); the proposer of each set is the
// one its header names. Consensus params follow the quorum rule of
// paramsquorum.go.
//
// One limit of CometBFT's light client: when a witness lags behind the
// primary, the client waits 2×MaxClockDrift+MaxBlockLag (30s by default)
// for it without watching the context, so such a verification can
// outlast verifyTimeout by that much.
//
// Errors: invalid trust options wrap ErrInvalidConfig; no witness wraps
// ErrNotEnoughPeers; a trust root older than trust.Period wraps
// ErrTrustExpired and names its height and age; a trust hash that does not
// match the chain wraps ErrVerifyFailed; unreachable providers wrap
// ErrProviderTransient.
func NewLightClientStateProvider(ctx context.Context, chainID string, ver cmtstate.Version, initialHeight int64,
	primary provider.Provider, witnesses []provider.Provider, trust light.TrustOptions, params ParamsSource,
	verifyTimeout time.Duration, logger log.Logger,
) (StateProvider, error) {
	sp, err := newLightStateProvider(ctx, chainID, ver, initialHeight, primary, witnesses, trust, params,
		verifyTimeout, logger)
	if err != nil {
		return nil, err
	}
	return sp, nil
}

// checkTrustOptions validates trust, naming the config keys.
func checkTrustOptions(trust light.TrustOptions) error {
	switch {
	case trust.Period <= 0:
		return invalid("trust_period", "must be a positive duration, got %v", trust.Period)
	case trust.Height <= 0:
		return invalid("trust_height", "must be positive, got %d", trust.Height)
	case len(trust.Hash) != tmhash.Size:
		return invalid("trust_hash", "must be a %d-byte hash, got %d bytes", tmhash.Size, len(trust.Hash))
	}
	if err := trust.ValidateBasic(); err != nil {
		return fmt.Errorf("%w: trust options: %w", ErrInvalidConfig, err)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
