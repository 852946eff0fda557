// Package p2ptest starts CometBFT v0.40 switches connected by real
// MConnections over loopback TCP, for tests and benchmarks, and tears them
// down completely (switch, peers and transport listener).
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

// Config returns CometBFT's default P2P config (5 120 000 B/s send and
// receive per connection) made fit for loopback. rate > 0 overrides both
// rates.
func Config(rate int64) *cmtcfg.P2PConfig {
	cfg := cmtcfg.DefaultP2PConfig()
	cfg.AllowDuplicateIP = true
	cfg.PexReactor = false
	if rate > 0 {
		cfg.SendRate = rate
		cfg.RecvRate = rate
	}
	return cfg
}

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

// Stop stops the switch and closes its listener. Idempotent.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		if n.Switch.IsRunning() {
			_ = n.Switch.Stop()
		}
		_ = n.Transport.Close()
	})
}

// Start makes a switch holding reactors, listening on a free loopback port,
// and starts it. It is stopped when the test ends.
func Start(t TB, cfg *cmtcfg.P2PConfig, i int, reactors map[string]p2p.Reactor, logger log.Logger) *Node {
	t.Helper()
	if logger == nil {
		logger = log.NewNopLogger()
	}
	key := p2p.NodeKey{PrivKey: ed25519.GenPrivKey()}
	port, err := freePort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	var chans []byte
	names := make([]string, 0, len(reactors))
	for name, r := range reactors {
		names = append(names, name)
		for _, d := range r.GetChannels() {
			chans = append(chans, d.ID)
		}
	}
	sort.Strings(names)
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
		t.Fatalf("address: %v", err)
	}
	tr := p2p.NewMultiplexTransport(ni, key, p2p.MConnConfig(cfg))
	if err := tr.Listen(*addr); err != nil {
		t.Fatalf("listen: %v", err)
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
		t.Fatalf("starting switch: %v", err)
	}
	return n
}

// Connect dials b from a and waits until both see each other.
func Connect(t TB, a, b *Node) {
	t.Helper()
	if err := a.Switch.DialPeerWithAddress(b.Addr); err != nil {
		t.Fatalf("dial: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !a.Switch.Peers().Has(b.ID()) || !b.Switch.Peers().Has(a.ID()) {
		if time.Now().After(deadline) {
			t.Fatalf("peers %s and %s did not connect", a.ID(), b.ID())
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline, not synchronising on time
	}
}

// Network starts len(reactors) switches and connects all of them.
func Network(t TB, cfg *cmtcfg.P2PConfig, reactors []map[string]p2p.Reactor) []*Node {
	t.Helper()
	nodes := make([]*Node, len(reactors))
	for i := range reactors {
		nodes[i] = Start(t, cfg, i, reactors[i], nil)
	}
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			Connect(t, nodes[i], nodes[j])
		}
	}
	return nodes
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
