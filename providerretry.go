package statesync

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cometbft/cometbft/libs/log"
)

// The backoff between attempts at building the RPC state provider.
const (
	providerRetryFirst = 250 * time.Millisecond
	providerRetryMax   = 8 * time.Second
)

// buildStateProviderRetrying builds the state provider Config asks for
// (buildStateProvider). An RPC state provider whose construction fails
// transiently (ErrProviderTransient: the servers unreachable, timing out
// or disagreeing while the trusted header is fetched) is tried again with
// exponential backoff until Config.DiscoveryTimeout has passed; then the
// last error is returned, saying how often and how long it was tried.
// Other errors, and the P2P provider (which waits for peers itself), are
// returned at once.
func (r *Reactor) buildStateProviderRetrying(ctx context.Context) (StateProvider, error) {
	if r.cfg.UseP2P {
		return r.buildStateProvider(ctx)
	}
	return retryTransient(ctx, time.Now().Add(r.cfg.DiscoveryTimeout), providerRetryFirst, r.logger,
		r.buildStateProvider)
}

// retryTransient calls build until it succeeds, fails with an error that
// is not ErrProviderTransient, ctx ends, or the next attempt would start
// after deadline; waits double from first up to providerRetryMax.
func retryTransient(ctx context.Context, deadline time.Time, first time.Duration, logger log.Logger,
	build func(context.Context) (StateProvider, error),
) (StateProvider, error) {
	start, wait := time.Now(), first
	for attempt := 1; ; attempt++ {
		sp, err := build(ctx)
		if err == nil || !errors.Is(err, ErrProviderTransient) || ctx.Err() != nil {
			return sp, err
		}
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("building the RPC state provider failed %d times in %v, retried until "+
				"statesync.discovery_timeout: %w", attempt, time.Since(start).Round(time.Millisecond), err)
		}
		logger.Info("Cannot reach the RPC servers yet; retrying", "attempt", attempt, "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, providerRetryMax)
	}
}
