package main

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST scheme is HMAC-SHA1 by definition
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v5"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"

	"canopy/mesh/protocol"
)

// TURN defaults.
const (
	DefaultTURNPort = 3478
	// DefaultTURNTTL is how long a credential handed out in a welcome stays
	// valid. A peer keeps an allocation it made in time; it needs a fresh
	// credential (a new welcome) only to allocate again.
	DefaultTURNTTL = 6 * time.Hour
	// MaxTURNTTL bounds the lifetime the embedded server accepts, whatever
	// expiry a username claims.
	MaxTURNTTL = 24 * time.Hour
	turnRealm  = "canopy"
)

// TURNCredentials issues ephemeral TURN credentials in the TURN REST scheme
// (draft-uberti-behave-turn-rest): username "expiry:peerid", password
// base64(HMAC-SHA1(secret, username)). The embedded server checks them with
// the same secret; an external coturn does with use-auth-secret.
type TURNCredentials struct {
	// URLs of the TURN server. Empty means the embedded server, reached at
	// the host the peer used for /ws (or PublicHost) on Port.
	URLs []string
	// PublicHost, if set, replaces the request's host in derived URLs.
	PublicHost string
	// Port is the embedded server's UDP port, for derived URLs.
	Port int
	// Secret is shared with the TURN server.
	Secret []byte
	// TTL is a credential's lifetime, bounded by MaxTURNTTL.
	TTL time.Duration
}

// ICEServer returns the TURN entry for one peer's welcome.
func (t *TURNCredentials) ICEServer(peerID, requestHost string, now time.Time) protocol.ICEServer {
	ttl := t.TTL
	if ttl <= 0 || ttl > MaxTURNTTL {
		ttl = min(max(ttl, DefaultTURNTTL), MaxTURNTTL)
	}
	username := strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + peerID
	urls := t.URLs
	if len(urls) == 0 {
		host := t.PublicHost
		if host == "" {
			host = requestHost
			if h, _, err := net.SplitHostPort(requestHost); err == nil {
				host = h
			}
			host = strings.Trim(host, "[]")
		}
		urls = []string{"turn:" + net.JoinHostPort(host, strconv.Itoa(t.Port)) + "?transport=udp"}
	}
	return protocol.ICEServer{URLs: urls, Username: username, Credential: turnPassword(t.Secret, username)}
}

func turnPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// TURNConfig configures the embedded TURN server.
type TURNConfig struct {
	// Listen is the UDP address to serve, e.g. ":3478"; PacketConn, if set,
	// is served instead (tests pass a vnet or loopback socket).
	Listen     string
	PacketConn net.PacketConn
	// RelayIP is the address relayed candidates advertise: the server's
	// public address. Nil means the address of the default route.
	RelayIP net.IP
	// RelayNet opens relay sockets; nil means the OS network.
	RelayNet transport.Net
	// Secret checks TURNCredentials' passwords.
	Secret []byte
	// AllowPeer decides which peer addresses an allocation may send to;
	// nil means PublicPeer, which keeps the relay off the server's own
	// networks. The host's own addresses are refused whatever it says
	// (see peerPolicy).
	AllowPeer func(net.IP) bool
	// AllowLoopback lets allocations reach loopback addresses, which are
	// the host's own, at any port but the relay's: for a server whose
	// peers all run on the host (-loopback-only: tests, a demo on a laptop
	// without a network), where a private viewer's relayed candidate must
	// reach a parent on 127.0.0.1. Never on a server with a network: every
	// local service listening on loopback becomes reachable through it.
	AllowLoopback bool
	// SelfPorts are UDP ports at which the relay may reach the host's own
	// addresses: the ICE port of the server's in-process peers (-udp-port),
	// so a private viewer, which connects only through the relay, can be
	// fed by the demo source or a WHIP/WHEP node. Nothing else on the host
	// becomes reachable.
	SelfPorts []int
	// UserQuota, AddrQuota: allocations one credential and one client
	// address (IPv6: its /64) may hold; 0 means the defaults, negative no
	// limit. MaxAllocations caps the whole relay (0: derived from the
	// file limit, DefaultTURNAllocations). IdleTimeout releases an
	// allocation that relayed nothing for that long (0: the default).
	UserQuota, AddrQuota int
	MaxAllocations       int
	IdleTimeout          time.Duration
	Logger               *slog.Logger
}

// TURNServer is the embedded TURN relay.
type TURNServer struct {
	srv  *turn.Server
	conn net.PacketConn
	lim  *turnLimits
}

// StartTURN starts the embedded TURN server.
func StartTURN(cfg TURNConfig) (*TURNServer, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("turn: no secret")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	conn := cfg.PacketConn
	if conn == nil {
		var err error
		if conn, err = net.ListenPacket("udp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("turn: %w", err)
		}
	}
	relayIP := cfg.RelayIP
	if relayIP == nil {
		relayIP = defaultRouteIP()
	}
	bind := "0.0.0.0"
	if cfg.RelayNet != nil || relayIP.IsLoopback() {
		bind = relayIP.String()
	}
	var listenIP net.IP
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		listenIP = a.IP
	}
	policy := newPeerPolicy(cfg.AllowPeer, cfg.RelayNet, relayIP, listenIP)
	if cfg.AllowLoopback {
		policy.allowLoopback(portOf(conn.LocalAddr()))
	}
	policy.allowSelfPorts(cfg.SelfPorts)
	lim := newTURNLimits(cfg, policy, log)
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:         turnRealm,
		LoggerFactory: pionLogs{log: log.With("component", "turn")},
		AuthHandler:   restAuthHandler(cfg.Secret, log),
		QuotaHandler:  lim.quota,
		EventHandler:  lim.events(),
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: conn,
			RelayAddressGenerator: &guardedRelay{lim: lim, RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
				RelayAddress: relayIP, Address: bind, Net: cfg.RelayNet,
			}},
			// Create-permission, channel-bind and connect requests.
			PermissionHandler: func(_ net.Addr, peer net.IP) bool {
				ok := policy.permit(peer)
				if !ok {
					lim.refuse(refusedPeer, "peer", peer.String())
				}
				return ok
			},
		}},
	})
	if err != nil {
		lim.close()
		_ = conn.Close()
		return nil, fmt.Errorf("turn: %w", err)
	}
	log.Info("turn relay listening", "addr", conn.LocalAddr().String(), "relay-ip", relayIP.String(),
		"max-allocations", lim.total, "per-credential", lim.userQuota, "per-address", lim.addrQuota, "idle-timeout", lim.idle)
	return &TURNServer{srv: srv, conn: conn, lim: lim}, nil
}

// Addr is the address the server listens on.
func (t *TURNServer) Addr() net.Addr { return t.conn.LocalAddr() }

// Close stops the server and its allocations.
func (t *TURNServer) Close() error {
	t.lim.close()
	return t.srv.Close()
}

// Allocations is how many allocations the relay holds.
func (t *TURNServer) Allocations() int { return t.lim.count() }

// Collector exposes the relay's allocations, refusals and idle releases
// (canopy_turn_*) for the server's Prometheus registry.
func (t *TURNServer) Collector() prometheus.Collector { return t.lim }

// restAuthHandler accepts TURN REST usernames "expiry:peerid" whose expiry
// is in the future but no further than MaxTURNTTL (plus a minute of clock
// skew): a leaked credential cannot outlive the bound, whatever it claims.
func restAuthHandler(secret []byte, log *slog.Logger) turn.AuthHandler {
	return func(ra *turn.RequestAttributes) (string, []byte, bool) {
		exp, user, ok := strings.Cut(ra.Username, ":")
		if !ok || user == "" || len(ra.Username) > 128 {
			return "", nil, false
		}
		t, err := strconv.ParseInt(exp, 10, 64)
		now := time.Now()
		if err != nil || t < now.Unix() || t > now.Add(MaxTURNTTL+time.Minute).Unix() {
			log.Debug("turn: credential refused", "username", ra.Username, "src", ra.SrcAddr.String())
			return "", nil, false
		}
		password := turnPassword(secret, ra.Username)
		return user, turn.GenerateAuthKey(ra.Username, ra.Realm, password), true
	}
}

// defaultRouteIP is the local address of the default route (no packet is
// sent), or loopback on a machine without a network.
func defaultRouteIP() net.IP {
	c, err := net.Dial("udp4", "192.0.2.1:9") // TEST-NET-1: routed like any public address
	if err != nil {
		return net.IPv4(127, 0, 0, 1)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP
}

// pionLogs sends pion's logs to slog. TURN's per-packet complaints are
// debug-level noise to an operator; only warnings and errors pass at info.
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("scope", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) Trace(string)                   {}
func (l pionLogger) Tracef(string, ...any)          {}
func (l pionLogger) Debug(msg string)               { l.log.Debug(msg) }
func (l pionLogger) Debugf(format string, a ...any) { l.log.Debug(fmt.Sprintf(format, a...)) }
func (l pionLogger) Info(msg string)                { l.log.Info(msg) }
func (l pionLogger) Infof(format string, a ...any)  { l.log.Info(fmt.Sprintf(format, a...)) }
func (l pionLogger) Warn(msg string)                { l.log.Warn(msg) }
func (l pionLogger) Warnf(format string, a ...any)  { l.log.Warn(fmt.Sprintf(format, a...)) }
func (l pionLogger) Error(msg string)               { l.log.Error(msg) }
func (l pionLogger) Errorf(format string, a ...any) { l.log.Error(fmt.Sprintf(format, a...)) }
