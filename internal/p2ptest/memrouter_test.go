package p2ptest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cosmos/gogoproto/proto"
	"github.com/stretchr/testify/require"
)

// recorder is an Endpoint that records what it is told.
type recorder struct {
	mtx    sync.Mutex
	events []string
	got    chan proto.Message
	onMsg  func(peer p2p.ID, msg proto.Message)
}

func (e *recorder) PeerUp(id p2p.ID, _ []byte) { e.add("up " + string(id)) }
func (e *recorder) PeerDown(id p2p.ID)         { e.add("down " + string(id)) }
func (e *recorder) Deliver(peer p2p.ID, _ byte, msg proto.Message) {
	if e.onMsg != nil {
		e.onMsg(peer, msg)
	}
	e.got <- msg
}

func (e *recorder) add(s string) {
	e.mtx.Lock()
	defer e.mtx.Unlock()
	e.events = append(e.events, s)
}

func blockID(h int64) *cmtproto.Header { return &cmtproto.Header{Height: h} }

// TestMemRouter: replies come back through Deliver in due order; a lossy
// link loses; Punish disconnects (even from inside Deliver) and records
// the reason; unknown channels and peers are refused; Close waits.
func TestMemRouter(t *testing.T) {
	e := &recorder{got: make(chan proto.Message, 16)}
	r := NewMemRouter(e, 1)
	echo := func(ch byte, msg proto.Message) []Msg {
		h := msg.(*cmtproto.Header).Height
		return []Msg{{Ch: ch, Msg: blockID(h), Delay: time.Duration(10-h) * time.Millisecond}}
	}
	r.Connect("a", []byte{1}, echo, Link{})
	require.True(t, r.Send("a", 1, blockID(1)))
	require.True(t, r.Send("a", 1, blockID(9)))
	require.Equal(t, int64(9), (<-e.got).(*cmtproto.Header).Height, "the shorter delay first")
	require.Equal(t, int64(1), (<-e.got).(*cmtproto.Header).Height)
	require.False(t, r.Send("a", 2, blockID(1)), "channel not spoken")
	require.False(t, r.Send("b", 1, blockID(1)), "peer not connected")

	r.Connect("lossy", []byte{1}, echo, Link{DropPercent: 100})
	require.True(t, r.Send("lossy", 1, blockID(1)), "sent, lost on the way")
	require.False(t, r.Inject("lossy", Msg{Ch: 1, Msg: blockID(2)}))

	// Punish from inside Deliver.
	e.onMsg = func(peer p2p.ID, _ proto.Message) { r.Punish(peer, errors.New("bad")) }
	require.True(t, r.Inject("a", Msg{Ch: 1, Msg: blockID(3)}))
	<-e.got
	require.Eventually(t, func() bool { return !r.Connected("a") }, 5*time.Second, time.Millisecond)
	require.EqualError(t, r.Punished()["a"], "bad")
	r.Close()
	r.Close()
	require.False(t, r.Connected("lossy"))
	e.mtx.Lock()
	defer e.mtx.Unlock()
	require.Contains(t, e.events, "down a")
	require.Contains(t, e.events, "down lossy")
}

// echoNode is a real peer behind a Remote: it answers every message with
// the same message, through its end of the link.
type echoNode struct {
	recorder
	end *Remote
}

func (e *echoNode) Deliver(peer p2p.ID, ch byte, msg proto.Message) {
	e.add("from " + string(peer))
	if msg.(*cmtproto.Header).Height < 0 {
		e.end.Punish(peer, errors.New("negative"))
		return
	}
	e.end.Send(peer, ch, msg)
}

// TestMemRouterRemote: a peer played by a node behind a Remote is told
// PeerUp before the node under test, gets what the node sends as from
// self, answers through the Remote, may punish the node from inside its
// Deliver (which closes the link and tells both sides), and is reconnected
// by Connect; Tried counts every send, refused ones included.
func TestMemRouterRemote(t *testing.T) {
	e := &recorder{got: make(chan proto.Message, 16)}
	r := NewMemRouter(e, 1)
	defer r.Close()
	peer := &echoNode{}
	peer.end = r.Remote("srv", "me")
	peer.end.Connect([]byte{1}, peer, Link{Delay: time.Millisecond})
	require.True(t, r.Connected("srv"))
	require.True(t, r.Send("srv", 1, blockID(7)))
	require.Equal(t, int64(7), (<-e.got).(*cmtproto.Header).Height)
	require.False(t, peer.end.Send("other", 1, blockID(1)), "only to the node under test")
	require.False(t, r.Send("srv", 2, blockID(1)), "channel not spoken")
	require.Equal(t, 2, r.Tried("srv"))

	require.True(t, r.Send("srv", 1, blockID(-1))) // the peer punishes the node
	require.Eventually(t, func() bool { return !r.Connected("srv") }, 5*time.Second, time.Millisecond)
	require.Empty(t, r.Punished(), "the node punished nobody")
	require.False(t, peer.end.Send("me", 1, blockID(1)), "link closed")

	peer.end.Connect([]byte{1}, peer, Link{})
	require.True(t, r.Send("srv", 1, blockID(8)))
	require.Equal(t, int64(8), (<-e.got).(*cmtproto.Header).Height)
	r.Close()
	peer.mtx.Lock()
	defer peer.mtx.Unlock()
	require.Equal(t, []string{"up me", "from me", "from me", "down me", "up me", "from me", "down me"}, peer.events)
	e.mtx.Lock()
	defer e.mtx.Unlock()
	require.Equal(t, []string{"up srv", "down srv", "up srv", "down srv"}, e.events)
}
