package sdknet

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"time"
)

// StateSync writes the [statesync] section of n's config.toml: trust in
// block 2 of the chain (hash read from validator 0), and rpcServers for
// the light client or, with none, light blocks over P2P (use_p2p).
func (nw *Network) StateSync(t T, n *Node, rpcServers []*Node, extra map[string]string) {
	t.Helper()
	hash, _, err := BlockID(nw.Vals[0].RPCURL(), 2)
	if err != nil {
		t.Fatalf("trusted block: %v", err)
	}
	var servers []string
	for _, s := range rpcServers {
		servers = append(servers, s.RPCAddr())
	}
	kv := map[string]string{
		"enable":            "true",
		"use_p2p":           fmt.Sprint(len(rpcServers) == 0),
		"rpc_servers":       Q(strings.Join(servers, ",")),
		"trust_height":      "2",
		"trust_hash":        Q(hash),
		"trust_period":      Q("168h0m0s"),
		"discovery_time":    Q("5s"),
		"discovery_timeout": Q("30s"),
	}
	for k, v := range extra {
		kv[k] = v
	}
	SetTOML(t, filepath.Join(n.Home, "config", "config.toml"), "statesync", kv)
}

// SyncedHeight waits for the start handler's "state sync complete" log
// line and returns the height it restored.
func SyncedHeight(t T, n *Node) int64 {
	t.Helper()
	n.WaitLog(t, 3*time.Minute, "state sync complete; block sync running")
	for _, l := range strings.Split(n.Log(), "\n") {
		if !strings.Contains(l, "state sync complete") {
			continue
		}
		var h int64
		if i := strings.Index(l, `"height":`); i >= 0 {
			_, _ = fmt.Sscan(l[i+len(`"height":`):], &h)
		}
		if h > 0 {
			return h
		}
	}
	t.Fatalf("%s: no height in the state sync log line", n.Name)
	return 0
}

// CheckSameState waits until n follows the chain to minHeight, then
// checks that its app hash and every account's balances (over n's own gRPC
// server) equal validator 0's at the same height. It returns that height
// and the number of accounts compared.
func (nw *Network) CheckSameState(t T, n *Node, minHeight int64) (int64, int) {
	t.Helper()
	v0 := nw.Vals[0]
	WaitHeight(t, n, minHeight, 2*time.Minute)
	last, appHash, err := ABCIInfo(n.RPCURL())
	if err != nil {
		t.Fatalf("%s abci_info: %v", n.Name, err)
	}
	WaitHeight(t, v0, last+1, time.Minute)
	_, chainHash, err := BlockID(v0.RPCURL(), last+1)
	if err != nil {
		t.Fatalf("block %d: %v", last+1, err)
	}
	if appHash != chainHash {
		t.Fatalf("%s: app hash after height %d is %s, the chain's is %s", n.Name, last, appHash, chainHash)
	}
	accounts := append(append([]string{}, nw.Users...), nw.Addrs...)
	for _, addr := range accounts {
		want, err := Balances(fmt.Sprintf("127.0.0.1:%d", v0.GRPC), addr, last)
		if err != nil {
			t.Fatalf("validator balances of %s at %d: %v", addr, last, err)
		}
		got, err := Balances(fmt.Sprintf("127.0.0.1:%d", n.GRPC), addr, last)
		if err != nil {
			t.Fatalf("%s balances of %s at %d: %v", n.Name, addr, last, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: balances of %s at height %d are %v, validator 0 has %v", n.Name, addr, last, got, want)
		}
		if len(want) == 0 {
			t.Fatalf("account %s has no balance at height %d", addr, last)
		}
	}
	t.Logf("%s: app hash %s and balances of %d accounts equal the chain's at height %d", n.Name, appHash, len(accounts), last)
	return last, len(accounts)
}

// MakeState has every validator pay every user, one round per block, then
// waits for a snapshot taken after the transfers and two blocks above it.
// It returns the snapshot's height.
func (nw *Network) MakeState(t T, rounds int) int64 {
	t.Helper()
	v0 := nw.Vals[0]
	WaitHeight(t, v0, 3, 2*time.Minute)
	for round := range rounds {
		for i := range nw.Vals {
			nw.Transfer(t, i, nw.Users[(i+round)%len(nw.Users)], 1000*(round+1)+i)
		}
		h, err := Height(v0.RPCURL())
		if err != nil {
			t.Fatalf("height: %v", err)
		}
		WaitHeight(t, v0, h+2, time.Minute)
	}
	h, err := Height(v0.RPCURL())
	if err != nil {
		t.Fatalf("height: %v", err)
	}
	snapAt := (h/SnapshotInterval + 1) * SnapshotInterval
	WaitHeight(t, v0, snapAt+2, 2*time.Minute)
	WaitFor(t, time.Minute, "the snapshot files", func() (bool, error) {
		return LatestSnapshot(v0) >= snapAt, nil
	}, v0)
	return snapAt
}

// CheckExport runs `exampled export` on n's home (n must be stopped) and
// checks the genesis it prints: it starts at the height after n's last
// block, holds every validator, and every account's bank balances equal
// validator 0's (over gRPC) at n's last height.
func (nw *Network) CheckExport(t T, n *Node) {
	t.Helper()
	var gen struct {
		InitialHeight int64 `json:"initial_height"`
		AppState      struct {
			Bank struct {
				Balances []struct {
					Address string `json:"address"`
					Coins   []struct {
						Denom  string `json:"denom"`
						Amount string `json:"amount"`
					} `json:"coins"`
				} `json:"balances"`
			} `json:"bank"`
		} `json:"app_state"`
		Consensus struct {
			Validators []json.RawMessage `json:"validators"`
		} `json:"consensus"`
	}
	out := RunCLI(t, Exampled, "export", "--home", n.Home)
	// The genesis is the last line (the app's logs may precede it).
	out = strings.TrimSpace(out)
	if i := strings.LastIndex(out, "\n"); i >= 0 {
		out = out[i+1:]
	}
	if err := json.Unmarshal([]byte(out), &gen); err != nil {
		t.Fatalf("%s export: %v\n%.2000s", n.Name, err, out)
	}
	last := gen.InitialHeight - 1
	if last < 1 {
		t.Fatalf("%s export: initial_height %d", n.Name, gen.InitialHeight)
	}
	if len(gen.Consensus.Validators) != len(nw.Vals) {
		t.Fatalf("%s export at %d: %d validators, the chain has %d", n.Name, last, len(gen.Consensus.Validators), len(nw.Vals))
	}
	exported := map[string][]string{}
	for _, b := range gen.AppState.Bank.Balances {
		for _, c := range b.Coins {
			exported[b.Address] = append(exported[b.Address], c.Amount+c.Denom)
		}
	}
	accounts := append(append([]string{}, nw.Users...), nw.Addrs...)
	for _, addr := range accounts {
		want, err := Balances(fmt.Sprintf("127.0.0.1:%d", nw.Vals[0].GRPC), addr, last)
		if err != nil {
			t.Fatalf("validator balances of %s at %d: %v", addr, last, err)
		}
		if got := exported[addr]; len(want) == 0 || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s export at height %d: balances of %s are %v, validator 0 has %v", n.Name, last, addr, got, want)
		}
	}
	t.Logf("%s: exported genesis at height %d holds %d validators and the chain's balances of %d accounts",
		n.Name, last, len(gen.Consensus.Validators), len(accounts))
}
