package statesync

import (
	"context"
	"testing"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
	ssproto "github.com/statesync/statesync/proto"
)

// sentLog records what the dispatcher sent.
type sentLog struct {
	sent chan proto.Message
}

func newSentLog() *sentLog { return &sentLog{sent: make(chan proto.Message, 16)} }

func (s *sentLog) send(_ p2p.ID, _ byte, m proto.Message) bool {
	s.sent <- m
	return true
}

func lbResponse(t *testing.T, c *chaingen.Chain, h int64) *ssproto.LightBlockResponse {
	pb, err := c.LightBlock(h).ToProto()
	require.NoError(t, err)
	return &ssproto.LightBlockResponse{LightBlock: pb}
}

func TestDispatcherMatchesByPeerAndHeight(t *testing.T) {
	chain, err := chaingen.New(chaingen.Options{Height: 5})
	require.NoError(t, err)
	sl := newSentLog()
	d := newDispatcher(sl.send, log.NewNopLogger(), NopMetrics())
	defer d.close()

	type got struct {
		h   int64
		err error
	}
	results := make(chan got, 2)
	for _, h := range []int64{2, 3} { // several in flight to one peer
		go func(h int64) {
			lb, err := d.LightBlock(context.Background(), "a", h)
			if lb != nil {
				h = lb.Height
			}
			results <- got{h, err}
		}(h)
	}
	<-sl.sent
	<-sl.sent
	// Wrong peer, wrong height: unsolicited, no waiter released.
	require.ErrorIs(t, d.handleLightBlockResponse("b", lbResponse(t, chain, 2)), ErrUnsolicited)
	require.ErrorIs(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 4)), ErrUnsolicited)
	// The right ones, out of order.
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 3)))
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 2)))
	seen := map[int64]bool{}
	for i := 0; i < 2; i++ {
		r := <-results
		require.NoError(t, r.err)
		seen[r.h] = true
	}
	require.Equal(t, map[int64]bool{2: true, 3: true}, seen)
	// Late duplicate.
	require.ErrorIs(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 2)), ErrUnsolicited)
}

func TestDispatcherTimeoutAndRelease(t *testing.T) {
	sl := newSentLog()
	d := newDispatcher(sl.send, log.NewNopLogger(), NopMetrics())

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := d.LightBlock(ctx, "a", 1)
	require.ErrorIs(t, err, ErrTimeout)

	// removePeer and close release waiters at once.
	errs := make(chan error, 2)
	go func() { _, err := d.LightBlock(context.Background(), "gone", 1); errs <- err }()
	go func() { _, err := d.Params(context.Background(), "stays", 1); errs <- err }()
	<-sl.sent
	<-sl.sent
	<-sl.sent
	d.removePeer("gone")
	require.ErrorIs(t, <-errs, ErrNoPeers)
	d.close()
	require.ErrorIs(t, <-errs, ErrStopped)
	_, err = d.LightBlock(context.Background(), "a", 1)
	require.ErrorIs(t, err, ErrStopped)
}

func TestDispatcherEmptyResponseAndParams(t *testing.T) {
	chain, err := chaingen.New(chaingen.Options{Height: 3})
	require.NoError(t, err)
	sl := newSentLog()
	d := newDispatcher(sl.send, log.NewNopLogger(), NopMetrics())
	defer d.close()

	done := make(chan error, 1)
	go func() {
		lb, err := d.LightBlock(context.Background(), "a", 2)
		if err == nil && lb != nil {
			err = ErrVerifyFailed
		}
		done <- err
	}()
	<-sl.sent
	require.NoError(t, d.handleLightBlockResponse("a", &ssproto.LightBlockResponse{}))
	require.NoError(t, <-done, "an empty response means the peer lacks the block")

	pdone := make(chan error, 1)
	go func() {
		p, err := d.Params(context.Background(), "a", 2)
		want := chain.Params()
		if err == nil && string(p.Hash()) != string(want.Hash()) {
			err = ErrVerifyFailed
		}
		pdone <- err
	}()
	<-sl.sent
	params := chain.Params()
	pp := params.ToProto()
	require.ErrorIs(t, d.handleParamsResponse("a", &ssproto.ParamsResponse{Height: 3, ConsensusParams: pp}), ErrUnsolicited)
	require.NoError(t, d.handleParamsResponse("a", &ssproto.ParamsResponse{Height: 2, ConsensusParams: pp}))
	require.NoError(t, <-pdone)
}
