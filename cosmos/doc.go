// Package cosmos gives a Cosmos SDK v0.55 chain this module's state sync
// with one option on its start command:
//
//	server.AddCommandsWithStartCmdOptions(rootCmd, app.DefaultNodeHome,
//		newApp, appExport, cosmos.StartCmdOptions())
//
// With it, `<chain>d start` runs the chain's app in process under a
// CometBFT v0.40 node built by package node of the root module: the four
// state sync channels (0x60-0x63) served by our Reactor, Sync at boot when
// the node has no state and [statesync] enable = true, the handover to
// block sync, and the SDK's gRPC server and REST API server. Everything the
// SDK's own start does for an in-process node is done, in the same order,
// with the same app.toml (which is left untouched).
//
// # Configuration
//
// CometBFT's [statesync] section of config.toml, read as the statesyncd
// command of the root module reads it: CometBFT's keys (enable,
// rpc_servers, trust_height, trust_hash, trust_period, discovery_time, ...)
// plus this library's (use_p2p, discovery_timeout, chunk_window, backfill,
// ...), all optional. With use_p2p = true no RPC server is needed: light
// blocks and consensus params come from peers over P2P. The app's snapshots
// are configured as usual in app.toml ([state-sync] snapshot-interval,
// snapshot-keep-recent).
//
// # What the SDK keeps unexported, and what the handler does instead
//
// server/start.go (SDK v0.55.0) builds the node in unexported functions;
// the handler replaces each with exported parts:
//
//   - start, startInProcess, startCmtNode: the handler itself; the node is
//     node.New from the root module instead of CometBFT's NewNodeWithContext.
//   - startApp: opts.DBOpener (which StartCmdWithOptions sets to the SDK's
//     openDB when the chain leaves it nil) and the chain's AppCreator.
//   - getGenDocProvider: genesisProvider, the same two exported calls
//     (genutiltypes.AppGenesisFromFile, AppGenesis.ToGenesisDoc).
//   - startAPIServer: api.New, Application.RegisterAPIRoutes and
//     api.Server.Start, all exported, in the same order.
//   - startTelemetry, getCtx: telemetry.New, and an errgroup under a
//     context cancelled on SIGINT/SIGTERM by the handler (the SDK's
//     ListenForQuitSignals would keep a goroutine waiting for a signal).
//   - testnetify (in-place testnet, --is-testnet) and the grpc-only mode:
//     not reproduced; the handler refuses them with an error. Use the
//     SDK's stock start command for those.
//   - startStandAlone (--with-comet=false, the app as an ABCI socket
//     server): refused too; run the stock start that way and point the
//     root module's statesyncd at it (statesyncd start --proxy_app tcp://…).
//
// StartGrpcServer and NewCometABCIWrapper are exported and used as they are.
//
// # Failure
//
// A stock node whose state sync fails logs the error and stays parked
// forever. Under this handler the node stops, the gRPC and API servers shut
// down, and `<chain>d start` returns the error (exit status 1).
package cosmos
