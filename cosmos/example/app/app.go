// Package app is the example chain of the statesync cosmos module: a Cosmos
// SDK v0.55 app wired with depinject from the SDK's auth, bank, staking,
// genutil and consensus modules (and the tx config), whose snapshot manager
// is configured from app.toml as in any SDK chain.
package app

import (
	"os"
	"path/filepath"

	"cosmossdk.io/depinject"
	"cosmossdk.io/log/v2"
	dbm "github.com/cosmos/cosmos-db"

	"github.com/cosmos/cosmos-sdk/baseapp"
	"github.com/cosmos/cosmos-sdk/client"
	"github.com/cosmos/cosmos-sdk/codec"
	codectypes "github.com/cosmos/cosmos-sdk/codec/types"
	"github.com/cosmos/cosmos-sdk/runtime"
	"github.com/cosmos/cosmos-sdk/server"
	servertypes "github.com/cosmos/cosmos-sdk/server/types"
	"github.com/cosmos/cosmos-sdk/testutil/configurator"
	"github.com/cosmos/cosmos-sdk/types/module"

	_ "github.com/cosmos/cosmos-sdk/x/auth"           // registers the auth module
	_ "github.com/cosmos/cosmos-sdk/x/auth/tx/config" // registers the tx config
	_ "github.com/cosmos/cosmos-sdk/x/bank"           // registers the bank module
	_ "github.com/cosmos/cosmos-sdk/x/consensus"      // registers the consensus module
	"github.com/cosmos/cosmos-sdk/x/genutil"          // also registers the genutil module
	genutiltypes "github.com/cosmos/cosmos-sdk/x/genutil/types"
	_ "github.com/cosmos/cosmos-sdk/x/staking" // registers the staking module
	stakingkeeper "github.com/cosmos/cosmos-sdk/x/staking/keeper"
)

// Name is the chain binary's name; DefaultNodeHome its default home.
const Name = "exampled"

// DefaultNodeHome is ~/.exampled.
var DefaultNodeHome = func() string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, "."+Name)
}()

// Config is the app's module wiring.
func Config() depinject.Config {
	return configurator.NewAppConfig(
		configurator.AuthModule(),
		configurator.BankModule(),
		configurator.StakingModule(),
		configurator.GenutilModule(),
		configurator.ConsensusModule(),
		configurator.TxModule(),
	)
}

// App is the example chain's app.
type App struct {
	*runtime.App
	cdc     codec.Codec
	staking *stakingkeeper.Keeper
}

// New builds the app over db and loads its latest version; baseAppOptions
// come from app.toml (server.DefaultBaseappOptions: pruning, snapshots,
// ...).
func New(logger log.Logger, db dbm.DB, appOpts servertypes.AppOptions, baseAppOptions ...func(*baseapp.BaseApp)) (*App, error) {
	a, err := build(logger, db, appOpts, baseAppOptions...)
	if err != nil {
		return nil, err
	}
	if err := a.Load(true); err != nil {
		return nil, err
	}
	return a, nil
}

// build wires the app over db without loading a version.
func build(logger log.Logger, db dbm.DB, appOpts servertypes.AppOptions, baseAppOptions ...func(*baseapp.BaseApp)) (*App, error) {
	var (
		builder *runtime.AppBuilder
		a       App
	)
	if err := depinject.Inject(depinject.Configs(Config(), depinject.Supply(logger, appOpts)),
		&builder, &a.cdc, &a.staking); err != nil {
		return nil, err
	}
	a.App = builder.Build(db, baseAppOptions...)
	return &a, nil
}

// Creator is the SDK AppCreator of the example chain (for the server
// commands). It panics when the app cannot be built, as SDK chains do.
func Creator(logger log.Logger, db dbm.DB, appOpts servertypes.AppOptions) servertypes.Application {
	a, err := New(logger, db, appOpts, server.DefaultBaseappOptions(appOpts)...)
	if err != nil {
		panic(err)
	}
	return a
}

// ClientParts are what the CLI needs from the wiring.
type ClientParts struct {
	TxConfig          client.TxConfig
	Codec             codec.Codec
	LegacyAmino       *codec.LegacyAmino
	InterfaceRegistry codectypes.InterfaceRegistry
	BasicManager      module.BasicManager
}

// NewClientParts resolves the wiring for the CLI (no app is built).
func NewClientParts(appOpts servertypes.AppOptions) (ClientParts, error) {
	var p ClientParts
	err := depinject.Inject(depinject.Configs(Config(), depinject.Supply(log.NewNopLogger(), appOpts)),
		&p.TxConfig, &p.Codec, &p.LegacyAmino, &p.InterfaceRegistry, &p.BasicManager)
	if err != nil {
		return p, err
	}
	// The genesis commands need genutil's own basic module (its gentx
	// validator), not the adaptor depinject provides.
	p.BasicManager[genutiltypes.ModuleName] = genutil.NewAppModuleBasic(genutiltypes.DefaultMessageValidator)
	return p, nil
}
