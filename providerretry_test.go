package statesync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
)

// idProvider is a StateProvider only compared by identity (never called).
type idProvider struct{ StateProvider }

// TestRetryTransientRecovers: transient failures are retried with backoff;
// the first success ends the retries.
func TestRetryTransientRecovers(t *testing.T) {
	calls := 0
	want := &idProvider{}
	sp, err := retryTransient(context.Background(), time.Now().Add(time.Minute), time.Millisecond, log.NewNopLogger(),
		func(context.Context) (StateProvider, error) {
			calls++
			if calls < 3 {
				return nil, fmt.Errorf("%w: connection refused", ErrProviderTransient)
			}
			return want, nil
		})
	require.NoError(t, err)
	require.Same(t, want, sp)
	require.Equal(t, 3, calls)
}

// TestRetryTransientStops: a permanent error is returned at once; a
// transient one once the deadline is reached, saying how often it was
// tried; a cancelled ctx ends the waiting.
func TestRetryTransientStops(t *testing.T) {
	calls := 0
	_, err := retryTransient(context.Background(), time.Now().Add(time.Minute), time.Millisecond, log.NewNopLogger(),
		func(context.Context) (StateProvider, error) { calls++; return nil, ErrTrustExpired })
	require.ErrorIs(t, err, ErrTrustExpired)
	require.Equal(t, 1, calls)

	calls = 0
	_, err = retryTransient(context.Background(), time.Now().Add(20*time.Millisecond), time.Millisecond,
		log.NewNopLogger(), func(context.Context) (StateProvider, error) {
			calls++
			return nil, fmt.Errorf("%w: connection refused", ErrProviderTransient)
		})
	require.ErrorIs(t, err, ErrProviderTransient)
	require.ErrorContains(t, err, fmt.Sprintf("failed %d times", calls))
	require.ErrorContains(t, err, "retried until statesync.discovery_timeout")
	require.Greater(t, calls, 1)

	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	_, err = retryTransient(ctx, time.Now().Add(time.Hour), time.Hour, log.NewNopLogger(),
		func(context.Context) (StateProvider, error) {
			calls++
			cancel() // the wait that follows ends with ctx
			return nil, fmt.Errorf("%w: connection refused", ErrProviderTransient)
		})
	require.ErrorIs(t, err, ErrProviderTransient)
	require.Equal(t, 1, calls)
}

// TestRPCProviderUnreachableIsRetried: with its RPC servers refusing
// connections, the real RPC state provider's construction is retried
// until discovery_timeout, and the error says so.
func TestRPCProviderUnreachableIsRetried(t *testing.T) {
	c := recentChain(t, chaingen.Options{Height: 3})
	var servers []string
	for range 2 { // free ports, closed: connection refused
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		servers = append(servers, l.Addr().String())
		require.NoError(t, l.Close())
	}
	cfg := testConfig()
	cfg.RPCServers = servers
	cfg.TrustHeight, cfg.TrustHash = 1, fmt.Sprintf("%X", c.TrustOptions(1, time.Hour).Hash)
	r := &Reactor{cfg: cfg, logger: log.NewNopLogger(), deps: Deps{Genesis: c.GenesisState()}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // bound only; 5 s discovery_timeout
	defer cancel()
	_, err := retryTransient(ctx, time.Now().Add(time.Second), 10*time.Millisecond, r.logger, r.buildStateProvider)
	require.ErrorIs(t, err, ErrProviderTransient)
	require.ErrorContains(t, err, "connection refused")
	require.ErrorContains(t, err, "retried until statesync.discovery_timeout")
	require.False(t, errors.Is(err, context.DeadlineExceeded))
}
