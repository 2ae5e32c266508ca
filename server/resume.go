package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"canopy/mesh/protocol"
)

// Resume (README "Resume"). Every peer's welcome carries a resume token.
// When its signaling connection drops, the coordinator keeps the peer in
// the tree for a grace period, with its place, its edges and its
// PeerConnections on both sides untouched; a hello carrying the token
// within that time gets the same id and place back on a new connection.
// The token is an HMAC over the stream, the peer id, a generation and an
// expiry, with a secret the servers of a cluster share: any server can
// check it, and the stream's coordinator checks that the generation is
// the peer's current one (so a token is spent once it has been used) and
// that the peer is in fact suspended (a token replayed while its peer is
// connected is refused).

// Errors of a resume; each is errResumeRefused, code resume_refused.
var (
	// errResumeRefused is what every refused resume is.
	errResumeRefused = errors.New("resume refused")
	// errResumeForged means the token is not one this server's secret made.
	errResumeForged = fmt.Errorf("%w: the token is not genuine", errResumeRefused)
	// errResumeExpired means the token's expiry passed.
	errResumeExpired = fmt.Errorf("%w: the token expired", errResumeRefused)
	// errResumeStream means the token names another stream than the hello.
	errResumeStream = fmt.Errorf("%w: the token is for another stream", errResumeRefused)
	// errResumeLive means the token's peer is still connected: a copy of
	// its token cannot take its place. The server checks that connection
	// (a ping it must answer within probeTimeout); code resume_live.
	errResumeLive = fmt.Errorf("%w: the peer is still connected (checking that connection now; retry shortly)", errResumeRefused)
	// errResumeGone means the peer's place is gone: its grace period ended,
	// it left, or the stream is gone. Join afresh.
	errResumeGone = fmt.Errorf("%w: no place to resume (the grace period ended, or the peer left)", errResumeRefused)
	// errResumeStale means the token is an older one of a peer that resumed
	// since with a newer one.
	errResumeStale = fmt.Errorf("%w: the token was superseded", errResumeRefused)
	// errResumeMismatch means the hello claims another role, kind or mode
	// than the peer whose place it asks for.
	errResumeMismatch = fmt.Errorf("%w: the hello does not match the peer it resumes", errResumeRefused)
	// errResumeOff means this server keeps no places (-resume-grace < 0).
	errResumeOff = fmt.Errorf("%w: this server does not resume peers", errResumeRefused)
)

// Resume defaults.
const (
	// DefaultResumeGrace covers a reconnect's first tries (the clients try
	// at once, then after 0.25, 0.5, 1, 2 s: within ~4 s) and a server
	// restart behind a load balancer, while a peer that is gone for good
	// holds its children's parent slot for at most this long: its children
	// still play from it meanwhile, since media does not pass the server.
	DefaultResumeGrace = 10 * time.Second
	// DefaultResumeTTL is a token's lifetime. It is renewed (a resume
	// message) once half of it has passed, checked at every ping, so a
	// token a peer holds is always valid for longer than a grace period.
	DefaultResumeTTL = 10 * time.Minute
	// resumePrefix versions the token format.
	resumePrefix = "r1"
	// maxHeldSignals bounds the signals kept for a suspended peer and
	// delivered once it resumes: a few negotiations' worth (an offer and a
	// dozen candidates each). Past it, signals are dropped; the peer
	// re-offers the links that did not come up (mesh resume.go).
	maxHeldSignals = sendBuffer / 2
	// probeTimeout is how long a peer has to answer a ping once a resume
	// for it arrived on another connection: a live peer's pong takes a
	// round trip; one whose client moved to another network left a
	// half-open connection that never answers, and is suspended after
	// this, well within the client's grace period.
	probeTimeout = 3 * time.Second
)

// ResumeConfig says how the server keeps the places of peers whose
// signaling dropped.
type ResumeConfig struct {
	// Grace is how long a dropped peer's place is kept; 0 means
	// DefaultResumeGrace, negative: not at all (removed at once).
	Grace time.Duration
	// Secret signs the tokens; the servers of a cluster share it. Empty:
	// random per process.
	Secret []byte
	// TTL is a token's lifetime (0: DefaultResumeTTL).
	TTL time.Duration
}

// resumer makes and checks resume tokens, and counts resumes.
type resumer struct {
	secret []byte
	grace  time.Duration // <= 0: off
	ttl    time.Duration
	now    func() time.Time
	counts resumeCounts
}

func newResumer(cfg ResumeConfig) *resumer {
	r := &resumer{secret: cfg.Secret, grace: cfg.Grace, ttl: cfg.TTL, now: time.Now}
	if len(r.secret) == 0 {
		r.secret = make([]byte, 32)
		_, _ = rand.Read(r.secret)
	}
	if r.grace == 0 {
		r.grace = DefaultResumeGrace
	}
	if r.ttl <= 0 {
		r.ttl = DefaultResumeTTL
	}
	return r
}

// on reports whether the server keeps places.
func (r *resumer) on() bool { return r != nil && r.grace > 0 }

// resumeToken is what a token says.
type resumeToken struct {
	stream, peer string
	gen          uint64
	exp          time.Time
}

// mint makes the token for t.
func (r *resumer) mint(t resumeToken) string {
	body := resumePrefix + "." + t.stream + "." + t.peer + "." + strconv.FormatUint(t.gen, 10) + "." + strconv.FormatInt(t.exp.Unix(), 10)
	return body + "." + r.mac(body)
}

func (r *resumer) mac(body string) string {
	h := hmac.New(sha256.New, r.secret)
	h.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// verify checks tok's MAC and expiry and that it names stream.
func (r *resumer) verify(tok, stream string) (resumeToken, error) {
	if !r.on() {
		return resumeToken{}, errResumeOff
	}
	i := strings.LastIndexByte(tok, '.')
	if i < 0 || !hmac.Equal([]byte(tok[i+1:]), []byte(r.mac(tok[:i]))) {
		return resumeToken{}, errResumeForged
	}
	f := strings.Split(tok[:i], ".")
	if len(f) != 5 || f[0] != resumePrefix {
		return resumeToken{}, errResumeForged
	}
	gen, err1 := strconv.ParseUint(f[3], 10, 64)
	exp, err2 := strconv.ParseInt(f[4], 10, 64)
	if err1 != nil || err2 != nil {
		return resumeToken{}, errResumeForged
	}
	t := resumeToken{stream: f[1], peer: f[2], gen: gen, exp: time.Unix(exp, 0)}
	switch {
	case r.now().After(t.exp):
		return resumeToken{}, errResumeExpired
	case t.stream != stream:
		return resumeToken{}, errResumeStream
	}
	return t, nil
}

// issue gives p its token for generation gen of its place in stream, and
// keeps what it needs to renew it.
func (r *resumer) issue(p *peerConn, stream string, gen uint64) string {
	t := resumeToken{stream: stream, peer: p.id, gen: gen, exp: r.now().Add(r.ttl)}
	p.token.Store(&t)
	return r.mint(t)
}

// renew is called at every ping: once half of p's token's lifetime has
// passed, p is sent a fresh one of the same generation.
func (r *resumer) renew(p *peerConn) {
	t := p.token.Load()
	if !r.on() || t == nil || t.exp.Sub(r.now()) > r.ttl/2 {
		return
	}
	p.send(&protocol.Message{Type: protocol.TypeResume, Resume: r.issue(p, t.stream, t.gen)})
}

// heldSignals are the signals sent to a suspended peer, kept for its
// resume. Nil while the peer is connected.
type heldSignals struct {
	mu      sync.Mutex
	msgs    [][]byte
	dropped int
}

func (h *heldSignals) add(data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.msgs) >= maxHeldSignals {
		h.dropped++
		return
	}
	h.msgs = append(h.msgs, data)
}

func (h *heldSignals) take() ([][]byte, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, d := h.msgs, h.dropped
	h.msgs, h.dropped = nil, 0
	return m, d
}

// resumeCounts are the resume figures /metrics shows. Every suspension
// ends once: resumed, its grace over, or its media lost.
type resumeCounts struct {
	suspended, resumed, refused, graceOver, mediaLost atomic.Uint64
}

// resumeCollector exports resumeCounts.
type resumeCollector struct {
	r                           *resumer
	suspensions, resumes, ended *prometheus.Desc
	now                         *prometheus.Desc
}

func newResumeCollector(r *resumer) *resumeCollector {
	return &resumeCollector{
		r:           r,
		suspensions: prometheus.NewDesc("canopy_resume_suspensions_total", "Peers whose signaling dropped and whose place was kept for their resume.", nil, nil),
		resumes:     prometheus.NewDesc("canopy_resumes_total", "Hellos with a resume token, by outcome (resumed, refused).", []string{"outcome"}, nil),
		ended:       prometheus.NewDesc("canopy_resume_removed_total", "Suspended peers removed without a resume, by reason: grace (the grace period ended) or media (their children lost their media).", []string{"reason"}, nil),
		now:         prometheus.NewDesc("canopy_suspended_peers", "Peers suspended now, waiting for their resume.", nil, nil),
	}
}

func (c *resumeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.suspensions
	ch <- c.resumes
	ch <- c.ended
	ch <- c.now
}

func (c *resumeCollector) Collect(ch chan<- prometheus.Metric) {
	n := &c.r.counts
	susp, res, grace, media := n.suspended.Load(), n.resumed.Load(), n.graceOver.Load(), n.mediaLost.Load()
	ch <- prometheus.MustNewConstMetric(c.suspensions, prometheus.CounterValue, float64(susp))
	ch <- prometheus.MustNewConstMetric(c.resumes, prometheus.CounterValue, float64(res), "resumed")
	ch <- prometheus.MustNewConstMetric(c.resumes, prometheus.CounterValue, float64(n.refused.Load()), "refused")
	ch <- prometheus.MustNewConstMetric(c.ended, prometheus.CounterValue, float64(grace), "grace")
	ch <- prometheus.MustNewConstMetric(c.ended, prometheus.CounterValue, float64(media), "media")
	ch <- prometheus.MustNewConstMetric(c.now, prometheus.GaugeValue, float64(int64(susp)-int64(res+grace+media)))
}
