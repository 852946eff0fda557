package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"

	"github.com/statesync/statesync/internal/chaingen"
)

// env implements p2ptest.TB for a command: a failure panics with an error
// (recovered by run), cleanups run in reverse at close.
type env struct {
	mtx      sync.Mutex
	cleanups []func()
}

type fatal struct{ err error }

func (e *env) Helper() {}
func (e *env) Fatalf(format string, args ...any) {
	panic(fatal{fmt.Errorf(format, args...)})
}

func (e *env) Cleanup(f func()) {
	e.mtx.Lock()
	e.cleanups = append(e.cleanups, f)
	e.mtx.Unlock()
}

func (e *env) close() {
	e.mtx.Lock()
	cs := e.cleanups
	e.cleanups = nil
	e.mtx.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// withEnv runs f with a fresh env, turning Fatalf into an error and
// running the cleanups afterwards.
func withEnv(f func(e *env) error) (err error) {
	e := &env{}
	defer e.close()
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = f.err
		}
	}()
	return f(e)
}

// appConns starts the app's connections, stopped at cleanup.
func appConns(e *env, app abci.Application) proxy.AppConns {
	conns := proxy.NewAppConns(proxy.NewLocalClientCreator(app), proxy.NopMetrics())
	if err := conns.Start(); err != nil {
		e.Fatalf("app connections: %v", err)
	}
	e.Cleanup(func() { _ = conns.Stop() })
	return conns
}

// chainProvider is a state provider that returns the generated chain's
// data as is (no light client): it satisfies both CometBFT's
// statesync.StateProvider and ours, so both reactors get the same,
// instant, answers and only the restore itself is compared.
type chainProvider struct{ c *chaingen.Chain }

func (p chainProvider) AppHash(_ context.Context, h uint64) ([]byte, error) {
	return p.c.LightBlock(int64(h) + 1).AppHash, nil
}

func (p chainProvider) Commit(_ context.Context, h uint64) (*types.Commit, error) {
	return p.c.Commit(int64(h)), nil
}

func (p chainProvider) State(_ context.Context, h uint64) (sm.State, error) {
	return p.c.State(int64(h)), nil
}

// heapSampler records the peak of the heap above the baseline taken when
// it starts: heap objects (live and not yet swept garbage, what the
// process actually holds) and the live heap as of the last GC.
type heapSampler struct {
	base       uint64
	peak, live atomic.Uint64
	stop, done chan struct{}
}

var heapMetrics = []string{"/memory/classes/heap/objects:bytes", "/gc/heap/live:bytes"}

func readHeap() (objects, live uint64) {
	s := []metrics.Sample{{Name: heapMetrics[0]}, {Name: heapMetrics[1]}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		objects = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		live = s[1].Value.Uint64()
	}
	return objects, live
}

func sampleHeap() *heapSampler {
	runtime.GC()
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	h.base, _ = readHeap()
	go func() {
		defer close(h.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			objects, live := readHeap()
			if objects > h.base && objects-h.base > h.peak.Load() {
				h.peak.Store(objects - h.base)
			}
			if live > h.base && live-h.base > h.live.Load() {
				h.live.Store(live - h.base)
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

// finish stops sampling and returns the peaks above the baseline, in bytes.
func (h *heapSampler) finish() (peak, live uint64) {
	close(h.stop)
	<-h.done
	return h.peak.Load(), h.live.Load()
}
