package p2ptest

import (
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/p2p/conn"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const echoCh = 0x70

// echoReactor hands every received message to a channel.
type echoReactor struct {
	p2p.BaseReactor
	got chan p2p.Envelope
}

func newEcho() *echoReactor {
	r := &echoReactor{got: make(chan p2p.Envelope, 16)}
	r.BaseReactor = *p2p.NewBaseReactor("echo", r)
	return r
}

func (*echoReactor) GetChannels() []*conn.ChannelDescriptor {
	return []*conn.ChannelDescriptor{{
		ID: echoCh, Priority: 1, SendQueueCapacity: 10, RecvMessageCapacity: 1 << 20,
		MessageType: &cmtproto.Data{},
	}}
}

func (r *echoReactor) Receive(e p2p.Envelope) { r.got <- e }

func recv(t *testing.T, r *echoReactor) p2p.Envelope {
	t.Helper()
	select {
	case e := <-r.got:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no message received")
		return p2p.Envelope{}
	}
}

func echoNet(t *testing.T, n int, pipe bool, cfg Options) (Net, []*echoReactor) {
	reactors := make([]map[string]p2p.Reactor, n)
	echos := make([]*echoReactor, n)
	for i := range reactors {
		echos[i] = newEcho()
		reactors[i] = map[string]p2p.Reactor{"ECHO": echos[i]}
	}
	if pipe {
		return PipeNetwork(t, NewConfig(cfg), reactors), echos
	}
	return Network(t, NewConfig(cfg), reactors), echos
}

func TestNetworks(t *testing.T) {
	for _, pipe := range []bool{false, true} {
		name := "tcp"
		if pipe {
			name = "pipe"
		}
		t.Run(name, func(t *testing.T) {
			nodes, echos := echoNet(t, 3, pipe, Options{})
			for i := range nodes {
				require.Equal(t, 2, nodes[i].Switch.Peers().Size())
				for j := range nodes {
					if i == j {
						require.Nil(t, nodes.Peer(i, j))
						continue
					}
					p := nodes.Peer(i, j)
					require.NotNil(t, p)
					require.Equal(t, nodes[j].ID(), p.ID())
					// The remote's NodeInfo advertises its reactors' channels.
					require.Equal(t, []byte{echoCh}, []byte(p.NodeInfo().(p2p.DefaultNodeInfo).Channels))
				}
			}
			msg := &cmtproto.Data{Txs: [][]byte{[]byte("hello")}}
			require.True(t, nodes.Peer(0, 2).Send(p2p.Envelope{ChannelID: echoCh, Message: msg}))
			e := recv(t, echos[2])
			require.Equal(t, nodes[0].ID(), e.Src.ID())
			require.Equal(t, msg.Txs, e.Message.(*cmtproto.Data).Txs)

			// A late node joins one peer.
			late := Start(t, NewConfig(Options{}), 3, map[string]p2p.Reactor{"ECHO": newEcho()}, nil)
			if pipe {
				ConnectPipe(t, late, nodes[1])
			} else {
				Connect(t, late, nodes[1])
			}
			require.NotNil(t, nodes[1].Peer(late.ID()))
			require.True(t, late.Peer(nodes[1].ID()).Send(p2p.Envelope{ChannelID: echoCh, Message: msg}))
			require.Equal(t, late.ID(), recv(t, echos[1]).Src.ID())

			Disconnect(t, nodes[0], nodes[1], "test")
			require.Nil(t, nodes.Peer(1, 0))
			nodes.Connect(t, 0, 1)
			require.NotNil(t, nodes.Peer(1, 0))

			// Stopping a node removes it from its peers.
			nodes[2].Stop()
			waitUntil(t, func() bool { return !nodes[0].Connected(nodes[2].ID()) && !nodes[1].Connected(nodes[2].ID()) },
				"stopped node still connected")
		})
	}
}

// The rate knob reaches the MConnections: 60 KB at 20 KB/s cannot arrive
// in less than about two seconds.
func TestRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	nodes, echos := echoNet(t, 2, true, Options{Rate: 20_000, MaxPacketMsgPayloadSize: 512})
	start := time.Now()
	msg := &cmtproto.Data{Txs: [][]byte{make([]byte, 60_000)}}
	require.True(t, nodes.Peer(0, 1).Send(p2p.Envelope{ChannelID: echoCh, Message: msg}))
	e := recv(t, echos[1])
	require.Len(t, e.Message.(*cmtproto.Data).Txs[0], 60_000)
	require.Greater(t, time.Since(start), time.Second)
}

func TestConfig(t *testing.T) {
	cfg := NewConfig(Options{})
	require.Equal(t, int64(5_120_000), cfg.SendRate)
	require.Equal(t, int64(5_120_000), cfg.RecvRate)
	require.Equal(t, 1024, cfg.MaxPacketMsgPayloadSize)
	cfg = NewConfig(Options{Rate: 7, MaxPacketMsgPayloadSize: 4096})
	require.Equal(t, int64(7), cfg.SendRate)
	require.Equal(t, 4096, cfg.MaxPacketMsgPayloadSize)
	require.Equal(t, int64(9), Config(9).RecvRate)
}
