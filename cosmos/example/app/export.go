package app

import (
	"encoding/json"
	"errors"
	"fmt"

	"cosmossdk.io/log/v2"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	dbm "github.com/cosmos/cosmos-db"
	"github.com/spf13/cast"

	"github.com/cosmos/cosmos-sdk/baseapp"
	"github.com/cosmos/cosmos-sdk/server"
	servertypes "github.com/cosmos/cosmos-sdk/server/types"
	"github.com/cosmos/cosmos-sdk/x/staking"
)

// ErrZeroHeightExport is returned by the exporter for --for-zero-height:
// a zero-height export must first settle staking (withdraw rewards,
// reset unbonding and redelegation heights, unjail the allowed
// validators), as simapp's prepForZeroHeightGenesis does for a chain with
// distribution and slashing; the example chain does not implement it.
var ErrZeroHeightExport = errors.New("example chain: export --for-zero-height is not supported (a genesis at the exported height is)")

// Exporter is the example chain's AppExporter (`exampled export`): the
// app state of every module (or of modulesToExport) at height (-1: the
// latest), the bonded validators and the consensus params, as a genesis
// that starts at the next height.
func Exporter(logger log.Logger, db dbm.DB, height int64, forZeroHeight bool, jailAllowedAddrs []string,
	appOpts servertypes.AppOptions, modulesToExport []string,
) (servertypes.ExportedApp, error) {
	if forZeroHeight {
		return servertypes.ExportedApp{}, ErrZeroHeightExport
	}
	// The stores open as the node opens them (app.toml's IAVL settings), so
	// that an export does not, for example, build the fast-node index of a
	// node that runs without it.
	a, err := build(logger, db, appOpts,
		baseapp.SetIAVLCacheSize(cast.ToInt(appOpts.Get(server.FlagIAVLCacheSize))),
		baseapp.SetIAVLDisableFastNode(cast.ToBool(appOpts.Get(server.FlagDisableIAVLFastNode))))
	if err != nil {
		return servertypes.ExportedApp{}, err
	}
	if height == -1 {
		err = a.Load(true)
	} else {
		err = a.LoadHeight(height)
	}
	if err != nil {
		return servertypes.ExportedApp{}, fmt.Errorf("loading height %d: %w", height, err)
	}
	return a.ExportAppStateAndValidators(forZeroHeight, jailAllowedAddrs, modulesToExport)
}

// ExportAppStateAndValidators exports the committed state (see Exporter).
func (a *App) ExportAppStateAndValidators(forZeroHeight bool, _, modulesToExport []string) (servertypes.ExportedApp, error) {
	if forZeroHeight {
		return servertypes.ExportedApp{}, ErrZeroHeightExport
	}
	ctx := a.NewContextLegacy(true, cmtproto.Header{Height: a.LastBlockHeight()})
	genState, err := a.ModuleManager.ExportGenesisForModules(ctx, a.cdc, modulesToExport)
	if err != nil {
		return servertypes.ExportedApp{}, fmt.Errorf("exporting the modules' genesis: %w", err)
	}
	appState, err := json.MarshalIndent(genState, "", "  ")
	if err != nil {
		return servertypes.ExportedApp{}, err
	}
	validators, err := staking.WriteValidators(ctx, a.staking)
	if err != nil {
		return servertypes.ExportedApp{}, fmt.Errorf("exporting the validators: %w", err)
	}
	return servertypes.ExportedApp{
		AppState:        appState,
		Validators:      validators,
		Height:          a.LastBlockHeight() + 1,
		ConsensusParams: a.GetConsensusParams(ctx),
	}, nil
}
