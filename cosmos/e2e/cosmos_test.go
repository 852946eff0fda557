package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/statesync/statesync/cosmos/internal/sdknet"
)

// TestCosmosStateSync runs a 3-validator example chain (each validator
// under this library's start handler, snapshots every 10 blocks), makes
// state with bank transfers, and then joins it:
//
//   - JoinOverP2P: a fresh exampled node restores through this library with
//     light blocks and params from peers (no RPC server), hands over to
//     block sync and follows the chain; its balances over gRPC and its app
//     hash equal the validators' at the same height; stopped, it exports
//     (exampled export) a genesis whose balances and validators are the
//     chain's at its last height.
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
	nw := sdknet.NewNetwork(t, 3)
	nw.MakeState(t, 3)

	t.Run("JoinOverP2P", func(t *testing.T) { testJoinOverP2P(t, nw) })
	t.Run("StockNodeRestoresFromOurs", func(t *testing.T) { testStockNode(t, nw) })
	t.Run("CorruptChunkRefetched", func(t *testing.T) { testCorruptChunk(t, nw) })
	t.Run("UnknownFormatFails", func(t *testing.T) { testUnknownFormat(t, nw) })
	t.Run("StartRefusesBadInput", func(t *testing.T) { testStartRefuses(t, nw) })
}

func chainHeight(t *testing.T, nw *sdknet.Network) int64 {
	t.Helper()
	h, err := sdknet.Height(nw.Vals[0].RPCURL())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func testJoinOverP2P(t *testing.T, nw *sdknet.Network) {
	j := nw.Join(t, "joiner", nw.Vals, 0)
	nw.StateSync(t, j, nil, nil)
	j.Start(t, sdknet.Exampled, nil, "start")
	restored := sdknet.SyncedHeight(t, j)
	if restored < sdknet.SnapshotInterval || restored%sdknet.SnapshotInterval != 0 {
		t.Fatalf("restored height %d is not a snapshot height", restored)
	}
	// It follows the chain: a transfer made after the restore shows up.
	nw.Transfer(t, 1, nw.Users[0], 777)
	nw.CheckSameState(t, j, chainHeight(t, nw)+2)
	// Its state, restored from the snapshot and then built on by blocks,
	// exports as a genesis (exampled export) equal to the chain's.
	j.Stop(t)
	nw.CheckExport(t, j)
}

func testStockNode(t *testing.T, nw *sdknet.Network) {
	s := nw.Join(t, "stock", nw.Vals, 0)
	nw.StateSync(t, s, nw.Vals[:2], nil)
	s.Start(t, sdknet.Exampled, nil, "start-stock")
	nw.CheckSameState(t, s, chainHeight(t, nw)+2)
	var st sdknet.Status
	if err := sdknet.RPCGet(s.RPCURL(), "/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.SyncInfo.EarliestBlockHeight <= 1 {
		t.Fatalf("the stock node's first block is %d: it did not state sync", st.SyncInfo.EarliestBlockHeight)
	}
}

// lowNodeKey writes a node key to home whose ID sorts below every one of
// others, so that the chunk scheduler (which fills the windows of equally
// loaded peers in ID order) asks this node for chunk 0 first.
func lowNodeKey(t *testing.T, home string, others []*sdknet.Node) string {
	t.Helper()
	for {
		k, err := sdknet.NewNodeKey()
		if err != nil {
			t.Fatal(err)
		}
		id := k.ID()
		low := true
		for _, o := range others {
			low = low && id < o.ID
		}
		if low {
			if err := k.Save(home); err != nil {
				t.Fatal(err)
			}
			return id
		}
	}
}

// startHostile starts a full node of the chain with the hostile app in
// mode, and waits until it has the validators' latest snapshot.
func startHostile(t *testing.T, nw *sdknet.Network, name, mode string, configure func(*sdknet.Node)) *sdknet.Node {
	t.Helper()
	n := nw.Join(t, name, nw.Vals, sdknet.SnapshotInterval)
	if configure != nil {
		configure(n)
	}
	n.Start(t, sdknet.Hostiled, []string{"HOSTILE_MODE=" + mode}, "start")
	next := (chainHeight(t, nw)/sdknet.SnapshotInterval + 1) * sdknet.SnapshotInterval
	sdknet.WaitFor(t, 3*time.Minute, name+"'s snapshot", func() (bool, error) {
		return sdknet.LatestSnapshot(n) >= next, nil
	}, n)
	return n
}

func testCorruptChunk(t *testing.T, nw *sdknet.Network) {
	honest := nw.Vals[:2]
	bad := startHostile(t, nw, "corrupter", "corrupt-chunks", func(n *sdknet.Node) {
		n.ID = lowNodeKey(t, n.Home, honest)
	})
	// The snapshot here is one chunk, so only one peer is asked for it:
	// the corrupter, when its advertisement is in before discovery ends
	// (the scheduler then prefers the lowest peer ID, see lowNodeKey). When
	// the honest validators' advertisements end discovery first, the
	// corrupter is never asked: that run shows nothing, so a fresh joiner
	// tries again (bounded).
	var (
		j   *sdknet.Node
		log string
	)
	const attempts = 3
	for i := 0; i < attempts; i++ {
		j = nw.Join(t, fmt.Sprintf("joiner2-%d", i), append([]*sdknet.Node{bad}, honest...), 0)
		nw.StateSync(t, j, nil, nil)
		j.Start(t, sdknet.Exampled, nil, "start")
		sdknet.SyncedHeight(t, j)
		log = j.Log()
		if strings.Contains(log, "chunk checksum mismatch") {
			break
		}
		t.Logf("attempt %d: the corrupter %s was not asked for the chunk (discovery ended on the honest "+
			"validators' advertisements); trying a fresh joiner", i+1, bad.ID)
		j.Stop(t)
		j = nil
	}
	if j == nil {
		t.Skipf("in %d attempts discovery never chose the corrupter %s for the snapshot's only chunk; "+
			"nothing about corrupt chunks was exercised", attempts, bad.ID)
	}
	restored := sdknet.SyncedHeight(t, j)
	for _, want := range []string{"Disconnecting peer", bad.ID, "rejected its chunks"} {
		if !strings.Contains(log, want) {
			t.Fatalf("joiner2's log lacks %q", want)
		}
	}
	t.Logf("restored height %d after rejecting %s", restored, bad.ID)
	nw.CheckSameState(t, j, chainHeight(t, nw)+1)
}

func testUnknownFormat(t *testing.T, nw *sdknet.Network) {
	f := startHostile(t, nw, "formatter", "unknown-format", nil)
	j := nw.Join(t, "joiner3", []*sdknet.Node{f}, 0)
	nw.StateSync(t, j, nw.Vals[:2], map[string]string{"discovery_timeout": sdknet.Q("10s")})
	j.Start(t, sdknet.Exampled, nil, "start")
	select {
	case <-j.Done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("joiner3 did not stop; log:\n%s", j.Tail())
	}
	if j.WaitErr == nil {
		t.Fatal("joiner3 exited with status 0")
	}
	for _, want := range []string{"all snapshots were rejected", "the app rejected format 99"} {
		if !strings.Contains(j.Log(), want) {
			t.Fatalf("joiner3's output lacks %q:\n%s", want, j.Tail())
		}
	}
}

// testStartRefuses: start modes the handler does not reproduce, and a bad
// [statesync] key, end `start` at once with an error that says what to do.
func testStartRefuses(t *testing.T, nw *sdknet.Network) {
	n := nw.Join(t, "refused", nw.Vals, 0)
	cases := []struct {
		name  string
		setup func()
		args  []string
		want  string
	}{
		{"with-comet=false", nil, []string{"--with-comet=false"}, "statesyncd start --proxy_app"},
		{"grpc-only", nil, []string{"--grpc-only"}, "use the SDK's stock start command"},
		{"bad trust_hash", func() {
			nw.StateSync(t, n, nil, map[string]string{"trust_hash": sdknet.Q("not-hex")})
		}, nil, "statesync.trust_hash"},
	}
	for _, c := range cases {
		if c.setup != nil {
			c.setup()
		}
		var out bytes.Buffer
		cmd := exec.Command(sdknet.Exampled, append([]string{"start", "--home", n.Home}, c.args...)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err == nil || !strings.Contains(out.String(), c.want) {
			t.Fatalf("%s: exit %v, want an error mentioning %q; output:\n%s", c.name, err, c.want, out.String())
		}
	}
}
