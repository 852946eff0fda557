// Package cmd is the example chain's command tree, shared by exampled and
// the e2e tests' hostile node.
package cmd

import (
	"os"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/cosmos/cosmos-sdk/client"
	"github.com/cosmos/cosmos-sdk/client/config"
	"github.com/cosmos/cosmos-sdk/client/keys"
	"github.com/cosmos/cosmos-sdk/client/snapshot"
	addresscodec "github.com/cosmos/cosmos-sdk/codec/address"
	"github.com/cosmos/cosmos-sdk/server"
	servertypes "github.com/cosmos/cosmos-sdk/server/types"
	sdk "github.com/cosmos/cosmos-sdk/types"
	authcli "github.com/cosmos/cosmos-sdk/x/auth/client/cli"
	authtypes "github.com/cosmos/cosmos-sdk/x/auth/types"
	bankcli "github.com/cosmos/cosmos-sdk/x/bank/client/cli"
	genutilcli "github.com/cosmos/cosmos-sdk/x/genutil/client/cli"

	"github.com/statesync/statesync/cosmos"
	"github.com/statesync/statesync/cosmos/example/app"
)

// NewRootCmd builds the exampled command tree around appCreator
// (app.Creator for the example chain), with this library's start.
func NewRootCmd(appCreator servertypes.AppCreator) (*cobra.Command, error) {
	return NewRootCmdWithStart(appCreator, cosmos.StartCmdOptions())
}

// NewRootCmdWithStart is NewRootCmd with the start command's options
// given (the demo passes a handler with progress hooks).
func NewRootCmdWithStart(appCreator servertypes.AppCreator, startOpts server.StartCmdOptions) (*cobra.Command, error) {
	parts, err := app.NewClientParts(viper.New())
	if err != nil {
		return nil, err
	}
	initCtx := client.Context{}.
		WithCodec(parts.Codec).
		WithInterfaceRegistry(parts.InterfaceRegistry).
		WithTxConfig(parts.TxConfig).
		WithLegacyAmino(parts.LegacyAmino).
		WithInput(os.Stdin).
		WithAccountRetriever(authtypes.AccountRetriever{}).
		WithHomeDir(app.DefaultNodeHome).
		WithViper("EXAMPLED")

	rootCmd := &cobra.Command{
		Use:           app.Name,
		Short:         "example Cosmos SDK chain with the statesync library's state sync",
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(cmd.OutOrStdout())
			cmd.SetErr(cmd.ErrOrStderr())
			clientCtx := initCtx.WithCmdContext(cmd.Context())
			clientCtx, err := client.ReadPersistentCommandFlags(clientCtx, cmd.Flags())
			if err != nil {
				return err
			}
			if clientCtx, err = config.ReadFromClientConfig(clientCtx); err != nil {
				return err
			}
			if err := client.SetCmdClientContextHandler(clientCtx, cmd); err != nil {
				return err
			}
			return server.InterceptConfigsPreRunHandler(cmd, "", nil, cmtcfg.DefaultConfig())
		},
	}

	rootCmd.AddCommand(
		genutilcli.InitCmd(parts.BasicManager, app.DefaultNodeHome),
		genutilcli.Commands(parts.TxConfig, parts.BasicManager, app.DefaultNodeHome),
		keys.Commands(),
		txCommand(),
		snapshot.Cmd(appCreator),
		stockStartCmd(appCreator),
	)
	// The line that gives the chain this library's state sync (startOpts is
	// cosmos.StartCmdOptions() in NewRootCmd):
	server.AddCommandsWithStartCmdOptions(rootCmd, app.DefaultNodeHome, appCreator, app.Exporter, startOpts)
	return rootCmd, nil
}

// txCommand has what the example needs: bank send, sign, broadcast.
func txCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "tx", Short: "Transactions", RunE: client.ValidateCmd}
	ac := addresscodec.NewBech32Codec(sdk.GetConfig().GetBech32AccountAddrPrefix())
	cmd.AddCommand(bankcli.NewTxCmd(ac), authcli.GetSignCommand(), authcli.GetBroadcastCommand())
	return cmd
}

// stockStartCmd is the SDK's own start (CometBFT's built-in state sync).
func stockStartCmd(appCreator servertypes.AppCreator) *cobra.Command {
	cmd := server.StartCmd(appCreator, app.DefaultNodeHome)
	cmd.Use = "start-stock"
	cmd.Short = "Run the full node with the SDK's stock start command (CometBFT's built-in state sync)"
	return cmd
}
