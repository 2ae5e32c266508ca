// Package cluster carries a stream's signaling between the server a peer
// is connected to (its edge) and the server that runs the stream's
// coordinator (its owner), over NATS. One engine, two modes: a single
// server embeds a NATS server that listens on no port and connects to it
// in-process; servers in a cluster embed NATS servers that form a NATS
// cluster with JetStream (or all connect to an external one), and the
// owner of each stream holds a lease in a JetStream KV bucket whose epoch
// fences a stale owner. The package knows nothing of trees or of the
// protocol: it moves opaque frames between peers and owners.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors of the cluster.
var (
	// ErrNoOwner means no server owns the stream: nobody publishes it, or
	// its owner is gone and its lease has not been taken yet.
	ErrNoOwner = errors.New("no server owns the stream")
	// ErrOwned means another server holds the stream's lease.
	ErrOwned = errors.New("another server owns the stream")
	// ErrFenced means this server's lease on the stream has passed: it may
	// no longer act as the stream's owner.
	ErrFenced = errors.New("lease lost: fenced")
	// ErrClosed means the node has been closed.
	ErrClosed = errors.New("cluster node closed")
	// ErrConfig means the cluster flags do not make a valid configuration.
	ErrConfig = errors.New("cluster configuration")
)

// Config says how a server joins the cluster. The zero value is single
// mode: an embedded NATS server that listens on no port.
type Config struct {
	// ID names this server in peer ids and subjects ([a-z0-9], up to 16);
	// random when empty.
	ID string
	// Name is the NATS cluster's name; with Listen and Routes it makes the
	// embedded server a cluster member.
	Name string
	// Listen is the host:port the embedded server takes routes on.
	Listen string
	// Routes are the other members' route URLs (nats://host:port).
	Routes []string
	// URL, if set, connects to an external NATS cluster instead of
	// embedding a server (comma-separated URLs).
	URL string
	// StoreDir holds JetStream's state; a temporary directory when empty.
	StoreDir string
	// Replicas of the lease bucket; 0 means 3, or fewer in an embedded
	// cluster of fewer servers.
	Replicas int
	// LeaseTTL is how long a lease lives without renewal (default 3 s);
	// it is renewed every third of it.
	LeaseTTL time.Duration
	// Log receives the node's logs.
	Log *slog.Logger
}

// DefaultLeaseTTL is a lease's lifetime: measured here, a new owner takes
// a dead owner's stream 2.7–3.3 s after SIGKILL with 3 s (FIELD-NOTES).
const DefaultLeaseTTL = 3 * time.Second

// leaseBucket is the KV bucket of stream leases.
const leaseBucket = "canopy_leases"

var idPattern = regexp.MustCompile(`^[a-z0-9]{1,16}$`)

// members is how many servers the embedded cluster has (its routes, and
// this one if they leave it out); an external cluster is assumed to have
// 3 or more. A bucket cannot have more replicas than servers.
func (c Config) members() int {
	if c.URL != "" {
		return 3
	}
	n := len(c.Routes)
	self := false
	for _, r := range c.Routes {
		if u, err := url.Parse(strings.TrimSpace(r)); err == nil && u.Host == c.Listen {
			self = true
		}
	}
	if !self {
		n++
	}
	return max(n, 1)
}

// clustered reports whether cfg asks for more than one server.
func (c Config) clustered() bool { return c.Name != "" || c.URL != "" || len(c.Routes) > 0 }

// Node is this server's membership: its NATS connection, the edge links
// of the peers connected here and the streams it owns.
type Node struct {
	id    string
	log   *slog.Logger
	ns    *server.Server // nil with an external NATS
	nc    *nats.Conn
	kv    jetstream.KeyValue // nil in single mode: one server, no contention
	ttl   time.Duration
	tmp   string // a store dir made for us, removed on Close
	inbox *nats.Subscription
	// aliveSub hears the other servers' heartbeats (alive.go); done ends
	// the heartbeat.
	aliveSub *nats.Subscription
	done     chan struct{}

	mu     sync.Mutex
	links  map[string]*Link     // by peer id: peers connected here
	owned  map[string]*Owned    // by stream: streams owned here
	epochs map[string]uint64    // by stream: the highest owner epoch seen (fencing)
	seen   map[string]time.Time // by server id: its last heartbeat
	// owners and listed are what the heartbeats say each server owns
	// (election.go); waits are the joins waiting for a stream's new owner.
	owners map[string]ownerSeen // by stream
	listed map[string][]string  // by server id: the streams its last heartbeat named
	waits  map[string]*election // by stream
	// lister and listSub answer the cluster's listings (query.go).
	lister  func() []byte
	listSub *nats.Subscription
	closed  bool
	// stale counts owner messages dropped for a stale epoch.
	stale uint64
	// states are the last states owners published of their streams;
	// adopting, the streams whose orphaned links are being adopted;
	// takeover, how this server takes a stream over (handover.go).
	states   map[string]*stateCopy
	adopting map[string]bool
	takeover TakeoverFunc
	stateSub *nats.Subscription
	// stateCounts: what the state copies went through (state.go).
	stateCounts StateCounts
	// dropDeltas makes a test's server lose the next deltas it hears.
	dropDeltas atomic.Int32
}

// Start joins the cluster cfg describes, or starts single mode.
func Start(cfg Config) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ID == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		cfg.ID = hex.EncodeToString(b[:])
	}
	if !idPattern.MatchString(cfg.ID) {
		return nil, fmt.Errorf("%w: server id %q: want 1-16 of [a-z0-9]", ErrConfig, cfg.ID)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	n := &Node{id: cfg.ID, log: cfg.Log.With("node", cfg.ID), ttl: cfg.LeaseTTL,
		links: make(map[string]*Link), owned: make(map[string]*Owned), epochs: make(map[string]uint64),
		seen: make(map[string]time.Time), done: make(chan struct{}),
		states: make(map[string]*stateCopy), adopting: make(map[string]bool),
		owners: make(map[string]ownerSeen), listed: make(map[string][]string), waits: make(map[string]*election)}
	if err := n.connect(cfg); err != nil {
		n.Close()
		return nil, err
	}
	sub, err := n.nc.Subscribe(edgeSubject(n.id), n.deliver)
	if err != nil {
		n.Close()
		return nil, err
	}
	n.inbox = sub
	setPending(sub)
	if n.kv != nil {
		if n.stateSub, err = n.nc.Subscribe(statePrefix+"*", n.hearState); err != nil {
			n.Close()
			return nil, err
		}
		setPending(n.stateSub)
		if err := n.startAlive(); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// connect starts the embedded server (or dials the external one) and, in
// a cluster, opens the lease bucket.
func (n *Node) connect(cfg Config) error {
	opts := []nats.Option{nats.Name("canopy-" + n.id), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			n.log.Warn("nats", "subject", subjectOf(s), "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(*nats.Conn) { n.log.Warn("nats reconnected") }),
		// What waits for a reconnect (a restart of an external server).
		nats.ReconnectBufSize(64 << 20)}
	if cfg.URL != "" {
		nc, err := nats.Connect(cfg.URL, opts...)
		if err != nil {
			return fmt.Errorf("-nats-url: %w", err)
		}
		n.nc = nc
		return n.openBucket(cfg)
	}
	so := &server.Options{ServerName: "canopy-" + n.id, NoSigs: true, NoLog: true,
		// A signal carries an SDP of a few KB; a frame is at most 1 MiB.
		MaxPayload: 2 << 20,
		// A server cuts a client that reads too slowly (10 s, 64 MB by
		// default) and core NATS drops what it had: on a starved machine
		// (an unpaced load run) that was the owner's own connection. The
		// stream's owner must fall behind rather than lose joins.
		WriteDeadline: time.Minute, MaxPending: 1 << 30}
	if !cfg.clustered() {
		so.DontListen = true
	} else {
		// An embedded server with DontListen never becomes ready in a
		// cluster (v2.15.2: route start-up waits for the client accept
		// loop): listen for clients on loopback, on any port.
		so.Host, so.Port = "127.0.0.1", -1
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return fmt.Errorf("%w: -cluster-listen: %v", ErrConfig, err)
		}
		so.Cluster = server.ClusterOpts{Name: cfg.Name, Host: host, Port: port}
		if so.Cluster.Name == "" {
			so.Cluster.Name = "canopy"
		}
		for _, r := range cfg.Routes {
			u, err := url.Parse(strings.TrimSpace(r))
			if err != nil || u.Host == "" {
				return fmt.Errorf("%w: -routes: %q is not a nats://host:port URL", ErrConfig, r)
			}
			so.Routes = append(so.Routes, u)
		}
		so.JetStream = true
		so.StoreDir = cfg.StoreDir
		if so.StoreDir == "" {
			dir, err := os.MkdirTemp("", "canopy-js-")
			if err != nil {
				return err
			}
			n.tmp, so.StoreDir = dir, dir
		}
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	n.ns = ns
	nlog := &natsLog{log: n.log.With("nats", true)}
	ns.SetLogger(nlog, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		if last := nlog.lastError(); last != "" {
			return fmt.Errorf("nats server: not ready after 10 s: %s", last)
		}
		return errors.New("nats server: not ready after 10 s")
	}
	nc, err := nats.Connect("", append(opts, nats.InProcessServer(ns))...)
	if err != nil {
		return fmt.Errorf("nats connect: %w", err)
	}
	n.nc = nc
	if !cfg.clustered() {
		return nil
	}
	return n.openBucket(cfg)
}

// openBucket opens (or creates) the lease bucket. In a fresh cluster
// JetStream elects its meta leader first, which takes seconds: it retries
// for up to a minute.
func (n *Node) openBucket(cfg Config) error {
	js, err := jetstream.New(n.nc)
	if err != nil {
		return err
	}
	replicas := cfg.Replicas
	if replicas == 0 {
		replicas = min(3, cfg.members())
	}
	kc := jetstream.KeyValueConfig{Bucket: leaseBucket, TTL: n.ttl, History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
		Description: "which server owns each stream (canopy)"}
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		kv, err := js.CreateOrUpdateKeyValue(ctx, kc)
		cancel()
		if err == nil {
			n.kv = kv
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lease bucket: %w", err)
		}
		n.log.Info("waiting for JetStream", "err", err)
		time.Sleep(500 * time.Millisecond)
	}
}

// ID is this server's id.
func (n *Node) ID() string { return n.id }

// Clustered reports whether leases are held in the shared bucket.
func (n *Node) Clustered() bool { return n.kv != nil }

// Stale is how many owner messages were dropped for a stale epoch.
func (n *Node) Stale() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stale
}

// ClientURL is the embedded server's client URL ("" in single mode or
// with an external NATS), for tools that watch the cluster.
func (n *Node) ClientURL() string {
	if n.ns == nil || n.ns.Addr() == nil {
		return ""
	}
	return n.ns.ClientURL()
}

// Close releases the streams owned here (in a cluster, streams not
// handed over yet are, with their last published state: a new owner
// takes them at once), drops the edge links and stops NATS.
func (n *Node) Close() {
	n.HandOver()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	close(n.done)
	owned := make([]*Owned, 0, len(n.owned))
	for _, o := range n.owned {
		owned = append(owned, o)
	}
	n.mu.Unlock()
	for _, o := range owned {
		o.closePeers() // their edges close their sockets: they go to the next owner
		o.Release()
	}
	if n.nc != nil {
		_ = n.nc.Drain()
		n.nc.Close()
	}
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
	if n.tmp != "" {
		_ = os.RemoveAll(n.tmp)
	}
}

func splitHostPort(s string) (string, int, error) {
	if s == "" {
		return "127.0.0.1", -1, nil
	}
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func subjectOf(s *nats.Subscription) string {
	if s == nil {
		return ""
	}
	return s.Subject
}

// setPending lifts a subscription's slow-consumer limits: core NATS drops
// messages for a subscriber past them, and a dropped join or close would
// strand a peer. A million messages (~1 GB of SDPs at most) bound it.
func setPending(s *nats.Subscription) { _ = s.SetPendingLimits(1<<20, 1<<30) }
