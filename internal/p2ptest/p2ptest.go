// Package p2ptest starts CometBFT v0.40 switches connected by real
// MConnections, for tests, benchmarks and the demo, and tears them down
// completely (switch, peers and transport) when the test ends.
//
// Two ways to connect two nodes, both running the real MConnection stack
// (secret connection, handshake, flow-rate limits, packet framing):
//
//   - Connect dials over loopback TCP (the MultiplexTransport path that
//     production nodes use: filters, compatibility checks, IP lookup);
//   - ConnectPipe joins them over an in-memory net.Pipe with
//     p2p.Connect2Switches (no sockets; both peers are "inbound" and have
//     no socket address).
//
// Every node listens on a free loopback port, so a node started for pipes
// can still be dialled, and the other way round.
//
// The rates and the packet payload size come from the P2P config: see
// Options and NewConfig. The NodeInfo of every node advertises exactly the
// channels of the reactors it was started with.
package p2ptest

import (
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/version"
)

// ConnectTimeout bounds how long Connect and Disconnect wait for both
// sides to see the change.
const ConnectTimeout = 10 * time.Second

// Options tune the P2P config of a test network.
type Options struct {
	// Rate is the send and the receive rate of every connection, in
	// bytes per second. 0 keeps CometBFT's default (5 120 000 B/s).
	Rate int64
	// MaxPacketMsgPayloadSize is the MConnection packet payload size.
	// 0 keeps CometBFT's default (1024 B).
	MaxPacketMsgPayloadSize int
}

// NewConfig returns CometBFT's default P2P config made fit for loopback
// (duplicate IPs allowed, no PEX) with o applied. Callers may edit the
// result further before starting nodes with it.
func NewConfig(o Options) *cmtcfg.P2PConfig {
	cfg := cmtcfg.DefaultP2PConfig()
	cfg.AllowDuplicateIP = true
	cfg.PexReactor = false
	if o.Rate > 0 {
		cfg.SendRate = o.Rate
		cfg.RecvRate = o.Rate
	}
	if o.MaxPacketMsgPayloadSize > 0 {
		cfg.MaxPacketMsgPayloadSize = o.MaxPacketMsgPayloadSize
	}
	return cfg
}

// Config is NewConfig(Options{Rate: rate}): rate > 0 overrides both rates.
func Config(rate int64) *cmtcfg.P2PConfig { return NewConfig(Options{Rate: rate}) }

// TB is the part of testing.TB the helpers use, so that commands (the
// demo, the bench) can use them too.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Node is one started switch and its transport.
type Node struct {
	Switch    *p2p.Switch
	Transport *p2p.MultiplexTransport
	Addr      *p2p.NetAddress
	stopOnce  sync.Once
}

// ID returns the node's ID.
func (n *Node) ID() p2p.ID { return n.Addr.ID }

// Peer returns n's peer with the given ID, or nil if they are not
// connected.
func (n *Node) Peer(id p2p.ID) p2p.Peer { return n.Switch.Peers().Get(id) }

// Connected reports whether n has a peer with the given ID.
func (n *Node) Connected(id p2p.ID) bool { return n.Switch.Peers().Has(id) }

// Stop stops the switch (its peers and reactors) and closes its
// transport. Idempotent; also run when the test ends.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		if n.Switch.IsRunning() {
			_ = n.Switch.Stop()
		}
		_ = n.Transport.Close()
	})
}

// Start makes a switch holding reactors (added in name order), listening
// on a free loopback port, and starts it. i only names the node in logs
// and its moniker. A nil logger discards logs. The node is stopped when
// the test ends.
func Start(t TB, cfg *cmtcfg.P2PConfig, i int, reactors map[string]p2p.Reactor, logger log.Logger) *Node {
	t.Helper()
	if logger == nil {
		logger = log.NewNopLogger()
	}
	key := p2p.NodeKey{PrivKey: ed25519.GenPrivKey()}
	port, err := freePort()
	if err != nil {
		t.Fatalf("p2ptest: free port: %v", err)
	}
	names := make([]string, 0, len(reactors))
	for name := range reactors {
		names = append(names, name)
	}
	sort.Strings(names)
	var chans []byte
	for _, name := range names {
		for _, d := range reactors[name].GetChannels() {
			chans = append(chans, d.ID)
		}
	}
	ni := p2p.DefaultNodeInfo{
		ProtocolVersion: p2p.NewProtocolVersion(version.P2PProtocol, version.BlockProtocol, 0),
		DefaultNodeID:   key.ID(),
		ListenAddr:      fmt.Sprintf("127.0.0.1:%d", port),
		Network:         "p2ptest",
		Version:         version.TMCoreSemVer,
		Channels:        chans,
		Moniker:         fmt.Sprintf("node%d", i),
	}
	addr, err := p2p.NewNetAddressString(p2p.IDAddressString(key.ID(), ni.ListenAddr))
	if err != nil {
		t.Fatalf("p2ptest: address: %v", err)
	}
	tr := p2p.NewMultiplexTransport(ni, key, p2p.MConnConfig(cfg))
	if err := tr.Listen(*addr); err != nil {
		t.Fatalf("p2ptest: listen: %v", err)
	}
	sw := p2p.NewSwitch(cfg, tr)
	sw.SetLogger(logger.With("switch", i))
	sw.SetNodeKey(&key)
	sw.SetNodeInfo(ni)
	for _, name := range names {
		sw.AddReactor(name, reactors[name])
	}
	n := &Node{Switch: sw, Transport: tr, Addr: addr}
	t.Cleanup(n.Stop)
	if err := sw.Start(); err != nil {
		t.Fatalf("p2ptest: starting switch %d: %v", i, err)
	}
	return n
}

// Connect dials b from a over loopback TCP and waits until both see each
// other.
func Connect(t TB, a, b *Node) {
	t.Helper()
	checkPair(t, a, b)
	if err := a.Switch.DialPeerWithAddress(b.Addr); err != nil {
		t.Fatalf("p2ptest: dial %s -> %s: %v", a.ID(), b.ID(), err)
	}
	waitUntil(t, func() bool { return a.Connected(b.ID()) && b.Connected(a.ID()) },
		"peers %s and %s did not connect", a.ID(), b.ID())
}

// ConnectPipe connects a and b over an in-memory net.Pipe (CometBFT's
// p2p.Connect2Switches). It returns once both have added the other.
// Connecting a pair twice, or a node to itself, fails the test (CometBFT
// would panic).
func ConnectPipe(t TB, a, b *Node) {
	t.Helper()
	checkPair(t, a, b)
	p2p.Connect2Switches([]*p2p.Switch{a.Switch, b.Switch}, 0, 1)
	if !a.Connected(b.ID()) || !b.Connected(a.ID()) {
		t.Fatalf("p2ptest: pipe between %s and %s not established", a.ID(), b.ID())
	}
}

// Disconnect makes a drop b (as a reactor's StopPeerForError would) and
// waits until neither sees the other.
func Disconnect(t TB, a, b *Node, reason any) {
	t.Helper()
	if p := a.Peer(b.ID()); p != nil {
		a.Switch.StopPeerForError(p, reason)
	}
	waitUntil(t, func() bool { return !a.Connected(b.ID()) && !b.Connected(a.ID()) },
		"peers %s and %s did not disconnect", a.ID(), b.ID())
}

// Net is a list of started nodes, indexed as they were given.
type Net []*Node

// Switches returns the nodes' switches.
func (n Net) Switches() []*p2p.Switch {
	out := make([]*p2p.Switch, len(n))
	for i, node := range n {
		out[i] = node.Switch
	}
	return out
}

// Peer returns node i's peer for node j, or nil if they are not
// connected.
func (n Net) Peer(i, j int) p2p.Peer { return n[i].Peer(n[j].ID()) }

// Connect connects nodes i and j over TCP.
func (n Net) Connect(t TB, i, j int) { t.Helper(); Connect(t, n[i], n[j]) }

// ConnectPipe connects nodes i and j over a net.Pipe.
func (n Net) ConnectPipe(t TB, i, j int) { t.Helper(); ConnectPipe(t, n[i], n[j]) }

// Network starts len(reactors) nodes (node i holds reactors[i]) and
// connects every pair over loopback TCP.
func Network(t TB, cfg *cmtcfg.P2PConfig, reactors []map[string]p2p.Reactor) Net {
	t.Helper()
	return network(t, cfg, reactors, Connect)
}

// PipeNetwork is Network with every pair connected over a net.Pipe.
func PipeNetwork(t TB, cfg *cmtcfg.P2PConfig, reactors []map[string]p2p.Reactor) Net {
	t.Helper()
	return network(t, cfg, reactors, ConnectPipe)
}

func network(t TB, cfg *cmtcfg.P2PConfig, reactors []map[string]p2p.Reactor, connect func(TB, *Node, *Node)) Net {
	t.Helper()
	nodes := make(Net, len(reactors))
	for i := range reactors {
		nodes[i] = Start(t, cfg, i, reactors[i], nil)
	}
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			connect(t, nodes[i], nodes[j])
		}
	}
	return nodes
}

func checkPair(t TB, a, b *Node) {
	t.Helper()
	switch {
	case a.ID() == b.ID():
		t.Fatalf("p2ptest: connecting node %s to itself", a.ID())
	case a.Connected(b.ID()) || b.Connected(a.ID()):
		t.Fatalf("p2ptest: nodes %s and %s are already connected", a.ID(), b.ID())
	case !a.Switch.IsRunning() || !b.Switch.IsRunning():
		t.Fatalf("p2ptest: connecting a stopped node (%s, %s)", a.ID(), b.ID())
	}
}

// waitUntil polls cond until it holds or ConnectTimeout passes (the switch
// offers no event to wait on).
func waitUntil(t TB, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.NewTimer(ConnectTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("p2ptest: "+format, args...)
			return
		case <-tick.C:
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
