package main

import (
	"flag"
	"log/slog"
	"strings"
	"time"

	"canopy/server/cluster"
)

// clusterFlags are the flags of cluster mode ("Many servers" in the
// README). Without any, the server runs alone on an in-process NATS.
type clusterFlags struct {
	id       *string
	name     *string
	listen   *string
	routes   *string
	natsURL  *string
	storeDir *string
	leaseTTL *time.Duration
}

func registerClusterFlags(fs *flag.FlagSet) *clusterFlags {
	f := &clusterFlags{
		id:       fs.String("server-id", "", "this server's id in peer ids and NATS subjects, [a-z0-9]{1,16} (random if empty)"),
		name:     fs.String("cluster-name", "", "NATS cluster name: with -cluster-listen and -routes, the embedded NATS server joins the other servers' cluster"),
		listen:   fs.String("cluster-listen", "", "host:port the embedded NATS server takes cluster routes on"),
		routes:   fs.String("routes", "", "comma-separated route URLs of the other servers (nats://host:port)"),
		natsURL:  fs.String("nats-url", "", "comma-separated URLs of an external NATS cluster (with JetStream) instead of the embedded server"),
		storeDir: fs.String("store-dir", "", "directory for JetStream's state in cluster mode (a temporary one if empty)"),
		leaseTTL: fs.Duration("lease-ttl", cluster.DefaultLeaseTTL, "how long a stream's lease lives unrenewed in cluster mode; renewed every third of it"),
	}
	return f
}

// start joins the cluster, or returns nil in single mode (the server then
// starts its own in-process NATS).
func (f *clusterFlags) start(log *slog.Logger) (*cluster.Node, error) {
	cfg := cluster.Config{ID: *f.id, Name: *f.name, Listen: *f.listen, URL: *f.natsURL,
		StoreDir: *f.storeDir, LeaseTTL: *f.leaseTTL, Log: log}
	for _, r := range strings.Split(*f.routes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			cfg.Routes = append(cfg.Routes, r)
		}
	}
	if cfg.Name == "" && cfg.URL == "" && len(cfg.Routes) == 0 {
		if cfg.ID == "" {
			return nil, nil
		}
		return cluster.Start(cfg) // single mode with a chosen id
	}
	log.Info("joining the cluster", "id", cfg.ID, "cluster", cfg.Name, "routes", cfg.Routes, "nats", cfg.URL)
	n, err := cluster.Start(cfg)
	if err != nil {
		return nil, err
	}
	log.Info("cluster ready", "id", n.ID())
	return n, nil
}
