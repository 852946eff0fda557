// Command demo runs the cosmos module's demo (make demo-cosmos): a
// 3-validator example chain on loopback (child processes, bank transfers,
// snapshots every 10 blocks), then a fresh node, in this process, that
// joins it through the library over P2P light blocks with a live progress
// display, follows the chain, and has its app hash and balances checked
// against a validator's. It ends with a summary and exits 0, or non-zero
// with the error. Run it from the cosmos module's directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cosmos/cosmos-sdk/server"
	svrcmd "github.com/cosmos/cosmos-sdk/server/cmd"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/cosmos"
	"github.com/statesync/statesync/cosmos/example/app"
	"github.com/statesync/statesync/cosmos/example/cmd"
	"github.com/statesync/statesync/cosmos/internal/sdknet"
	"github.com/statesync/statesync/internal/progressui"
	"github.com/statesync/statesync/node"
)

func main() {
	plain := flag.Bool("plain", false, "plain progress lines even on a terminal")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	sdknet.Main("demo-cosmos", func(r *sdknet.Runner) { run(r, *plain, *timeout) })
}

func run(r *sdknet.Runner, plain bool, timeout time.Duration) {
	start := time.Now()
	step("building the example chain's binaries")
	if err := sdknet.Build(".", r.TempDir()); err != nil {
		r.Fatalf("%v", err)
	}
	step("starting 3 validators (exampled start: the SDK app under this library's node)")
	nw := sdknet.NewNetwork(r, 3)
	step("bank transfers, then a snapshot (every 10 blocks)")
	snapAt := nw.MakeState(r, 3)
	fmt.Printf("    snapshot at height %d taken by the validators\n", snapAt)

	step("a fresh node joins over P2P (light blocks from peers, no RPC server)")
	j := nw.Join(r, "joiner", nw.Vals, 0)
	nw.StateSync(r, j, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	started := make(chan *node.Node, 1)
	done := startInProcess(r, ctx, j.Home, started)
	var n *node.Node
	select {
	case n = <-started:
	case err := <-done:
		r.Fatalf("the joining node stopped: %v", err)
	}
	ui := &progressui.Renderer{W: os.Stdout, TTY: !plain && progressui.IsTerminal(os.Stdout), Prefix: "    "}
	ch, unsubscribe := n.Reactor().Subscribe()
	ui.Run(ctx, ch)
	unsubscribe()
	select {
	case <-n.Synced():
	case <-n.Done():
		r.Fatalf("state sync failed: %v", n.Err())
	case <-ctx.Done():
		r.Fatalf("state sync did not finish within %v", timeout)
	}
	res, final := n.SyncResult(), n.Reactor().Progress()

	step("following the chain; comparing app hash and balances with validator 0")
	nw.Transfer(r, 1, nw.Users[0], 777)
	h, err := sdknet.Height(nw.Vals[0].RPCURL())
	if err != nil {
		r.Fatalf("%v", err)
	}
	checked, accounts := nw.CheckSameState(r, j, h+2)
	// Backfill runs in the background after the handover; wait for it
	// (bounded) so the summary can say how far it got.
	bfCtx, bfCancel := context.WithTimeout(ctx, 30*time.Second)
	bf, bfErr := n.WaitBackfill(bfCtx)
	bfCancel()
	backfilled := "not finished within 30 s"
	switch {
	case bf != nil && bf.Err != nil:
		backfilled = fmt.Sprintf("%d headers, then: %v", bf.Blocks, bf.Err)
	case bf != nil:
		backfilled = fmt.Sprintf("%d headers", bf.Blocks)
	case bfErr == nil:
		backfilled = "off"
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		r.Fatalf("the joining node: %v", err)
	}
	summary(res, final, backfilled, checked, accounts, time.Since(start))
}

// startInProcess runs `exampled start` for home in this process, with a
// handler that reports the node once started; the returned channel gets
// the command's result when ctx ends (or the node fails).
func startInProcess(r *sdknet.Runner, ctx context.Context, home string, started chan<- *node.Node) <-chan error {
	handler := cosmos.NewStartCommandHandler(cosmos.Options{
		Context: ctx,
		Started: func(n *node.Node) { started <- n },
	})
	root, err := cmd.NewRootCmdWithStart(app.Creator, server.StartCmdOptions{StartCommandHandler: handler})
	if err != nil {
		r.Fatalf("%v", err)
	}
	root.SetArgs([]string{"start", "--home", home, "--log_level", "disabled", "--log_no_color"})
	done := make(chan error, 1)
	go func() { done <- svrcmd.Execute(root, "EXAMPLED", home) }()
	return done
}

func summary(res node.SyncResult, final statesync.Progress, backfilled string, checked int64, accounts int, total time.Duration) {
	snap := res.State.LastBlockHeight
	bps := 0.0
	if res.Restore > 0 {
		bps = float64(final.Bytes) / res.Restore.Seconds()
	}
	rows := [][2]string{
		{"snapshot height", fmt.Sprint(snap)},
		{"snapshot size", fmt.Sprintf("%s in %d chunks (SDK format %d, IAVL export, zlib)", progressui.Bytes(final.Bytes), final.ChunksTotal, final.SnapshotFormat)},
		{"restore time", res.Restore.Round(time.Millisecond).String()},
		{"throughput", progressui.Rate(bps)},
		{"backfilled", backfilled},
		{"handover height", fmt.Sprintf("%d (block sync from %d)", snap, snap+1)},
		{"final height", fmt.Sprint(checked)},
		{"balances checked", fmt.Sprintf("%d accounts over gRPC at height %d: equal to validator 0's, app hash too", accounts, checked)},
		{"demo total", total.Round(time.Second).String()},
	}
	fmt.Println("\nsummary")
	for _, r := range rows {
		fmt.Printf("  %-17s %s\n", r[0], r[1])
	}
}

func step(s string) { fmt.Printf("==> %s\n", s) }
