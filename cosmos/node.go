package cosmos

import (
	"fmt"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	cmttypes "github.com/cometbft/cometbft/types"
	"github.com/cosmos/cosmos-sdk/server"
	servercmtlog "github.com/cosmos/cosmos-sdk/server/log"
	servertypes "github.com/cosmos/cosmos-sdk/server/types"
	genutiltypes "github.com/cosmos/cosmos-sdk/x/genutil/types"
	"github.com/spf13/viper"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/node"
)

// newNode builds (does not start) the CometBFT node running app, with our
// state sync configured from config.toml's [statesync] section. The node
// key and validator key are loaded or generated as the SDK's startCmtNode
// does.
func newNode(svrCtx *server.Context, app servertypes.Application) (*node.Node, error) {
	cfg := svrCtx.Config
	ss, err := Config(svrCtx.Viper, cfg)
	if err != nil {
		return nil, err
	}
	nodeKey, err := p2p.LoadOrGenNodeKey(cfg.NodeKeyFile())
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	n, err := node.New(node.Options{
		Config:        cfg,
		StateSync:     &ss,
		PrivValidator: privval.LoadOrGenFilePV(cfg.PrivValidatorKeyFile(), cfg.PrivValidatorStateFile()),
		NodeKey:       nodeKey,
		ClientCreator: proxy.NewLocalClientCreator(server.NewCometABCIWrapper(app)),
		Genesis:       genesisProvider(cfg),
		Logger:        servercmtlog.CometLoggerWrapper{Logger: svrCtx.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("building the node: %w", err)
	}
	return n, nil
}

// Config reads this library's state sync configuration: CometBFT's
// [statesync] keys as parsed into cfg, then this library's keys from the
// same section of config.toml as v holds it (the SDK's server context
// viper, which has read config.toml). It is what statesyncd reads.
func Config(v *viper.Viper, cfg *cmtcfg.Config) (statesync.Config, error) {
	ss := statesync.FromCometBFT(cfg.StateSync)
	if v != nil && v.IsSet("statesync") {
		if err := v.UnmarshalKey("statesync", &ss); err != nil {
			return statesync.Config{}, fmt.Errorf("%w: config.toml [statesync]: %w", ErrConfig, err)
		}
	}
	if err := ss.ValidateBasic(); err != nil {
		return statesync.Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return ss, nil
}

// genesisProvider reads the SDK's genesis file (an AppGenesis) as the
// SDK's unexported getGenDocProvider does.
func genesisProvider(cfg *cmtcfg.Config) func() (*cmttypes.GenesisDoc, error) {
	return func() (*cmttypes.GenesisDoc, error) {
		appGenesis, err := genutiltypes.AppGenesisFromFile(cfg.GenesisFile())
		if err != nil {
			return nil, err
		}
		return appGenesis.ToGenesisDoc()
	}
}
