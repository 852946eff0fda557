package statesync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/types"
)

// classify wraps an error of the light client (or a provider) in the
// package's vocabulary; ctx is the caller's context.
func (p *lightStateProvider) classify(ctx context.Context, since time.Time, what string, err error) error {
	var expired light.ErrOldHeaderExpired
	switch {
	case errors.As(err, &expired):
		return fmt.Errorf("%w: %s: the trusted header expired at %v (trust period %v): configure a recent "+
			"statesync.trust_height and trust_hash: %w", ErrTrustExpired, what, expired.At, p.trustPeriod, err)
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %s: %w", ErrProviderTransient, what, context.Cause(ctx))
	case errors.Is(err, provider.ErrHeightTooHigh), errors.Is(err, provider.ErrLightBlockNotFound):
		return fmt.Errorf("%w: %s: no source has it yet: %w", ErrHeightNotAvailable, what, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %s: timed out after %v%s: %w", ErrProviderTransient, what, p.timeout,
			p.failures(since), err)
	case isDivergence(err):
		return fmt.Errorf("%w: %w: %s: %w", ErrProviderTransient, ErrProvidersDisagree, what, err)
	case errors.Is(err, light.ErrNoWitnesses), errors.Is(err, light.ErrFailedHeaderCrossReferencing),
		isTransient(err):
		return fmt.Errorf("%w: %s%s: %w", ErrProviderTransient, what, p.failures(since), err)
	default:
		return fmt.Errorf("%w: %s: %w", ErrVerifyFailed, what, err)
	}
}

// checkedProvider adapts a provider's errors to what light.Client expects.
// The light client compares errors by identity and permanently drops a
// provider for any error other than the provider package's sentinels and
// bare context errors, so one dropped connection or HTTP 429 would cost it
// a witness for good: transient failures become provider.ErrNoResponse
// (the provider is kept), and the original error is kept for messages.
type checkedProvider struct {
	inner       provider.Provider
	name        string
	lastFailure atomic.Pointer[providerFailure]
}

type providerFailure struct {
	at  time.Time
	err error
}

var _ provider.Provider = (*checkedProvider)(nil)

func newCheckedProvider(inner provider.Provider) *checkedProvider {
	name := fmt.Sprintf("%T", inner)
	if s, ok := inner.(fmt.Stringer); ok {
		name = s.String()
	}
	return &checkedProvider{inner: inner, name: name}
}

func (p *checkedProvider) String() string { return p.name }

// ChainID implements provider.Provider.
func (p *checkedProvider) ChainID() string { return p.inner.ChainID() }

// ReportEvidence implements provider.Provider.
func (p *checkedProvider) ReportEvidence(ctx context.Context, ev types.Evidence) error {
	return p.inner.ReportEvidence(ctx, ev)
}

// LightBlock implements provider.Provider.
func (p *checkedProvider) LightBlock(ctx context.Context, height int64) (*types.LightBlock, error) {
	lb, err := p.inner.LightBlock(ctx, height)
	if err == nil && lb == nil {
		err = provider.ErrBadLightBlock{Reason: errors.New("no light block and no error")}
	}
	if err == nil {
		return lb, nil
	}
	p.lastFailure.Store(&providerFailure{at: time.Now(), err: err})
	return nil, lightClientError(ctx, err)
}

// lightClientError maps err to the values light.Client branches on.
func lightClientError(ctx context.Context, err error) error {
	var bad provider.ErrBadLightBlock
	switch {
	case err == provider.ErrHeightTooHigh, err == provider.ErrLightBlockNotFound, err == provider.ErrNoResponse: //nolint:errorlint // light.Client compares by identity
		return err
	case errors.As(err, &bad):
		return bad
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, provider.ErrHeightTooHigh):
		return provider.ErrHeightTooHigh
	case errors.Is(err, provider.ErrLightBlockNotFound):
		return provider.ErrLightBlockNotFound
	case errors.Is(err, provider.ErrNoResponse), isTransient(err):
		return provider.ErrNoResponse
	default:
		return err
	}
}

// httpUnavailable matches the status line CometBFT's JSON-RPC client puts
// in its errors for rate limiting and gateway failures.
var httpUnavailable = regexp.MustCompile(`Status: (408|425|429|500|502|503|504)\b`)

// isTransient reports whether err says a source was unavailable rather
// than wrong: timeouts, refused or reset connections, rate limits, a peer
// that went away.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	var netErr net.Error
	switch {
	case errors.Is(err, ErrProviderTransient), errors.Is(err, provider.ErrNoResponse),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, ErrTimeout), errors.Is(err, ErrNoPeers), errors.Is(err, ErrStopped),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.As(err, &netErr):
		return true
	}
	return httpUnavailable.MatchString(err.Error())
}
