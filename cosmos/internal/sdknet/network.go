package sdknet

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	chainID = "statesync-e2e"
	// SnapshotInterval is the validators' snapshot interval (blocks).
	SnapshotInterval = 10
	denom            = "stake"
	keyring          = "--keyring-backend=test"
)

// Network is a chain of validators, each an exampled process started with
// this library's start handler.
type Network struct {
	Opts  Options
	Dir   string
	Vals  []*Node
	Addrs []string // the validators' account addresses (same order)
	Users []string // accounts that only receive transfers
}

// Options change the network's defaults.
type Options struct {
	// Interval is the validators' snapshot interval (default
	// SnapshotInterval); TimeoutCommit CometBFT's (default 300 ms).
	Interval      int
	TimeoutCommit time.Duration
	// EditGenesis, if set, edits the final genesis file (after
	// collect-gentxs) before it is copied to the validators.
	EditGenesis func(t T, path string)
}

// NewNetwork creates the genesis of n validators the SDK way (init, keys
// add, add-genesis-account, gentx, collect-gentxs), configures them on
// loopback and starts them.
func NewNetwork(t T, n int) *Network { return NewNetworkWith(t, n, Options{}) }

// NewNetworkWith is NewNetwork with options.
func NewNetworkWith(t T, n int, o Options) *Network {
	t.Helper()
	if o.Interval == 0 {
		o.Interval = SnapshotInterval
	}
	if o.TimeoutCommit == 0 {
		o.TimeoutCommit = 300 * time.Millisecond
	}
	nw := &Network{Dir: t.TempDir(), Opts: o}
	for i := range n {
		v := nw.InitNode(t, fmt.Sprintf("val%d", i))
		RunCLI(t, Exampled, "keys", "add", v.Name, keyring, "--home", v.Home)
		addr := strings.TrimSpace(RunCLI(t, Exampled, "keys", "show", v.Name, "-a", keyring, "--home", v.Home))
		nw.Vals, nw.Addrs = append(nw.Vals, v), append(nw.Addrs, addr)
	}
	v0 := nw.Vals[0]
	for _, addr := range nw.Addrs {
		RunCLI(t, Exampled, "genesis", "add-genesis-account", addr, "1000000000000"+denom, "--home", v0.Home)
	}
	for i := range 3 {
		name := fmt.Sprintf("user%d", i)
		RunCLI(t, Exampled, "keys", "add", name, keyring, "--home", v0.Home)
		nw.Users = append(nw.Users, strings.TrimSpace(RunCLI(t, Exampled, "keys", "show", name, "-a", keyring, "--home", v0.Home)))
	}
	gentxDir := filepath.Join(v0.Home, "config", "gentx")
	if err := os.MkdirAll(gentxDir, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	for _, v := range nw.Vals {
		if v != v0 {
			CopyFile(t, filepath.Join(v0.Home, "config", "genesis.json"), filepath.Join(v.Home, "config", "genesis.json"))
		}
		out := filepath.Join(gentxDir, v.Name+".json")
		RunCLI(t, Exampled, "genesis", "gentx", v.Name, "100000000"+denom, "--chain-id", chainID, keyring,
			"--home", v.Home, "--output-document", out)
	}
	RunCLI(t, Exampled, "genesis", "collect-gentxs", "--home", v0.Home)
	if o.EditGenesis != nil {
		o.EditGenesis(t, filepath.Join(v0.Home, "config", "genesis.json"))
	}
	for _, v := range nw.Vals[1:] {
		CopyFile(t, filepath.Join(v0.Home, "config", "genesis.json"), filepath.Join(v.Home, "config", "genesis.json"))
	}
	for _, v := range nw.Vals {
		var peers []string
		for _, o := range nw.Vals {
			if o != v {
				peers = append(peers, o.P2PAddr())
			}
		}
		nw.Configure(t, v, peers, o.Interval)
		v.Start(t, Exampled, nil, "start")
	}
	return nw
}

// InitNode runs `init` for a new home with free ports and reads its node ID.
func (nw *Network) InitNode(t T, name string) *Node {
	t.Helper()
	ports := FreePorts(t, 3)
	n := &Node{Name: name, Home: filepath.Join(nw.Dir, name), P2P: ports[0], RPC: ports[1], GRPC: ports[2]}
	RunCLI(t, Exampled, "init", name, "--chain-id", chainID, "--home", n.Home)
	n.ID = strings.TrimSpace(RunCLI(t, Exampled, "comet", "show-node-id", "--home", n.Home))
	return n
}

// Join creates a fresh node (not a validator) with the chain's genesis,
// configured to dial peers.
func (nw *Network) Join(t T, name string, peers []*Node, interval int) *Node {
	t.Helper()
	n := nw.InitNode(t, name)
	CopyFile(t, filepath.Join(nw.Vals[0].Home, "config", "genesis.json"), filepath.Join(n.Home, "config", "genesis.json"))
	var addrs []string
	for _, p := range peers {
		addrs = append(addrs, p.P2PAddr())
	}
	nw.Configure(t, n, addrs, interval)
	return n
}

// Configure writes loopback ports, peers, fast blocks and snapshots every
// interval blocks (0: none) into the node's config.toml and app.toml.
func (nw *Network) Configure(t T, n *Node, peers []string, interval int) {
	t.Helper()
	cfg := filepath.Join(n.Home, "config", "config.toml")
	SetTOML(t, cfg, "", map[string]string{"log_format": `"json"`})
	SetTOML(t, cfg, "rpc", map[string]string{"laddr": Q(fmt.Sprintf("tcp://127.0.0.1:%d", n.RPC)), "pprof_laddr": Q("")})
	SetTOML(t, cfg, "p2p", map[string]string{
		"laddr":              Q(fmt.Sprintf("tcp://127.0.0.1:%d", n.P2P)),
		"persistent_peers":   Q(strings.Join(peers, ",")),
		"pex":                "false",
		"addr_book_strict":   "false",
		"allow_duplicate_ip": "true",
	})
	SetTOML(t, cfg, "consensus", map[string]string{"timeout_commit": Q(nw.Opts.TimeoutCommit.String()), "timeout_propose": `"3s"`})
	app := filepath.Join(n.Home, "config", "app.toml")
	SetTOML(t, app, "", map[string]string{"minimum-gas-prices": Q("0" + denom)})
	SetTOML(t, app, "grpc", map[string]string{"enable": "true", "address": Q(fmt.Sprintf("127.0.0.1:%d", n.GRPC))})
	SetTOML(t, app, "api", map[string]string{"enable": "false"})
	SetTOML(t, app, "state-sync", map[string]string{
		"snapshot-interval": fmt.Sprint(interval), "snapshot-keep-recent": "10",
	})
}

// Q quotes s as a TOML string.
func Q(s string) string { return fmt.Sprintf("%q", s) }

// CopyFile copies a file.
func CopyFile(t T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
}

// WaitHeight waits until the node's RPC reports a height of at least h.
func WaitHeight(t T, n *Node, h int64, timeout time.Duration) int64 {
	t.Helper()
	var got int64
	WaitFor(t, timeout, fmt.Sprintf("%s at height %d", n.Name, h), func() (bool, error) {
		if n.Exited() {
			return false, fmt.Errorf("%s exited (%v)", n.Name, n.WaitErr)
		}
		var err error
		got, err = Height(n.RPCURL())
		return err == nil && got >= h, err
	}, n)
	return got
}

// Transfer sends amount from validator i's account to addr and waits for
// CheckTx to accept it.
func (nw *Network) Transfer(t T, i int, addr string, amount int) {
	t.Helper()
	v := nw.Vals[i]
	out := RunCLI(t, Exampled, "tx", "bank", "send", v.Name, addr, fmt.Sprintf("%d%s", amount, denom),
		"--chain-id", chainID, keyring, "--home", v.Home, "--node", "tcp://"+v.RPCAddr(),
		"--fees", "0"+denom, "--yes", "--output", "json")
	var res struct {
		Code   uint32 `json:"code"`
		RawLog string `json:"raw_log"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil || res.Code != 0 {
		t.Fatalf("bank send from %s: code %d %s (%v): %s", v.Name, res.Code, res.RawLog, err, out)
	}
}

// LatestSnapshot is the highest snapshot height in the node's snapshot
// store (its directory names; an empty one, left by an export cut short,
// does not count), or 0.
func LatestSnapshot(n *Node) int64 {
	entries, _ := os.ReadDir(filepath.Join(n.Home, "data", "snapshots"))
	var best int64
	for _, e := range entries {
		var h int64
		dir := filepath.Join(n.Home, "data", "snapshots", e.Name())
		if _, err := fmt.Sscan(e.Name(), &h); err == nil && e.IsDir() && h > best && hasFiles(dir) {
			best = h
		}
	}
	return best
}

// hasFiles reports whether dir holds a file at any depth: a snapshot whose
// export was cut short (a validator stopped mid-export) leaves an empty
// height directory behind.
func hasFiles(dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}
