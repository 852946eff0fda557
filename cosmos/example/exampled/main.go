// Command exampled is the example chain's binary: a Cosmos SDK v0.55 chain
// (auth, bank, staking, genutil, consensus) whose `start` runs under the
// statesync library (cosmos.StartCmdOptions). `start-stock` is the SDK's
// own start command, with CometBFT's built-in state sync, kept for
// comparison (the interop test and the bench use it).
package main

import (
	"fmt"
	"os"

	svrcmd "github.com/cosmos/cosmos-sdk/server/cmd"

	"github.com/statesync/statesync/cosmos/example/app"
	"github.com/statesync/statesync/cosmos/example/cmd"
)

func main() {
	rootCmd, err := cmd.NewRootCmd(app.Creator)
	if err == nil {
		err = svrcmd.Execute(rootCmd, "EXAMPLED", app.DefaultNodeHome)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
