package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	abciserver "github.com/cometbft/cometbft/abci/server"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/localnet"
)

// TestOutOfProcessSocketApp runs statesyncd as its own process with
// --proxy_app tcp://…, the app being kvapp behind CometBFT's ABCI socket
// server in this process: the way any ABCI app, in any language, uses the
// library. The node restores the app from a live network over P2P (no RPC
// anywhere), hands over to block sync and keeps executing blocks in it.
func TestOutOfProcessSocketApp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs statesyncd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const interval = 5
	appOpts := kvapp.Options{Keys: 200, ValueSize: 512, ChunkSize: 16 << 10, SnapshotInterval: interval}
	net, err := localnet.Start(ctx, localnet.Options{Validators: 2, App: appOpts})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, net.Stop()) })
	require.NoError(t, net.WaitHeight(ctx, interval+2))

	// The app, out of the node's process: a fresh kvapp behind a socket.
	app := kvapp.New(kvapp.Options{ChunkSize: appOpts.ChunkSize, SnapshotInterval: interval})
	appAddr, err := localnet.FreeAddress()
	require.NoError(t, err)
	srv, err := abciserver.NewServer(appAddr, "socket", app)
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	t.Cleanup(func() { _ = srv.Stop() })

	bin := filepath.Join(t.TempDir(), "statesyncd")
	// -race shares the packages the test itself was built with.
	out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)

	home := t.TempDir()
	require.NoError(t, runInit([]string{"--home", home}, io.Discard, io.Discard))
	require.NoError(t, net.Genesis.SaveAs(filepath.Join(home, "config", "genesis.json")))
	p2pAddr, err := localnet.FreeAddress()
	require.NoError(t, err)
	h, hash, err := net.TrustRoot(1)
	require.NoError(t, err)
	cfgFile := filepath.Join(home, "config", "config.toml")
	setKeys(t, cfgFile, "rpc", map[string]string{"laddr": `""`})
	setKeys(t, cfgFile, "p2p", map[string]string{
		"laddr": fmt.Sprintf("%q", p2pAddr), "persistent_peers": fmt.Sprintf("%q", net.PersistentPeers()),
		"addr_book_strict": "false", "allow_duplicate_ip": "true", "pex": "false",
	})
	setKeys(t, cfgFile, "statesync", map[string]string{
		"enable": "true", "use_p2p": "true", "trust_height": fmt.Sprint(h), "trust_hash": fmt.Sprintf("%q", hash),
		"discovery_time": `"5s"`,
	})

	logPath := filepath.Join(home, "statesyncd.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	defer logFile.Close()
	cmd := exec.Command(bin, "start", "--home", home, "--proxy_app", "tcp://"+strings.TrimPrefix(appAddr, "tcp://"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	logOf := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	// The app is restored through the socket, then executes new blocks.
	err = localnet.WaitFor(ctx, func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
		}
		return app.Height() > 0 && strings.Contains(logOf(), "State sync complete")
	}, "statesyncd to restore the socket app")
	require.NoError(t, err, "log:\n%s", logOf())
	require.Positive(t, len(app.Applied()), "no chunk was applied through the socket")
	restored := app.Height()
	require.NoError(t, localnet.WaitFor(ctx, func() bool { return app.Height() >= restored+3 },
		"the socket app to execute new blocks"), "log:\n%s", logOf())
	require.Equal(t, net.Nodes[0].App.Data(), app.Data(), "the restored state differs from the validators'")
}

// setKeys replaces key = value lines in one [section] of a TOML file (the
// keys must be there: statesyncd init writes them all).
func setKeys(t *testing.T, path, section string, kv map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(string(b), "\n")
	cur := ""
	seen := map[string]bool{}
	for i, l := range lines {
		tl := strings.TrimSpace(l)
		if strings.HasPrefix(tl, "[") {
			cur = strings.Trim(tl, "[]")
			continue
		}
		k, _, ok := strings.Cut(tl, "=")
		k = strings.TrimSpace(k)
		if v, want := kv[k]; ok && cur == section && want && !seen[k] {
			lines[i], seen[k] = k+" = "+v, true
		}
	}
	for k := range kv {
		require.True(t, seen[k], "no %s in [%s]", k, section)
	}
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644))
}
