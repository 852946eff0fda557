package chaingen

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/types"
)

// Provider is a light provider (light/provider.Provider) backed by the
// chain, with knobs to make it fail, stall or lie. It also serves the
// chain's consensus params (statesync's ParamsSource). Safe for concurrent
// use; every light block it returns is a fresh copy.
//
// Heights: 0 means the latest (the top); below the initial height it
// answers provider.ErrLightBlockNotFound, above the top
// provider.ErrHeightTooHigh, and a negative height is an error.
type Provider struct {
	c *Chain

	mtx       sync.Mutex
	top       int64
	gate      chan struct{}
	delay     time.Duration
	failed    error
	intercept func(height int64) (*types.LightBlock, error)
	calls     int
	heights   []int64
	evidence  []types.Evidence
}

var _ provider.Provider = (*Provider)(nil)

// Provider returns a new light provider serving the chain up to Height.
func (c *Chain) Provider() *Provider { return &Provider{c: c, top: c.opts.Height} }

// String names the provider in light-client logs.
func (p *Provider) String() string { return fmt.Sprintf("chaingen{%s}", p.c.opts.ChainID) }

// SetTop limits the heights served to <= top (the chain's tip as this
// provider sees it).
func (p *Provider) SetTop(top int64) { p.mtx.Lock(); p.top = top; p.mtx.Unlock() }

// Block makes calls wait until gate is closed or their context ends (nil
// removes the gate).
func (p *Provider) Block(gate chan struct{}) { p.mtx.Lock(); p.gate = gate; p.mtx.Unlock() }

// Delay makes every call take d longer (or end with its context).
func (p *Provider) Delay(d time.Duration) { p.mtx.Lock(); p.delay = d; p.mtx.Unlock() }

// Fail makes every call fail with err (nil heals). Use
// provider.ErrNoResponse for an unreachable provider.
func (p *Provider) Fail(err error) { p.mtx.Lock(); p.failed = err; p.mtx.Unlock() }

// Intercept lets f answer calls first: a light block or an error from f is
// returned as is (after the gate and delay); (nil, nil) falls through to
// the chain. Use Chain.ForgeLightBlock for a lying provider. nil removes
// it.
func (p *Provider) Intercept(f func(height int64) (*types.LightBlock, error)) {
	p.mtx.Lock()
	p.intercept = f
	p.mtx.Unlock()
}

// Calls returns how many LightBlock calls were made.
func (p *Provider) Calls() int { p.mtx.Lock(); defer p.mtx.Unlock(); return p.calls }

// Heights returns the heights asked for, in order (0 for the latest).
func (p *Provider) Heights() []int64 {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	return append([]int64(nil), p.heights...)
}

// Evidence returns the evidence reported to the provider.
func (p *Provider) Evidence() []types.Evidence {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	return append([]types.Evidence(nil), p.evidence...)
}

// ChainID implements provider.Provider.
func (p *Provider) ChainID() string { return p.c.opts.ChainID }

// wait applies the gate and the delay.
func (p *Provider) wait(ctx context.Context, gate chan struct{}, delay time.Duration) error {
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}

// LightBlock implements provider.Provider.
func (p *Provider) LightBlock(ctx context.Context, h int64) (*types.LightBlock, error) {
	return p.serve(ctx, h, true)
}

func (p *Provider) serve(ctx context.Context, h int64, count bool) (*types.LightBlock, error) {
	p.mtx.Lock()
	if count {
		p.calls++
		p.heights = append(p.heights, h)
	}
	top, gate, delay, failed, intercept := p.top, p.gate, p.delay, p.failed, p.intercept
	p.mtx.Unlock()
	if err := p.wait(ctx, gate, delay); err != nil {
		return nil, err
	}
	if failed != nil {
		return nil, failed
	}
	if intercept != nil {
		if lb, err := intercept(h); lb != nil || err != nil {
			return lb, err
		}
	}
	switch {
	case h < 0:
		return nil, fmt.Errorf("chaingen: negative height %d", h)
	case h == 0:
		h = top
	case h > top:
		return nil, provider.ErrHeightTooHigh
	}
	lb := p.c.LightBlock(h)
	if lb == nil {
		return nil, provider.ErrLightBlockNotFound
	}
	return lb, nil
}

// ReportEvidence implements provider.Provider: records it.
func (p *Provider) ReportEvidence(_ context.Context, ev types.Evidence) error {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	p.evidence = append(p.evidence, ev)
	return nil
}

// ConsensusParams serves the params in effect at h, under the same knobs
// and height rules as LightBlock (statesync's ParamsSource). Not counted
// in Calls and Heights.
func (p *Provider) ConsensusParams(ctx context.Context, h int64) (types.ConsensusParams, error) {
	lb, err := p.serve(ctx, h, false)
	if err != nil {
		return types.ConsensusParams{}, err
	}
	return p.c.paramsAt(lb.Height), nil
}
