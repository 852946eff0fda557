package statesync

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
	ssproto "github.com/statesync/statesync/proto"
)

// sentLog records what a dispatcher sent; fail makes sends to a peer fail.
type sentLog struct {
	mtx  sync.Mutex
	sent chan sentMsg
	fail map[p2p.ID]bool
}

type sentMsg struct {
	peer p2p.ID
	ch   byte
	msg  proto.Message
}

func newSentLog() *sentLog {
	return &sentLog{sent: make(chan sentMsg, 1024), fail: make(map[p2p.ID]bool)}
}

func (s *sentLog) send(peer p2p.ID, ch byte, m proto.Message) bool {
	s.mtx.Lock()
	fail := s.fail[peer]
	s.mtx.Unlock()
	if fail {
		return false
	}
	s.sent <- sentMsg{peer: peer, ch: ch, msg: m}
	return true
}

func testChain(t testing.TB, opts chaingen.Options) *chaingen.Chain {
	t.Helper()
	c, err := chaingen.New(opts)
	require.NoError(t, err)
	return c
}

func lbResponse(t testing.TB, c *chaingen.Chain, h int64) *ssproto.LightBlockResponse {
	t.Helper()
	pb, err := c.LightBlock(h).ToProto()
	require.NoError(t, err)
	return &ssproto.LightBlockResponse{LightBlock: pb}
}

func paramsResponse(c *chaingen.Chain, h int64) *ssproto.ParamsResponse {
	p := c.Params()
	return &ssproto.ParamsResponse{Height: uint64(h), ConsensusParams: p.ToProto()}
}

func newTestDispatcher(t *testing.T) (*dispatcher, *sentLog) {
	sl := newSentLog()
	d := newDispatcher(sl.send, log.NewNopLogger(), NopMetrics())
	t.Cleanup(d.close)
	return d, sl
}

func TestDispatcherMatchesByPeerAndHeight(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 6})
	d, sl := newTestDispatcher(t)
	sink := make(chan response, 4)
	for _, k := range []requestKey{{"a", kindLightBlock, 2}, {"a", kindLightBlock, 3}, {"b", kindLightBlock, 2}} {
		require.NoError(t, d.start(k, time.Minute, sink)) // several in flight to one peer
	}
	require.Equal(t, 2, d.pending("a"))
	for range 3 {
		m := <-sl.sent
		require.Equal(t, LightBlockChannel, m.ch)
		require.IsType(t, &ssproto.LightBlockRequest{}, m.msg)
	}
	// The same request twice is refused, and nothing is sent.
	require.ErrorIs(t, d.start(requestKey{"a", kindLightBlock, 2}, time.Minute, sink), errDuplicateRequest)

	// Another peer's height, a height not asked: no waiter is released.
	require.ErrorIs(t, d.handleLightBlockResponse("c", lbResponse(t, chain, 2)), ErrUnsolicited)
	require.ErrorIs(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 4)), ErrUnsolicited)
	require.Empty(t, sink)

	// Answers out of order reach their own requests.
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 3)))
	require.NoError(t, d.handleLightBlockResponse("b", lbResponse(t, chain, 2)))
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 2)))
	got := map[requestKey]int64{}
	for range 3 {
		r := <-sink
		require.NoError(t, r.err)
		got[r.key] = r.lb.Height
	}
	require.Equal(t, map[requestKey]int64{
		{"a", kindLightBlock, 2}: 2, {"a", kindLightBlock, 3}: 3, {"b", kindLightBlock, 2}: 2,
	}, got)
	require.Zero(t, d.pending("a"))
}

func TestDispatcherLateDuplicateUnsolicited(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 6})
	d, _ := newTestDispatcher(t)
	sink := make(chan response, 4)

	// Timed out, then answered: late, counted, not punished.
	require.NoError(t, d.start(requestKey{"a", kindLightBlock, 2}, time.Millisecond, sink))
	r := <-sink
	require.ErrorIs(t, r.err, ErrTimeout)
	err := d.handleLightBlockResponse("a", lbResponse(t, chain, 2))
	require.ErrorIs(t, err, errLateResponse)
	require.NotErrorIs(t, err, ErrPeerMisbehaved)

	// Answered twice: the duplicate is late too.
	require.NoError(t, d.start(requestKey{"a", kindLightBlock, 3}, time.Minute, sink))
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 3)))
	require.Equal(t, int64(3), (<-sink).lb.Height)
	require.ErrorIs(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 3)), errLateResponse)

	// Cancelled, then answered: late; nothing is delivered for it.
	require.NoError(t, d.start(requestKey{"a", kindParams, 4}, time.Minute, sink))
	require.False(t, d.cancel(requestKey{"a", kindParams, 4}, make(chan response, 1)), "another caller's cancel")
	require.True(t, d.cancel(requestKey{"a", kindParams, 4}, sink))
	require.False(t, d.cancel(requestKey{"a", kindParams, 4}, sink))
	require.ErrorIs(t, d.handleParamsResponse("a", paramsResponse(chain, 4)), errLateResponse)
	require.Empty(t, sink)

	// Never asked: unsolicited. A peer sending more responses than it was
	// sent requests is misbehaving.
	err = d.handleParamsResponse("b", paramsResponse(chain, 5))
	require.ErrorIs(t, err, ErrUnsolicited)
	require.NotErrorIs(t, err, errLateResponse)
	require.NotErrorIs(t, err, ErrPeerMisbehaved)
	for range answerSlack - 1 {
		require.NotErrorIs(t, d.handleLightBlockResponse("b", lbResponse(t, chain, 5)), ErrPeerMisbehaved)
	}
	err = d.handleLightBlockResponse("b", lbResponse(t, chain, 5))
	require.ErrorIs(t, err, ErrPeerMisbehaved)
	require.ErrorIs(t, err, ErrUnsolicited)

	// An empty response with nothing pending: late for "a" (it had light
	// block requests end), unsolicited for a peer never asked.
	require.ErrorIs(t, d.handleLightBlockResponse("a", &ssproto.LightBlockResponse{}), errLateResponse)
	err = d.handleLightBlockResponse("c", &ssproto.LightBlockResponse{})
	require.ErrorIs(t, err, ErrUnsolicited)
	require.NotErrorIs(t, err, errLateResponse)
}

func TestDispatcherInvalidResponseIsMisbehaviour(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 4})
	d, _ := newTestDispatcher(t)
	sink := make(chan response, 1)
	require.NoError(t, d.start(requestKey{"a", kindLightBlock, 2}, time.Minute, sink))
	m := lbResponse(t, chain, 2)
	m.LightBlock.ValidatorSet = nil
	require.ErrorIs(t, d.handleLightBlockResponse("a", m), ErrPeerMisbehaved)
	p := paramsResponse(chain, 2)
	p.ConsensusParams.Block = nil
	require.ErrorIs(t, d.handleParamsResponse("a", p), ErrPeerMisbehaved)
	require.Empty(t, sink)
	require.Equal(t, 1, d.pending("a"))
}

func TestDispatcherEmptyResponseAnswersLowestHeight(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 9})
	d, _ := newTestDispatcher(t)
	sink := make(chan response, 3)
	for _, h := range []int64{8, 6, 7} {
		require.NoError(t, d.start(requestKey{"a", kindLightBlock, h}, time.Minute, sink))
	}
	require.NoError(t, d.handleLightBlockResponse("a", &ssproto.LightBlockResponse{}))
	r := <-sink
	require.NoError(t, r.err)
	require.Nil(t, r.lb, "an empty response means the peer lacks the block")
	require.Equal(t, int64(6), r.key.height)
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 8)))
	require.Equal(t, int64(8), (<-sink).key.height)
	require.NoError(t, d.handleLightBlockResponse("a", &ssproto.LightBlockResponse{}))
	require.Equal(t, int64(7), (<-sink).key.height)
}

func TestDispatcherParamsMatchByHeight(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 4})
	d, sl := newTestDispatcher(t)
	done := make(chan error, 1)
	go func() {
		p, err := d.Params(context.Background(), "a", 2)
		if err == nil && string(p.Hash()) != string(chain.Params().Hash()) {
			err = errors.New("wrong params")
		}
		done <- err
	}()
	m := <-sl.sent
	require.Equal(t, ParamsChannel, m.ch)
	require.Equal(t, &ssproto.ParamsRequest{Height: 2}, m.msg)
	require.ErrorIs(t, d.handleParamsResponse("a", paramsResponse(chain, 3)), ErrUnsolicited)
	require.NoError(t, d.handleParamsResponse("a", paramsResponse(chain, 2)))
	require.NoError(t, <-done)
}

func TestDispatcherTimeoutsAndContext(t *testing.T) {
	d, sl := newTestDispatcher(t)
	d.timeout = 10 * time.Millisecond
	_, err := d.LightBlock(context.Background(), "a", 1)
	require.ErrorIs(t, err, ErrTimeout)
	<-sl.sent

	d.timeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sl.sent
		cancel()
	}()
	_, err = d.LightBlock(ctx, "a", 2)
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, d.pending("a"), "a cancelled wait withdraws its request")
}

func TestDispatcherSendFailure(t *testing.T) {
	d, sl := newTestDispatcher(t)
	sl.fail["gone"] = true
	sink := make(chan response, 1)
	require.ErrorIs(t, d.start(requestKey{"gone", kindLightBlock, 1}, time.Minute, sink), ErrNoPeers)
	require.Zero(t, d.pending("gone"))
	require.Empty(t, sink, "a request that was not sent delivers nothing")
	_, err := d.LightBlock(context.Background(), "gone", 1)
	require.ErrorIs(t, err, ErrNoPeers)
}

func TestDispatcherRemovePeerAndCloseReleaseWaiters(t *testing.T) {
	d, sl := newTestDispatcher(t)
	errs := make(chan error, 3)
	go func() { _, err := d.LightBlock(context.Background(), "gone", 1); errs <- err }()
	go func() { _, err := d.LightBlock(context.Background(), "gone", 2); errs <- err }()
	go func() { _, err := d.Params(context.Background(), "stays", 1); errs <- err }()
	for range 3 {
		<-sl.sent
	}
	d.removePeer("gone")
	require.ErrorIs(t, <-errs, ErrNoPeers)
	require.ErrorIs(t, <-errs, ErrNoPeers)
	require.Zero(t, d.pending("gone"))
	d.close()
	require.ErrorIs(t, <-errs, ErrStopped)
	_, err := d.LightBlock(context.Background(), "a", 1)
	require.ErrorIs(t, err, ErrStopped)
	require.ErrorIs(t, d.start(requestKey{"a", kindParams, 1}, time.Minute, make(chan response, 1)), ErrStopped)
	d.close() // idempotent
}

// TestDispatcherExactlyOnce races responses, timeouts, cancels, peer
// removals and close against many requests: every started request gets
// exactly one outcome unless it was cancelled.
func TestDispatcherExactlyOnce(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 40})
	responses := make(map[int64]*ssproto.LightBlockResponse)
	for h := int64(1); h <= 40; h++ {
		responses[h] = lbResponse(t, chain, h)
	}
	sl := newSentLog()
	d := newDispatcher(sl.send, log.NewNopLogger(), NopMetrics())
	peers := []p2p.ID{"a", "b", "c", "d"}
	sink := make(chan response, len(peers)*40)
	cancelled := make(chan requestKey, len(peers)*40)
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := int64(1); h <= 40; h++ {
				key := requestKey{peer, kindLightBlock, h}
				if err := d.start(key, time.Duration(h%5)*time.Millisecond+time.Millisecond, sink); err != nil {
					continue
				}
				switch (h + int64(i)) % 4 {
				case 0:
					_ = d.handleLightBlockResponse(peer, responses[h])
				case 1:
					if d.cancel(key, sink) {
						cancelled <- key
					}
				case 2:
					_ = d.handleLightBlockResponse(peer, &ssproto.LightBlockResponse{})
				}
				if h == 30 && peer == "b" {
					d.removePeer(peer)
				}
			}
		}()
	}
	wg.Wait()
	d.close()
	started := len(peers) * 40
	outcomes := make(map[requestKey]int)
	for len(sink) > 0 {
		outcomes[(<-sink).key]++
	}
	for len(cancelled) > 0 {
		outcomes[<-cancelled]++
	}
	require.Len(t, outcomes, started)
	for key, n := range outcomes {
		require.Equal(t, 1, n, "%s ended %d times", key, n)
	}
}

// TestDispatcherForgetsDepartedPeers: no record is kept for a peer once it
// left: not for a response racing its disconnection, not for a request
// that ends after it left, not for a request to it after it left.
func TestDispatcherForgetsDepartedPeers(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 6})
	sl := newSentLog()
	d := newDispatcher(sl.send, log.NewNopLogger(), NopMetrics())
	t.Cleanup(d.close)
	var mtx sync.Mutex
	live := map[p2p.ID]bool{"a": true}
	d.connected = func(id p2p.ID) bool {
		mtx.Lock()
		defer mtx.Unlock()
		return live[id]
	}
	leave := func(id p2p.ID) {
		mtx.Lock()
		delete(live, id)
		mtx.Unlock()
		d.removePeer(id)
	}
	sink := make(chan response, 4)
	require.NoError(t, d.start(requestKey{"a", kindLightBlock, 2}, time.Minute, sink))
	require.Equal(t, 1, d.records())
	leave("a")
	require.ErrorIs(t, (<-sink).err, ErrNoPeers)
	require.Zero(t, d.records())

	// Answers after it left: dropped, nothing recorded.
	for range 100 {
		require.ErrorIs(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 2)), ErrUnsolicited)
		require.ErrorIs(t, d.handleParamsResponse("a", paramsResponse(chain, 2)), ErrUnsolicited)
	}
	require.Zero(t, d.records())
	// Asking it after it left: refused, nothing recorded.
	require.ErrorIs(t, d.start(requestKey{"a", kindLightBlock, 3}, time.Minute, sink), ErrNoPeers)
	require.Zero(t, d.records())

	// A request that ends (timeout) after its peer dropped out of the list
	// without removePeer having run yet leaves nothing either.
	mtx.Lock()
	live["b"] = true
	mtx.Unlock()
	require.NoError(t, d.start(requestKey{"b", kindLightBlock, 2}, time.Millisecond, sink))
	mtx.Lock()
	delete(live, "b")
	mtx.Unlock()
	require.ErrorIs(t, (<-sink).err, ErrTimeout)
	require.Zero(t, d.records())
}

// Two callers ask one peer for one height one after the other (the light
// client and a cross-check poll do). The first caller's cancel, racing its
// own answer, must not end the second caller's request: before cancel was
// tied to its caller's sink, it did, and the second waiter waited for ever
// (found by the P2P provider-liar row of the attacker table).
func TestDispatcherCancelLeavesAnotherCallersRequest(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 6})
	d, _ := newTestDispatcher(t)
	key := requestKey{"a", kindLightBlock, 3}
	first, second := make(chan response, 1), make(chan response, 1)

	require.NoError(t, d.start(key, time.Minute, first))
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 3)))
	require.NoError(t, d.start(key, time.Minute, second))

	// The first caller's ctx ended just as its answer came: its cancel
	// finds nothing of its own to cancel, and its answer is in its sink.
	require.False(t, d.cancel(key, first))
	require.Equal(t, int64(3), (<-first).lb.Height)

	// The second caller's request is still pending and gets its answer.
	require.Equal(t, 1, d.pending("a"))
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 3)))
	select {
	case r := <-second:
		require.NoError(t, r.err)
		require.Equal(t, int64(3), r.lb.Height)
	case <-time.After(10 * time.Second):
		t.Fatal("the second caller's request was lost")
	}
}

// Two blocking callers ask one peer for one height at once (the light
// client checking a witness while the cross-check polls it: found by
// TestP2PProviderLiarOutvoted failing in CI, where the second caller got
// "no response" and its honest vote was lost). The second joins the
// pending request: one request goes out, both callers get the block, each
// its own copy; a joined caller's cancel leaves the request to the other,
// and a primary's cancel hands it over.
func TestDispatcherWaitJoinsPendingRequest(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 6})
	d, sent := newTestDispatcher(t)
	key := requestKey{"a", kindLightBlock, 3}
	ctx := context.Background()

	type outcome struct {
		r   response
		err error
	}
	results := make(chan outcome, 2)
	ask := func() { r, err := d.wait(ctx, key, time.Minute); results <- outcome{r, err} }
	joinedCount := func() int {
		d.mtx.Lock()
		defer d.mtx.Unlock()
		if req := d.peers["a"].pending[key]; req != nil {
			return len(req.joined)
		}
		return -1
	}
	go ask()
	require.Eventually(t, func() bool { return d.pending("a") == 1 }, 10*time.Second, time.Millisecond)
	go ask()
	require.Eventually(t, func() bool { return joinedCount() == 1 }, 10*time.Second, time.Millisecond,
		"the second caller joins the pending request")
	require.Equal(t, 1, d.pending("a"))
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 3)))
	a, b := <-results, <-results
	require.NoError(t, a.err)
	require.NoError(t, b.err)
	require.Equal(t, int64(3), a.r.lb.Height)
	require.Equal(t, int64(3), b.r.lb.Height)
	require.NotSame(t, a.r.lb, b.r.lb, "each caller owns its light block")
	require.Len(t, sent.sent, 1, "one request went out")
	<-sent.sent

	// Cancels: a joined caller leaves; the primary hands over.
	primary, other := make(chan response, 1), make(chan response, 1)
	require.NoError(t, d.start(key, time.Minute, primary))
	require.True(t, d.join(key, other))
	require.True(t, d.cancel(key, primary), "the primary's cancel hands the request over")
	require.Equal(t, 1, d.pending("a"))
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 3)))
	require.Equal(t, int64(3), (<-other).lb.Height)
	require.Empty(t, primary, "a cancelled caller gets nothing")

	require.NoError(t, d.start(key, time.Minute, primary))
	require.True(t, d.join(key, other))
	require.True(t, d.cancel(key, other), "a joined caller's cancel")
	require.NoError(t, d.handleLightBlockResponse("a", lbResponse(t, chain, 3)))
	require.Equal(t, int64(3), (<-primary).lb.Height)
	require.Empty(t, other)
	require.False(t, d.join(key, other), "nothing pending: nothing to join")
}
