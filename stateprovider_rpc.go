package statesync

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	lighthttp "github.com/cometbft/cometbft/light/provider/http"
	cmtstate "github.com/cometbft/cometbft/proto/tendermint/state"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	jsonrpcclient "github.com/cometbft/cometbft/rpc/jsonrpc/client"
	"github.com/cometbft/cometbft/types"
)

// rpcIdleConnTimeout closes idle keep-alive connections to RPC servers.
const rpcIdleConnTimeout = 90 * time.Second

// NewRPCStateProvider returns a StateProvider that verifies light blocks
// fetched from CometBFT RPC servers (endpoints commit and validators) with
// CometBFT's light client: the first server is the primary, the others
// are witnesses. Consensus params come from every server's consensus_params
// endpoint and are accepted only if they hash to the verified header's
// ConsensusHash, at least two servers return them, and every server that
// answers returns the same full params (the hash covers only
// Block.MaxBytes and MaxGas): a server returning other params with the
// right hash makes the call fail transiently (ErrProvidersDisagree; see
// paramsquorum.go). A server outvoted on proposer priorities by a majority
// of three or more is left out (see lightchecks.go).
//
// chainID, version.Software and initialHeight are the node's own (from its
// genesis). servers are normalised (scheme http unless given, tcp:// read
// as http://, lower-case host, default port and trailing slash dropped)
// and deduplicated. verifyTimeout bounds every verification and every
// HTTP request (DefaultVerifyTimeout if not positive); ctx bounds the
// construction, which fetches and checks the trusted header.
//
// Errors: fewer than two distinct servers wraps ErrNotEnoughPeers and says
// which shortfall it is (none, only one, or one server under several
// spellings, which gives no witness cross-check); a malformed address or
// invalid trust options wrap ErrInvalidConfig; a trust root older than
// trust.Period wraps ErrTrustExpired; unreachable servers wrap
// ErrProviderTransient.
//
// The returned provider also implements io.Closer, which closes idle
// connections to the servers once the provider is no longer needed.
func NewRPCStateProvider(ctx context.Context, chainID string, ver cmtstate.Version, initialHeight int64,
	servers []string, trust light.TrustOptions, verifyTimeout time.Duration, logger log.Logger,
) (StateProvider, error) {
	distinct, err := normaliseServers(servers)
	if err != nil {
		return nil, err
	}
	if len(distinct) < 2 {
		return nil, fmt.Errorf("%w: statesync.rpc_servers needs at least 2 distinct RPC servers, got %s",
			ErrNotEnoughPeers, serversShortfall(servers, distinct))
	}
	if verifyTimeout <= 0 {
		verifyTimeout = DefaultVerifyTimeout
	}
	rp := &rpcStateProvider{}
	providers := make([]provider.Provider, 0, len(distinct))
	params := make(paramsSources, 0, len(distinct))
	for _, server := range distinct {
		hc, err := jsonrpcclient.DefaultHTTPClient(server)
		if err != nil {
			return nil, invalid("rpc_servers", "%s: %v", server, err)
		}
		hc.Timeout = verifyTimeout
		if tr, ok := hc.Transport.(*http.Transport); ok {
			tr.IdleConnTimeout = rpcIdleConnTimeout
			rp.transports = append(rp.transports, tr)
		}
		c, err := rpchttp.NewWithClient(server, "/websocket", hc)
		if err != nil {
			return nil, invalid("rpc_servers", "%s: %v", server, err)
		}
		providers = append(providers, lighthttp.NewWithClient(chainID, c))
		params = append(params, rpcParams{c: c, remote: server})
	}
	sp, err := newLightStateProvider(ctx, chainID, ver, initialHeight, providers[0], providers[1:], trust,
		params, verifyTimeout, logger)
	if err != nil {
		_ = rp.Close()
		return nil, err
	}
	rp.lightStateProvider = sp
	return rp, nil
}

// rpcStateProvider is the light state provider over RPC servers.
type rpcStateProvider struct {
	*lightStateProvider
	transports []*http.Transport
}

// Close closes idle connections to the RPC servers. The provider still
// works afterwards (it reconnects).
func (p *rpcStateProvider) Close() error {
	for _, tr := range p.transports {
		tr.CloseIdleConnections()
	}
	return nil
}

// The messages CometBFT's RPC uses for heights it does not have (the light
// http provider matches the same ones).
var (
	rpcHeightTooHigh   = regexp.MustCompile(`height \d+ must be less than or equal to`)
	rpcHeightNotStored = regexp.MustCompile(`height \d+ is not available`)
)

// rpcParams fetches consensus params from one RPC server.
type rpcParams struct {
	c      *rpchttp.HTTP
	remote string
}

func (p rpcParams) String() string { return p.remote }

// ConsensusParams implements ParamsSource.
func (p rpcParams) ConsensusParams(ctx context.Context, height int64) (types.ConsensusParams, error) {
	res, err := p.c.ConsensusParams(ctx, &height)
	switch {
	case err != nil && rpcHeightTooHigh.MatchString(err.Error()):
		return types.ConsensusParams{}, fmt.Errorf("%s: %w: %w", p.remote, provider.ErrHeightTooHigh, err)
	case err != nil && rpcHeightNotStored.MatchString(err.Error()):
		return types.ConsensusParams{}, fmt.Errorf("%s: %w: %w", p.remote, provider.ErrLightBlockNotFound, err)
	case err != nil:
		return types.ConsensusParams{}, fmt.Errorf("%s: %w", p.remote, err)
	case res == nil:
		return types.ConsensusParams{}, fmt.Errorf("%s: %w", p.remote, errors.New("empty consensus_params result"))
	case res.BlockHeight != height:
		return types.ConsensusParams{}, fmt.Errorf("%s: asked for the params at height %d, got height %d",
			p.remote, height, res.BlockHeight)
	}
	return res.ConsensusParams, nil
}
