package e2e

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/p2p"
)

// TestCosmosStateSync runs a 3-validator example chain (each validator
// under this library's start handler, snapshots every 10 blocks), makes
// state with bank transfers, and then joins it:
//
//   - JoinOverP2P: a fresh exampled node restores through this library with
//     light blocks and params from peers (no RPC server), hands over to
//     block sync and follows the chain; its balances over gRPC and its app
//     hash equal the validators' at the same height.
//   - StockNodeRestoresFromOurs: a fresh node under the SDK's stock start
//     (CometBFT's built-in state sync, two RPC servers) restores from the
//     validators, which serve snapshots through this library.
//   - CorruptChunkRefetched: a peer serving chunks that do not match the
//     snapshot's chunk hashes is rejected by the SDK app, disconnected by
//     this library, and the chunk refetched from an honest peer.
//   - UnknownFormatFails: with only snapshots of a format the app does not
//     know, the node stops with an error naming the format.
func TestCosmosStateSync(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an SDK network of child processes")
	}
	nw := newNetwork(t, 3)
	v0 := nw.vals[0]
	waitHeight(t, v0, 3, 2*time.Minute)

	// State: every validator pays every user, one round per block.
	for round := range 3 {
		for i := range nw.vals {
			nw.transfer(t, i, nw.users[(i+round)%len(nw.users)], 1000*(round+1)+i)
		}
		h, err := height(v0.rpcURL())
		if err != nil {
			t.Fatal(err)
		}
		waitHeight(t, v0, h+2, time.Minute)
	}
	// A snapshot taken after the transfers, and two blocks above it.
	h, _ := height(v0.rpcURL())
	snapAt := (h/snapshotInterval + 1) * snapshotInterval
	waitHeight(t, v0, snapAt+2, 2*time.Minute)
	waitFor(t, time.Minute, "the snapshot files", func() (bool, error) {
		return latestSnapshot(v0) >= snapAt, nil
	}, v0)

	t.Run("JoinOverP2P", func(t *testing.T) { testJoinOverP2P(t, nw) })
	t.Run("StockNodeRestoresFromOurs", func(t *testing.T) { testStockNode(t, nw) })
	t.Run("CorruptChunkRefetched", func(t *testing.T) { testCorruptChunk(t, nw) })
	t.Run("UnknownFormatFails", func(t *testing.T) { testUnknownFormat(t, nw) })
}

// stateSync writes the [statesync] section of n's config.toml: trust in
// block 2 of the chain (hash read from validator 0), rpcServers or (none)
// light blocks over P2P.
func stateSync(t *testing.T, nw *network, n *node, rpcServers []*node, extra map[string]string) {
	t.Helper()
	hash, _, err := blockID(nw.vals[0].rpcURL(), 2)
	if err != nil {
		t.Fatal(err)
	}
	var servers []string
	for _, s := range rpcServers {
		servers = append(servers, s.rpcAddr())
	}
	kv := map[string]string{
		"enable":            "true",
		"use_p2p":           fmt.Sprint(len(rpcServers) == 0),
		"rpc_servers":       q(strings.Join(servers, ",")),
		"trust_height":      "2",
		"trust_hash":        q(hash),
		"trust_period":      q("168h0m0s"),
		"discovery_time":    q("5s"),
		"discovery_timeout": q("30s"),
	}
	for k, v := range extra {
		kv[k] = v
	}
	setTOML(t, filepath.Join(n.home, "config", "config.toml"), "statesync", kv)
}

// syncedHeight waits for our handler's "state sync complete" log line and
// returns the height it restored.
func syncedHeight(t *testing.T, n *node) int64 {
	t.Helper()
	n.waitLog(t, 3*time.Minute, "state sync complete; block sync running")
	for _, l := range strings.Split(n.log(), "\n") {
		if strings.Contains(l, "state sync complete") {
			var h int64
			if i := strings.Index(l, `"height":`); i >= 0 {
				fmt.Sscan(l[i+len(`"height":`):], &h)
			}
			if h > 0 {
				return h
			}
		}
	}
	t.Fatalf("%s: no height in the state sync log line", n.name)
	return 0
}

// checkSameState waits until n follows the chain past minHeight, then
// checks that its app hash and every account's balances (over n's gRPC
// server) equal validator 0's at the same height.
func checkSameState(t *testing.T, nw *network, n *node, minHeight int64) {
	t.Helper()
	v0 := nw.vals[0]
	waitHeight(t, n, minHeight, 2*time.Minute)
	last, appHash, err := abciInfo(n.rpcURL())
	if err != nil {
		t.Fatal(err)
	}
	waitHeight(t, v0, last+1, time.Minute)
	_, chainHash, err := blockID(v0.rpcURL(), last+1)
	if err != nil {
		t.Fatal(err)
	}
	if appHash != chainHash {
		t.Fatalf("%s: app hash after height %d is %s, the chain's is %s", n.name, last, appHash, chainHash)
	}
	var nonEmpty int
	for _, addr := range append(append([]string{}, nw.users...), nw.addrs...) {
		want, err := balances(fmt.Sprintf("127.0.0.1:%d", v0.grpc), addr, last)
		if err != nil {
			t.Fatalf("validator balances of %s at %d: %v", addr, last, err)
		}
		got, err := balances(fmt.Sprintf("127.0.0.1:%d", n.grpc), addr, last)
		if err != nil {
			t.Fatalf("%s balances of %s at %d: %v", n.name, addr, last, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: balances of %s at height %d are %v, validator 0 has %v", n.name, addr, last, got, want)
		}
		if len(want) > 0 {
			nonEmpty++
		}
	}
	if nonEmpty != len(nw.users)+len(nw.addrs) {
		t.Fatalf("only %d of %d accounts have balances", nonEmpty, len(nw.users)+len(nw.addrs))
	}
	t.Logf("%s: app hash %s and balances of %d accounts equal the chain's at height %d", n.name, appHash, nonEmpty, last)
}

func testJoinOverP2P(t *testing.T, nw *network) {
	j := nw.join(t, "joiner", exampledBin, nw.vals, 0)
	stateSync(t, nw, j, nil, nil)
	j.start(t, exampledBin, nil, "start")
	restored := syncedHeight(t, j)
	if restored < snapshotInterval {
		t.Fatalf("restored height %d", restored)
	}
	// It follows the chain: a transfer made after the restore shows up.
	nw.transfer(t, 1, nw.users[0], 777)
	h, err := height(nw.vals[0].rpcURL())
	if err != nil {
		t.Fatal(err)
	}
	checkSameState(t, nw, j, h+2)
}

func testStockNode(t *testing.T, nw *network) {
	s := nw.join(t, "stock", exampledBin, nw.vals, 0)
	stateSync(t, nw, s, nw.vals[:2], nil)
	s.start(t, exampledBin, nil, "start-stock")
	h, err := height(nw.vals[0].rpcURL())
	if err != nil {
		t.Fatal(err)
	}
	checkSameState(t, nw, s, h+2)
	var st status
	if err := rpcGet(s.rpcURL(), "/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.SyncInfo.EarliestBlockHeight <= 1 {
		t.Fatalf("the stock node's first block is %d: it did not state sync", st.SyncInfo.EarliestBlockHeight)
	}
}

// lowNodeKey writes a node key to home whose ID sorts below every one of
// others, so that the chunk scheduler (which fills the windows of peers
// with equal load in ID order) asks this node for chunk 0 first.
func lowNodeKey(t *testing.T, home string, others []*node) string {
	t.Helper()
	for {
		k := &p2p.NodeKey{PrivKey: ed25519.GenPrivKey()}
		id := string(k.ID())
		low := true
		for _, o := range others {
			low = low && id < o.id
		}
		if low {
			if err := k.SaveAs(filepath.Join(home, "config", "node_key.json")); err != nil {
				t.Fatal(err)
			}
			return id
		}
	}
}

func testCorruptChunk(t *testing.T, nw *network) {
	honest := nw.vals[:2]
	bad := nw.join(t, "corrupter", exampledBin, nw.vals, snapshotInterval)
	bad.id = lowNodeKey(t, bad.home, honest)
	bad.start(t, hostiledBin, []string{"HOSTILE_MODE=corrupt-chunks"}, "start")
	// It block-syncs from genesis and takes the validators' snapshots.
	h, _ := height(nw.vals[0].rpcURL())
	waitFor(t, 3*time.Minute, "the corrupter's snapshot", func() (bool, error) {
		return latestSnapshot(bad) >= (h/snapshotInterval+1)*snapshotInterval, nil
	}, bad)

	j := nw.join(t, "joiner2", exampledBin, append([]*node{bad}, honest...), 0)
	stateSync(t, nw, j, nil, nil)
	j.start(t, exampledBin, nil, "start")
	restored := syncedHeight(t, j)
	log := j.log()
	for _, want := range []string{"chunk checksum mismatch", "Disconnecting peer", bad.id, "rejected its chunks"} {
		if !strings.Contains(log, want) {
			t.Fatalf("joiner2's log lacks %q", want)
		}
	}
	t.Logf("restored height %d after rejecting %s", restored, bad.id)
	h, _ = height(nw.vals[0].rpcURL())
	checkSameState(t, nw, j, h+1)
}

func testUnknownFormat(t *testing.T, nw *network) {
	f := nw.join(t, "formatter", exampledBin, nw.vals, snapshotInterval)
	f.start(t, hostiledBin, []string{"HOSTILE_MODE=unknown-format"}, "start")
	h, _ := height(nw.vals[0].rpcURL())
	waitFor(t, 3*time.Minute, "the formatter's snapshot", func() (bool, error) {
		return latestSnapshot(f) >= (h/snapshotInterval+1)*snapshotInterval, nil
	}, f)

	j := nw.join(t, "joiner3", exampledBin, []*node{f}, 0)
	stateSync(t, nw, j, nw.vals[:2], map[string]string{"discovery_timeout": q("10s")})
	j.start(t, exampledBin, nil, "start")
	select {
	case <-j.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("joiner3 did not stop; log:\n%s", j.tail())
	}
	if j.waitErr == nil {
		t.Fatal("joiner3 exited with status 0")
	}
	log := j.log()
	for _, want := range []string{"all snapshots were rejected", "the app rejected format 99"} {
		if !strings.Contains(log, want) {
			t.Fatalf("joiner3's output lacks %q:\n%s", want, j.tail())
		}
	}
}
