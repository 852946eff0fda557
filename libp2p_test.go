package statesync

import (
	"fmt"
	"net"
	"testing"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/lp2p"
	"github.com/cometbft/cometbft/p2p"
	"github.com/stretchr/testify/require"
)

// freePort returns a TCP port free on loopback at the time of the call.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// libp2pNetwork connects the reactors with CometBFT v0.40's libp2p switch:
// the last node (the fresh one) bootstraps to every other.
func libp2pNetwork(t testing.TB, reactors []map[string]p2p.Reactor) {
	t.Helper()
	keys := make([]ed25519.PrivKey, len(reactors))
	ports := make([]int, len(reactors))
	var peers []cmtcfg.LibP2PBootstrapPeer
	for i := range reactors {
		keys[i], ports[i] = ed25519.GenPrivKey(), freePort(t)
		if i < len(reactors)-1 {
			id, err := lp2p.IDFromPrivateKey(keys[i])
			require.NoError(t, err)
			peers = append(peers, cmtcfg.LibP2PBootstrapPeer{Host: fmt.Sprintf("127.0.0.1:%d", ports[i]), ID: id.String()})
		}
	}
	for i, rs := range reactors {
		cfg := cmtcfg.DefaultP2PConfig()
		cfg.RootDir = t.TempDir()
		cfg.ListenAddress = fmt.Sprintf("127.0.0.1:%d", ports[i])
		cfg.ExternalAddress = cfg.ListenAddress
		cfg.LibP2PConfig.Enabled = true
		if i == len(reactors)-1 {
			cfg.LibP2PConfig.BootstrapPeers = peers
		}
		host, err := lp2p.NewHost(cfg, keys[i], log.NewNopLogger())
		require.NoError(t, err)
		var srs []lp2p.SwitchReactor
		for name, r := range rs {
			srs = append(srs, lp2p.SwitchReactor{Reactor: r, Name: name})
		}
		sw, err := lp2p.NewSwitch(nil, host, srs, p2p.NopMetrics(), log.NewNopLogger())
		require.NoError(t, err)
		require.NoError(t, sw.Start())
		t.Cleanup(func() {
			_ = sw.Stop()
			_ = host.Close()
		})
	}
}

// TestSyncOverLibp2pSwitch: the Reactor registers with CometBFT's libp2p
// switch as it is, serves on it and restores a fresh node over it.
func TestSyncOverLibp2pSwitch(t *testing.T) {
	tn := newTestNet(t, netOpts{servers: 2, network: libp2pNetwork})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
}
