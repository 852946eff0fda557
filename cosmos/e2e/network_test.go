package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	chainID          = "statesync-e2e"
	snapshotInterval = 10
	denom            = "stake"
	keyring          = "--keyring-backend=test"
)

// network is a chain of validators, each an exampled process started with
// this library's start handler.
type network struct {
	dir   string
	vals  []*node
	addrs []string // the validators' account addresses (same order)
	users []string // accounts that only receive transfers
}

// newNetwork creates the genesis of n validators the SDK way (init, keys
// add, add-genesis-account, gentx, collect-gentxs), configures them on
// loopback and starts them.
func newNetwork(t *testing.T, n int) *network {
	t.Helper()
	nw := &network{dir: t.TempDir()}
	for i := range n {
		v := nw.initNode(t, fmt.Sprintf("val%d", i), exampledBin)
		runCLI(t, exampledBin, "keys", "add", v.name, keyring, "--home", v.home)
		addr := strings.TrimSpace(runCLI(t, exampledBin, "keys", "show", v.name, "-a", keyring, "--home", v.home))
		nw.vals, nw.addrs = append(nw.vals, v), append(nw.addrs, addr)
	}
	v0 := nw.vals[0]
	for _, addr := range nw.addrs {
		runCLI(t, exampledBin, "genesis", "add-genesis-account", addr, "1000000000000"+denom, "--home", v0.home)
	}
	for i := range 3 {
		name := fmt.Sprintf("user%d", i)
		runCLI(t, exampledBin, "keys", "add", name, keyring, "--home", v0.home)
		nw.users = append(nw.users, strings.TrimSpace(runCLI(t, exampledBin, "keys", "show", name, "-a", keyring, "--home", v0.home)))
	}
	gentxDir := filepath.Join(v0.home, "config", "gentx")
	if err := os.MkdirAll(gentxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range nw.vals {
		if v != v0 {
			copyFile(t, filepath.Join(v0.home, "config", "genesis.json"), filepath.Join(v.home, "config", "genesis.json"))
		}
		out := filepath.Join(gentxDir, v.name+".json")
		runCLI(t, exampledBin, "genesis", "gentx", v.name, "100000000"+denom, "--chain-id", chainID, keyring,
			"--home", v.home, "--output-document", out)
	}
	runCLI(t, exampledBin, "genesis", "collect-gentxs", "--home", v0.home)
	for _, v := range nw.vals[1:] {
		copyFile(t, filepath.Join(v0.home, "config", "genesis.json"), filepath.Join(v.home, "config", "genesis.json"))
	}
	for _, v := range nw.vals {
		var peers []string
		for _, o := range nw.vals {
			if o != v {
				peers = append(peers, o.p2pAddr())
			}
		}
		nw.configure(t, v, peers, snapshotInterval)
		v.start(t, exampledBin, nil, "start")
	}
	return nw
}

// initNode runs `init` for a new home with free ports and reads its node ID.
func (nw *network) initNode(t *testing.T, name, bin string) *node {
	t.Helper()
	ports := freePorts(t, 3)
	n := &node{name: name, home: filepath.Join(nw.dir, name), p2p: ports[0], rpc: ports[1], grpc: ports[2]}
	runCLI(t, bin, "init", name, "--chain-id", chainID, "--home", n.home)
	n.id = strings.TrimSpace(runCLI(t, bin, "comet", "show-node-id", "--home", n.home))
	return n
}

// join creates a fresh node (not a validator) with the chain's genesis,
// configured to dial peers.
func (nw *network) join(t *testing.T, name, bin string, peers []*node, interval int) *node {
	t.Helper()
	n := nw.initNode(t, name, bin)
	copyFile(t, filepath.Join(nw.vals[0].home, "config", "genesis.json"), filepath.Join(n.home, "config", "genesis.json"))
	var addrs []string
	for _, p := range peers {
		addrs = append(addrs, p.p2pAddr())
	}
	nw.configure(t, n, addrs, interval)
	return n
}

// configure writes loopback ports, peers, fast blocks and snapshots every
// interval blocks (0: none) into the node's config.toml and app.toml.
func (nw *network) configure(t *testing.T, n *node, peers []string, interval int) {
	t.Helper()
	cfg := filepath.Join(n.home, "config", "config.toml")
	setTOML(t, cfg, "", map[string]string{"log_format": `"json"`})
	setTOML(t, cfg, "rpc", map[string]string{"laddr": q(fmt.Sprintf("tcp://127.0.0.1:%d", n.rpc)), "pprof_laddr": q("")})
	setTOML(t, cfg, "p2p", map[string]string{
		"laddr":              q(fmt.Sprintf("tcp://127.0.0.1:%d", n.p2p)),
		"persistent_peers":   q(strings.Join(peers, ",")),
		"pex":                "false",
		"addr_book_strict":   "false",
		"allow_duplicate_ip": "true",
	})
	setTOML(t, cfg, "consensus", map[string]string{"timeout_commit": `"300ms"`, "timeout_propose": `"1s"`})
	app := filepath.Join(n.home, "config", "app.toml")
	setTOML(t, app, "", map[string]string{"minimum-gas-prices": q("0" + denom)})
	setTOML(t, app, "grpc", map[string]string{"enable": "true", "address": q(fmt.Sprintf("127.0.0.1:%d", n.grpc))})
	setTOML(t, app, "api", map[string]string{"enable": "false"})
	setTOML(t, app, "state-sync", map[string]string{
		"snapshot-interval": fmt.Sprint(interval), "snapshot-keep-recent": "10",
	})
}

func q(s string) string { return fmt.Sprintf("%q", s) }

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitHeight waits until the node's RPC reports a height of at least h.
func waitHeight(t *testing.T, n *node, h int64, timeout time.Duration) int64 {
	t.Helper()
	var got int64
	waitFor(t, timeout, fmt.Sprintf("%s at height %d", n.name, h), func() (bool, error) {
		if n.exited() {
			return false, fmt.Errorf("%s exited (%v)", n.name, n.waitErr)
		}
		var err error
		got, err = height(n.rpcURL())
		return err == nil && got >= h, err
	}, n)
	return got
}

// transfer sends amount from validator i's account to addr and waits for
// CheckTx to accept it.
func (nw *network) transfer(t *testing.T, i int, addr string, amount int) {
	t.Helper()
	v := nw.vals[i]
	out := runCLI(t, exampledBin, "tx", "bank", "send", v.name, addr, fmt.Sprintf("%d%s", amount, denom),
		"--chain-id", chainID, keyring, "--home", v.home, "--node", "tcp://"+v.rpcAddr(),
		"--fees", "0"+denom, "--yes", "--output", "json")
	var res struct {
		Code   uint32 `json:"code"`
		RawLog string `json:"raw_log"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil || res.Code != 0 {
		t.Fatalf("bank send from %s: code %d %s (%v): %s", v.name, res.Code, res.RawLog, err, out)
	}
}

// latestSnapshot is the highest snapshot height in the node's snapshot
// store (its directory names), or 0.
func latestSnapshot(n *node) int64 {
	entries, _ := os.ReadDir(filepath.Join(n.home, "data", "snapshots"))
	var best int64
	for _, e := range entries {
		var h int64
		if _, err := fmt.Sscan(e.Name(), &h); err == nil && e.IsDir() && h > best {
			best = h
		}
	}
	return best
}
