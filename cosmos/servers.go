package cosmos

import (
	"context"
	"fmt"

	"github.com/cometbft/cometbft/rpc/client/local"
	"github.com/cosmos/cosmos-sdk/client"
	"github.com/cosmos/cosmos-sdk/server"
	"github.com/cosmos/cosmos-sdk/server/api"
	serverconfig "github.com/cosmos/cosmos-sdk/server/config"
	servertypes "github.com/cosmos/cosmos-sdk/server/types"
	"github.com/cosmos/cosmos-sdk/telemetry"
	"golang.org/x/sync/errgroup"

	"github.com/statesync/statesync/node"
)

// startServers starts the SDK's gRPC and REST API servers in g, under ctx,
// as the SDK's startInProcess does, then the chain's PostSetup.
func startServers(ctx context.Context, g *errgroup.Group, svrCtx *server.Context, svrCfg serverconfig.Config,
	clientCtx client.Context, app servertypes.Application, n *node.Node,
	metrics *telemetry.Metrics, //nolint:staticcheck // as the SDK's start does
	opts server.StartCmdOptions,
) error {
	if svrCfg.API.Enable || svrCfg.GRPC.Enable {
		// The tx, CometBFT and node services answer through a local client
		// of the node (the SDK registers them only when a server is on).
		clientCtx = clientCtx.WithClient(local.New(n.CometBFT()))
		app.RegisterTxService(clientCtx)
		app.RegisterTendermintService(clientCtx)
		app.RegisterNodeService(clientCtx, svrCfg)
	}
	grpcSrv, clientCtx, err := server.StartGrpcServer(ctx, g, svrCfg.GRPC, clientCtx, svrCtx, app)
	if err != nil {
		return fmt.Errorf("starting the gRPC server: %w", err)
	}
	if svrCfg.API.Enable {
		apiSrv := api.New(clientCtx.WithHomeDir(svrCtx.Config.RootDir), svrCtx.Logger.With("module", "api-server"), grpcSrv)
		app.RegisterAPIRoutes(apiSrv, svrCfg.API)
		if svrCfg.Telemetry.Enabled { //nolint:staticcheck // as the SDK's start does
			apiSrv.SetTelemetry(metrics)
		}
		g.Go(func() error { return apiSrv.Start(ctx, svrCfg) })
	}
	if opts.PostSetup != nil {
		if err := opts.PostSetup(svrCtx, clientCtx, ctx, g); err != nil {
			return fmt.Errorf("PostSetup: %w", err)
		}
	}
	return nil
}
