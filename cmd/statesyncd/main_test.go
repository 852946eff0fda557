package main

import (
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	abciserver "github.com/cometbft/cometbft/abci/server"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/types"
	cmttime "github.com/cometbft/cometbft/types/time"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/localnet"
	"github.com/statesync/statesync/node"
)

func TestMain(m *testing.M) {
	localnet.VerifyTestMain(m,
		// CometBFT v0.40's ABCI socket server never ends a dead
		// connection's handleResponses goroutine (it waits on a channel
		// nobody closes): the app side of TestStartFailsWhenTheAppDies.
		goleak.IgnoreTopFunction("github.com/cometbft/cometbft/abci/server.(*SocketServer).handleResponses"))
}

// newHome runs `statesyncd init` in a temporary home, gives it a genesis
// whose only validator is someone else (so that the node state syncs when
// enabled), a free P2P port, no RPC server, and the [statesync] keys given.
func newHome(t *testing.T, keys map[string]string) string {
	t.Helper()
	home := t.TempDir()
	require.NoError(t, os.Remove(home)) // init makes it
	require.NoError(t, runInit([]string{"--home", home}, io.Discard, io.Discard))
	other := ed25519.GenPrivKey().PubKey()
	gen := types.GenesisDoc{ChainID: "exit-test", GenesisTime: cmttime.Now(), ConsensusParams: types.DefaultConsensusParams(),
		Validators: []types.GenesisValidator{{Address: other.Address(), PubKey: other, Power: 10}}}
	gen.ConsensusParams.Version.App = 1
	require.NoError(t, gen.SaveAs(filepath.Join(home, "config", "genesis.json")))

	p2pAddr, err := localnet.FreeAddress()
	require.NoError(t, err)
	file := filepath.Join(home, "config", "config.toml")
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	lines := strings.Split(string(b), "\n")
	section := ""
	for i, l := range lines {
		if strings.HasPrefix(l, "[") {
			section = l
		}
		key, _, ok := strings.Cut(l, " = ")
		if !ok {
			continue
		}
		switch {
		case key == "log_level":
			lines[i] = `log_level = "error"`
		case key == "laddr" && section == "[rpc]":
			lines[i] = `laddr = ""`
		case key == "indexer":
			lines[i] = `indexer = "null"`
		case key == "pex":
			lines[i] = "pex = false" // the address book writes config/ after Stop returns
		case key == "laddr" && section == "[p2p]":
			lines[i] = `laddr = "` + p2pAddr + `"`
		case section == "[statesync]" && keys[key] != "":
			lines[i] = key + " = " + keys[key]
		}
	}
	require.NoError(t, os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644))
	return home
}

// listenAddr is the P2P listen address newHome wrote.
func listenAddr(t *testing.T, home string) string {
	b, err := os.ReadFile(filepath.Join(home, "config", "config.toml"))
	require.NoError(t, err)
	section := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "[") {
			section = l
		}
		if v, ok := strings.CutPrefix(l, "laddr = "); ok && section == "[p2p]" {
			return strings.Trim(v, `"`)
		}
	}
	t.Fatal("no p2p laddr")
	return ""
}

var syncKeys = map[string]string{
	"enable": "true", "use_p2p": "true", "trust_height": "1", "trust_hash": `"` + strings.Repeat("AB", 32) + `"`,
	"discovery_time": `"200ms"`, "discovery_timeout": `"1s"`,
}

// start runs `statesyncd start` on home with the kvapp app; its log goes
// to logs if not nil.
func start(t *testing.T, home string, sig <-chan os.Signal, logs io.Writer) <-chan error {
	if logs == nil {
		logs = io.Discard
	}
	done := make(chan error, 1)
	go func() {
		done <- runStart([]string{"--home", home, "--proxy_app", "kvapp", "--kvapp-keys", "10"}, sig, logs, io.Discard)
	}()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("statesyncd start did not return")
		return nil
	}
}

// TestStartFailsWhenStateSyncFails: with no peer to sync from, state sync
// fails and start returns the cause (exit status 1, the cause on stderr).
func TestStartFailsWhenStateSyncFails(t *testing.T) {
	err := wait(t, start(t, newHome(t, syncKeys), make(chan os.Signal), nil))
	require.ErrorIs(t, err, node.ErrStateSyncFailed)
	require.ErrorIs(t, err, statesync.ErrNotEnoughPeers)
}

// TestStartFailsOnSignalDuringStateSync: a signal that stops the node
// before its state sync finished (an operator's, or the SIGTERM CometBFT
// sends its own process when the app dies) is a failure: start returns
// an error saying so, where it used to return nil (exit status 0).
func TestStartFailsOnSignalDuringStateSync(t *testing.T) {
	keys := map[string]string{}
	for k, v := range syncKeys {
		keys[k] = v
	}
	keys["discovery_timeout"] = `"1m"`
	sig := make(chan os.Signal, 1)
	sig <- syscall.SIGTERM // read once the node runs
	err := wait(t, start(t, newHome(t, keys), sig, nil))
	require.Error(t, err)
	require.ErrorContains(t, err, "before state sync finished")
}

// TestStartSucceedsOnSignalWhenNotSyncing: a node that does not state sync,
// stopped by a signal, exits cleanly.
func TestStartSucceedsOnSignalWhenNotSyncing(t *testing.T) {
	sig := make(chan os.Signal, 1)
	sig <- syscall.SIGINT
	require.NoError(t, wait(t, start(t, newHome(t, nil), sig, nil)))
}

// TestStartFailsWhenTheAppDies: the app (out of process, over a socket)
// dies under a running node; CometBFT then sends SIGTERM to its own
// process. start must report the app's failure, not a clean stop.
func TestStartFailsWhenTheAppDies(t *testing.T) {
	addr, err := localnet.FreeAddress()
	require.NoError(t, err)
	srv := abciserver.NewSocketServer(addr, kvapp.New(kvapp.Options{Keys: 10, ValueSize: 10}))
	require.NoError(t, srv.Start())
	t.Cleanup(func() { _ = srv.Stop() })

	// CometBFT's SIGTERM to this process arrives here, not at the default
	// handler.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	defer signal.Stop(sig)
	home := newHome(t, nil)
	done := make(chan error, 1)
	go func() { done <- runStart([]string{"--home", home, "--proxy_app", addr}, sig, io.Discard, io.Discard) }()
	// Let the node come up (listening on its P2P port), then kill the app.
	p2pAddr := strings.TrimPrefix(listenAddr(t, home), "tcp://")
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", p2pAddr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	require.NoError(t, srv.Stop())
	err = wait(t, done)
	require.Error(t, err)
	require.ErrorContains(t, err, "app connection failed")
}
