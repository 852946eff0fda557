package statesync

import (
	"context"
	"fmt"
	"sync"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/proxy"
)

// appGate makes the app's snapshot and query calls abandonable: the
// Reactor never waits for the app past the caller's ctx or its own Stop.
//
// CometBFT's local ABCI client ignores ctx (a call returns when the app
// returns), and an app may take an hour to apply one chunk. So every call
// runs on a goroutine of its own while the caller waits for the first of:
// the answer, the end of ctx (the call returns ctx.Err()) or Stop (it
// returns ErrStopped). A call so abandoned is not interrupted: the app
// finishes it and its answer is dropped. Its goroutine then ends; it is
// counted in inflight (Reactor.AppCallsDone waits for it), not in the
// Reactor's WaitGroup, so Stop returns within a bounded time whatever the
// app does. What the abandoned call did to the app stays done: an applied
// chunk is applied. A state sync that is abandoned mid-restore has left
// the app with a partial restore, which the app discards when it is
// offered a snapshot again (as after a crash), or which the node's next
// boot state-syncs over. With a socket app, the node's Stop closes the
// connection, which ends the call.
type appGate struct {
	stop     <-chan struct{} // closed by Reactor.OnStop
	inflight sync.WaitGroup  // calls still inside the app, abandoned or not
}

// gated runs f on its own goroutine and waits for it, ctx or Stop.
func gated[T any](g *appGate, ctx context.Context, what string, f func(context.Context) (T, error)) (T, error) {
	var zero T
	select {
	case <-g.stop:
		return zero, fmt.Errorf("%w: not calling %s", ErrStopped, what)
	default:
	}
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("not calling %s: %w", what, err)
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1) // the goroutine never blocks on an abandoned call
	g.inflight.Add(1)
	go func() {
		defer g.inflight.Done()
		v, err := f(ctx)
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, fmt.Errorf("%s abandoned (the app is still running it): %w", what, ctx.Err())
	case <-g.stop:
		return zero, fmt.Errorf("%w: %s abandoned (the app is still running it)", ErrStopped, what)
	}
}

// gatedSnapshots is the app's snapshot connection behind an appGate.
type gatedSnapshots struct {
	g     *appGate
	inner proxy.AppConnSnapshot
}

func (s gatedSnapshots) Error() error { return s.inner.Error() }

func (s gatedSnapshots) ListSnapshots(ctx context.Context, req *abci.RequestListSnapshots) (*abci.ResponseListSnapshots, error) {
	return gated(s.g, ctx, "ListSnapshots", func(ctx context.Context) (*abci.ResponseListSnapshots, error) {
		return s.inner.ListSnapshots(ctx, req)
	})
}

func (s gatedSnapshots) OfferSnapshot(ctx context.Context, req *abci.RequestOfferSnapshot) (*abci.ResponseOfferSnapshot, error) {
	return gated(s.g, ctx, "OfferSnapshot", func(ctx context.Context) (*abci.ResponseOfferSnapshot, error) {
		return s.inner.OfferSnapshot(ctx, req)
	})
}

func (s gatedSnapshots) LoadSnapshotChunk(ctx context.Context, req *abci.RequestLoadSnapshotChunk) (*abci.ResponseLoadSnapshotChunk, error) {
	return gated(s.g, ctx, "LoadSnapshotChunk", func(ctx context.Context) (*abci.ResponseLoadSnapshotChunk, error) {
		return s.inner.LoadSnapshotChunk(ctx, req)
	})
}

func (s gatedSnapshots) ApplySnapshotChunk(ctx context.Context, req *abci.RequestApplySnapshotChunk) (*abci.ResponseApplySnapshotChunk, error) {
	return gated(s.g, ctx, "ApplySnapshotChunk", func(ctx context.Context) (*abci.ResponseApplySnapshotChunk, error) {
		return s.inner.ApplySnapshotChunk(ctx, req)
	})
}

// gatedQuery is the app's query connection behind an appGate.
type gatedQuery struct {
	g     *appGate
	inner proxy.AppConnQuery
}

func (q gatedQuery) Error() error { return q.inner.Error() }

func (q gatedQuery) Echo(ctx context.Context, msg string) (*abci.ResponseEcho, error) {
	return gated(q.g, ctx, "Echo", func(ctx context.Context) (*abci.ResponseEcho, error) {
		return q.inner.Echo(ctx, msg)
	})
}

func (q gatedQuery) Info(ctx context.Context, req *abci.RequestInfo) (*abci.ResponseInfo, error) {
	return gated(q.g, ctx, "Info", func(ctx context.Context) (*abci.ResponseInfo, error) {
		return q.inner.Info(ctx, req)
	})
}

func (q gatedQuery) Query(ctx context.Context, req *abci.RequestQuery) (*abci.ResponseQuery, error) {
	return gated(q.g, ctx, "Query", func(ctx context.Context) (*abci.ResponseQuery, error) {
		return q.inner.Query(ctx, req)
	})
}

// gateApp puts deps' app connections behind g.
func gateApp(g *appGate, deps *Deps) {
	deps.Snapshots = gatedSnapshots{g: g, inner: deps.Snapshots}
	if deps.Query != nil {
		deps.Query = gatedQuery{g: g, inner: deps.Query}
	}
}

// AppCallsDone returns a channel closed once no call of the Reactor into
// the app is running, abandoned ones included (see Stop). After Stop, it
// tells when the app has finished what it was doing.
func (r *Reactor) AppCallsDone() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		r.app.inflight.Wait()
		close(done)
	}()
	return done
}
