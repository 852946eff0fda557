package statesync

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cometbft/cometbft/light/provider"
	lighthttp "github.com/cometbft/cometbft/light/provider/http"
	"github.com/cometbft/cometbft/p2p"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	jsonrpcclient "github.com/cometbft/cometbft/rpc/jsonrpc/client"
)

// rpcLightSource is an RPC server backfill asks for light blocks when no
// connected peer serves channel 0x62 (stock CometBFT peers do not): it is
// scheduled by the block queue like a peer, under a pseudo peer ID that
// no p2p layer knows ("rpc:" and the server's address).
type rpcLightSource struct {
	remote string
	p      provider.Provider
	tr     *http.Transport // idle connections are closed when the run ends
}

// backfillRPCSources builds a light-block source per configured RPC server
// (Config.RPCServers, normalised and deduplicated). Servers that cannot be
// used are logged and skipped: backfill is never fatal.
func (r *Reactor) backfillRPCSources(chainID string) map[p2p.ID]*rpcLightSource {
	if len(r.cfg.RPCServers) == 0 {
		return nil
	}
	servers, err := normaliseServers(r.cfg.RPCServers)
	if err != nil {
		r.logger.Info("Backfill: not using rpc_servers", "err", err)
		return nil
	}
	out := make(map[p2p.ID]*rpcLightSource, len(servers))
	for _, server := range servers {
		hc, err := jsonrpcclient.DefaultHTTPClient(server)
		if err != nil {
			r.logger.Info("Backfill: not using an RPC server", "server", server, "err", err)
			continue
		}
		src := &rpcLightSource{remote: server}
		hc.Timeout = r.backfillSettings().timeout
		if tr, ok := hc.Transport.(*http.Transport); ok {
			src.tr = tr
		}
		c, err := rpchttp.NewWithClient(server, "/websocket", hc)
		if err != nil {
			r.logger.Info("Backfill: not using an RPC server", "server", server, "err", err)
			continue
		}
		src.p = lighthttp.NewWithClient(chainID, c)
		out[p2p.ID("rpc:"+server)] = src
	}
	return out
}

// closeRPC releases the RPC sources' idle connections.
func (b *backfiller) closeRPC() {
	for _, src := range b.rpc {
		if src.tr != nil {
			src.tr.CloseIdleConnections()
		}
	}
}

// fetchRPC asks an RPC source for one height on a goroutine the run owns
// (rpcWG): it ends when the request does, bounded by timeout and the run's
// end, and its answer goes to the sink like a peer's. The sink holds every
// request the queue can have in flight, so the send does not block.
func (b *backfiller) fetchRPC(src *rpcLightSource, key requestKey, timeout time.Duration) {
	ctx := b.runCtx
	b.rpcWG.Add(1)
	go func() {
		defer b.rpcWG.Done()
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		sent := time.Now()
		lb, err := src.p.LightBlock(cctx, key.height)
		resp := response{key: key, lb: lb, rtt: time.Since(sent)}
		switch {
		case err == nil && lb != nil && lb.Height == key.height:
		case err == nil:
			resp.lb, resp.err = nil, fmt.Errorf("%w: %s answered another height for %d", ErrTimeout, src.remote,
				key.height)
		case errors.Is(err, provider.ErrLightBlockNotFound), errors.Is(err, provider.ErrHeightTooHigh):
			resp.lb = nil // the server lacks it (pruned)
		case ctx.Err() != nil:
			resp.err = fmt.Errorf("%w: %w", ErrStopped, ctx.Err())
		default:
			// Unreachable, slow or answering garbage: counted as a timeout,
			// so the queue backs off and, after a few, stops asking it.
			resp.err = fmt.Errorf("%w: %s: %w", ErrTimeout, src.remote, err)
		}
		select {
		case b.sink <- resp:
		case <-ctx.Done():
		}
	}()
}

// punish disconnects a peer that served a bad block; an RPC source is only
// no longer asked (the queue benched it already).
func (b *backfiller) punish(peer p2p.ID, err error) {
	if src := b.rpc[peer]; src != nil {
		b.r.logger.Info("Backfill: RPC server served a bad block; no longer asking it", "server", src.remote,
			"err", err)
		return
	}
	b.r.punish(peer, err)
}
