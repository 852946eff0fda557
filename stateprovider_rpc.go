package statesync

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	lighthttp "github.com/cometbft/cometbft/light/provider/http"
	cmtstate "github.com/cometbft/cometbft/proto/tendermint/state"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/cometbft/cometbft/types"
)

// NewRPCStateProvider returns a StateProvider verifying light blocks from
// CometBFT RPC servers: the first is the light client's primary, the others
// its witnesses, and consensus params come from the primary (checked
// against the verified header).
//
// servers are normalised (default scheme http, lower-case host, no trailing
// slash) and deduplicated: at least two distinct servers are required, or
// the error wraps ErrNotEnoughPeers — the same server twice gives no witness
// cross-check. An expired trust root wraps ErrTrustExpired; invalid trust
// options wrap ErrInvalidConfig. Every verification is bounded by
// verifyTimeout.
func NewRPCStateProvider(ctx context.Context, chainID string, ver cmtstate.Version, initialHeight int64,
	servers []string, trust light.TrustOptions, verifyTimeout time.Duration, logger log.Logger,
) (StateProvider, error) {
	distinct, err := normaliseServers(servers)
	if err != nil {
		return nil, err
	}
	if len(distinct) < 2 {
		return nil, fmt.Errorf("%w: statesync.rpc_servers needs at least 2 distinct RPC servers, got %d (%v): "+
			"the same server twice gives no witness cross-check", ErrNotEnoughPeers, len(distinct), servers)
	}
	providers := make([]provider.Provider, 0, len(distinct))
	var primary *rpchttp.HTTP
	for i, server := range distinct {
		c, err := rpchttp.NewWithTimeout(server, "/websocket", uint(max(verifyTimeout/time.Second, 1)))
		if err != nil {
			return nil, fmt.Errorf("%w: statesync.rpc_servers: %s: %w", ErrInvalidConfig, server, err)
		}
		if i == 0 {
			primary = c
		}
		providers = append(providers, lighthttp.NewWithClient(chainID, c))
	}
	return newLightStateProvider(ctx, chainID, ver, initialHeight, providers[0], providers[1:], trust,
		rpcParams{c: primary}, verifyTimeout, logger)
}

// normaliseServers canonicalises RPC server addresses and drops duplicates,
// keeping the first occurrence's order.
func normaliseServers(servers []string) ([]string, error) {
	seen := make(map[string]bool, len(servers))
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "://") {
			s = "http://" + s
		}
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("%w: statesync.rpc_servers: invalid address %q", ErrInvalidConfig, s)
		}
		u.Scheme = strings.ToLower(u.Scheme)
		u.Host = strings.ToLower(u.Host)
		u.Path = strings.TrimRight(u.Path, "/")
		norm := u.String()
		if !seen[norm] {
			seen[norm] = true
			out = append(out, norm)
		}
	}
	return out, nil
}

// rpcParams fetches consensus params over RPC.
type rpcParams struct{ c *rpchttp.HTTP }

func (p rpcParams) ConsensusParams(ctx context.Context, height int64) (types.ConsensusParams, error) {
	res, err := p.c.ConsensusParams(ctx, &height)
	if err != nil {
		return types.ConsensusParams{}, err
	}
	return res.ConsensusParams, nil
}
