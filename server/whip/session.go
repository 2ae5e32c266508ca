package whip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"

	"canopy/mesh/protocol"
)

// gatherTimeout bounds the wait for the server's own ICE candidates, which
// go into its answer whole: a WHIP or WHEP server cannot trickle its own.
// Host candidates take milliseconds; a STUN server that does not answer
// would take pion's 5 s per server.
const gatherTimeout = 6 * time.Second

// session is one WHIP or WHEP session resource: /whip/<stream>/<id>.
type session struct {
	id, stream, kind, addr string
	pc                     *webrtc.PeerConnection
	created                time.Time
	// end tears the session's media down; Handler.end calls it once.
	end func()

	mu    sync.Mutex // orders PATCHes
	etag  string
	offer string // the client's last offer, for ICE restarts
	ufrag string // its ICE ufrag
	// candidates counts the remote candidates the client sent, against
	// maxSessionCandidates.
	candidates int
	// restarts budgets ICE restarts (restartEvery, restartBurst); made on
	// the first.
	restarts *rate.Limiter
}

// An ICE restart re-applies the offer and gathers the server's candidates
// again (STUN to every configured server, up to gatherTimeout with the
// session's lock held), so a client may not ask for them in a loop. A
// client restarts when its network changes: a few in a row (Wi-Fi to
// cellular and back), then one per 10 s on average is plenty.
const (
	restartEvery = 10 * time.Second
	restartBurst = 3
)

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// reserve takes one of the client address's sessions, or says why not;
// release gives it back (once).
func (h *Handler) reserve(addr string) (release func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.perAddr[addr] >= h.cfg.MaxSessionsPerAddr {
		return nil, fmt.Errorf("%w (%d)", errTooManySessions, h.cfg.MaxSessionsPerAddr)
	}
	h.perAddr[addr]++
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.perAddr[addr]--; h.perAddr[addr] <= 0 {
				delete(h.perAddr, addr)
			}
		})
	}, nil
}

// add publishes a session at its Location.
func (h *Handler) add(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sessions[s.id] = s
}

// lookup finds the session a PATCH or DELETE names.
func (h *Handler) lookup(c *gin.Context) (*session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sessions[c.Param("session")]
	kind := "whip"
	if strings.HasPrefix(c.FullPath(), "/whep/") {
		kind = "whep"
	}
	if s == nil || s.stream != c.Param("stream") || s.kind != kind {
		return nil, errNoSession
	}
	return s, nil
}

// end removes a session and tears it down; a second call does nothing.
func (h *Handler) end(s *session, why string) {
	h.mu.Lock()
	if h.sessions[s.id] != s {
		h.mu.Unlock()
		return
	}
	delete(h.sessions, s.id)
	h.mu.Unlock()
	h.log.Info("session ended", "kind", s.kind, "stream", s.stream, "session", s.id, "why", why)
	s.end()
}

// Close ends every session, and the WHEP relays leave their trees.
func (h *Handler) Close() {
	h.mu.Lock()
	all := make([]*session, 0, len(h.sessions))
	for _, s := range h.sessions {
		all = append(all, s)
	}
	var relays []*relay
	for _, r := range h.relays {
		if r.node != nil {
			relays = append(relays, r)
		}
	}
	h.mu.Unlock()
	for _, s := range all {
		h.end(s, "server closing")
	}
	for _, r := range relays {
		_ = r.node.Close()
	}
}

// created answers a POST: 201, the session's Location and ETag, the ICE
// servers, and the answer.
func (h *Handler) created(c *gin.Context, s *session, answer string) {
	cors(c)
	c.Header("Location", "/"+s.kind+"/"+s.stream+"/"+s.id)
	c.Header("ETag", s.etag)
	c.Header("Accept-Patch", mimeSDPFrag)
	if h.cfg.ICEServers != nil {
		linkHeaders(c, h.cfg.ICEServers(c.Request, s.id))
	}
	c.Data(http.StatusCreated, mimeSDP, []byte(answer))
}

// delete ends a session (RFC 9725 section 4.2).
func (h *Handler) delete(c *gin.Context) {
	s, err := h.lookup(c)
	if err != nil {
		h.writeError(c, err)
		return
	}
	h.end(s, "DELETE")
	cors(c)
	c.Status(http.StatusOK)
}

// patch trickles the client's candidates into the session, or restarts
// ICE when the fragment brings new credentials (RFC 9725 section 4.3).
func (h *Handler) patch(c *gin.Context) {
	s, err := h.lookup(c)
	if err != nil {
		h.writeError(c, err)
		return
	}
	body, err := h.readBody(c, mimeSDPFrag)
	if err != nil {
		h.writeError(c, err)
		return
	}
	frag, err := parseFragment(body)
	if err != nil {
		h.writeError(c, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := c.GetHeader("If-Match"); m != "" && m != "*" && m != s.etag {
		h.writeError(c, fmt.Errorf("%w: %s is not %s", errPrecondition, m, s.etag))
		return
	}
	if frag.ufrag != "" && frag.ufrag != s.ufrag {
		if frag.pwd == "" {
			h.writeError(c, fmt.Errorf("%w: ufrag %q is not this session's, and an ICE restart needs ice-pwd", errBadFragment, frag.ufrag))
			return
		}
		if s.restarts == nil {
			s.restarts = rate.NewLimiter(rate.Every(restartEvery), restartBurst)
		}
		if !s.restarts.Allow() {
			h.writeError(c, fmt.Errorf("%w: at most %d, then one per %s", errTooManyRestarts, restartBurst, restartEvery))
			return
		}
		frag, err := h.restartICE(c.Request.Context(), s, frag)
		if err != nil {
			h.writeError(c, err)
			return
		}
		cors(c)
		c.Header("ETag", s.etag)
		c.Data(http.StatusOK, mimeSDPFrag, []byte(frag))
		return
	}
	if err := h.addCandidates(s, frag); err != nil {
		h.writeError(c, err)
		return
	}
	cors(c)
	c.Status(http.StatusNoContent)
}

// restartICE applies a client's ICE restart: its last offer with the new
// credentials and candidates, and the server's new credentials and
// candidates back. Runs under s.mu.
func (h *Handler) restartICE(ctx context.Context, s *session, frag fragment) (string, error) {
	offer := restartOffer(s.offer, frag)
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: ICE restart: %v", errBadFragment, err)
	}
	if err := h.addCandidates(s, frag); err != nil {
		return "", err
	}
	answer, err := answerWhole(ctx, s.pc)
	if err != nil {
		return "", err
	}
	s.offer, s.ufrag, s.etag = offer, frag.ufrag, newETag()
	return answerFragment(answer), nil
}

// maxSessionCandidates bounds the remote candidates one session may add,
// in its offer and its PATCHes together: what a neighbour may send in the
// tree (protocol.MaxEdgeCandidates).
const maxSessionCandidates = protocol.MaxEdgeCandidates

// addCandidates adds a fragment's candidates that the server's candidate
// policy allows (peer.Config.RemoteCandidateFilter: never the server's own
// network or ports); refused ones are dropped, as in the tree: a client that
// can reach the server connects through the peer-reflexive candidate its
// checks create. Runs under s.mu.
func (h *Handler) addCandidates(s *session, frag fragment) error {
	for _, cand := range frag.candidates {
		if s.candidates >= maxSessionCandidates {
			return fmt.Errorf("%w: more than %d candidates in this session", errBadFragment, maxSessionCandidates)
		}
		s.candidates++
		if !h.api.AllowRemoteCandidate(cand.Candidate) {
			continue
		}
		if err := s.pc.AddICECandidate(cand); err != nil {
			return fmt.Errorf("%w: candidate %q: %v", errBadFragment, truncate(cand.Candidate), err)
		}
	}
	return nil
}

// admitOfferCandidates drops the a=candidate lines of an offer that the
// candidate policy refuses, or past the session's bound; it returns the
// offer and how many candidates it held.
func (h *Handler) admitOfferCandidates(offer string) (string, int) {
	if !strings.Contains(offer, "a=candidate:") {
		return offer, 0
	}
	n := 0
	lines := strings.SplitAfter(offer, "\n")
	kept := lines[:0]
	for _, line := range lines {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "a=candidate:"); ok {
			if n >= maxSessionCandidates {
				continue
			}
			n++
			if !h.api.AllowRemoteCandidate(v) {
				continue
			}
		}
		kept = append(kept, line)
	}
	return strings.Join(kept, ""), n
}

func newETag() string { return `"` + newID() + `"` }

// answerWhole creates and applies the answer and waits for the local
// candidates to be in it.
func answerWhole(ctx context.Context, pc *webrtc.PeerConnection) (string, error) {
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("create answer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("set local answer: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, gatherTimeout)
	defer cancel()
	select {
	case <-gathered:
	case <-ctx.Done():
		// Answer with what was gathered: host candidates are there first.
	}
	return pc.LocalDescription().SDP, nil
}

// iceUfrag is an SDP's first ICE ufrag.
func iceUfrag(sdp string) string {
	for _, line := range strings.Split(sdp, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), "a=ice-ufrag:"); ok {
			return v
		}
	}
	return ""
}
