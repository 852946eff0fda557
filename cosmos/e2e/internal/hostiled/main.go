// Command hostiled is the example chain's binary with a hostile app, for
// the e2e tests only: the app is the example chain's, except that it lies
// about its snapshots as HOSTILE_MODE says:
//
//	corrupt-chunks  every snapshot chunk it serves has one byte flipped
//	                (the metadata, and so the chunk hashes, are the real ones)
//	unknown-format  every snapshot it lists has format 99, which no app knows
package main

import (
	"fmt"
	"os"

	"cosmossdk.io/log/v2"
	abci "github.com/cometbft/cometbft/abci/types"
	dbm "github.com/cosmos/cosmos-db"
	svrcmd "github.com/cosmos/cosmos-sdk/server/cmd"
	servertypes "github.com/cosmos/cosmos-sdk/server/types"

	"github.com/statesync/statesync/cosmos/example/app"
	"github.com/statesync/statesync/cosmos/example/cmd"
)

// unknownFormat is a snapshot format the SDK's snapshot manager does not know.
const unknownFormat = 99

func main() {
	mode := os.Getenv("HOSTILE_MODE")
	if mode != "corrupt-chunks" && mode != "unknown-format" {
		fmt.Fprintln(os.Stderr, "hostiled: set HOSTILE_MODE to corrupt-chunks or unknown-format")
		os.Exit(2)
	}
	creator := func(logger log.Logger, db dbm.DB, opts servertypes.AppOptions) servertypes.Application {
		return hostileApp{Application: app.Creator(logger, db, opts), mode: mode}
	}
	rootCmd, err := cmd.NewRootCmd(creator)
	if err == nil {
		err = svrcmd.Execute(rootCmd, "EXAMPLED", app.DefaultNodeHome)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type hostileApp struct {
	servertypes.Application
	mode string
}

func (a hostileApp) ListSnapshots(req *abci.RequestListSnapshots) (*abci.ResponseListSnapshots, error) {
	resp, err := a.Application.ListSnapshots(req)
	if err != nil || a.mode != "unknown-format" {
		return resp, err
	}
	for _, s := range resp.Snapshots {
		s.Format = unknownFormat
	}
	return resp, nil
}

func (a hostileApp) LoadSnapshotChunk(req *abci.RequestLoadSnapshotChunk) (*abci.ResponseLoadSnapshotChunk, error) {
	resp, err := a.Application.LoadSnapshotChunk(req)
	if err != nil || a.mode != "corrupt-chunks" || len(resp.Chunk) == 0 {
		return resp, err
	}
	chunk := append([]byte(nil), resp.Chunk...)
	chunk[len(chunk)/2] ^= 0xff
	return &abci.ResponseLoadSnapshotChunk{Chunk: chunk}, nil
}
