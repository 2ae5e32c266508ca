package cluster

import (
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Queries. Any server answers the HTTP API for any stream of the cluster:
// what only the owner knows (the tree, the figures) is asked of it over
// NATS, on a subject of the stream's that the owner serves beside its
// shards; the list of streams is gathered from every server, each
// answering with the streams it owns.

const (
	queryPrefix = "canopy.q."   // + stream: its owner answers
	listSubject = "canopy.list" // every server answers with its streams
)

// Query replies: a status byte, then the answer.
const (
	answerOK   byte = 'k'
	answerNone byte = 'n' // no such stream at the owner (any more)
)

// ErrNoAnswer means the stream's owner did not answer a query in time (it
// is stopped, overloaded, or dying while its lease lives).
var ErrNoAnswer = errors.New("the stream's server did not answer")

// Querier is a Handler that also answers questions about its streams.
type Querier interface {
	// Query answers what ("tree", "stats", "info") about stream; ok is
	// false if the stream is not served here.
	Query(stream, what string) (answer []byte, ok bool)
}

func querySubject(stream string) string { return queryPrefix + stream }

// subjectSafe reports whether a stream name can be a subject token: the
// API's callers choose it, and a '.', '*' or '>' would address others.
func subjectSafe(stream string) bool {
	return stream != "" && !strings.ContainsAny(stream, ".*> \t\r\n")
}

// serveQueries subscribes o's query subject when its handler answers them.
func (o *Owned) serveQueries() error {
	q, ok := o.h.(Querier)
	if !ok {
		return nil
	}
	sub, err := o.n.nc.Subscribe(querySubject(o.stream), func(m *nats.Msg) {
		if o.fenced.Load() {
			return
		}
		answer, ok := q.Query(o.stream, string(m.Data))
		if !ok {
			_ = m.Respond([]byte{answerNone})
			return
		}
		_ = m.Respond(append([]byte{answerOK}, answer...))
	})
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.subs = append(o.subs, sub)
	o.mu.Unlock()
	return nil
}

// Ask asks the owner of stream what; ErrNoOwner if no server serves the
// stream, ErrNoAnswer if its owner did not answer within timeout.
func (n *Node) Ask(stream, what string, timeout time.Duration) ([]byte, error) {
	if !subjectSafe(stream) {
		return nil, ErrNoOwner
	}
	m, err := n.nc.Request(querySubject(stream), []byte(what), timeout)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, ErrNoOwner
	case errors.Is(err, nats.ErrTimeout):
		return nil, ErrNoAnswer
	case err != nil:
		return nil, err
	case len(m.Data) == 0 || m.Data[0] != answerOK:
		return nil, ErrNoOwner
	}
	return m.Data[1:], nil
}

// ServeList answers the cluster's listings (List) with list(): this
// server's own streams, encoded as its caller likes.
func (n *Node) ServeList(list func() []byte) error {
	n.mu.Lock()
	n.lister = list
	n.mu.Unlock()
	sub, err := n.nc.Subscribe(listSubject, func(m *nats.Msg) { _ = m.Respond(list()) })
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.listSub = sub
	n.mu.Unlock()
	return nil
}

// List gathers every server's answer to ServeList, this one's included:
// it waits for as many as it has heard alive within a TTL, or timeout. In
// single mode it is this server's own list. complete is false when some
// server it expected did not answer in time.
func (n *Node) List(timeout time.Duration) (answers [][]byte, complete bool) {
	n.mu.Lock()
	list := n.lister
	n.mu.Unlock()
	if n.kv == nil {
		if list == nil {
			return nil, true
		}
		return [][]byte{list()}, true
	}
	want := n.aliveCount(time.Now())
	inbox := n.nc.NewInbox()
	sub, err := n.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, false
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := n.nc.PublishRequest(listSubject, inbox, nil); err != nil {
		return nil, false
	}
	deadline := time.Now().Add(timeout)
	for len(answers) < want {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return answers, false
		}
		answers = append(answers, m.Data)
	}
	return answers, true
}

// aliveCount is how many servers were heard within a TTL, this one
// counted always.
func (n *Node) aliveCount(now time.Time) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 1
	for id, at := range n.seen {
		if id != n.id && now.Sub(at) <= n.ttl {
			c++
		}
	}
	return c
}
